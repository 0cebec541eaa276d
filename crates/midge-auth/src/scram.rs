//! SCRAM-SHA-256 (RFC 5802, RFC 7677) for MQTT 5.0 enhanced authentication.
//!
//! # Why SCRAM rather than a plain password
//!
//! With a password in CONNECT, the server sees the password on every connection, and whoever
//! reads the server's password store (or a proxy that ends TLS) can log in. SCRAM changes that:
//!
//! - the password never crosses the wire: the client proves that it knows it with a proof
//!   bound to both sides' fresh nonces, so a recorded exchange cannot be replayed;
//! - the server keeps only [`StoredCredentials`] (a salt, an iteration count, `StoredKey` and
//!   `ServerKey`): enough to check a proof, not enough to compute one, so a stolen store does
//!   not let anyone log in without first guessing passwords through PBKDF2;
//! - the client checks the server too: only a server holding `ServerKey` can produce the
//!   final signature, which [`ScramClient::handle_server_final`] verifies.
//!
//! SCRAM does not encrypt the connection. Use TLS as well; channel binding (tying the exchange
//! to the TLS session) is not supported here, so the GS2 header is always `n,,`.
//!
//! # Message flow over MQTT 5.0
//!
//! The client sets the Authentication Method property to [`METHOD`] (`SCRAM-SHA-256`) and
//! carries each SCRAM message as Authentication Data:
//!
//! ```text
//! client                                                server
//!   CONNECT  auth data = ScramClient::client_first()  -->  ScramServer::start(..)
//!   <--  AUTH 0x18 (Continue authentication)  auth data = server-first
//!   ScramClient::handle_server_first(..)
//!   AUTH 0x18  auth data = client-final  -->  ScramServer::finish(..)
//!   <--  CONNACK 0x00  auth data = server-final
//!   ScramClient::handle_server_final(..)
//! ```
//!
//! Re-authentication runs the same exchange, started by the client with AUTH 0x19. When
//! [`ScramServer::finish`] fails, the server refuses the connection (CONNACK 0x87, Not
//! authorized); it may send [`ScramError::server_final`] as the Authentication Data of that
//! CONNACK. An unknown user and a wrong password fail in the same way, with
//! [`ScramError::InvalidProof`].
//!
//! ```
//! use midge_auth::scram::{ScramClient, ScramServer, StoredCredentials};
//!
//! let stored = StoredCredentials::derive(b"pencil", b"0123456789abcdef", 4096);
//! let mock_key = [7u8; 32]; // the server's secret, random and kept across restarts
//!
//! let mut client = ScramClient::new("user", b"pencil")?;
//! let client_first = client.client_first();
//! let (server, server_first) = ScramServer::start(
//!     &client_first,
//!     |name| (name == "user").then(|| stored.clone()),
//!     &mock_key,
//! )?;
//! let client_final = client.handle_server_first(&server_first)?;
//! let server_final = server.finish(&client_final)?;
//! client.handle_server_final(&server_final)?;
//! # Ok::<(), midge_auth::scram::ScramError>(())
//! ```
//!
//! # Stored format
//!
//! [`StoredCredentials`] are written and read in PostgreSQL's notation,
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, with salt and keys in base64.
//! Deriving them runs PBKDF2 once; checking a SCRAM proof afterwards costs the server a few
//! HMAC-SHA-256 and SHA-256 computations, no PBKDF2.
//!
//! # User names and passwords
//!
//! User names are prepared with SASLprep (RFC 4013) on both sides, and names that SASLprep
//! refuses (control characters, unassigned code points, mixed bidirectional text, or nothing
//! left) are refused with [`ScramError::InvalidUsername`]. The server looks users up by the
//! prepared name, so a name stored in another Unicode normalization form is not found.
//! In messages, `=` and `,` in user names are written `=3D` and `=2C`.
//!
//! Passwords are prepared with SASLprep when they are UTF-8 text that SASLprep accepts and
//! does not empty; otherwise (binary passwords, control characters) their bytes are used as
//! they are, as PostgreSQL does. [`StoredCredentials::derive`] prepares passwords the same
//! way, so both ends agree.
//!
//! # Limits
//!
//! Every message is refused above [`MAX_MESSAGE_LEN`] bytes before it is parsed. Nonces are
//! printable ASCII of at most [`MAX_NONCE_LEN`] characters. The client refuses iteration
//! counts outside [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`]: too few make a recorded exchange
//! cheap to attack offline, too many let a hostile server make the client spin. The
//! mandatory-extension attribute `m=` is refused wherever it appears; other unknown
//! attributes after the known ones are checked for form and ignored. An authorization
//! identity (`a=` in the GS2 header) is refused: MQTT has no use for one.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, Zeroizing};

