//! A throwaway public-key infrastructure for TLS tests, generated at test time: a CA, a server
//! certificate for `localhost` and `127.0.0.1`, client certificates (valid, expired, and one
//! from another CA), all written as PEM files into a fresh directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// The Common Name of [`TestPki::client_cert`].
pub const CLIENT_CN: &str = "device-1";

/// PEM files of a test PKI. See the [module docs](self).
#[derive(Debug)]
pub struct TestPki {
    /// The directory that holds them all.
    pub dir: PathBuf,
    /// The CA's certificate: what clients trust, and what client certificates chain to.
    pub ca: PathBuf,
    /// The server's certificate (for `localhost`, `127.0.0.1` and `::1`), signed by the CA.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate with CN [`CLIENT_CN`], signed by the CA.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A client certificate signed by the CA that expired in 2020.
    pub expired_cert: PathBuf,
    /// Its key.
    pub expired_key: PathBuf,
    /// A second CA, unrelated to the first.
    pub other_ca: PathBuf,
    /// A client certificate (CN `intruder`) signed by the other CA.
    pub other_cert: PathBuf,
    /// Its key.
    pub other_key: PathBuf,
}

impl TestPki {
    /// Generates a fresh PKI into a new directory under the system's temporary directory.
    ///
    /// # Panics
    ///
    /// When a key or certificate cannot be generated or written: a broken test environment.
    pub fn generate() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "midge-pki-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        let (ca_params, ca_key) = ca("midge test CA");
        let ca_issuer = Issuer::new(ca_params.clone(), ca_key);
        let (other_params, other_key) = ca("another CA");
        let other_issuer = Issuer::new(other_params.clone(), other_key);

        let write = |name: &str, text: String| -> PathBuf {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write a PEM file");
            path
        };
        let ca_path = write(
            "ca.pem",
            ca_params
                .self_signed(ca_issuer_key(&ca_issuer))
                .expect("CA")
                .pem(),
        );
        let other_ca = write(
            "other-ca.pem",
            other_params
                .self_signed(ca_issuer_key(&other_issuer))
                .expect("CA")
                .pem(),
        );

        let leaf = |cn: &str,
                    names: Vec<String>,
                    client: bool,
                    expired: bool,
                    issuer: &Issuer<'_, KeyPair>| {
            let mut params = CertificateParams::new(names).expect("names");
            params.distinguished_name = dn(cn);
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![if client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            if expired {
                params.not_before = date_time_ymd(2019, 1, 1);
                params.not_after = date_time_ymd(2020, 1, 1);
            }
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        let (cert, key) = leaf("localhost", names, false, false, &ca_issuer);
        let server_cert = write("server.pem", cert);
        let server_key = write("server.key", key);
        let (cert, key) = leaf(CLIENT_CN, Vec::new(), true, false, &ca_issuer);
        let client_cert = write("client.pem", cert);
        let client_key = write("client.key", key);
        let (cert, key) = leaf("expired-device", Vec::new(), true, true, &ca_issuer);
        let expired_cert = write("expired.pem", cert);
        let expired_key = write("expired.key", key);
        let (cert, key) = leaf("intruder", Vec::new(), true, false, &other_issuer);
        let other_cert = write("other.pem", cert);
        let other_key = write("other.key", key);
        Self {
            dir,
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
            expired_cert,
            expired_key,
            other_ca,
            other_cert,
            other_key,
        }
    }

    /// A path in the PKI's directory, for tests that write files of their own there.
    pub fn path(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(cn: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::new()).expect("no names");
    params.distinguished_name = dn(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params, KeyPair::generate().expect("key"))
}

fn ca_issuer_key<'a>(issuer: &'a Issuer<'_, KeyPair>) -> &'a KeyPair {
    issuer.key()
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_readable_pem_files() {
        let pki = TestPki::generate();
        for path in [
            &pki.ca,
            &pki.server_cert,
            &pki.client_cert,
            &pki.expired_cert,
            &pki.other_cert,
        ] {
            let text = std::fs::read_to_string(path).expect("read");
            assert!(
                text.starts_with("-----BEGIN CERTIFICATE-----"),
                "{}",
                path.display()
            );
        }
        let key = std::fs::read_to_string(&pki.server_key).expect("read");
        assert!(key.contains("PRIVATE KEY"));
        let dir = pki.dir.clone();
        drop(pki);
        assert!(!dir.exists());
    }
}
