#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::PathBuf;

pub mod acl;
pub mod passwd;
pub mod scram;

/// One line of a password or ACL file that could not be read: its number (from 1) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    /// The line's number, counting from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// A password or ACL file that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of the file is malformed.
    #[error("{}: {source}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line and why.
        #[source]
        source: LineError,
    },
}
