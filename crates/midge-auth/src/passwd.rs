//! Password files in mosquitto's `password_file` syntax.
//!
//! A password file has one `user:hash` entry a line. It reads what mosquitto 2.0 reads, and
//! more hash schemes:
//!
//! | stored hash                                   | scheme name (`scheme_of`) | written by                                 |
//! |-----------------------------------------------|---------------------------|--------------------------------------------|
//! | `$6$<salt>$<hash>`                            | `sha512`                  | `mosquitto_passwd -H sha512`               |
//! | `$7$<iterations>$<salt>$<hash>`               | `sha512-pbkdf2`           | `mosquitto_passwd`, `midge passwd -H sha512-pbkdf2` |
//! | `$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`    | `argon2id`                | `midge passwd` (the default)               |
//! | `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` | `SCRAM-SHA-256`   | `midge passwd --scram`                     |
//!
//! `$6$` is SHA-512 over the password followed by the salt, and `$7$` PBKDF2-HMAC-SHA512 with
//! a 64-byte output; both have a 12-byte salt and a 64-byte hash, in base64, as mosquitto
//! writes them. A SCRAM-SHA-256 entry also verifies plain CONNECT passwords.
//!
//! Lines are read as mosquitto reads them: blanks around the user name and the hash are
//! ignored, lines that start with `#` are comments, and blank lines are skipped. Where
//! mosquitto would skip a line with a log message, or drop an entry it cannot decode, this
//! module refuses the file with the line's number and the reason: a line without `:`, an
//! empty user name, a duplicate user, an unknown or malformed hash. Errors never quote a
//! hash or a password.
//!
//! Comments and blank lines are kept, so that [`PasswordFile::to_text`] gives back the file
//! with only the changed entries changed.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::scram::{self, StoredCredentials};
use crate::{FileError, LineError};

/// The longest line read, in bytes, without its line ending: room for the longest user name
/// (65,535 bytes) and the longest hash ([`MAX_HASH_LEN`]).
pub const MAX_LINE_LEN: usize = 72 * 1024;

/// The longest user name, in bytes: an MQTT UTF-8 Encoded String holds at most 65,535 bytes
/// (MQTT 5.0 §1.5.4), and `mosquitto_passwd` refuses longer names.
pub const MAX_USERNAME_LEN: usize = 65_535;

/// The longest password, in bytes: an MQTT Password is Binary Data of at most 65,535 bytes
/// (MQTT 5.0 §1.5.6, §3.1.3.6), and `mosquitto_passwd` refuses longer passwords.
pub const MAX_PASSWORD_LEN: usize = 65_535;

/// The longest stored hash, in bytes. Every supported scheme fits in far less; the bound
/// keeps a SCRAM salt or an argon2 string from growing without limit.
pub const MAX_HASH_LEN: usize = 4096;

/// The most memory an argon2id entry may ask for, in KiB (256 MiB): each verification
/// allocates that much.
pub const MAX_ARGON2_M_COST: u32 = 256 * 1024;

/// The most passes an argon2id entry may ask for.
pub const MAX_ARGON2_T_COST: u32 = 64;

/// The most lanes an argon2id entry may ask for.
pub const MAX_ARGON2_P_COST: u32 = 64;

/// Iterations for new `sha512-pbkdf2` (`$7$`) entries: OWASP's figure for PBKDF2-HMAC-SHA512.
/// (`mosquitto_passwd` writes 101, which is fast to guess.)
pub const PBKDF2_DEFAULT_ITERATIONS: u32 = 210_000;

/// Salt length of `$6$` and `$7$` entries: mosquitto 2.0 accepts no other.
const MOSQUITTO_SALT_LEN: usize = 12;

/// Hash length of `$6$` and `$7$` entries (SHA-512).
const MOSQUITTO_HASH_LEN: usize = 64;

/// Salt length of new argon2id entries.
const ARGON2_SALT_LEN: usize = 16;

/// Standard base64 that takes its input with or without `=` padding.
const BASE64_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How [`PasswordFile::set_password`] stores a new password.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// Argon2id with the `argon2` crate's default (OWASP-recommended) parameters: 19 MiB,
    /// two passes, one lane. Read by midge only.
    #[default]
    Argon2id,
    /// SCRAM-SHA-256 stored credentials (RFC 5802, RFC 7677), usable both for plain CONNECT
    /// passwords and for MQTT 5.0 enhanced authentication with `SCRAM-SHA-256`. Read by midge
    /// only.
    Scram {
        /// The PBKDF2 iteration count; RFC 7677 asks for at least 4096.
        iterations: u32,
    },
    /// mosquitto's `$7$` PBKDF2-HMAC-SHA512, for files that mosquitto 2.0 reads too.
    Pbkdf2Sha512 {
        /// The PBKDF2 iteration count.
        iterations: u32,
    },
}

impl Scheme {
    /// SCRAM-SHA-256 with RFC 7677's minimum iteration count.
    pub const SCRAM_DEFAULT: Self = Self::Scram {
        iterations: scram::DEFAULT_ITERATIONS,
    };

    /// mosquitto's `$7$` with [`PBKDF2_DEFAULT_ITERATIONS`].
    pub const PBKDF2_DEFAULT: Self = Self::Pbkdf2Sha512 {
        iterations: PBKDF2_DEFAULT_ITERATIONS,
    };
}

/// Why a user name cannot be stored in a password file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsernameError {
    /// The name is empty: mosquitto reads such a line as no entry at all.
    #[error("user name must not be empty")]
    Empty,
    /// The name is longer than [`MAX_USERNAME_LEN`] bytes.
    #[error("user name must be at most 65535 bytes long")]
    TooLong,
    /// The name contains `:`, which ends the name in the file.
    #[error("user name must not contain the ':' character")]
    Colon,
    /// The name contains a control character (U+0000–U+001F, U+007F–U+009F), which
    /// `mosquitto_passwd` refuses too; U+0000 is not allowed in MQTT strings at all
    /// [MQTT-1.5.4-2].
    #[error("user name must not contain control characters")]
    Control,
    /// The name starts or ends with a space, which is dropped when the file is read.
    #[error("user name must not start or end with a space")]
    Space,
    /// The name starts with `#`, so its line would read as a comment.
    #[error("user name must not start with '#'")]
    Hash,
}

