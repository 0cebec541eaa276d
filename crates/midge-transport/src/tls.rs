//! TLS with rustls: server configurations loaded from PEM files (and reloaded while running),
//! and client configurations.
//!
//! Only TLS 1.2 and 1.3 are offered, with the ring crypto provider. Every configuration is
//! built with that provider explicitly, so no process-wide default provider has to be
//! installed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, SupportedProtocolVersion};

pub use rustls;
pub use tokio_rustls;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file (or directory).
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A PEM file holds nothing of what it should (no certificate, no private key), or what it
    /// holds is not valid.
    #[error("{path}: {what}")]
    Pem {
        /// The file (or directory, for [`Roots::Dir`]).
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The private key does not belong to the certificate (the leaf of the chain).
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// `require_client_cert` is set without `client_ca`: there is nothing to verify client
    /// certificates against.
    #[error("client certificates are required (require_client_cert) but no client_ca is given to verify them against")]
    ClientCertWithoutCa,
    /// The server-certificate verifier could not be built from the CA certificates
    /// (`verify_hostname` off).
    #[error("CA certificates to verify the server against: {0}")]
    ServerVerifier(rustls::client::VerifierBuilderError),
    /// The client-certificate verifier could not be built from the CA certificates.
    #[error("client CA certificates in {path}: {source}")]
    ClientVerifier {
        /// The `client_ca` file.
        path: PathBuf,
        /// The error.
        source: rustls::server::VerifierBuilderError,
    },
    /// The operating system's certificate store yielded no usable CA certificate.
    #[error("no CA certificate found in the system's certificate store{0}")]
    NoSystemRoots(String),
    /// A host name that is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring provider, as every configuration of this module uses it.
///
/// rustls 0.23.48 deprecates `ring::default_provider` because ring has no post-quantum key
/// exchange; the alternative, aws-lc-rs, needs cmake to build, which this workspace avoids.
/// Classical X25519/P-256/P-384 key exchange is what the MQTT peers in use offer anyway.
///
/// Key exchange prefers X25519, then P-256, then P-384. ring's default list puts P-384 first,
/// and a client offers its first group in its first flight: with P-384 a full handshake costs
/// each side about ten times the CPU of X25519, most of it in P-384 arithmetic. A server keeps
/// the client's choice, so this order is what our clients offer, and what a server falls back
/// to when a client's offer does not fit.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    Arc::new(provider)
}

/// TLS 1.3 and 1.2, the versions a server offers.
static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
static ONLY_12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
static ONLY_13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// All certificates of a PEM file, in order; an error if there is none or one is malformed.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("malformed PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no certificate (no PEM block \"BEGIN CERTIFICATE\")".into(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key (no PEM block \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")".into()
            }
            e => format!("malformed PEM: {e}"),
        },
    })
}

/// A root store with every certificate of `path`; an error if one is not a valid CA
/// certificate.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in load_certs(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("certificate {}: {e}", i + 1),
        })?;
    }
    Ok(roots)
}

/// A certified key from the files, with a key that does not match its certificate reported
/// as [`TlsError::KeyMismatch`].
fn map_key_mismatch(e: rustls::Error, cert: &Path, key: &Path) -> TlsError {
    match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            }
        }
        e => TlsError::Rustls(e),
    }
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
    /// Refuse clients without a valid certificate (only with `client_ca`: without it,
    /// [`ServerTlsFiles::load`] fails with [`TlsError::ClientCertWithoutCa`]). When false, a
    /// certificate is asked for but optional; one that is sent must still be valid.
    pub require_client_cert: bool,
    /// Certificates for particular server names: a client that asks for one of these names
    /// (SNI) gets its certificate; any other client gets `cert`.
    pub sni: Vec<SniCertificate>,
}

