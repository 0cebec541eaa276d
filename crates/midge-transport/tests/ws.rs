//! MQTT over WebSocket (MQTT 5.0 section 6) over loopback.
#![cfg(all(feature = "ws", feature = "tls"))]
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::{tcp_pair, Pki};
use futures_util::{SinkExt, StreamExt};
use midge_transport::tls::{server_name, tokio_rustls, ClientTlsOptions, Roots, ServerTlsFiles};
use midge_transport::ws::{accept, connect, AcceptOptions, WsError, WsStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

const URL: &str = "ws://127.0.0.1/mqtt";
const LIMIT: Duration = Duration::from_secs(5);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

/// Our server and our client, over loopback.
async fn pair(options: AcceptOptions) -> (WsStream<TcpStream>, WsStream<TcpStream>) {
    let (s, c) = tcp_pair().await;
    let (s, c) =
        within(async { tokio::join!(accept(s, &options), connect(c, URL, 1 << 20)) }).await;
    (s.unwrap(), c.unwrap())
}

/// Our server and a plain tungstenite client offering `protocols`.
async fn raw_pair(
    options: AcceptOptions,
    path: &str,
    headers: &[(&str, &str)],
) -> (
    Result<WsStream<TcpStream>, WsError>,
    Result<WebSocketStream<TcpStream>, tungstenite::Error>,
) {
    let (s, c) = tcp_pair().await;
    let mut request = format!("ws://127.0.0.1{path}")
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let (s, c) = within(async {
        tokio::join!(
            accept(s, &options),
            tokio_tungstenite::client_async(request, c)
        )
    })
    .await;
    (s, c.map(|(ws, _)| ws))
}

async fn exchange<A, B>(a: &mut A, b: &mut B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    // CONNECT-like bytes one way, CONNACK-like the other.
    let connect = [
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00,
    ];
    a.write_all(&connect).await.unwrap();
    a.flush().await.unwrap();
    let mut got = [0; 14];
    within(b.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, connect);
    b.write_all(&[0x20, 0x03, 0x00, 0x00, 0x00]).await.unwrap();
    b.flush().await.unwrap();
    let mut got = [0; 5];
    within(a.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, [0x20, 0x03, 0x00, 0x00, 0x00]);
}

#[tokio::test]
async fn accept_and_connect_move_bytes_both_ways_with_subprotocol_mqtt() {
    let (mut s, mut c) = pair(AcceptOptions::default()).await;
    // [MQTT-6.0.0-3], [MQTT-6.0.0-4]
    // [MQTT-5:6.0.0-3] [MQTT-3.1.1:6.0.0-3] [MQTT-5:6.0.0-4] [MQTT-3.1.1:6.0.0-4]
    assert_eq!(s.subprotocol(), Some("mqtt"));
    assert_eq!(c.subprotocol(), Some("mqtt"));
    exchange(&mut c, &mut s).await;

    // Shutting down sends a close frame: the other side reads the end of the stream.
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within(s.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn websocket_over_tls() {
    let pki = Pki::new();
    let server = ServerTlsFiles::new(&pki.server_cert, &pki.server_key)
        .load(&[b"mqtt"])
        .unwrap();
    let client = ClientTlsOptions::new(Roots::File(pki.ca_pem.clone()))
        .load()
        .unwrap();
    let (s, c) = tcp_pair().await;
    let (s, c) = within(async {
        tokio::join!(
            async {
                let tls = tokio_rustls::TlsAcceptor::from(server)
                    .accept(s)
                    .await
                    .unwrap();
                accept(tls, &AcceptOptions::default()).await
            },
            async {
                let tls = tokio_rustls::TlsConnector::from(client)
                    .connect(server_name("localhost").unwrap(), c)
                    .await
                    .unwrap();
                connect(tls, "wss://localhost/mqtt", 1 << 20).await
            }
        )
    })
    .await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    assert_eq!(s.get_ref().get_ref().1.alpn_protocol(), None);
    exchange(&mut s, &mut c).await;
}

#[tokio::test]
async fn one_packet_may_span_messages_and_one_message_hold_several_packets() {
    // [MQTT-6.0.0-2]
    // [MQTT-5:6.0.0-2] [MQTT-3.1.1:6.0.0-2]
    let (s, c) = raw_pair(
        AcceptOptions::default(),
        "/mqtt",
        &[("Sec-WebSocket-Protocol", "mqtt")],
    )
    .await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    let pingreq = [0xc0, 0x00];
    let publish = [0x30, 0x07, 0x00, 0x01, b't', b'h', b'e', b'l', b'o'];
    // One PUBLISH over two messages.
    c.send(Message::Binary(publish[..3].to_vec().into()))
        .await
        .unwrap();
    c.send(Message::Binary(publish[3..].to_vec().into()))
        .await
        .unwrap();
    // Two packets (and a bit of a third) in one message.
    let mut both = pingreq.to_vec();
    both.extend_from_slice(&publish);
    both.extend_from_slice(&pingreq[..1]);
    c.send(Message::Binary(both.into())).await.unwrap();
    c.send(Message::Binary(pingreq[1..].to_vec().into()))
        .await
        .unwrap();

    let mut got = [0; 9];
    within(s.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, publish);
    // Small reads keep the rest of a message for the next.
    let mut expected = pingreq.to_vec();
    expected.extend_from_slice(&publish);
    expected.extend_from_slice(&pingreq);
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let mut small = [0; 3];
        let n = within(s.read(&mut small)).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&small[..n]);
    }
    assert_eq!(got, expected);

    // Each write is one binary message.
    s.write_all(&pingreq).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(
        within(c.next()).await.unwrap().unwrap(),
        Message::Binary(pingreq.to_vec().into())
    );
}

#[tokio::test]
async fn a_text_frame_is_a_read_error_and_closes_the_connection() {
    // [MQTT-6.0.0-1]
    // [MQTT-5:6.0.0-1] [MQTT-3.1.1:6.0.0-1]
    let (s, c) = raw_pair(
        AcceptOptions::default(),
        "/mqtt",
        &[("Sec-WebSocket-Protocol", "mqtt")],
    )
    .await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    c.send(Message::Text("hello".into())).await.unwrap();
    let mut buf = [0; 8];
    let err = within(s.read(&mut buf)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("[MQTT-6.0.0-1]"), "{err}");
    // The client is sent a close frame.
    match within(c.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1003);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // Further reads: end of stream.
    assert_eq!(within(s.read(&mut buf)).await.unwrap(), 0);
}

#[tokio::test]
async fn a_ping_is_answered_while_the_mqtt_side_only_reads() {
    let (s, c) = raw_pair(
        AcceptOptions::default(),
        "/mqtt",
        &[("Sec-WebSocket-Protocol", "mqtt")],
    )
    .await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    let reader = tokio::spawn(async move {
        let mut buf = [0; 2];
        s.read_exact(&mut buf).await.map(|_| buf)
    });
    c.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        within(c.next()).await.unwrap().unwrap(),
        Message::Pong(b"are you there".to_vec().into())
    );
    // A pong from the client is ignored; the reader still gets the bytes after it.
    c.send(Message::Pong(Vec::new().into())).await.unwrap();
    c.send(Message::Binary(vec![0xc0, 0x00].into()))
        .await
        .unwrap();
    assert_eq!(within(reader).await.unwrap().unwrap(), [0xc0, 0x00]);
}