/// The authentication method name of SCRAM-SHA-256, as it appears in CONNECT and AUTH.
pub const METHOD: &str = "SCRAM-SHA-256";

/// Iterations used for new credentials: RFC 7677's minimum.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// The fewest PBKDF2 iterations [`ScramClient`] accepts from a server (RFC 7677's minimum).
pub const MIN_ITERATIONS: u32 = 4096;

/// The most PBKDF2 iterations [`ScramClient`] accepts from a server.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// The longest SCRAM message, in bytes, that either side reads or writes.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// The longest nonce, in characters, that either side accepts: the client's part alone in
/// client-first, and the client's and the server's parts together afterwards.
pub const MAX_NONCE_LEN: usize = 256;

/// Length of the salt of new credentials, in bytes.
const SALT_LEN: usize = 16;

/// Random bytes in each side's nonce part; base64 makes 24 characters of them.
const NONCE_BYTES: usize = 18;

/// The GS2 header this crate's client sends: no channel binding, no authorization identity.
const GS2_HEADER: &str = "n,,";

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
    ///
    /// The password is prepared with SASLprep first when it is text that SASLprep accepts,
    /// exactly as [`ScramClient`] prepares it (see the module docs).
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let password = prepare_password(password);
        let salted = Zeroizing::new(salted_password(&password, salt, iterations));
        let client_key = Zeroizing::new(hmac(&*salted, b"Client Key"));
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(*client_key).into(),
            server_key: hmac(&*salted, b"Server Key"),
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

/// The password bytes that go into PBKDF2: SASLprep's output when `password` is UTF-8 that
/// SASLprep accepts and leaves non-empty, the bytes as given otherwise.
fn prepare_password(password: &[u8]) -> Zeroizing<Vec<u8>> {
    let prepared = std::str::from_utf8(password)
        .ok()
        .and_then(|text| stringprep::saslprep(text).ok())
        .filter(|text| !text.is_empty());
    Zeroizing::new(match prepared {
        Some(Cow::Owned(mut text)) => {
            let bytes = text.as_bytes().to_vec();
            text.zeroize();
            bytes
        }
        Some(Cow::Borrowed(text)) => text.as_bytes().to_vec(),
        None => password.to_vec(),
    })
}

/// A SCRAM exchange that failed.
///
/// The variants name what was wrong without echoing message contents: no error holds a
/// password, key, proof or signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScramError {
    /// A message does not follow the SCRAM grammar; the text names the part.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// A message is longer than [`MAX_MESSAGE_LEN`] bytes.
    #[error("SCRAM message longer than {MAX_MESSAGE_LEN} bytes")]
    TooLong,
    /// The client asked for channel binding (`p=` in the GS2 header), which is not supported.
    #[error("SCRAM channel binding is not supported")]
    ChannelBindingNotSupported,
    /// The channel binding attribute `c=` of client-final does not repeat the GS2 header of
    /// client-first.
    #[error("SCRAM channel binding data does not match the client-first message")]
    ChannelBindingMismatch,
    /// The client sent an authorization identity (`a=`), which is not supported.
    #[error("SCRAM authorization identity is not supported")]
    AuthzidNotSupported,
    /// A message holds the mandatory-extension attribute `m=`, which is not supported.
    #[error("SCRAM mandatory extension is not supported")]
    ExtensionNotSupported,
    /// The user name is empty, not UTF-8, wrongly escaped, refused by SASLprep, or too long
    /// for client-first; the text says which.
    #[error("SCRAM user name is not valid: {0}")]
    InvalidUsername(&'static str),
    /// The nonce does not continue the one sent before (server-first not starting with the
    /// client's nonce, or client-final not repeating the server's).
    #[error("SCRAM nonce does not match")]
    NonceMismatch,
    /// The client's proof is wrong: a wrong password or an unknown user, told apart on
    /// purpose by nothing.
    #[error("SCRAM authentication failed: invalid proof")]
    InvalidProof,
    /// The server's final signature is wrong: the server does not hold these credentials.
    #[error("SCRAM server signature does not match: the server could not prove it knows the credentials")]
    ServerSignatureMismatch,
    /// The server asked for fewer than [`MIN_ITERATIONS`] iterations.
    #[error("SCRAM iteration count {0} is below the minimum {MIN_ITERATIONS}")]
    IterationsTooLow(u32),
    /// The server asked for more than [`MAX_ITERATIONS`] iterations (`u32::MAX` stands for
    /// any count that does not fit a `u32`).
    #[error("SCRAM iteration count {0} is above the maximum {MAX_ITERATIONS}")]
    IterationsTooHigh(u32),
    /// The server ended the exchange with an error (`e=`).
    #[error("SCRAM server refused: {0}")]
    ServerRejected(ServerErrorValue),
    /// A [`ScramClient`] method was called out of order, or after the exchange had ended.
    #[error("SCRAM step called out of order")]
    OutOfOrder,
    /// The system's random source failed while making a nonce.
    #[error("no randomness for a SCRAM nonce: {0}")]
    Random(getrandom::Error),
}