/// A certificate served to clients that ask for `server_name` (SNI).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SniCertificate {
    /// The DNS name, matched without regard to case.
    pub server_name: String,
    /// Its certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl SniCertificate {
    /// Certificate `cert` with key `key` for `server_name`.
    pub fn new(
        server_name: impl Into<String>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        Self {
            server_name: server_name.into(),
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// Picks the certificate by the name the client asked for.
#[derive(Debug)]
struct SniResolver {
    by_name: std::collections::HashMap<String, Arc<rustls::sign::CertifiedKey>>,
    default: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for SniResolver {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let named = hello
            .server_name()
            .and_then(|name| self.by_name.get(&name.to_ascii_lowercase()));
        Some(named.unwrap_or(&self.default).clone())
    }
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(
    provider: &CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let certs = load_certs(cert)?;
    let signing = provider
        .key_provider
        .load_private_key(load_key(key)?)
        .map_err(TlsError::Rustls)?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| map_key_mismatch(e, cert, key))?;
    Ok(Arc::new(certified))
}

impl ServerTlsFiles {
    /// Files `cert` and `key`, no client certificates.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            require_client_cert: false,
            sni: Vec::new(),
        }
    }

    /// Verifies client certificates against the CA certificates in `client_ca`; `required`
    /// refuses clients that send none.
    #[must_use]
    pub fn with_client_ca(mut self, client_ca: impl Into<PathBuf>, required: bool) -> Self {
        self.client_ca = Some(client_ca.into());
        self.require_client_cert = required;
        self
    }

    /// Reads the files and builds a rustls server configuration: TLS 1.2 and 1.3, the ALPN
    /// protocols `alpn` (for MQTT, `[b"mqtt"]`; a client that offers ALPN but none of these is
    /// refused, one that offers none is accepted), and client-certificate verification when
    /// `client_ca` is set.
    pub fn load(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(BOTH)?;
        let builder = match &self.client_ca {
            None if self.require_client_cert => return Err(TlsError::ClientCertWithoutCa),
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = Arc::new(load_roots(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
                let verifier = if self.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|source| TlsError::ClientVerifier {
                        path: ca.clone(),
                        source,
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let default = certified_key(&provider, &self.cert, &self.key)?;
        let mut by_name = std::collections::HashMap::new();
        for named in &self.sni {
            let certified = certified_key(&provider, &named.cert, &named.key)?;
            by_name.insert(named.server_name.to_ascii_lowercase(), certified);
        }
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver { by_name, default }));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// A TLS acceptor whose configuration can be replaced while it serves: handshakes begun after
/// [`ReloadableAcceptor::reload`] use the new files, connections already open keep theirs.
#[derive(Debug)]
pub struct ReloadableAcceptor {
    files: ServerTlsFiles,
    alpn: Vec<Vec<u8>>,
    config: RwLock<Arc<rustls::ServerConfig>>,
}

impl ReloadableAcceptor {
    /// Loads `files` ([`ServerTlsFiles::load`]).
    pub fn new(files: ServerTlsFiles, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let config = files.load(alpn)?;
        Ok(Self {
            files,
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            config: RwLock::new(config),
        })
    }

    /// The files this acceptor loads.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }

    /// Reads the files again. On error the configuration in use stays, and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let alpn: Vec<&[u8]> = self.alpn.iter().map(Vec::as_slice).collect();
        let config = self.files.load(&alpn)?;
        // A panic while the lock was held cannot leave the Arc half-written: take it anyway.
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// The configuration in use now.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// An acceptor with the configuration in use now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config())
    }
}

/// The subject Common Name of the client's certificate (the leaf of the chain it presented),
/// if it sent one and it has a CN: what `use_identity_as_username` makes the user name.
///
/// With several CNs, the first; a CN that is not a string type (or not valid UTF-8) is none.
pub fn peer_common_name(connection: &rustls::ServerConnection) -> Option<String> {
    let leaf = connection.peer_certificates()?.first()?;
    common_name(leaf)
}

/// The subject Common Name of a DER certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The name a client verifies the server's certificate against: an IP address (`127.0.0.1`,
/// `::1`, also in brackets `[::1]` as in URLs) or a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
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
    /// The PEM certificates in every file of a directory (mosquitto's `--capath`). Files that
    /// hold no PEM certificate are skipped; a directory without any is an error.
    Dir(PathBuf),
}

impl Roots {
    fn load(&self) -> Result<RootCertStore, TlsError> {
        match self {
            Self::System => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = if found.errors.is_empty() {
                        String::new()
                    } else {
                        let errors: Vec<String> =
                            found.errors.iter().map(ToString::to_string).collect();
                        format!(": {}", errors.join("; "))
                    };
                    return Err(TlsError::NoSystemRoots(why));
                }
                Ok(roots)
            }
            Self::File(path) => load_roots(path),
            Self::Dir(dir) => {
                let entries = std::fs::read_dir(dir).map_err(|source| TlsError::Read {
                    path: dir.clone(),
                    source,
                })?;
                let mut roots = RootCertStore::empty();
                for entry in entries {
                    let path = entry
                        .map_err(|source| TlsError::Read {
                            path: dir.clone(),
                            source,
                        })?
                        .path();
                    if !path.is_file() {
                        continue;
                    }
                    // Not a certificate file (a key, a CRL, a README): skipped.
                    let Ok(pem) = std::fs::read(&path) else {
                        continue;
                    };
                    let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
                    let (_added, ignored) = roots.add_parsable_certificates(certs);
                    if ignored > 0 {
                        tracing::debug!(
                            "{}: {ignored} certificate(s) skipped as not valid CA certificates",
                            path.display()
                        );
                    }
                }
                if roots.is_empty() {
                    return Err(TlsError::Pem {
                        path: dir.clone(),
                        what: "no file of this directory holds a PEM CA certificate".into(),
                    });
                }
                Ok(roots)
            }
        }
    }
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

impl TlsVersions {
    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        match self {
            Self::Both => BOTH,
            Self::Tls12 => ONLY_12,
            Self::Tls13 => ONLY_13,
        }
    }
}