/// Checks that `name` can be stored in a password file and read back as it is.
///
/// The rules are `mosquitto_passwd`'s (at most 65,535 bytes, no control characters, no `:`)
/// plus those that mosquitto's reader needs to read the name back unchanged: not empty, no
/// space at either end, no `#` first. A user name is a UTF-8 Encoded String in CONNECT
/// [MQTT-3.1.3-12], which `&str` already is.
pub fn check_username(name: &str) -> Result<(), UsernameError> {
    if name.is_empty() {
        return Err(UsernameError::Empty);
    }
    if name.len() > MAX_USERNAME_LEN {
        return Err(UsernameError::TooLong);
    }
    if name.contains(':') {
        return Err(UsernameError::Colon);
    }
    if name.chars().any(char::is_control) {
        return Err(UsernameError::Control);
    }
    if name.starts_with(is_c_space) || name.ends_with(is_c_space) {
        return Err(UsernameError::Space);
    }
    if name.starts_with('#') {
        return Err(UsernameError::Hash);
    }
    Ok(())
}

/// Why [`PasswordFile::set_password`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswdError {
    /// The user name cannot be stored.
    #[error(transparent)]
    Username(#[from] UsernameError),
    /// The password is longer than [`MAX_PASSWORD_LEN`] bytes.
    #[error("password must be at most 65535 bytes long")]
    PasswordTooLong,
    /// An iteration count of 0 was asked for.
    #[error("the iteration count must be at least 1")]
    ZeroIterations,
    /// The system's random number generator failed, so there is no salt.
    #[error("no random salt: {0}")]
    Random(getrandom::Error),
    /// The hash function refused its input.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// A parsed stored hash. Its `Debug` shows only the scheme.
#[derive(Clone)]
enum Hash {
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 {
        salt: [u8; MOSQUITTO_SALT_LEN],
        hash: [u8; MOSQUITTO_HASH_LEN],
    },
    /// `$7$`: PBKDF2-HMAC-SHA512(password, salt, iterations), 64 bytes.
    Pbkdf2Sha512 {
        iterations: u32,
        salt: [u8; MOSQUITTO_SALT_LEN],
        hash: [u8; MOSQUITTO_HASH_LEN],
    },
    /// `$argon2id$…`, with bounded parameters.
    Argon2id(Box<PasswordHash>),
    /// `SCRAM-SHA-256$…`.
    Scram(Box<StoredCredentials>),
}

impl Hash {
    /// How costly a verification is, for ordering: argon2id first, then the PBKDF2 kinds by
    /// their iterations, then a single SHA-512.
    fn cost(&self) -> (u8, u32) {
        match self {
            Self::Argon2id(_) => (3, 0),
            Self::Pbkdf2Sha512 { iterations, .. } => (2, *iterations),
            Self::Scram(credentials) => (2, credentials.iterations),
            Self::Sha512 { .. } => (1, 0),
        }
    }

    fn scheme_name(&self) -> &'static str {
        match self {
            Self::Sha512 { .. } => "sha512",
            Self::Pbkdf2Sha512 { .. } => "sha512-pbkdf2",
            Self::Argon2id(_) => "argon2id",
            Self::Scram(_) => scram::METHOD,
        }
    }

    /// Whether `password` matches, comparing the hashes in constant time.
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                bool::from(digest.finalize().as_slice().ct_eq(hash))
            }
            Self::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = [0u8; MOSQUITTO_HASH_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                bool::from(out.ct_eq(hash))
            }
            // The crate compares the outputs in constant time.
            Self::Argon2id(hash) => Argon2::default().verify_password(password, &**hash).is_ok(),
            Self::Scram(creds) => creds.verify_password(password),
        }
    }

    /// Reads a stored hash (already trimmed and at most [`MAX_HASH_LEN`] bytes).
    fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("$6$") {
            let mut fields = rest.split('$');
            let (Some(salt), Some(hash), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err("malformed sha512 hash: expected $6$<salt>$<hash>".into());
            };
            Ok(Self::Sha512 {
                salt: decode_fixed(salt, "salt")?,
                hash: decode_fixed(hash, "hash")?,
            })
        } else if let Some(rest) = text.strip_prefix("$7$") {
            let mut fields = rest.split('$');
            let (Some(iterations), Some(salt), Some(hash), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(
                    "malformed sha512-pbkdf2 hash: expected $7$<iterations>$<salt>$<hash>".into(),
                );
            };
            Ok(Self::Pbkdf2Sha512 {
                iterations: parse_iterations(iterations)?,
                salt: decode_fixed(salt, "salt")?,
                hash: decode_fixed(hash, "hash")?,
            })
        } else if text.starts_with("$argon2id$") {
            parse_argon2id(text).map(|hash| Self::Argon2id(Box::new(hash)))
        } else if text.starts_with(scram::METHOD) {
            text.parse::<StoredCredentials>()
                .map(|creds| Self::Scram(Box::new(creds)))
                .map_err(|e| e.to_string())
        } else if let Some(rest) = text.strip_prefix('$') {
            let id = rest.split('$').next().unwrap_or_default();
            if matches!(id, "argon2i" | "argon2d") {
                Err(format!(
                    "unsupported hash type ${id}$: only argon2id is read"
                ))
            } else if !id.is_empty()
                && id.len() <= 16
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                Err(format!(
                    "unknown hash type ${id}$: expected $6$, $7$, $argon2id$ or SCRAM-SHA-256$"
                ))
            } else {
                Err("unknown hash type: expected $6$, $7$, $argon2id$ or SCRAM-SHA-256$".into())
            }
        } else {
            Err(
                "not a password hash (a plain-text password? `midge passwd -U` hashes a \
                 file of user:password lines)"
                    .into(),
            )
        }
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme_name())
    }
}

/// Decodes base64 `text` into exactly `N` bytes.
fn decode_fixed<const N: usize>(text: &str, what: &str) -> Result<[u8; N], String> {
    let bytes = BASE64_ANY_PAD
        .decode(text)
        .map_err(|_| format!("the {what} is not valid base64"))?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| format!("the {what} is {len} bytes long, expected {N}"))
}

/// An iteration count: decimal digits only, at least 1.
fn parse_iterations(text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the iteration count is not a number".into());
    }
    match text.parse::<u32>() {
        Ok(0) => Err("the iteration count must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("the iteration count is too large".into()),
    }
}