impl ScramError {
    /// The server-final message (`e=...`) that reports this error to the client, for a
    /// server that wants to send one in its failing CONNACK.
    ///
    /// Errors that only a client raises map to `other-error`.
    pub fn server_final(&self) -> Vec<u8> {
        let value = match self {
            Self::Malformed(_) | Self::TooLong => ServerErrorValue::InvalidEncoding,
            Self::ChannelBindingNotSupported => ServerErrorValue::ChannelBindingNotSupported,
            Self::ChannelBindingMismatch => ServerErrorValue::ChannelBindingsDontMatch,
            Self::ExtensionNotSupported => ServerErrorValue::ExtensionsNotSupported,
            Self::InvalidUsername(_) => ServerErrorValue::InvalidUsernameEncoding,
            Self::InvalidProof => ServerErrorValue::InvalidProof,
            _ => ServerErrorValue::OtherError,
        };
        format!("e={}", value.as_str()).into_bytes()
    }
}

/// The reason a server gave in a failing server-final message (`e=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerErrorValue {
    /// `invalid-encoding`
    InvalidEncoding,
    /// `extensions-not-supported`
    ExtensionsNotSupported,
    /// `invalid-proof`
    InvalidProof,
    /// `channel-bindings-dont-match`
    ChannelBindingsDontMatch,
    /// `server-does-support-channel-binding`
    ServerDoesSupportChannelBinding,
    /// `channel-binding-not-supported`
    ChannelBindingNotSupported,
    /// `unsupported-channel-binding-type`
    UnsupportedChannelBindingType,
    /// `unknown-user`
    UnknownUser,
    /// `invalid-username-encoding`
    InvalidUsernameEncoding,
    /// `no-resources`
    NoResources,
    /// `other-error`
    OtherError,
    /// A value this crate does not know; its text is not kept.
    Unrecognized,
}

impl ServerErrorValue {
    const ALL: [(Self, &'static str); 11] = [
        (Self::InvalidEncoding, "invalid-encoding"),
        (Self::ExtensionsNotSupported, "extensions-not-supported"),
        (Self::InvalidProof, "invalid-proof"),
        (
            Self::ChannelBindingsDontMatch,
            "channel-bindings-dont-match",
        ),
        (
            Self::ServerDoesSupportChannelBinding,
            "server-does-support-channel-binding",
        ),
        (
            Self::ChannelBindingNotSupported,
            "channel-binding-not-supported",
        ),
        (
            Self::UnsupportedChannelBindingType,
            "unsupported-channel-binding-type",
        ),
        (Self::UnknownUser, "unknown-user"),
        (Self::InvalidUsernameEncoding, "invalid-username-encoding"),
        (Self::NoResources, "no-resources"),
        (Self::OtherError, "other-error"),
    ];

    /// The value as it is written after `e=`; `"unrecognized"` for [`Self::Unrecognized`].
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(value, _)| *value == self)
            .map_or("unrecognized", |(_, text)| text)
    }

    fn parse(text: &str) -> Self {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == text)
            .map_or(Self::Unrecognized, |(value, _)| *value)
    }
}

impl fmt::Display for ServerErrorValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks the size of a peer's message and reads it as UTF-8.
fn message_text(data: &[u8]) -> Result<&str, ScramError> {
    if data.len() > MAX_MESSAGE_LEN {
        return Err(ScramError::TooLong);
    }
    std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// Splits `x=value` into its name and a non-empty value.
fn attribute(part: &str) -> Result<(u8, &str), ScramError> {
    let bytes = part.as_bytes();
    match (bytes.first(), bytes.get(1)) {
        (Some(&name), Some(b'=')) if name.is_ascii_alphabetic() && bytes.len() > 2 => {
            Ok((name, part.get(2..).unwrap_or_default()))
        }
        _ => Err(ScramError::Malformed(
            "attribute is not of the form x=value",
        )),
    }
}

/// The value of the attribute `name`, which `part` must be.
fn expect_attribute<'a>(
    part: Option<&'a str>,
    name: u8,
    what: &'static str,
) -> Result<&'a str, ScramError> {
    let part = part.ok_or(ScramError::Malformed(what))?;
    if part.starts_with("m=") {
        return Err(ScramError::ExtensionNotSupported);
    }
    match attribute(part)? {
        (found, value) if found == name => Ok(value),
        _ => Err(ScramError::Malformed(what)),
    }
}

