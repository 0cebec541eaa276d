//! TLS over loopback with certificates made at test time.
#![cfg(feature = "tls")]
#![allow(missing_docs)]

mod common;

use std::sync::Arc;

use common::{tcp_pair, Pki, CLIENT_CN};
use midge_transport::tls::{
    peer_common_name, rustls, server_name, tokio_rustls, ClientTlsOptions, ReloadableAcceptor,
    Roots, ServerTlsFiles, TlsError, TlsVersions,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type ServerStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
type ClientStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Runs both handshakes over loopback; then, if both succeeded, moves a few bytes each way,
/// so that a failure the server only notices after the client's handshake (TLS 1.3 client
/// certificates) shows up too.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    host: &str,
) -> (std::io::Result<ServerStream>, std::io::Result<ClientStream>) {
    let (tcp_server, tcp_client) = tcp_pair().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = server_name(host).unwrap();
    let (mut s, mut c) = tokio::join!(
        acceptor.accept(tcp_server),
        connector.connect(name, tcp_client)
    );
    if let (Ok(server), Ok(client)) = (&mut s, &mut c) {
        let server_side = async {
            let mut buf = [0; 4];
            server.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"ping");
            server.write_all(b"pong").await?;
            server.flush().await
        };
        let client_side = async {
            client.write_all(b"ping").await?;
            client.flush().await?;
            let mut buf = [0; 4];
            client.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"pong");
            Ok::<_, std::io::Error>(())
        };
        let (rs, rc) = tokio::join!(server_side, client_side);
        if let Err(e) = rs {
            s = Err(e);
        }
        if let Err(e) = rc {
            c = Err(e);
        }
    } else if let (Err(_), Ok(client)) = (&s, &mut c) {
        // TLS 1.3: the client's handshake is over before the server has checked the client's
        // certificate; the server's alert arrives with the first read.
        let mut buf = [0; 1];
        c = match client.read(&mut buf).await {
            Ok(0) => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            )),
            Ok(_) => panic!("data from a server whose handshake failed"),
            Err(e) => Err(e),
        };
    }
    (s, c)
}

fn client_trusting(pki: &Pki) -> ClientTlsOptions {
    ClientTlsOptions::new(Roots::File(pki.ca_pem.clone()))
}

#[tokio::test]
async fn handshake_without_client_certificate() {
    let pki = Pki::new();
    let server = ServerTlsFiles::new(&pki.server_cert, &pki.server_key)
        .load(&[b"mqtt"])
        .unwrap();
    let client = client_trusting(&pki).load().unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let (s, c) = handshake(server.clone(), client.clone(), host).await;
        let s = s.unwrap();
        c.unwrap();
        assert_eq!(peer_common_name(s.get_ref().1), None);
    }
}

#[tokio::test]
async fn handshake_with_required_client_certificate_gives_its_common_name() {
    let pki = Pki::new();
    let server = ServerTlsFiles::new(&pki.server_cert, &pki.server_key)
        .with_client_ca(&pki.ca_pem, true)
        .load(&[b"mqtt"])
        .unwrap();
    let mut client = client_trusting(&pki);
    client.identity = Some((pki.client_cert.clone(), pki.client_key.clone()));
    let (s, c) = handshake(server, client.load().unwrap(), "localhost").await;
    c.unwrap();
    let s = s.unwrap();
    assert_eq!(peer_common_name(s.get_ref().1).as_deref(), Some(CLIENT_CN));
}

#[tokio::test]
async fn optional_client_certificate_may_be_absent_or_present() {
    let pki = Pki::new();
    let server = ServerTlsFiles::new(&pki.server_cert, &pki.server_key)
        .with_client_ca(&pki.ca_pem, false)
        .load(&[])
        .unwrap();
    let (s, c) = handshake(
        server.clone(),
        client_trusting(&pki).load().unwrap(),
        "localhost",
    )
    .await;
    c.unwrap();
    assert_eq!(peer_common_name(s.unwrap().get_ref().1), None);

    let mut client = client_trusting(&pki);
    client.identity = Some((pki.client_cert.clone(), pki.client_key.clone()));
    let (s, c) = handshake(server.clone(), client.load().unwrap(), "localhost").await;
    c.unwrap();
    assert_eq!(
        peer_common_name(s.unwrap().get_ref().1).as_deref(),
        Some(CLIENT_CN)
    );

    // Optional, but one that is sent must still be valid.
    let mut client = client_trusting(&pki);
    client.identity = Some((pki.foreign_cert.clone(), pki.foreign_key.clone()));
    let (s, c) = handshake(server, client.load().unwrap(), "localhost").await;
    assert!(s.is_err(), "a certificate from another CA is refused");
    assert!(c.is_err());
}