/// An `$argon2id$` PHC string with its parameters within the `MAX_ARGON2_*` bounds.
fn parse_argon2id(text: &str) -> Result<PasswordHash, String> {
    let hash =
        PasswordHash::new(text).map_err(|e| format!("malformed argon2id hash string: {e}"))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("malformed argon2id hash string: no salt or no hash".into());
    }
    let params =
        argon2::Params::try_from(&hash).map_err(|e| format!("invalid argon2id parameters: {e}"))?;
    if params.m_cost() > MAX_ARGON2_M_COST {
        return Err(format!(
            "argon2id memory cost m={} is above the limit of {MAX_ARGON2_M_COST} KiB",
            params.m_cost()
        ));
    }
    if params.t_cost() > MAX_ARGON2_T_COST {
        return Err(format!(
            "argon2id time cost t={} is above the limit of {MAX_ARGON2_T_COST}",
            params.t_cost()
        ));
    }
    if params.p_cost() > MAX_ARGON2_P_COST {
        return Err(format!(
            "argon2id parallelism p={} is above the limit of {MAX_ARGON2_P_COST}",
            params.p_cost()
        ));
    }
    Ok(hash)
}

/// C's `isspace` in the "C" locale, which mosquitto trims from both ends of each field.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn trim_c_space(s: &str) -> &str {
    s.trim_matches(is_c_space)
}

/// One user's entry.
#[derive(Clone)]
struct Entry {
    username: String,
    /// The hash as it appears in the file.
    text: String,
    hash: Hash,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("username", &self.username)
            .field("scheme", &self.hash.scheme_name())
            .finish()
    }
}

/// A line of the file.
#[derive(Clone, Debug)]
enum Line {
    /// A comment or a blank line, kept as it was.
    Other(String),
    /// A user's entry.
    Entry(Entry),
}

/// A password file: users and their password hashes, in file order, with the file's comments.
///
/// `Debug` shows the user names and their schemes, never the hashes.
#[derive(Clone, Default)]
pub struct PasswordFile {
    lines: Vec<Line>,
    /// User name → index in `lines`.
    index: HashMap<String, usize>,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries()).finish()
    }
}

/// What a line of input holds, once comments and blank lines are set aside.
enum Content<'a> {
    Other,
    Entry { username: &'a str, value: &'a str },
}

/// Splits a line (without its line ending) as mosquitto's reader does.
fn split_line(raw: &str) -> Result<Content<'_>, String> {
    if raw.len() > MAX_LINE_LEN {
        return Err(format!("line is longer than {MAX_LINE_LEN} bytes"));
    }
    let line = trim_c_space(raw);
    if line.is_empty() || line.starts_with('#') {
        return Ok(Content::Other);
    }
    let Some((username, value)) = line.split_once(':') else {
        return Err("expected <user>:<password hash>, but the line has no ':'".into());
    };
    let username = trim_c_space(username);
    let value = trim_c_space(value);
    match check_username(username) {
        Ok(()) => {}
        // Only trimmed names get here: spaces at the ends cannot be the problem.
        Err(UsernameError::Empty) => return Err("empty user name before ':'".into()),
        Err(e) => return Err(e.to_string()),
    }
    Ok(Content::Entry { username, value })
}

/// How lines of input are read.
#[derive(Clone, Copy)]
enum Mode {
    /// `user:hash`.
    Hashed,
    /// `user:password`, hashed with the scheme as it is read (kept if already a hash).
    Plaintext(Scheme),
}

impl PasswordFile {
    /// An empty password file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a password file's text. Its lines end in `\n` or `\r\n`.
    pub fn parse(text: &str) -> Result<Self, LineError> {
        let mut file = Self::new();
        for (i, raw) in text.lines().enumerate() {
            file.push_line(i + 1, raw, Mode::Hashed)?;
        }
        Ok(file)
    }

