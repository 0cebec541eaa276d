//! Test certificates, made with rcgen at test time, and loopback helpers.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A directory under `std::env::temp_dir()`, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "midge-transport-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` in the directory, returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate and its key (PEM), with subject CN `cn`, names `sans`, for `usage`.
    pub fn issue(
        &self,
        cn: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
        expired: bool,
    ) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn server(&self, cn: &str) -> Leaf {
        self.issue(
            cn,
            &["localhost", "127.0.0.1", "::1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
        )
    }

    pub fn client(&self, cn: &str) -> Leaf {
        self.issue(cn, &[], ExtendedKeyUsagePurpose::ClientAuth, false)
    }
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Everything the TLS tests need, written to a temporary directory.
pub struct Pki {
    pub dir: TempDir,
    pub ca: Ca,
    pub other_ca: Ca,
    pub ca_pem: PathBuf,
    pub other_ca_pem: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
    pub foreign_cert: PathBuf,
    pub foreign_key: PathBuf,
    pub foreign_server_cert: PathBuf,
    pub foreign_server_key: PathBuf,
}

pub const CLIENT_CN: &str = "client-7";

impl Pki {
    pub fn new() -> Self {
        let dir = TempDir::new("pki");
        let ca = Ca::new("midge test CA");
        let other_ca = Ca::new("another CA");
        let server = ca.server("midge test server");
        let client = ca.client(CLIENT_CN);
        let expired = ca.issue(
            "expired-client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            true,
        );
        let foreign = other_ca.client("foreign-client");
        let foreign_server = other_ca.server("foreign server");
        Self {
            ca_pem: dir.write("ca.pem", &ca.cert_pem),
            other_ca_pem: dir.write("other-ca.pem", &other_ca.cert_pem),
            server_cert: dir.write("server.pem", &server.cert_pem),
            server_key: dir.write("server.key", &server.key_pem),
            client_cert: dir.write("client.pem", &client.cert_pem),
            client_key: dir.write("client.key", &client.key_pem),
            expired_cert: dir.write("expired.pem", &expired.cert_pem),
            expired_key: dir.write("expired.key", &expired.key_pem),
            foreign_cert: dir.write("foreign.pem", &foreign.cert_pem),
            foreign_key: dir.write("foreign.key", &foreign.key_pem),
            foreign_server_cert: dir.write("foreign-server.pem", &foreign_server.cert_pem),
            foreign_server_key: dir.write("foreign-server.key", &foreign_server.key_pem),
            dir,
            ca,
            other_ca,
        }
    }
}

/// A listener on a free loopback port and a client connected to it, both sides accepted.
pub async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    (server.unwrap().0, client.unwrap())
}