/// A client's TLS settings.
///
/// The server's certificate is verified by default: it must chain to one of `roots`, be
/// valid now, and be issued for the host name (or IP address) connected to.
/// `verify_hostname: false` (mosquitto's `--insecure`) drops only the last check;
/// `insecure_skip_verify_for_testing` drops them all.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Check that the server's certificate is issued for the host name (or IP address)
    /// connected to. Default true. When false, a certificate that chains to `roots` and is
    /// valid now is accepted whatever names it holds, as mosquitto's `--insecure` does: any
    /// holder of a certificate from those CAs can then pose as the server, so use it only
    /// with a private CA, to reach a server by a name its certificate lacks.
    pub verify_hostname: bool,
    /// Accept any server certificate, for any name. For tests only: it turns off what TLS is
    /// for, and anyone on the path can read and change the traffic.
    pub insecure_skip_verify_for_testing: bool,
}

impl Default for ClientTlsOptions {
    /// The system's CA certificates, no client certificate, no ALPN, TLS 1.2 and 1.3, full
    /// verification.
    fn default() -> Self {
        Self {
            roots: Roots::default(),
            identity: None,
            alpn: Vec::new(),
            versions: TlsVersions::default(),
            verify_hostname: true,
            insecure_skip_verify_for_testing: false,
        }
    }
}

impl ClientTlsOptions {
    /// Options that trust the CA certificates in `roots`, and nothing else set.
    pub fn new(roots: Roots) -> Self {
        Self {
            roots,
            ..Self::default()
        }
    }

    /// Reads the files and builds a rustls client configuration.
    ///
    /// With `insecure_skip_verify_for_testing`, `roots` is not read (and `verify_hostname`
    /// has no effect).
    pub fn load(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(self.versions.versions())?;
        let builder = if self.insecure_skip_verify_for_testing {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(danger::AcceptAnyServerCert(provider)))
        } else if !self.verify_hostname {
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(self.roots.load()?),
                provider,
            )
            .build()
            .map_err(TlsError::ServerVerifier)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(danger::AnyName(verifier)))
        } else {
            builder.with_root_certificates(self.roots.load()?)
        };
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| map_key_mismatch(e, cert, key))?,
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

mod danger {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

    /// Verifies the server's certificate as `.0` does, except for its names: a certificate
    /// that is valid in every other way is accepted for any server name.
    #[derive(Debug)]
    pub(super) struct AnyName(pub(super) Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for AnyName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            // `WebPkiServerVerifier` checks the chain, validity and revocation first and the
            // name last: a name error means that everything else passed.
            match self.0.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    /// Accepts every server certificate, for every name, but still checks that the handshake
    /// is signed by the key of the certificate presented (so the peer holds that key).
    #[derive(Debug)]
    pub(super) struct AcceptAnyServerCert(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyServerCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