    /// Reads a password file, one line at a time, refusing any line longer than
    /// [`MAX_LINE_LEN`] bytes before it is held in memory whole.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        Self::read_with(path, Mode::Hashed)
    }

    /// Reads a file of plain-text `user:password` lines and hashes each password with
    /// `scheme`, as `mosquitto_passwd -U` does.
    ///
    /// Unlike `mosquitto_passwd -U`, an entry whose value is already a hash that this module
    /// reads is kept as it is, so that converting a file twice does not hash the hashes;
    /// a value that starts like a hash (`$6$`, `$7$`, `$argon2…`, `SCRAM-SHA-256$`) but does
    /// not read as one is refused rather than taken for a password. The password is all of
    /// the line after the first `:` (mosquitto stops at a second `:`), without blanks at its
    /// ends. Comments and blank lines are kept.
    pub fn from_plaintext(text: &str, scheme: Scheme) -> Result<Self, LineError> {
        let mut file = Self::new();
        for (i, raw) in text.lines().enumerate() {
            file.push_line(i + 1, raw, Mode::Plaintext(scheme))?;
        }
        Ok(file)
    }

    /// [`from_plaintext`](Self::from_plaintext) for a file, read as [`read`](Self::read)
    /// reads one.
    pub fn read_plaintext(path: &Path, scheme: Scheme) -> Result<Self, FileError> {
        Self::read_with(path, Mode::Plaintext(scheme))
    }

    fn read_with(path: &Path, mode: Mode) -> Result<Self, FileError> {
        let io_error = |source| FileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let line_error = |source| FileError::Line {
            path: path.to_path_buf(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(io_error)?);
        let mut file = Self::new();
        let mut buf = Vec::new();
        let mut number = 0;
        loop {
            buf.clear();
            // Room for the longest line and its "\r\n": anything longer is refused below.
            let limit = (MAX_LINE_LEN + 2) as u64;
            let n = (&mut reader)
                .take(limit)
                .read_until(b'\n', &mut buf)
                .map_err(io_error)?;
            if n == 0 {
                break;
            }
            number += 1;
            let mut content = buf.as_slice();
            if let Some(rest) = content.strip_suffix(b"\n") {
                content = rest.strip_suffix(b"\r").unwrap_or(rest);
            }
            if content.len() > MAX_LINE_LEN {
                return Err(line_error(LineError {
                    line: number,
                    reason: format!("line is longer than {MAX_LINE_LEN} bytes"),
                }));
            }
            let text = std::str::from_utf8(content).map_err(|_| {
                line_error(LineError {
                    line: number,
                    reason: "line is not valid UTF-8".into(),
                })
            })?;
            file.push_line(number, text, mode).map_err(line_error)?;
        }
        Ok(file)
    }

    /// Adds line `number` (counting from 1) of the input.
    fn push_line(&mut self, number: usize, raw: &str, mode: Mode) -> Result<(), LineError> {
        let error = |reason: String| LineError {
            line: number,
            reason,
        };
        let (username, value) = match split_line(raw).map_err(error)? {
            Content::Other => {
                self.lines.push(Line::Other(raw.to_owned()));
                return Ok(());
            }
            Content::Entry { username, value } => (username, value),
        };
        if let Some(&at) = self.index.get(username) {
            // mosquitto 2.0 keeps one of the two, 2.1 refuses the file: refuse, as the
            // second line is most likely a mistake. While a file is read, each input line is
            // one element of `lines`, so the first entry is on line `at + 1`.
            return Err(error(format!(
                "user \"{username}\" is already defined on line {}",
                at + 1
            )));
        }
        let entry = match mode {
            Mode::Hashed => {
                if value.is_empty() {
                    return Err(error(format!("user \"{username}\": no password hash")));
                }
                if value.len() > MAX_HASH_LEN {
                    return Err(error(format!(
                        "user \"{username}\": the hash is longer than {MAX_HASH_LEN} bytes"
                    )));
                }
                let hash = Hash::parse(value)
                    .map_err(|reason| error(format!("user \"{username}\": {reason}")))?;
                Entry {
                    username: username.to_owned(),
                    text: value.to_owned(),
                    hash,
                }
            }
            Mode::Plaintext(scheme) => {
                if value.is_empty() {
                    return Err(error(format!("user \"{username}\": empty password")));
                }
                match Self::existing_hash(value) {
                    Some(Ok(hash)) => Entry {
                        username: username.to_owned(),
                        text: value.to_owned(),
                        hash,
                    },
                    Some(Err(reason)) => {
                        return Err(error(format!(
                            "user \"{username}\": this looks like a password hash, but {reason}"
                        )))
                    }
                    None => new_entry(username, value.as_bytes(), scheme)
                        .map_err(|e| error(format!("user \"{username}\": {e}")))?,
                }
            }
        };
        self.index.insert(entry.username.clone(), self.lines.len());
        self.lines.push(Line::Entry(entry));
        Ok(())
    }

    /// For `-U`: `None` if `value` is a password, else whether it reads as a hash.
    fn existing_hash(value: &str) -> Option<Result<Hash, String>> {
        let looks_hashed = ["$6$", "$7$", "$argon2"]
            .iter()
            .any(|p| value.starts_with(p))
            || value.starts_with(&format!("{}$", scram::METHOD));
        if !looks_hashed {
            return None;
        }
        if value.len() > MAX_HASH_LEN {
            return Some(Err(format!("it is longer than {MAX_HASH_LEN} bytes")));
        }
        Some(Hash::parse(value))
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(|line| match line {
            Line::Entry(entry) => Some(entry),
            Line::Other(_) => None,
        })
    }

    fn entry(&self, username: &str) -> Option<&Entry> {
        match self.lines.get(*self.index.get(username)?) {
            Some(Line::Entry(entry)) => Some(entry),
            _ => None,
        }
    }

    /// Whether `password` is `username`'s. Returns false for an unknown user, and for a
    /// password that does not match.
    ///
    /// Hashes are compared in constant time. For an unknown user the work of a verification
    /// is done all the same: `password` is checked against the file's costliest entry (and
    /// the answer discarded), so an unknown user takes as long as the slowest known one;
    /// with no entries, it is an argon2id hash with the default parameters. In a file whose
    /// entries share one scheme, as files written by one tool do, every answer takes the
    /// same time; in a file that mixes schemes, users of the cheaper ones answer sooner, and
    /// so tell that they exist.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        if let Some(entry) = self.entry(username) {
            return entry.hash.verify(password);
        }
        match self.entries().max_by_key(|entry| entry.hash.cost()) {
            Some(costliest) => {
                std::hint::black_box(costliest.hash.verify(password));
            }
            None => {
                let mut out = [0u8; 32];
                let salt = [0u8; ARGON2_SALT_LEN];
                let _ = std::hint::black_box(
                    Argon2::default().hash_password_into(password, &salt, &mut out),
                );
            }
        }
        false
    }

    /// Whether the file has an entry for `username`.
    pub fn contains(&self, username: &str) -> bool {
        self.index.contains_key(username)
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The user names, in file order.
    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.entries().map(|entry| entry.username.as_str())
    }

    /// The SCRAM-SHA-256 credentials of `username`, if its entry is a `SCRAM-SHA-256$` one:
    /// what MQTT 5.0 enhanced authentication with `SCRAM-SHA-256` needs.
    pub fn scram_credentials(&self, username: &str) -> Option<&StoredCredentials> {
        match &self.entry(username)?.hash {
            Hash::Scram(creds) => Some(creds),
            _ => None,
        }
    }

    /// The scheme of `username`'s hash, which tells what a verification costs: `sha512`,
    /// `sha512-pbkdf2`, `argon2id` or `SCRAM-SHA-256`.
    pub fn scheme_of(&self, username: &str) -> Option<&'static str> {
        Some(self.entry(username)?.hash.scheme_name())
    }

    /// Sets `username`'s password, hashed with `scheme` and a fresh random salt. An existing
    /// entry is replaced where it is; a new one goes at the end.
    pub fn set_password(
        &mut self,
        username: &str,
        password: &[u8],
        scheme: Scheme,
    ) -> Result<(), PasswdError> {
        let entry = new_entry(username, password, scheme)?;
        match self.index.get(username) {
            Some(&at) => {
                if let Some(line) = self.lines.get_mut(at) {
                    *line = Line::Entry(entry);
                }
            }
            None => {
                self.index.insert(entry.username.clone(), self.lines.len());
                self.lines.push(Line::Entry(entry));
            }
        }
        Ok(())
    }

    /// Removes `username`'s entry; returns whether there was one.
    pub fn remove(&mut self, username: &str) -> bool {
        let Some(at) = self.index.remove(username) else {
            return false;
        };
        self.lines.remove(at);
        for i in self.index.values_mut() {
            if *i > at {
                *i -= 1;
            }
        }
        true
    }

    /// The file's text: its lines in order, each ending in `\n`. Comments and blank lines
    /// are as they were read; entries are `user:hash`.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            match line {
                Line::Other(raw) => text.push_str(raw),
                Line::Entry(entry) => {
                    text.push_str(&entry.username);
                    text.push(':');
                    text.push_str(&entry.text);
                }
            }
            text.push('\n');
        }
        text
    }

    /// Writes [`to_text`](Self::to_text) to `path` atomically: to a new file in the same
    /// directory, then renamed over `path`, so that a reader sees the old file or the new
    /// one, never part of one.
    ///
    /// On Unix a new file has mode 0600. A file that is replaced keeps its owner, its group
    /// and its permissions for the owner and the group, but never permissions for others
    /// (a password file is often `root:mosquitto` 0640, for a broker that runs as its own
    /// user); if the owner or group cannot be kept, nothing is written. A symbolic link is
    /// followed, and its target replaced.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        write_atomically(path, self.to_text().as_bytes())
    }
}