#[tokio::test]
async fn a_close_frame_is_the_end_of_the_stream() {
    let (s, c) = raw_pair(
        AcceptOptions::default(),
        "/mqtt",
        &[("Sec-WebSocket-Protocol", "mqtt")],
    )
    .await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    c.send(Message::Binary(vec![0xe0, 0x00].into()))
        .await
        .unwrap();
    c.close(None).await.unwrap();
    let mut got = Vec::new();
    within(s.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, [0xe0, 0x00]);
    // The server replied to the close: the client gets the reply, then its stream ends.
    let reply = within(c.next()).await;
    assert!(matches!(reply, Some(Ok(Message::Close(_)))), "{reply:?}");
    // The server closes the TCP connection (RFC 6455 5.5.1) when its owner shuts it down.
    within(s.shutdown()).await.unwrap();
    assert!(within(c.next()).await.is_none());
}

#[tokio::test]
async fn subprotocol_choice() {
    let options = AcceptOptions::default;
    let proto = "Sec-WebSocket-Protocol";
    // Server preference wins among offered ones.
    let (s, _c) = raw_pair(options(), "/mqtt", &[(proto, "foo, mqttv3.1, mqtt")]).await;
    assert_eq!(s.unwrap().subprotocol(), Some("mqtt"));
    // Several headers count as one list.
    let (s, _c) = raw_pair(options(), "/mqtt", &[(proto, "foo"), (proto, "mqttv3.1")]).await;
    assert_eq!(s.unwrap().subprotocol(), Some("mqttv3.1"));
    // Nothing offered: accepted without one (lenient).
    let (s, c) = raw_pair(options(), "/mqtt", &[]).await;
    assert_eq!(s.unwrap().subprotocol(), None);
    c.unwrap();
    // Only others offered: 400.
    let (s, c) = raw_pair(options(), "/mqtt", &[(proto, "chat")]).await;
    assert!(matches!(s, Err(WsError::Refused(_))));
    match c {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_path_gets_404() {
    let (s, c) = tcp_pair().await;
    let options = AcceptOptions::default();
    let (s, c) = within(async {
        tokio::join!(
            accept(s, &options),
            connect(c, "ws://127.0.0.1/other?x=1", 1 << 20)
        )
    })
    .await;
    assert!(
        matches!(s, Err(WsError::Refused(ref why)) if why.contains("404")),
        "{s:?}"
    );
    assert!(
        matches!(c, Err(WsError::Refused(ref why)) if why.contains("404")),
        "{c:?}"
    );

    // The query string is not part of the path.
    let (s, c) = raw_pair(AcceptOptions::default(), "/mqtt?client=1", &[]).await;
    s.unwrap();
    c.unwrap();
}

#[tokio::test]
async fn an_origin_not_allowed_gets_403() {
    let mut options = AcceptOptions::default();
    options.allowed_origins = vec!["https://app.example.com".into()];
    let (s, c) = raw_pair(
        options.clone(),
        "/mqtt",
        &[("Origin", "https://evil.example.com")],
    )
    .await;
    assert!(matches!(s, Err(WsError::Refused(_))));
    match c {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected HTTP 403, got {other:?}"),
    }
    // With a list, a request without an Origin is refused too.
    let (s, _) = raw_pair(options.clone(), "/mqtt", &[]).await;
    assert!(matches!(s, Err(WsError::Refused(_))));
    // An allowed origin, in another case.
    let (s, c) = raw_pair(options, "/mqtt", &[("Origin", "https://APP.example.com")]).await;
    s.unwrap();
    c.unwrap();
}

#[tokio::test]
async fn plain_http_without_upgrade_gets_400() {
    let (s, mut c) = tcp_pair().await;
    let server = tokio::spawn(async move { accept(s, &AcceptOptions::default()).await.map(drop) });
    c.write_all(b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    within(c.read_to_end(&mut response)).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    let result = within(server).await.unwrap();
    assert!(matches!(result, Err(WsError::Refused(_))), "{result:?}");
}

#[tokio::test]
async fn an_oversized_frame_fails_from_its_header_before_the_payload() {
    let mut options = AcceptOptions::default();
    options.max_message_size = 1024;
    let (s, c) = raw_pair(options, "/mqtt", &[("Sec-WebSocket-Protocol", "mqtt")]).await;
    let (mut s, c) = (s.unwrap(), c.unwrap());
    // A message within the limit goes through.
    let mut c = c;
    c.send(Message::Binary(vec![0; 1024].into())).await.unwrap();
    let mut buf = vec![0; 1024];
    within(s.read_exact(&mut buf)).await.unwrap();

    // Then a frame header announcing 10 MB, and not one byte of payload.
    let mut tcp = c.into_inner();
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&10_000_000u64.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]); // mask key
    tcp.write_all(&header).await.unwrap();
    let err = within(s.read(&mut buf)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("too long"), "{err}");
}

#[tokio::test]
async fn connect_refuses_a_server_that_does_not_choose_mqtt() {
    let (s, c) = tcp_pair().await;
    let (s, c) = within(async {
        tokio::join!(tokio_tungstenite::accept_async(s), connect(c, URL, 1 << 20))
    })
    .await;
    drop(s);
    assert!(
        matches!(c, Err(WsError::Refused(ref why)) if why.contains("subprotocol")),
        "{c:?}"
    );
}

#[tokio::test]
async fn a_long_write_goes_out_as_messages_of_at_most_max_write_message() {
    let (server, client) = raw_pair(
        AcceptOptions::default(),
        "/mqtt",
        &[("Sec-WebSocket-Protocol", "mqtt")],
    )
    .await;
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    let data = vec![7u8; 3 * midge_transport::ws::MAX_WRITE_MESSAGE + 10];
    within(server.write_all(&data)).await.expect("write");
    within(server.flush()).await.expect("flush");
    let mut sizes = Vec::new();
    while sizes.iter().sum::<usize>() < data.len() {
        match within(client.next()).await {
            Some(Ok(Message::Binary(m))) => sizes.push(m.len()),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
    let max = midge_transport::ws::MAX_WRITE_MESSAGE;
    assert_eq!(sizes, vec![max, max, max, 10]);
}