/// Checks the optional extensions that follow the known attributes: each must be well formed
/// and none may be `m=`; they are otherwise ignored.
fn check_extensions<'a>(parts: impl Iterator<Item = &'a str>) -> Result<(), ScramError> {
    for part in parts {
        if attribute(part)?.0 == b'm' {
            return Err(ScramError::ExtensionNotSupported);
        }
    }
    Ok(())
}

/// Whether `nonce` is 1 to [`MAX_NONCE_LEN`] printable ASCII characters other than `,`.
fn valid_nonce(nonce: &str) -> bool {
    (1..=MAX_NONCE_LEN).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// A fresh random nonce part: printable, without commas.
fn random_nonce() -> Result<String, ScramError> {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(ScramError::Random)?;
    Ok(BASE64.encode(bytes))
}

/// Decodes base64 that must hold exactly 32 bytes.
fn decode_32(text: &str, what: &'static str) -> Result<[u8; 32], ScramError> {
    BASE64
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or(ScramError::Malformed(what))
}

/// Prepares a user name with SASLprep.
fn prepare_username(username: &str) -> Result<String, ScramError> {
    let prepared = stringprep::saslprep(username)
        .map_err(|_| ScramError::InvalidUsername("refused by SASLprep"))?;
    if prepared.is_empty() {
        return Err(ScramError::InvalidUsername("empty"));
    }
    Ok(prepared.into_owned())
}

/// Writes a user name as a SCRAM `saslname`: `=` as `=3D`, `,` as `=2C`.
fn escape_username(username: &str) -> String {
    let mut out = String::with_capacity(username.len());
    for c in username.chars() {
        match c {
            '=' => out.push_str("=3D"),
            ',' => out.push_str("=2C"),
            c => out.push(c),
        }
    }
    out
}

/// Reads a SCRAM `saslname`; any `=` other than `=3D` and `=2C` is an error.
fn unescape_username(saslname: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(saslname.len());
    let mut rest = saslname;
    while let Some(at) = rest.find('=') {
        let (plain, escape) = rest.split_at(at);
        out.push_str(plain);
        if let Some(after) = escape.strip_prefix("=3D") {
            out.push('=');
            rest = after;
        } else if let Some(after) = escape.strip_prefix("=2C") {
            out.push(',');
            rest = after;
        } else {
            return Err(ScramError::InvalidUsername("bad escape: only =3D and =2C"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The XOR of two 32-byte strings.
fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}

/// Where a [`ScramClient`] is in the exchange.
enum ClientState {
    /// client-first may have been sent; server-first is awaited.
    AwaitingServerFirst,
    /// client-final was sent; server-final must carry this signature.
    AwaitingServerFinal { server_signature: [u8; 32] },
    /// The server proved itself.
    Done,
    /// A step failed; the exchange is over.
    Failed,
}

/// The client side of one SCRAM-SHA-256 exchange.
///
/// Create one per authentication with [`ScramClient::new`], send
/// [`client_first`](Self::client_first) in CONNECT (or in AUTH 0x19 to re-authenticate), then
/// feed the server's two messages to [`handle_server_first`](Self::handle_server_first) and
/// [`handle_server_final`](Self::handle_server_final). The connection is authenticated only
/// when `handle_server_final` returns `Ok`: a server that accepts the client without sending
/// a valid server-final has not proven that it knows the credentials.
///
/// The password is kept (zeroed on drop) only until server-first arrives. `Debug` shows the
/// user name and nothing secret.
pub struct ScramClient {
    username: String,
    password: Zeroizing<Vec<u8>>,
    nonce: String,
    client_first_bare: String,
    state: ClientState,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ClientState::AwaitingServerFirst => "awaiting server-first",
            ClientState::AwaitingServerFinal { .. } => "awaiting server-final",
            ClientState::Done => "done",
            ClientState::Failed => "failed",
        };
        f.debug_struct("ScramClient")
            .field("username", &self.username)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Starts an exchange for `username` with `password`, with a random nonce.
    ///
    /// Fails with [`ScramError::InvalidUsername`] when SASLprep refuses the name or leaves
    /// nothing of it, or when the escaped name does not fit in [`MAX_MESSAGE_LEN`]; with
    /// [`ScramError::Random`] when the system has no randomness.
    pub fn new(username: &str, password: &[u8]) -> Result<Self, ScramError> {
        Self::with_nonce(username, password, &random_nonce()?)
    }

    /// Like [`new`](Self::new) with a chosen nonce, for known-answer tests only: a nonce that
    /// repeats lets a listener replay the exchange.
    #[doc(hidden)]
    pub fn with_nonce(username: &str, password: &[u8], nonce: &str) -> Result<Self, ScramError> {
        if !valid_nonce(nonce) {
            return Err(ScramError::Malformed("nonce"));
        }
        let username = prepare_username(username)?;
        let client_first_bare = format!("n={},r={nonce}", escape_username(&username));
        if GS2_HEADER.len() + client_first_bare.len() > MAX_MESSAGE_LEN {
            return Err(ScramError::InvalidUsername("too long"));
        }
        Ok(Self {
            username,
            password: prepare_password(password),
            nonce: nonce.to_owned(),
            client_first_bare,
            state: ClientState::AwaitingServerFirst,
        })
    }

    /// The user name as sent, after SASLprep and before escaping.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The client-first message, for the Authentication Data of CONNECT. Calling it again
    /// gives the same bytes.
    pub fn client_first(&mut self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare).into_bytes()
    }

    /// Reads server-first (from AUTH 0x18) and returns client-final, for the Authentication
    /// Data of the AUTH packet that answers it.
    ///
    /// This runs PBKDF2 with the server's iteration count, after checking that it lies in
    /// [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`], and that the server's nonce extends this
    /// client's. Any error ends the exchange.
    pub fn handle_server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ClientState::AwaitingServerFirst) {
            return Err(ScramError::OutOfOrder);
        }
        self.state = ClientState::Failed;
        let result = self.client_final(data);
        self.password.zeroize();
        let (client_final, server_signature) = result?;
        self.state = ClientState::AwaitingServerFinal { server_signature };
        Ok(client_final)
    }

    fn client_final(&self, data: &[u8]) -> Result<(Vec<u8>, [u8; 32]), ScramError> {
        let server_first = message_text(data)?;
        let mut parts = server_first.split(',');
        let first = parts.next();
        if let Some(value) = first.and_then(|part| part.strip_prefix("e=")) {
            return Err(ScramError::ServerRejected(ServerErrorValue::parse(value)));
        }
        let nonce = expect_attribute(first, b'r', "server-first: nonce (r=) expected")?;
        let salt = expect_attribute(parts.next(), b's', "server-first: salt (s=) expected")?;
        let iterations = expect_attribute(
            parts.next(),
            b'i',
            "server-first: iteration count (i=) expected",
        )?;
        check_extensions(parts)?;

        if !valid_nonce(nonce) {
            return Err(ScramError::Malformed("server-first: nonce"));
        }
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let salt = BASE64
            .decode(salt)
            .map_err(|_| ScramError::Malformed("server-first: salt is not base64"))?;
        if salt.is_empty() {
            return Err(ScramError::Malformed("server-first: empty salt"));
        }
        let iterations = parse_iterations(iterations)?;

        let salted = Zeroizing::new(salted_password(&self.password, &salt, iterations));
        let client_key = Zeroizing::new(hmac(&*salted, b"Client Key"));
        let stored_key = Zeroizing::new(<[u8; 32]>::from(Sha256::digest(*client_key)));
        let server_key = Zeroizing::new(hmac(&*salted, b"Server Key"));

        let channel_binding = BASE64.encode(GS2_HEADER);
        let without_proof = format!("c={channel_binding},r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = Zeroizing::new(hmac(&*stored_key, auth_message.as_bytes()));
        let proof = Zeroizing::new(xor(&client_key, &client_signature));
        let server_signature = hmac(&*server_key, auth_message.as_bytes());
        let client_final = format!("{without_proof},p={}", BASE64.encode(*proof));
        Ok((client_final.into_bytes(), server_signature))
    }

    /// Reads server-final (from CONNACK, or from AUTH 0x00 after re-authentication) and checks
    /// the server's signature in constant time.
    ///
    /// `Ok` means the server holds this user's credentials. A server-final with `e=` gives
    /// [`ScramError::ServerRejected`].
    pub fn handle_server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let ClientState::AwaitingServerFinal { server_signature } = self.state else {
            return Err(ScramError::OutOfOrder);
        };
        self.state = ClientState::Failed;
        let text = message_text(data)?;
        let mut parts = text.split(',');
        let first = parts.next();
        if let Some(value) = first.and_then(|part| part.strip_prefix("e=")) {
            return Err(ScramError::ServerRejected(ServerErrorValue::parse(value)));
        }
        let verifier = expect_attribute(
            first,
            b'v',
            "server-final: verifier (v=) or error (e=) expected",
        )?;
        check_extensions(parts)?;
        let verifier = decode_32(verifier, "server-final: verifier is not 32 bytes of base64")?;
        if !bool::from(verifier.ct_eq(&server_signature)) {
            return Err(ScramError::ServerSignatureMismatch);
        }
        self.state = ClientState::Done;
        Ok(())
    }

    /// Whether the server has proven itself: [`handle_server_final`](Self::handle_server_final)
    /// returned `Ok`.
    pub fn is_done(&self) -> bool {
        matches!(self.state, ClientState::Done)
    }
}

/// Reads an iteration count and checks it against the client's bounds.
fn parse_iterations(text: &str) -> Result<u32, ScramError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ScramError::Malformed(
            "server-first: iteration count is not a number",
        ));
    }
    let iterations = text.parse::<u32>().unwrap_or(u32::MAX);
    if iterations < MIN_ITERATIONS {
        Err(ScramError::IterationsTooLow(iterations))
    } else if iterations > MAX_ITERATIONS {
        Err(ScramError::IterationsTooHigh(iterations))
    } else {
        Ok(iterations)
    }
}