/// An entry for `username` with `password` hashed as `scheme` says.
fn new_entry(username: &str, password: &[u8], scheme: Scheme) -> Result<Entry, PasswdError> {
    check_username(username)?;
    if password.len() > MAX_PASSWORD_LEN {
        return Err(PasswdError::PasswordTooLong);
    }
    let (text, hash) = match scheme {
        Scheme::Argon2id => {
            let mut salt = [0u8; ARGON2_SALT_LEN];
            getrandom::fill(&mut salt).map_err(PasswdError::Random)?;
            let hash = Argon2::default()
                .hash_password_with_salt(password, &salt)
                .map_err(|e| PasswdError::Hash(e.to_string()))?;
            (hash.to_string(), Hash::Argon2id(Box::new(hash)))
        }
        Scheme::Scram { iterations } => {
            if iterations == 0 {
                return Err(PasswdError::ZeroIterations);
            }
            let creds =
                StoredCredentials::generate(password, iterations).map_err(PasswdError::Random)?;
            (creds.to_string(), Hash::Scram(Box::new(creds)))
        }
        Scheme::Pbkdf2Sha512 { iterations } => {
            if iterations == 0 {
                return Err(PasswdError::ZeroIterations);
            }
            let mut salt = [0u8; MOSQUITTO_SALT_LEN];
            getrandom::fill(&mut salt).map_err(PasswdError::Random)?;
            let mut hash = [0u8; MOSQUITTO_HASH_LEN];
            pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut hash);
            let text = format!(
                "$7${iterations}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            );
            (
                text,
                Hash::Pbkdf2Sha512 {
                    iterations,
                    salt,
                    hash,
                },
            )
        }
    };
    Ok(Entry {
        username: username.to_owned(),
        text,
        hash,
    })
}