async fn refused_client_identity(identity: Option<(&std::path::Path, &std::path::Path)>) -> String {
    let pki = Pki::new();
    let server = ServerTlsFiles::new(&pki.server_cert, &pki.server_key)
        .with_client_ca(&pki.ca_pem, true)
        .load(&[])
        .unwrap();
    let mut client = client_trusting(&pki);
    client.identity = identity.map(|(c, k)| {
        // Resolve against this test's own PKI by file name.
        (pki.dir.path().join(c), pki.dir.path().join(k))
    });
    let (s, c) = handshake(server, client.load().unwrap(), "localhost").await;
    let client_err = c.expect_err("client side must fail too").to_string();
    let server_err = s.expect_err("server must refuse").to_string();
    eprintln!("server: {server_err}\nclient: {client_err}");
    assert!(
        client_err.contains("alert"),
        "the client is told: {client_err}"
    );
    server_err
}

#[tokio::test]
async fn required_client_certificate_missing_is_refused() {
    let err = refused_client_identity(None).await;
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let err = refused_client_identity(Some(("foreign.pem".as_ref(), "foreign.key".as_ref()))).await;
    assert!(
        err.to_lowercase().contains("unknown") || err.contains("Issuer"),
        "{err}"
    );
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let err = refused_client_identity(Some(("expired.pem".as_ref(), "expired.key".as_ref()))).await;
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn server_certificate_from_another_ca_is_refused_by_the_client() {
    let pki = Pki::new();
    let server = ServerTlsFiles::new(&pki.foreign_server_cert, &pki.foreign_server_key)
        .load(&[])
        .unwrap();
    let (_, c) = handshake(
        server.clone(),
        client_trusting(&pki).load().unwrap(),
        "localhost",
    )
    .await;
    let err = c.expect_err("client must refuse").to_string();
    assert!(err.to_lowercase().contains("unknown"), "{err}");

    // The testing escape hatch accepts it.
    let mut insecure = ClientTlsOptions::new(Roots::File(pki.ca_pem.clone()));
    insecure.insecure_skip_verify_for_testing = true;
    let (s, c) = handshake(server, insecure.load().unwrap(), "not-the-name.example").await;
    s.unwrap();
    c.unwrap();
}

#[tokio::test]
async fn alpn_mqtt_is_negotiated_and_a_mismatch_refused() {
    let pki = Pki::new();
    let server = ServerTlsFiles::new(&pki.server_cert, &pki.server_key)
        .load(&[b"mqtt"])
        .unwrap();
    let mut client = client_trusting(&pki);
    client.alpn = vec![b"mqtt".to_vec()];
    let (s, c) = handshake(server.clone(), client.load().unwrap(), "localhost").await;
    assert_eq!(s.unwrap().get_ref().1.alpn_protocol(), Some(&b"mqtt"[..]));
    assert_eq!(c.unwrap().get_ref().1.alpn_protocol(), Some(&b"mqtt"[..]));

    // A client that offers no ALPN at all is accepted.
    let (s, c) = handshake(
        server.clone(),
        client_trusting(&pki).load().unwrap(),
        "localhost",
    )
    .await;
    assert_eq!(s.unwrap().get_ref().1.alpn_protocol(), None);
    c.unwrap();

    // One that offers only other protocols is refused.
    let mut client = client_trusting(&pki);
    client.alpn = vec![b"h2".to_vec()];
    let (s, c) = handshake(server, client.load().unwrap(), "localhost").await;
    assert!(s.is_err());
    assert!(c.is_err());
}

#[tokio::test]
async fn client_limited_to_one_version_gets_it() {
    let pki = Pki::new();
    let server = ServerTlsFiles::new(&pki.server_cert, &pki.server_key)
        .with_client_ca(&pki.ca_pem, true)
        .load(&[b"mqtt"])
        .unwrap();
    for (versions, expected) in [
        (TlsVersions::Tls12, rustls::ProtocolVersion::TLSv1_2),
        (TlsVersions::Tls13, rustls::ProtocolVersion::TLSv1_3),
        (TlsVersions::Both, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut client = client_trusting(&pki);
        client.versions = versions;
        client.identity = Some((pki.client_cert.clone(), pki.client_key.clone()));
        let (s, c) = handshake(server.clone(), client.load().unwrap(), "localhost").await;
        let s = s.unwrap();
        assert_eq!(s.get_ref().1.protocol_version(), Some(expected));
        assert_eq!(peer_common_name(s.get_ref().1).as_deref(), Some(CLIENT_CN));
        assert_eq!(c.unwrap().get_ref().1.protocol_version(), Some(expected));
    }
}

fn leaf_of(stream: &ClientStream) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn first_cert(pem: &str) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn reload_swaps_certificates_and_keeps_the_old_on_error() {
    let pki = Pki::new();
    let first = pki.ca.server("first");
    let cert = pki.dir.write("reload.pem", &first.cert_pem);
    let key = pki.dir.write("reload.key", &first.key_pem);
    let acceptor = ReloadableAcceptor::new(ServerTlsFiles::new(&cert, &key), &[b"mqtt"]).unwrap();
    let client = client_trusting(&pki).load().unwrap();

    let (_, c) = handshake(acceptor.config(), client.clone(), "localhost").await;
    assert_eq!(leaf_of(&c.unwrap()), first_cert(&first.cert_pem));

    let second = pki.ca.server("second");
    pki.dir.write("reload.pem", &second.cert_pem);
    pki.dir.write("reload.key", &second.key_pem);
    acceptor.reload().unwrap();
    let (_, c) = handshake(acceptor.config(), client.clone(), "localhost").await;
    assert_eq!(leaf_of(&c.unwrap()), first_cert(&second.cert_pem));

    // A broken certificate file: the reload fails and says why, the second stays.
    pki.dir.write("reload.pem", "not a certificate\n");
    let err = acceptor.reload().unwrap_err();
    assert!(
        matches!(err, TlsError::Pem { ref path, .. } if path == &cert),
        "{err}"
    );
    // A key that belongs to another certificate: likewise.
    pki.dir.write("reload.pem", &first.cert_pem);
    let err = acceptor.reload().unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

    let (tcp_server, tcp_client) = tcp_pair().await;
    let connector = tokio_rustls::TlsConnector::from(client);
    let (s, c) = tokio::join!(
        acceptor.acceptor().accept(tcp_server),
        connector.connect(server_name("localhost").unwrap(), tcp_client)
    );
    s.unwrap();
    assert_eq!(leaf_of(&c.unwrap()), first_cert(&second.cert_pem));
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let pki = Pki::new();
    let missing = pki.dir.path().join("missing.pem");
    let err = ServerTlsFiles::new(&missing, &pki.server_key)
        .load(&[])
        .unwrap_err();
    assert!(
        matches!(err, TlsError::Read { ref path, .. } if path == &missing),
        "{err}"
    );
    assert!(err.to_string().contains("missing.pem"), "{err}");

    // A key where the certificate should be.
    let err = ServerTlsFiles::new(&pki.server_key, &pki.server_key)
        .load(&[])
        .unwrap_err();
    assert!(
        matches!(err, TlsError::Pem { ref path, .. } if path == &pki.server_key),
        "{err}"
    );
    assert!(err.to_string().contains("no certificate"), "{err}");

    // A certificate where the key should be.
    let err = ServerTlsFiles::new(&pki.server_cert, &pki.server_cert)
        .load(&[])
        .unwrap_err();
    assert!(
        matches!(err, TlsError::Pem { ref path, .. } if path == &pki.server_cert),
        "{err}"
    );
    assert!(err.to_string().contains("no private key"), "{err}");

    let err = ServerTlsFiles::new(&pki.server_cert, &pki.client_key)
        .load(&[])
        .unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

    let mut files = ServerTlsFiles::new(&pki.server_cert, &pki.server_key);
    files.require_client_cert = true;
    assert!(matches!(
        files.load(&[]),
        Err(TlsError::ClientCertWithoutCa)
    ));

    let err = ServerTlsFiles::new(&pki.server_cert, &pki.server_key)
        .with_client_ca(&pki.server_key, true)
        .load(&[])
        .unwrap_err();
    assert!(
        matches!(err, TlsError::Pem { ref path, .. } if path == &pki.server_key),
        "{err}"
    );

    let mut client = client_trusting(&pki);
    client.identity = Some((pki.client_cert.clone(), pki.server_key.clone()));
    assert!(matches!(client.load(), Err(TlsError::KeyMismatch { .. })));
}

#[tokio::test]
async fn roots_from_a_directory_skip_files_that_are_not_certificates() {
    let pki = Pki::new();
    let dir = common::TempDir::new("capath");
    dir.write("README", "not a certificate");
    dir.write("a.key", std::fs::read(&pki.server_key).unwrap());
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    assert!(matches!(
        ClientTlsOptions::new(Roots::Dir(dir.path().to_owned())).load(),
        Err(TlsError::Pem { .. })
    ));

    dir.write("other.pem", &pki.other_ca.cert_pem);
    dir.write("ca.crt", &pki.ca.cert_pem);
    let client = ClientTlsOptions::new(Roots::Dir(dir.path().to_owned()))
        .load()
        .unwrap();
    let server = ServerTlsFiles::new(&pki.server_cert, &pki.server_key)
        .load(&[])
        .unwrap();
    let (s, c) = handshake(server, client, "localhost").await;
    s.unwrap();
    c.unwrap();

    let nowhere = dir.path().join("nowhere");
    assert!(matches!(
        ClientTlsOptions::new(Roots::Dir(nowhere)).load(),
        Err(TlsError::Read { .. })
    ));
}

#[test]
fn server_names_are_dns_names_or_ip_addresses() {
    use rustls::pki_types::ServerName;
    assert!(matches!(
        server_name("localhost"),
        Ok(ServerName::DnsName(_))
    ));
    assert!(matches!(
        server_name("127.0.0.1"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
    assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
    assert!(matches!(
        server_name("not a name!"),
        Err(TlsError::ServerName(_))
    ));
}

#[tokio::test]
async fn key_exchange_prefers_x25519() {
    // P-384 first (ring's default order) costs each side about ten times the CPU per full
    // handshake.
    let pki = Pki::new();
    let server = ServerTlsFiles::new(&pki.server_cert, &pki.server_key)
        .load(&[b"mqtt"])
        .unwrap();
    let client = client_trusting(&pki).load().unwrap();
    let (s, c) = handshake(server, client, "localhost").await;
    let (s, c) = (s.unwrap(), c.unwrap());
    for group in [
        s.get_ref().1.negotiated_key_exchange_group(),
        c.get_ref().1.negotiated_key_exchange_group(),
    ] {
        assert_eq!(group.map(|g| g.name()), Some(rustls::NamedGroup::X25519));
    }
}

#[tokio::test]
async fn verify_hostname_off_skips_only_the_name() {
    let pki = Pki::new();
    let server = ServerTlsFiles::new(&pki.server_cert, &pki.server_key)
        .load(&[])
        .unwrap();
    assert!(ClientTlsOptions::default().verify_hostname);

    // The name is checked by default.
    let (_, c) = handshake(
        server.clone(),
        client_trusting(&pki).load().unwrap(),
        "not-the-name.example",
    )
    .await;
    let err = c.expect_err("a certificate for another name").to_string();
    assert!(err.contains("not valid for name"), "{err}");

    // Without the name check, the same certificate is accepted for another name…
    let mut any_name = client_trusting(&pki);
    any_name.verify_hostname = false;
    let any_name = any_name.load().unwrap();
    for host in ["not-the-name.example", "127.0.0.2"] {
        let (s, c) = handshake(server.clone(), any_name.clone(), host).await;
        s.unwrap();
        c.unwrap_or_else(|e| panic!("{host}: {e}"));
    }

    // …but a certificate from a CA the client does not trust is still refused.
    let foreign = ServerTlsFiles::new(&pki.foreign_server_cert, &pki.foreign_server_key)
        .load(&[])
        .unwrap();
    for host in ["localhost", "not-the-name.example"] {
        let (_, c) = handshake(foreign.clone(), any_name.clone(), host).await;
        let err = c.expect_err("an untrusted CA").to_string();
        assert!(err.to_lowercase().contains("unknown"), "{host}: {err}");
    }
}