/// The server side of one SCRAM-SHA-256 exchange, between server-first and client-final.
///
/// [`start`](Self::start) reads client-first and gives server-first;
/// [`finish`](Self::finish) reads client-final and gives server-final. The server never runs
/// PBKDF2: it checks the proof against the stored `StoredKey` with HMAC and SHA-256.
///
/// `Debug` shows the user name only.
pub struct ScramServer {
    username: String,
    /// The GS2 header of client-first, which client-final's `c=` must repeat.
    gs2_header: String,
    /// The client's and the server's nonce parts together.
    nonce: String,
    client_first_bare: String,
    server_first: String,
    stored_key: Zeroizing<[u8; 32]>,
    server_key: Zeroizing<[u8; 32]>,
    /// False when the user is unknown and the keys are made up: the proof then always fails.
    known: bool,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Made-up credentials for an unknown user: stable for one name and key, different between
/// names, and unguessable without the key.
fn mock_credentials(username: &str, mock_key: &[u8; 32]) -> StoredCredentials {
    let derive = |label: &[u8]| {
        let mut data = Vec::with_capacity(label.len() + 1 + username.len());
        data.extend_from_slice(label);
        data.push(0);
        data.extend_from_slice(username.as_bytes());
        hmac(mock_key, &data)
    };
    let salt = derive(b"midge scram mock salt");
    StoredCredentials {
        iterations: DEFAULT_ITERATIONS,
        salt: salt.iter().take(SALT_LEN).copied().collect(),
        stored_key: derive(b"midge scram mock stored key"),
        server_key: derive(b"midge scram mock server key"),
    }
}

impl ScramServer {
    /// Reads client-first (from the Authentication Data of CONNECT, or of AUTH 0x19) and
    /// returns the exchange with server-first, for the Authentication Data of AUTH 0x18.
    ///
    /// `lookup` gets the user name after unescaping and SASLprep, and returns that user's
    /// stored credentials, or `None` when the user is unknown. For an unknown user the
    /// exchange goes on with a salt and keys derived from the name and `mock_key` (and
    /// [`DEFAULT_ITERATIONS`]), so server-first looks like a real user's and is the same on
    /// every attempt; [`finish`](Self::finish) then fails with [`ScramError::InvalidProof`],
    /// as for a wrong password. `mock_key` should be a random secret that the server keeps
    /// across restarts, otherwise an attacker can tell unknown users by their changing salt.
    ///
    /// Fails on messages above [`MAX_MESSAGE_LEN`] bytes, on channel binding (`p=`), on an
    /// authorization identity (`a=`), on `m=`, on bad user names and nonces, and when the
    /// system has no randomness. Such a client should be refused with CONNACK 0x87.
    pub fn start(
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<StoredCredentials>,
        mock_key: &[u8; 32],
    ) -> Result<(Self, Vec<u8>), ScramError> {
        // Read the message before asking for randomness, so garbage costs nothing.
        let first = parse_client_first(client_first)?;
        Self::start_parsed(first, lookup, mock_key, &random_nonce()?)
    }