/// Writes `contents` to a new file beside `path`, then renames it over `path`.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let target = match fs::canonicalize(path) {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e),
    };
    let existing = fs::metadata(&target).ok();
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = target.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file name", path.display()),
        ));
    };
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).map_err(io::Error::other)?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".");
    tmp_name.push(
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);

    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    let written = (|| {
        #[cfg(unix)]
        if let Some(old) = &existing {
            keep_owner_and_mode(&file, old)?;
        }
        #[cfg(not(unix))]
        let _ = &existing;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable once the directory is synced; an error here leaves the new file
    // in place all the same.
    #[cfg(unix)]
    if let Ok(dir) = File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Gives the new file `old`'s owner, group, and permissions less those for others.
#[cfg(unix)]
fn keep_owner_and_mode(file: &File, old: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::{fchown, MetadataExt, PermissionsExt};

    let new = file.metadata()?;
    if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
        fchown(file, Some(old.uid()), Some(old.gid())).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot give the new file the old one's owner and group ({}:{}): {e}",
                    old.uid(),
                    old.gid()
                ),
            )
        })?;
    }
    file.set_permissions(fs::Permissions::from_mode(old.mode() & 0o660))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd -c -b FILE alice secret` (mosquitto 2.0.11).
    const ALICE: &str = "alice:$7$101$fqk+oqqtUs1M+scY$NqMX2kI+lkrjNbZGBCyK/A+NLKAFQxk8PZb4bTHSHZnP9SO7gZIAcu0tvPnxyD+HE9ZSUhprxiDBpis6ni8Etg==";
    /// Written by `mosquitto_passwd -H sha512 -b FILE carol pw` (mosquitto 2.0.11).
    const CAROL: &str = "carol:$6$wPYTezRoVZHJpCsX$8Oh4jUKGNyeH8ci+IR7KFYaX/8bw2g8F75CkUuvF+KgzJTlv1DYDN9plNSJ7nFI42qfmFczK6etI3Idj885I2Q==";
    /// SHA-512("correct horse" ‖ "midge-salt12"), computed with Python's hashlib.
    const HAND_SHA512: &str = "$6$bWlkZ2Utc2FsdDEy$xYmZzbZb8kL/lGH9qUgiHQXWSKwJdP0zniBEkU+JuucSUTzWM9q7tfMsWV4gGv8VBNiuA5g92DiJqmd7L/bhmg==";
    /// PBKDF2-HMAC-SHA512("battery staple", 00 01 … 0b, 1000 iterations, 64 bytes), computed
    /// with Python's hashlib.
    const HAND_PBKDF2: &str = "$7$1000$AAECAwQFBgcICQoL$Bj8T029S9D77lpGDs4XcfUCdbrsFVf3novC6cQp4v2VG3CcU/YRrane0BJA+Aywq5aXWGFXVxMvz26a9Cuf4jg==";

    fn parse_err(text: &str) -> LineError {
        match PasswordFile::parse(text) {
            Ok(file) => panic!("{text:?} was accepted: {file:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn mosquitto_entries_verify() {
        let file = PasswordFile::parse(&format!("{ALICE}\n{CAROL}\n")).unwrap();
        assert_eq!(file.len(), 2);
        assert!(file.verify("alice", b"secret"));
        assert!(!file.verify("alice", b"secreT"));
        assert!(!file.verify("alice", b"pw"));
        assert!(file.verify("carol", b"pw"));
        assert!(!file.verify("carol", b"pw "));
        assert!(!file.verify("carol", b"secret"));
        assert_eq!(file.scheme_of("alice"), Some("sha512-pbkdf2"));
        assert_eq!(file.scheme_of("carol"), Some("sha512"));
        assert_eq!(file.scheme_of("dave"), None);
        assert!(file.scram_credentials("alice").is_none());
    }

    #[test]
    fn hand_made_vectors_verify() {
        let file =
            PasswordFile::parse(&format!("sha:{HAND_SHA512}\npbkdf2:{HAND_PBKDF2}\n")).unwrap();
        assert!(file.verify("sha", b"correct horse"));
        assert!(!file.verify("sha", b"correct horse battery"));
        assert!(file.verify("pbkdf2", b"battery staple"));
        assert!(!file.verify("pbkdf2", b"battery"));
        // Each entry verifies only its own password.
        assert!(!file.verify("sha", b"battery staple"));
    }

    #[test]
    fn base64_without_padding_is_read() {
        let unpadded = HAND_SHA512.trim_end_matches('=');
        let file = PasswordFile::parse(&format!("sha:{unpadded}")).unwrap();
        assert!(file.verify("sha", b"correct horse"));
    }

    #[test]
    fn argon2id_entries_are_written_and_verified() {
        let mut file = PasswordFile::new();
        file.set_password("ann", b"hunter2", Scheme::Argon2id)
            .unwrap();
        let text = file.to_text();
        // The argon2 crate's defaults: 19 MiB, two passes, one lane.
        assert!(
            text.starts_with("ann:$argon2id$v=19$m=19456,t=2,p=1$"),
            "{text}"
        );
        let back = PasswordFile::parse(&text).unwrap();
        assert_eq!(back.scheme_of("ann"), Some("argon2id"));
        assert!(back.verify("ann", b"hunter2"));
        assert!(!back.verify("ann", b"hunter3"));
        // Another salt each time.
        let mut again = PasswordFile::new();
        again
            .set_password("ann", b"hunter2", Scheme::Argon2id)
            .unwrap();
        assert_ne!(again.to_text(), text);
    }

    #[test]
    fn scram_entries_verify_plain_passwords_and_give_credentials() {
        let creds = StoredCredentials::derive(b"pencil", b"NaCl-midge", 4096);
        let file = PasswordFile::parse(&format!("user:{creds}\n")).unwrap();
        assert_eq!(file.scram_credentials("user"), Some(&creds));
        assert_eq!(file.scheme_of("user"), Some("SCRAM-SHA-256"));
        assert!(file.verify("user", b"pencil"));
        assert!(!file.verify("user", b"pencil2"));

        let mut file = PasswordFile::new();
        file.set_password("s", b"pw", Scheme::Scram { iterations: 4100 })
            .unwrap();
        let text = file.to_text();
        assert!(text.starts_with("s:SCRAM-SHA-256$4100:"), "{text}");
        let back = PasswordFile::parse(&text).unwrap();
        assert_eq!(
            back.scram_credentials("s").map(|c| c.iterations),
            Some(4100)
        );
        assert!(back.verify("s", b"pw"));
        assert!(!back.verify("s", b"pW"));
    }

    #[test]
    fn pbkdf2_entries_are_written_as_mosquitto_writes_them() {
        let mut file = PasswordFile::new();
        file.set_password("m", b"pw", Scheme::Pbkdf2Sha512 { iterations: 1000 })
            .unwrap();
        let text = file.to_text();
        let hash = text.trim_end().strip_prefix("m:$7$1000$").unwrap();
        let (salt, digest) = hash.split_once('$').unwrap();
        assert_eq!(STANDARD.decode(salt).unwrap().len(), 12);
        assert_eq!(STANDARD.decode(digest).unwrap().len(), 64);
        let back = PasswordFile::parse(&text).unwrap();
        assert!(back.verify("m", b"pw"));
        assert!(!back.verify("m", b"p"));
    }

    #[test]
    fn unknown_users_are_refused() {
        let file = PasswordFile::parse(&format!("{ALICE}\n")).unwrap();
        assert!(!file.contains("bob"));
        assert!(!file.verify("bob", b"secret"));
        // Names are compared exactly.
        assert!(!file.verify("Alice", b"secret"));
        assert!(!file.verify("alice ", b"secret"));
        // No entries at all: still false (after the dummy argon2id work).
        assert!(!PasswordFile::new().verify("alice", b"secret"));
    }

    #[test]
    fn comments_blank_lines_blanks_and_crlf_are_read_as_mosquitto_reads_them() {
        let (user, hash) = ALICE.split_once(':').unwrap();
        let text =
            format!("# users\n\n   \n  \t{user} \t:  {hash}  \r\n  # indented comment\n{CAROL}");
        let file = PasswordFile::parse(&text).unwrap();
        assert_eq!(file.usernames().collect::<Vec<_>>(), ["alice", "carol"]);
        assert!(file.verify("alice", b"secret"));
        assert!(file.verify("carol", b"pw"));
        // Comments and blank lines are kept; entries come out trimmed.
        assert_eq!(
            file.to_text(),
            format!("# users\n\n   \n{ALICE}\n  # indented comment\n{CAROL}\n")
        );
    }

    #[test]
    fn to_text_round_trips() {
        let text = format!("# a comment\n{ALICE}\n\n{CAROL}\nsha:{HAND_SHA512}\n");
        let file = PasswordFile::parse(&text).unwrap();
        assert_eq!(file.to_text(), text);
        assert_eq!(
            PasswordFile::parse(&file.to_text()).unwrap().to_text(),
            text
        );
        assert_eq!(PasswordFile::new().to_text(), "");
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number_and_reason() {
        let cases: &[(&str, &str)] = &[
            ("secret-without-colon", "has no ':'"),
            (":$6$abc$def", "empty user name"),
            ("alice:", "no password hash"),
            ("alice:   ", "no password hash"),
            ("alice:hunter2", "not a password hash"),
            (
                "alice:$2y$10$abcdefghijklmnopqrstuv",
                "unknown hash type $2y$",
            ),
            ("alice:$$", "unknown hash type"),
            ("alice:$6$only-one-field", "malformed sha512"),
            ("alice:$6$!!!!$AAAA", "salt is not valid base64"),
            ("alice:$6$AAAA$AAAA", "salt is 3 bytes long, expected 12"),
            (
                "alice:$6$AAECAwQFBgcICQoL$AAAA",
                "hash is 3 bytes long, expected 64",
            ),
            ("alice:$7$0$AAECAwQFBgcICQoL$AAAA", "at least 1"),
            ("alice:$7$-5$AAECAwQFBgcICQoL$AAAA", "not a number"),
            ("alice:$7$99999999999$AAECAwQFBgcICQoL$AAAA", "too large"),
            ("alice:$7$101$AAECAwQFBgcICQoL", "malformed sha512-pbkdf2"),
            (
                "alice:$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
                "only argon2id",
            ),
            (
                "alice:$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ",
                "no salt or no hash",
            ),
            ("alice:$argon2id$garbage", "malformed argon2id"),
            (
                "alice:$argon2id$v=19$m=1048576,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2doYXNoaGFzaA",
                "memory cost m=1048576 is above the limit",
            ),
            (
                "alice:$argon2id$v=19$m=19456,t=1000,p=1$c2FsdHNhbHQ$aGFzaGhhc2doYXNoaGFzaA",
                "time cost t=1000 is above the limit",
            ),
            (
                "alice:SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
                "not a SCRAM-SHA-256 entry",
            ),
            ("al\u{7}ice:$6$a$b", "control characters"),
        ];
        for (line, reason) in cases {
            let err = parse_err(&format!("# first\n{line}\n"));
            assert_eq!(err.line, 2, "{line}");
            assert!(
                err.reason.contains(reason),
                "{line}: {:?} does not say {reason:?}",
                err.reason
            );
        }
    }

    #[test]
    fn errors_do_not_quote_passwords_or_hashes() {
        for line in [
            "alice:correct-horse-battery",
            "alice:$6$Y29ycmVjdC1ob3JzZQ$c2VjcmV0LWhhc2gtdGV4dA",
            "correct-horse-battery",
            "alice:$argon2id$v=19$m=16,t=2,p=1$Y29ycmVjdC1ob3JzZQ$YmF0dGVyeQ==",
        ] {
            let err = parse_err(line).to_string();
            for secret in [
                "correct-horse",
                "Y29ycmVjdC1ob3JzZQ",
                "c2VjcmV0",
                "YmF0dGVyeQ",
            ] {
                assert!(!err.contains(secret), "{err}");
            }
        }
    }

    #[test]
    fn duplicate_users_are_refused() {
        let err = parse_err(&format!("{ALICE}\n# again\n{ALICE}\n"));
        assert_eq!(err.line, 3);
        assert!(err.reason.contains("already defined on line 1"), "{err}");
        // After trimming, " alice" is alice.
        let (user, hash) = ALICE.split_once(':').unwrap();
        let err = parse_err(&format!("{ALICE}\n {user} :{hash}\n"));
        assert_eq!(err.line, 2);
    }

    #[test]
    fn absurd_lines_are_refused() {
        let long = format!("{}:{HAND_SHA512}", "u".repeat(MAX_LINE_LEN));
        let err = parse_err(&format!("{ALICE}\n{long}\n"));
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("longer than"), "{err}");
        let big_hash = format!(
            "u:SCRAM-SHA-256$4096:{}$AAAA:AAAA",
            "A".repeat(MAX_HASH_LEN)
        );
        let err = parse_err(&big_hash);
        assert!(err.reason.contains("longer than 4096"), "{err}");
        let long_name = format!("{}:{HAND_SHA512}", "u".repeat(MAX_USERNAME_LEN + 1));
        assert!(parse_err(&long_name).reason.contains("65535"));
    }

    #[test]
    fn debug_shows_users_and_schemes_but_no_hashes() {
        let creds = StoredCredentials::derive(b"pencil", b"NaCl-midge", 4096);
        let file = PasswordFile::parse(&format!("{ALICE}\n{CAROL}\nscram:{creds}\n")).unwrap();
        let debug = format!("{file:?}");
        assert!(
            debug.contains("alice") && debug.contains("sha512-pbkdf2"),
            "{debug}"
        );
        assert!(debug.contains("SCRAM-SHA-256"), "{debug}");
        for secret in ["fqk+oqqt", "NqMX2kI", "wPYTezRo", "8Oh4jUKG", "$7$", "$6$"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        let scram_text = creds.to_string();
        let (_, keys) = scram_text.rsplit_once('$').unwrap();
        assert!(!debug.contains(keys), "{debug}");
    }

    #[test]
    fn set_password_replaces_in_place_and_remove_keeps_the_rest() {
        let mut file =
            PasswordFile::parse(&format!("# head\n{ALICE}\n{CAROL}\nsha:{HAND_SHA512}\n")).unwrap();
        file.set_password("carol", b"new", Scheme::Pbkdf2Sha512 { iterations: 10 })
            .unwrap();
        assert_eq!(
            file.usernames().collect::<Vec<_>>(),
            ["alice", "carol", "sha"]
        );
        assert!(file.verify("carol", b"new"));
        assert!(!file.verify("carol", b"pw"));

        assert!(file.remove("alice"));
        assert!(!file.remove("alice"));
        assert_eq!(file.len(), 2);
        // The index still points at the right lines after the removal.
        assert!(file.verify("carol", b"new"));
        assert!(file.verify("sha", b"correct horse"));
        file.set_password("dave", b"d", Scheme::Pbkdf2Sha512 { iterations: 10 })
            .unwrap();
        let text = file.to_text();
        assert!(text.starts_with("# head\ncarol:$7$10$"), "{text}");
        assert!(
            text.contains(&format!("\nsha:{HAND_SHA512}\ndave:$7$10$")),
            "{text}"
        );
        let back = PasswordFile::parse(&text).unwrap();
        assert!(back.verify("dave", b"d"));
        assert!(file.remove("sha") && file.remove("dave") && file.remove("carol"));
        assert!(file.is_empty());
        assert_eq!(file.to_text(), "# head\n");
    }

    #[test]
    fn user_names_are_checked() {
        assert_eq!(check_username("alice"), Ok(()));
        assert_eq!(check_username("é ü 名前"), Ok(()));
        assert_eq!(check_username("with inner space"), Ok(()));
        assert_eq!(check_username("a#b"), Ok(()));
        assert_eq!(check_username(""), Err(UsernameError::Empty));
        assert_eq!(check_username("a:b"), Err(UsernameError::Colon));
        assert_eq!(check_username("a\nb"), Err(UsernameError::Control));
        assert_eq!(check_username("a\0b"), Err(UsernameError::Control));
        assert_eq!(check_username("a\u{85}"), Err(UsernameError::Control));
        assert_eq!(check_username(" a"), Err(UsernameError::Space));
        assert_eq!(check_username("a "), Err(UsernameError::Space));
        assert_eq!(check_username("#a"), Err(UsernameError::Hash));
        assert_eq!(check_username(&"u".repeat(MAX_USERNAME_LEN)), Ok(()));
        assert_eq!(
            check_username(&"u".repeat(MAX_USERNAME_LEN + 1)),
            Err(UsernameError::TooLong)
        );
        let mut file = PasswordFile::new();
        let fast = Scheme::Pbkdf2Sha512 { iterations: 1 };
        assert!(matches!(
            file.set_password("a:b", b"pw", fast),
            Err(PasswdError::Username(UsernameError::Colon))
        ));
        assert!(matches!(
            file.set_password("a", &[0; MAX_PASSWORD_LEN + 1], fast),
            Err(PasswdError::PasswordTooLong)
        ));
        assert!(matches!(
            file.set_password("a", b"pw", Scheme::Pbkdf2Sha512 { iterations: 0 }),
            Err(PasswdError::ZeroIterations)
        ));
        assert!(matches!(
            file.set_password("a", b"pw", Scheme::Scram { iterations: 0 }),
            Err(PasswdError::ZeroIterations)
        ));
        assert!(file.is_empty());
        // The longest name still fits in a line, with any hash.
        let long = "u".repeat(MAX_USERNAME_LEN);
        file.set_password(&long, &[0xff; 10], fast).unwrap();
        let back = PasswordFile::parse(&file.to_text()).unwrap();
        assert!(back.verify(&long, &[0xff; 10]));
    }

    #[test]
    fn plaintext_files_are_hashed_and_hashes_kept() {
        let fast = Scheme::Pbkdf2Sha512 { iterations: 5 };
        let text = format!("# plain\nbob:  pass:word  \n\n{ALICE}\n");
        let file = PasswordFile::from_plaintext(&text, fast).unwrap();
        // All of the line after the first ':' is the password, without blanks at its ends.
        assert!(file.verify("bob", b"pass:word"));
        assert!(!file.verify("bob", b"pass"));
        // Already hashed: kept as it is, so a second conversion changes nothing.
        assert!(file.verify("alice", b"secret"));
        let out = file.to_text();
        assert!(out.starts_with("# plain\nbob:$7$5$"), "{out}");
        assert!(out.ends_with(&format!("\n\n{ALICE}\n")), "{out}");
        let twice = PasswordFile::from_plaintext(&out, fast).unwrap();
        assert_eq!(twice.to_text(), out);

        let err = PasswordFile::from_plaintext("a:x\nb:$7$101$broken\n", fast).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("looks like a password hash"), "{err}");
        let err = PasswordFile::from_plaintext("a:x\nb:\n", fast).unwrap_err();
        assert_eq!((err.line, err.reason.contains("empty password")), (2, true));
        let err = PasswordFile::from_plaintext("a:x\na:y\n", fast).unwrap_err();
        assert_eq!(err.line, 2);
        let err = PasswordFile::from_plaintext("nocolon\n", fast).unwrap_err();
        assert_eq!(err.line, 1);
    }

    /// A directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("midge-auth-passwd-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn read_names_the_line_and_bounds_it() {
        let dir = TempDir::new("read");
        let path = dir.0.join("pw");
        fs::write(&path, format!("{ALICE}\r\n# c\n{CAROL}")).unwrap();
        let file = PasswordFile::read(&path).unwrap();
        assert!(file.verify("alice", b"secret") && file.verify("carol", b"pw"));

        fs::write(&path, format!("{ALICE}\nbob:plain\n")).unwrap();
        let err = PasswordFile::read(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}: line 2: ", path.display())),
            "{text}"
        );

        // A line without an end is refused once it passes the limit, not read whole.
        let mut big = format!("{ALICE}\n").into_bytes();
        big.resize(big.len() + MAX_LINE_LEN + 10, b'x');
        fs::write(&path, &big).unwrap();
        let err = PasswordFile::read(&path).unwrap_err();
        assert!(
            matches!(&err, FileError::Line { source, .. } if source.line == 2),
            "{err}"
        );

        fs::write(&path, b"al\xffice:$6$x$y\n").unwrap();
        let err = PasswordFile::read(&path).unwrap_err();
        assert!(
            err.to_string().contains("line 1: line is not valid UTF-8"),
            "{err}"
        );

        let err = PasswordFile::read(&dir.0.join("missing")).unwrap_err();
        assert!(matches!(err, FileError::Io { .. }), "{err}");
    }

    #[test]
    fn read_plaintext_hashes_a_file() {
        let dir = TempDir::new("plain");
        let path = dir.0.join("pw");
        fs::write(&path, "u:p\n").unwrap();
        let file =
            PasswordFile::read_plaintext(&path, Scheme::Pbkdf2Sha512 { iterations: 3 }).unwrap();
        assert!(file.verify("u", b"p"));
    }

    #[cfg(unix)]
    #[test]
    fn write_is_atomic_private_and_keeps_the_group() {
        use std::os::unix::fs::{symlink, PermissionsExt};

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let dir = TempDir::new("write");
        let path = dir.0.join("pw");
        let file = PasswordFile::parse(&format!("# c\n{ALICE}\n")).unwrap();
        file.write(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), file.to_text());
        assert_eq!(mode(&path), 0o600);

        // An existing file keeps its group permissions, but loses those for others.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        file.write(&path).unwrap();
        assert_eq!(mode(&path), 0o640);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o660)).unwrap();
        file.write(&path).unwrap();
        assert_eq!(mode(&path), 0o660);

        // A link stays a link; its target is replaced.
        let link = dir.0.join("link");
        symlink(&path, &link).unwrap();
        let other = PasswordFile::parse(&format!("{CAROL}\n")).unwrap();
        other.write(&link).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&path).unwrap(), other.to_text());

        // No temporary files are left behind.
        let mut names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["link", "pw"]);

        // A failed write leaves the old file as it was.
        let missing_dir = dir.0.join("no-such-dir").join("pw");
        assert!(other.write(&missing_dir).is_err());
    }
}
