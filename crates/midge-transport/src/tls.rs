//! TLS with rustls: server configurations loaded from PEM files (and reloaded while running),
//! and client configurations.
//!
//! Only TLS 1.2 and 1.3 are offered, with the ring crypto provider.

use std::path::PathBuf;
use std::sync::Arc;

pub use rustls;
pub use tokio_rustls;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A PEM file holds nothing of what it should (no certificate, no private key).
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the configuration (a key that does not match its certificate, say).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server's certificate files: what a listener's `[listener.tls]` table names.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerTlsFiles {
    /// The server's certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates are verified against. Without it, no
    /// client certificate is asked for.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a valid certificate (only with `client_ca`). When false, a
    /// certificate is asked for but optional; one that is sent must still be valid.
    pub require_client_cert: bool,
}

impl ServerTlsFiles {
    /// Files `cert` and `key`, no client certificates.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            require_client_cert: false,
        }
    }

    /// Reads the files and builds a rustls server configuration: TLS 1.2 and 1.3, the ALPN
    /// protocols `alpn` (for MQTT, `[b"mqtt"]`; a client that offers ALPN but none of these is
    /// refused, one that offers none is accepted), and client-certificate verification when
    /// `client_ca` is set.
    pub fn load(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let _ = alpn;
        todo!()
    }
}

/// A TLS acceptor whose configuration can be replaced while it serves: handshakes begun after
/// [`ReloadableAcceptor::reload`] use the new files, connections already open keep theirs.
#[derive(Debug)]
pub struct ReloadableAcceptor {
    files: ServerTlsFiles,
    alpn: Vec<Vec<u8>>,
    config: std::sync::RwLock<Arc<rustls::ServerConfig>>,
}

impl ReloadableAcceptor {
    /// Loads `files` ([`ServerTlsFiles::load`]).
    pub fn new(files: ServerTlsFiles, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let config = files.load(alpn)?;
        Ok(Self {
            files,
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            config: std::sync::RwLock::new(config),
        })
    }

    /// Reads the files again. On error the configuration in use stays, and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let _ = (&self.files, &self.alpn);
        todo!()
    }

    /// An acceptor with the configuration in use now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        todo!()
    }
}

/// The subject Common Name of the client's certificate (the leaf of the chain it presented),
/// if it sent one and it has a CN: what `use_identity_as_username` makes the user name.
pub fn peer_common_name(connection: &rustls::ServerConnection) -> Option<String> {
    let _ = connection;
    todo!()
}

/// Where a client finds the CA certificates it trusts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Roots {
    /// The operating system's store (`rustls-native-certs`).
    #[default]
    System,
    /// The certificates in one PEM file (mosquitto's `--cafile`).
    File(PathBuf),
    /// The PEM certificates in every file of a directory (mosquitto's `--capath`).
    Dir(PathBuf),
}

/// TLS protocol versions a client offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsVersions {
    /// TLS 1.2 and 1.3.
    #[default]
    Both,
    /// TLS 1.2 only (mosquitto's `--tls-version tlsv1.2`).
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// A client's TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientTlsOptions {
    /// The CA certificates the server's certificate must chain to.
    pub roots: Roots,
    /// A client certificate chain and its key (PEM files), for servers that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// ALPN protocols offered (none by default; `mqtt` for brokers that want it).
    pub alpn: Vec<Vec<u8>>,
    /// Versions offered.
    pub versions: TlsVersions,
    /// Accept any server certificate, for any name. For tests only: it turns off what TLS is
    /// for, and anyone on the path can read and change the traffic.
    pub insecure_skip_verify_for_testing: bool,
}

impl ClientTlsOptions {
    /// Reads the files and builds a rustls client configuration.
    pub fn load(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        todo!()
    }
}
