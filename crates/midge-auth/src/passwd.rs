//! Password files in mosquitto's `password_file` syntax.

#![allow(missing_docs, missing_debug_implementations)]
use std::path::Path;
pub struct PasswordFile;
impl PasswordFile {
    pub fn read(_p: &Path) -> Result<Self, crate::FileError> {
        Ok(Self)
    }
    pub fn parse(_t: &str) -> Result<Self, crate::LineError> {
        Ok(Self)
    }
    pub fn verify(&self, _u: &str, _p: &[u8]) -> bool {
        false
    }
    pub fn len(&self) -> usize {
        0
    }
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn to_text(&self) -> String {
        String::new()
    }
    pub fn scram_credentials(&self, _u: &str) -> Option<&crate::scram::StoredCredentials> {
        None
    }
}