    /// Like [`start`](Self::start) with a chosen server nonce part, for known-answer tests
    /// only: a nonce that repeats lets a listener replay the exchange.
    #[doc(hidden)]
    pub fn start_with_nonce(
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<StoredCredentials>,
        mock_key: &[u8; 32],
        server_nonce: &str,
    ) -> Result<(Self, Vec<u8>), ScramError> {
        let first = parse_client_first(client_first)?;
        Self::start_parsed(first, lookup, mock_key, server_nonce)
    }

    fn start_parsed(
        first: ClientFirst<'_>,
        lookup: impl FnOnce(&str) -> Option<StoredCredentials>,
        mock_key: &[u8; 32],
        server_nonce: &str,
    ) -> Result<(Self, Vec<u8>), ScramError> {
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        if !valid_nonce(server_nonce) || !valid_nonce(&nonce) {
            return Err(ScramError::Malformed("nonce"));
        }
        let (credentials, known) = match lookup(&first.username) {
            Some(credentials) => (credentials, true),
            None => (mock_credentials(&first.username, mock_key), false),
        };
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credentials.salt),
            credentials.iterations
        );
        let server = Self {
            username: first.username,
            gs2_header: first.gs2_header.to_owned(),
            nonce,
            client_first_bare: first.bare.to_owned(),
            server_first: server_first.clone(),
            stored_key: Zeroizing::new(credentials.stored_key),
            server_key: Zeroizing::new(credentials.server_key),
            known,
        };
        Ok((server, server_first.into_bytes()))
    }

    /// The user name the client authenticates as, after unescaping and SASLprep. It is
    /// proven only once [`finish`](Self::finish) returns `Ok`.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Reads client-final (from AUTH 0x18) and checks the client's proof in constant time.
    ///
    /// `Ok` holds server-final (`v=...`), for the Authentication Data of the CONNACK (or of
    /// AUTH 0x00 after re-authentication) that accepts the client. A wrong password and an
    /// unknown user both give [`ScramError::InvalidProof`].
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = message_text(client_final)?;
        let (without_proof, proof) = text
            .rsplit_once(',')
            .ok_or(ScramError::Malformed("client-final: proof (p=) expected"))?;
        let proof = expect_attribute(Some(proof), b'p', "client-final: proof (p=) expected")?;
        let mut parts = without_proof.split(',');
        let channel_binding = expect_attribute(
            parts.next(),
            b'c',
            "client-final: channel binding (c=) expected",
        )?;
        let nonce = expect_attribute(parts.next(), b'r', "client-final: nonce (r=) expected")?;
        check_extensions(parts)?;

        let channel_binding = BASE64
            .decode(channel_binding)
            .map_err(|_| ScramError::Malformed("client-final: channel binding is not base64"))?;
        if channel_binding != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if nonce != self.nonce {
            return Err(ScramError::NonceMismatch);
        }
        let proof = Zeroizing::new(decode_32(
            proof,
            "client-final: proof is not 32 bytes of base64",
        )?);

        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let client_signature = Zeroizing::new(hmac(&*self.stored_key, auth_message.as_bytes()));
        let client_key = Zeroizing::new(xor(&proof, &client_signature));
        let computed: [u8; 32] = Sha256::digest(*client_key).into();
        let valid = computed.ct_eq(&self.stored_key[..]) & Choice::from(u8::from(self.known));
        if !bool::from(valid) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&*self.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

