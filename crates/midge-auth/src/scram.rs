//! SCRAM-SHA-256 (RFC 5802, RFC 7677) for MQTT 5.0 enhanced authentication.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The authentication method name of SCRAM-SHA-256, as it appears in CONNECT and AUTH.
pub const METHOD: &str = "SCRAM-SHA-256";

/// Iterations used for new credentials: RFC 7677's minimum.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Length of the salt of new credentials, in bytes.
const SALT_LEN: usize = 16;

/// What a server keeps to check SCRAM-SHA-256 proofs and plain passwords, without the
/// password: the salt, the iteration count, `StoredKey` and `ServerKey` (RFC 5802 §3).
///
/// Written and read in PostgreSQL's notation,
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, each part in base64.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    /// The PBKDF2 iteration count.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// `H(ClientKey)`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// `SaltedPassword := Hi(password, salt, i)` (RFC 5802 §3).
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

/// `HMAC-SHA-256(key, data)`.
pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl StoredCredentials {
    /// Derives the credentials for `password` with `salt` and `iterations`.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Derives credentials for `password` with a fresh random salt.
    pub fn generate(password: &[u8], iterations: u32) -> Result<Self, getrandom::Error> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt)?;
        Ok(Self::derive(password, &salt, iterations))
    }

    /// Whether `password` is the one these credentials were derived from, compared in
    /// constant time.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let other = Self::derive(password, &self.salt, self.iterations);
        bool::from(other.stored_key.ct_eq(&self.stored_key))
    }
}

impl fmt::Display for StoredCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{METHOD}${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }
}

/// Why a stored SCRAM entry could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a SCRAM-SHA-256 entry: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
)]
pub struct ParseCredentialsError;

impl FromStr for StoredCredentials {
    type Err = ParseCredentialsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(METHOD)
            .and_then(|r| r.strip_prefix('$'))
            .ok_or(ParseCredentialsError)?;
        let (params, keys) = rest.split_once('$').ok_or(ParseCredentialsError)?;
        let (iterations, salt) = params.split_once(':').ok_or(ParseCredentialsError)?;
        let (stored, server) = keys.split_once(':').ok_or(ParseCredentialsError)?;
        let iterations: u32 = iterations.parse().map_err(|_| ParseCredentialsError)?;
        if iterations == 0 {
            return Err(ParseCredentialsError);
        }
        let salt = BASE64.decode(salt).map_err(|_| ParseCredentialsError)?;
        let key = |text: &str| -> Result<[u8; 32], ParseCredentialsError> {
            BASE64
                .decode(text)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or(ParseCredentialsError)
        };
        Ok(Self {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_and_verify() {
        let creds = StoredCredentials::derive(b"pencil", b"salt", 4096);
        let text = creds.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:c2FsdA==$"), "{text}");
        let back: StoredCredentials = text.parse().unwrap();
        assert_eq!(back, creds);
        assert!(back.verify_password(b"pencil"));
        assert!(!back.verify_password(b"pencil "));
    }

    #[test]
    fn rfc7677_example_keys() {
        // RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let creds = StoredCredentials::derive(b"pencil", &salt, 4096);
        // ServerSignature from the RFC's exchange is HMAC(ServerKey, AuthMessage); checked in
        // the exchange tests. Here: the derivation is stable.
        assert_eq!(creds, StoredCredentials::derive(b"pencil", &salt, 4096));
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in [
            "",
            "SCRAM-SHA-256",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$x:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-1$4096:c2FsdA==$AAAA:AAAA",
        ] {
            assert_eq!(
                bad.parse::<StoredCredentials>(),
                Err(ParseCredentialsError),
                "{bad}"
            );
        }
    }
}
