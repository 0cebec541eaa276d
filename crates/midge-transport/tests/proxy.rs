//! PROXY protocol headers, with the examples of the HAProxy specification
//! (proxy-protocol.txt, sections 2.1 and 2.2).
#![allow(missing_docs)]

mod common;

use std::net::SocketAddr;

use midge_transport::proxy::{read_header, ProxyError, ProxyHeader, MAX_HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The first bytes of an MQTT CONNECT, which follow the header.
const CONNECT: &[u8] = &[0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T'];
const V2_SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

/// Reads a header from `header` followed by a CONNECT, and checks that the CONNECT is what
/// is left: the reader did not take one byte past the header.
async fn parse(header: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let mut input = header.to_vec();
    input.extend_from_slice(CONNECT);
    let mut stream = input.as_slice();
    let result = read_header(&mut stream).await;
    if result.is_ok() {
        assert_eq!(
            stream, CONNECT,
            "the bytes after the header are still to be read"
        );
    }
    result
}

fn no_address(h: &ProxyHeader) -> bool {
    h.source.is_none() && h.destination.is_none()
}

#[tokio::test]
async fn v1_tcp4() {
    let h = parse(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n")
        .await
        .unwrap();
    assert_eq!(h.source, addr("192.168.0.1:56324"));
    assert_eq!(h.destination, addr("192.168.0.11:443"));
}

#[tokio::test]
async fn v1_tcp6() {
    let h = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 1883\r\n")
        .await
        .unwrap();
    assert_eq!(h.source, addr("[2001:db8::1]:4000"));
    assert_eq!(h.destination, addr("[2001:db8::2]:1883"));
}

#[tokio::test]
async fn v1_unknown_has_no_address() {
    // The shortest header there is: exactly the 15 bytes read first.
    let h = parse(b"PROXY UNKNOWN\r\n").await.unwrap();
    assert_eq!((h.source, h.destination), (None, None));
    // UNKNOWN may carry addresses, which are ignored.
    let h = parse(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n")
        .await
        .unwrap();
    assert!(no_address(&h));
}

#[tokio::test]
async fn v1_longest_header_is_accepted() {
    // 107 bytes, as in section 2.1.
    let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(longest.len(), 107);
    assert!(no_address(&parse(longest).await.unwrap()));
}

fn v2(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.push(version_command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend_from_slice(body);
    h
}

#[tokio::test]
async fn v2_proxy_tcp4() {
    let body = [192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb];
    let h = parse(&v2(0x21, 0x11, &body)).await.unwrap();
    assert_eq!(h.source, addr("192.168.0.1:56324"));
    assert_eq!(h.destination, addr("192.168.0.11:443"));
}

#[tokio::test]
async fn v2_proxy_tcp6_with_tlvs() {
    let mut body = Vec::new();
    body.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    body.extend_from_slice(
        &"2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    body.extend_from_slice(&4000u16.to_be_bytes());
    body.extend_from_slice(&1883u16.to_be_bytes());
    // PP2_TYPE_AUTHORITY "broker" and a NOOP: read along, not past.
    body.extend_from_slice(&[0x02, 0x00, 0x06]);
    body.extend_from_slice(b"broker");
    body.extend_from_slice(&[0x04, 0x00, 0x02, 0, 0]);
    let h = parse(&v2(0x21, 0x21, &body)).await.unwrap();
    assert_eq!(h.source, addr("[2001:db8::1]:4000"));
    assert_eq!(h.destination, addr("[2001:db8::2]:1883"));
}

#[tokio::test]
async fn v2_local_has_no_address() {
    assert!(no_address(&parse(&v2(0x20, 0x00, &[])).await.unwrap()));
    // LOCAL with addresses: ignored too.
    let body = [10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2];
    assert!(no_address(&parse(&v2(0x20, 0x11, &body)).await.unwrap()));
}

#[tokio::test]
async fn missing_header() {
    for start in [
        CONNECT,
        b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n",
        b"proxy tcp4 1.2.3.4 ",
    ] {
        let mut stream = start;
        let err = read_header(&mut stream).await.unwrap_err();
        assert!(matches!(err, ProxyError::Missing), "{err}");
    }
}

#[tokio::test]
async fn garbage_headers_are_malformed() {
    for bad in [
        &b"PROXY TCP4 not-an-ip 192.168.0.11 56324 443\r\n"[..],
        b"PROXY TCP5 192.168.0.1 192.168.0.11 56324 443\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 99999 443\r\n",
        b"PROXY TCP4 192.168.0.1\r192.168.0.11 56324 443\r\n",
    ] {
        let err = parse(bad).await.unwrap_err();
        assert!(matches!(err, ProxyError::Malformed(_)), "{err}");
    }
    // Version 3, command 2, and an address block shorter than its family needs.
    for bad in [
        v2(0x31, 0x11, &[0; 12]),
        v2(0x22, 0x11, &[0; 12]),
        v2(0x21, 0x11, &[0; 4]),
    ] {
        let err = parse(&bad).await.unwrap_err();
        assert!(matches!(err, ProxyError::Malformed(_)), "{err}");
    }
}

#[tokio::test]
async fn over_long_headers_are_refused_without_reading_on() {
    // v1: no \r\n within 107 bytes; the reader stops at 107.
    let mut input = b"PROXY TCP4 ".to_vec();
    input.resize(300, b'1');
    let mut stream = input.as_slice();
    let err = read_header(&mut stream).await.unwrap_err();
    assert!(matches!(err, ProxyError::Malformed(_)), "{err}");
    assert_eq!(stream.len(), 300 - 107);

    // v2: a length field beyond MAX_HEADER_LEN; only the 16 fixed bytes are read.
    let mut input = V2_SIG.to_vec();
    input.extend_from_slice(&[0x21, 0x11]);
    input.extend_from_slice(&u16::try_from(MAX_HEADER_LEN).unwrap().to_be_bytes());
    input.resize(16 + MAX_HEADER_LEN, 0);
    let mut stream = input.as_slice();
    let err = read_header(&mut stream).await.unwrap_err();
    assert!(matches!(err, ProxyError::Malformed(_)), "{err}");
    assert_eq!(stream.len(), MAX_HEADER_LEN);
}

#[tokio::test]
async fn a_stream_that_ends_early_is_an_io_error() {
    for short in [&b"PROXY TCP4 192.168.0.1"[..], b"PROX", &V2_SIG[..10]] {
        let mut stream = short;
        let err = read_header(&mut stream).await.unwrap_err();
        match err {
            ProxyError::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
            e => panic!("expected an I/O error, got {e}"),
        }
    }
    let mut stream = &v2(0x21, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2])[..20];
    assert!(matches!(
        read_header(&mut stream).await,
        Err(ProxyError::Io(_))
    ));
}

#[tokio::test]
async fn a_client_that_sends_mqtt_first_is_told_apart_without_waiting() {
    // A CONNECT shorter than any PROXY header, and the client waits for its CONNACK: the
    // first byte is enough.
    let (mut server, mut client) = common::tcp_pair().await;
    client.write_all(CONNECT).await.unwrap();
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), read_header(&mut server))
        .await
        .expect("decided without more bytes");
    assert!(matches!(result, Err(ProxyError::Missing)));
}

#[tokio::test]
async fn over_tcp_the_first_mqtt_byte_follows_the_header() {
    let (mut server, mut client) = common::tcp_pair().await;
    let mut sent = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 1883\r\n".to_vec();
    sent.extend_from_slice(CONNECT);
    client.write_all(&sent).await.unwrap();
    let h = read_header(&mut server).await.unwrap();
    assert_eq!(h.source, addr("203.0.113.7:40000"));
    let mut rest = [0; CONNECT.len()];
    server.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest, CONNECT);
}