/// The parts of a client-first message the server needs.
struct ClientFirst<'a> {
    gs2_header: &'a str,
    bare: &'a str,
    username: String,
    client_nonce: &'a str,
}

fn parse_client_first(data: &[u8]) -> Result<ClientFirst<'_>, ScramError> {
    let text = message_text(data)?;
    let mut header = text.splitn(3, ',');
    let flag = header.next().unwrap_or_default();
    let authzid = header.next().ok_or(ScramError::Malformed("GS2 header"))?;
    let bare = header.next().ok_or(ScramError::Malformed("GS2 header"))?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(ScramError::ChannelBindingNotSupported),
        _ => return Err(ScramError::Malformed("GS2 header: channel binding flag")),
    }
    match authzid {
        "" => {}
        _ if authzid.starts_with("a=") => return Err(ScramError::AuthzidNotSupported),
        _ => return Err(ScramError::Malformed("GS2 header: authorization identity")),
    }
    let gs2_header = text
        .get(..flag.len() + authzid.len() + 2)
        .ok_or(ScramError::Malformed("GS2 header"))?;

    let mut parts = bare.split(',');
    let username = expect_attribute(parts.next(), b'n', "client-first: user name (n=) expected")?;
    let client_nonce = expect_attribute(parts.next(), b'r', "client-first: nonce (r=) expected")?;
    check_extensions(parts)?;
    if !valid_nonce(client_nonce) {
        return Err(ScramError::Malformed("client-first: nonce"));
    }
    let username = prepare_username(&unescape_username(username)?)?;
    Ok(ClientFirst {
        gs2_header,
        bare,
        username,
        client_nonce,
    })
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
        // The server side of the RFC's exchange, run on the derived credentials alone, must
        // accept the RFC's proof and answer with the RFC's server signature.
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let creds = StoredCredentials::derive(b"pencil", &salt, 4096);
        let (server, server_first) = ScramServer::start_with_nonce(
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            |name| (name == "user").then(|| creds.clone()),
            &[0; 32],
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            server_first,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let server_final = server
            .finish(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn usernames_escape_and_unescape() {
        assert_eq!(escape_username("a=b,c"), "a=3Db=2Cc");
        assert_eq!(unescape_username("a=3Db=2Cc").unwrap(), "a=b,c");
        assert_eq!(unescape_username("=3D=3D").unwrap(), "==");
        for bad in ["a=", "a=3", "a=3d", "a=2c", "=41", "a==3D"] {
            assert!(
                matches!(unescape_username(bad), Err(ScramError::InvalidUsername(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn attributes_need_a_letter_an_equals_sign_and_a_value() {
        assert_eq!(attribute("r=abc").unwrap(), (b'r', "abc"));
        assert_eq!(attribute("x==").unwrap(), (b'x', "="));
        for bad in ["", "r", "r=", "=abc", "1=abc", "rr=abc", "é=abc"] {
            assert!(
                matches!(attribute(bad), Err(ScramError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn nonces_are_bounded_printable_ascii_without_commas() {
        assert!(valid_nonce("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"));
        assert!(valid_nonce(&"a".repeat(MAX_NONCE_LEN)));
        assert!(!valid_nonce(&"a".repeat(MAX_NONCE_LEN + 1)));
        for bad in ["", "a b", "a,b", "a\u{7f}", "é"] {
            assert!(!valid_nonce(bad), "{bad:?}");
        }
        let nonce = random_nonce().unwrap();
        assert!(valid_nonce(&nonce), "{nonce}");
        assert_ne!(nonce, random_nonce().unwrap());
    }

    #[test]
    fn passwords_are_prepared_when_saslprep_accepts_them() {
        // Soft hyphen maps to nothing, a no-break space to a space, and NFKC folds the
        // ligature: all three give the same bytes as their plain forms.
        assert_eq!(*prepare_password("pen\u{AD}cil".as_bytes()), b"pencil");
        assert_eq!(*prepare_password("a\u{A0}b".as_bytes()), b"a b");
        assert_eq!(*prepare_password("\u{FB01}sh".as_bytes()), b"fish");
        // Not UTF-8, a control character, or emptied by SASLprep: the bytes as they are.
        assert_eq!(*prepare_password(b"\xff\xfe"), b"\xff\xfe");
        assert_eq!(*prepare_password(b"tab\there"), b"tab\there");
        assert_eq!(*prepare_password("\u{AD}".as_bytes()), "\u{AD}".as_bytes());
        let creds = StoredCredentials::derive("pen\u{AD}cil".as_bytes(), b"salt", 4096);
        assert!(creds.verify_password(b"pencil"));
    }

    #[test]
    fn iteration_counts_outside_the_bounds_are_refused() {
        assert_eq!(parse_iterations("4096"), Ok(4096));
        assert_eq!(parse_iterations("1000000"), Ok(1_000_000));
        assert_eq!(
            parse_iterations("4095"),
            Err(ScramError::IterationsTooLow(4095))
        );
        assert_eq!(parse_iterations("0"), Err(ScramError::IterationsTooLow(0)));
        assert_eq!(
            parse_iterations("1000001"),
            Err(ScramError::IterationsTooHigh(1_000_001))
        );
        assert_eq!(
            parse_iterations("99999999999999999999"),
            Err(ScramError::IterationsTooHigh(u32::MAX))
        );
        for bad in ["+4096", "-1", "4096 ", "0x1000"] {
            assert!(
                matches!(parse_iterations(bad), Err(ScramError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn server_error_values_round_trip() {
        for (value, text) in ServerErrorValue::ALL {
            assert_eq!(ServerErrorValue::parse(text), value);
            assert_eq!(value.to_string(), text);
        }
        assert_eq!(
            ServerErrorValue::parse("no-such-error"),
            ServerErrorValue::Unrecognized
        );
        assert_eq!(ScramError::InvalidProof.server_final(), b"e=invalid-proof");
        assert_eq!(
            ScramError::ChannelBindingNotSupported.server_final(),
            b"e=channel-binding-not-supported"
        );
        assert_eq!(ScramError::OutOfOrder.server_final(), b"e=other-error");
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
