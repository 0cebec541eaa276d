//! Pongs and a peer that does not read: a pong that could not be written at once is sent as
//! soon as the stream takes it, by reads alone, and no more is read while it waits (so pings
//! from a peer that never reads cannot pile up pongs in memory).
#![allow(missing_docs)]
#![cfg(feature = "ws")]

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use midge_transport::ws::{accept, AcceptOptions, WsStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

/// Whether writes are blocked, the waker of the write that found them blocked, and what was
/// written.
#[derive(Clone, Default)]
struct Gate {
    blocked: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
    written: Arc<Mutex<Vec<u8>>>,
}

/// A stream whose writes block while the gate says so.
struct Gated {
    input: DuplexStream,
    gate: Gate,
}

impl AsyncRead for Gated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.gate.blocked.load(SeqCst) {
            *self.gate.waker.lock().unwrap() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        self.gate.written.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Our server over a gated stream, upgraded, with nothing written yet; the client's end of
/// the pipe, where raw frames are written.
async fn gated_server() -> (WsStream<Gated>, DuplexStream, Gate) {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let gate = Gate::default();
    client
        .write_all(
            b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        )
        .await
        .unwrap();
    let input = Gated {
        input: server,
        gate: gate.clone(),
    };
    let ws = accept(input, &AcceptOptions::default())
        .await
        .expect("upgrade");
    gate.written.lock().unwrap().clear();
    (ws, client, gate)
}

#[tokio::test]
async fn a_pong_blocked_once_is_sent_by_reads_once_the_stream_takes_it() {
    let (mut ws, mut client, gate) = gated_server().await;
    gate.blocked.store(true, SeqCst);
    // A masked ping with payload "hi" (zero mask).
    client
        .write_all(&[0x89, 0x82, 0, 0, 0, 0, b'h', b'i'])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(100), ws.read(&mut buf))
            .await
            .is_err()
    );
    // While the pong waits, nothing more is read: a second ping stays unread, with no second
    // pong queued behind the first.
    client
        .write_all(&[0x89, 0x82, 0, 0, 0, 0, b'h', b'o'])
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), ws.read(&mut buf))
            .await
            .is_err()
    );
    // The socket drains: the write waker fires, and the task polls its read again (what the
    // broker's driver does when it has nothing of its own to write).
    gate.blocked.store(false, SeqCst);
    let woken = gate.waker.lock().unwrap().take();
    assert!(woken.is_some(), "a write waker was registered");
    woken.unwrap().wake();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), ws.read(&mut buf))
            .await
            .is_err()
    );
    let sent = gate.written.lock().unwrap().clone();
    assert!(
        sent.starts_with(&[0x8A, 0x02, b'h', b'i']),
        "the pong was not sent after the socket drained: {sent:?}"
    );
}

/// A server's frames written straight to a stream that takes a few bytes at a time, with
/// pings arriving meanwhile: every message and every pong arrives whole, none inside another.
#[tokio::test]
async fn frames_written_a_few_bytes_at_a_time_stay_whole_among_pongs() {
    use futures_util::{SinkExt, StreamExt};
    use midge_transport::ws::tokio_tungstenite::{client_async, tungstenite::Message};
    use tokio_tungstenite_client_request as request;

    // 7 bytes of room each way: every write of a frame is partial.
    let (client_end, server_end) = tokio::io::duplex(7);
    let options = AcceptOptions::default();
    let (server, client) = tokio::join!(
        accept(server_end, &options),
        client_async(request(), client_end)
    );
    let mut server = server.expect("accepted");
    let (client, _) = client.expect("connected");
    let messages: Vec<Vec<u8>> = (0..5u8)
        .map(|i| vec![i; 300 + 70_000 * usize::from(i % 2)])
        .collect();
    let expected = messages.clone();
    // The server writes its messages and reads at the same time, as the broker does: reading
    // answers the pings.
    let writer = tokio::spawn(async move {
        let (mut index, mut offset, mut flushed) = (0, 0, false);
        std::future::poll_fn(|cx| loop {
            let mut progress = false;
            while index < messages.len() {
                match Pin::new(&mut server).poll_write(cx, &messages[index][offset..]) {
                    Poll::Ready(Ok(n)) => {
                        progress = true;
                        offset += n;
                        if offset == messages[index].len() {
                            (index, offset) = (index + 1, 0);
                        }
                    }
                    Poll::Ready(Err(e)) => panic!("write: {e}"),
                    Poll::Pending => break,
                }
            }
            if index == messages.len() && !flushed {
                if let Poll::Ready(result) = Pin::new(&mut server).poll_flush(cx) {
                    result.expect("flush");
                    flushed = true;
                }
            }
            let mut buf = [0u8; 16];
            let mut read = ReadBuf::new(&mut buf);
            match Pin::new(&mut server).poll_read(cx, &mut read) {
                // The client is done and gone.
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => panic!("unexpected data"),
                Poll::Pending => {}
            }
            if !progress {
                return Poll::Pending;
            }
        })
        .await;
    });
    // Pings from a task of their own, while the messages are read.
    let (mut pings, mut incoming) = client.split();
    const PINGS: u8 = 20;
    let pinger = tokio::spawn(async move {
        for n in 0..PINGS {
            pings
                .send(Message::Ping(vec![n].into()))
                .await
                .expect("ping");
        }
        pings
    });
    let mut got = Vec::new();
    let mut pongs = 0;
    let total: usize = expected.iter().map(Vec::len).sum();
    while got.len() < total || pongs < PINGS {
        match tokio::time::timeout(Duration::from_secs(5), incoming.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => got.extend_from_slice(&data),
            Ok(Some(Ok(Message::Pong(data)))) => {
                assert_eq!(data.len(), 1, "a pong whole");
                pongs += 1;
            }
            other => panic!("after {} bytes and {pongs} pongs: {other:?}", got.len()),
        }
    }
    let client = pinger
        .await
        .expect("pinger")
        .reunite(incoming)
        .expect("halves");
    assert_eq!(got, expected.concat());
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("the server sees the end")
        .expect("writer");
}

use midge_transport::ws::tokio_tungstenite::tungstenite;

fn tokio_tungstenite_client_request() -> tungstenite::handshake::client::Request {
    use midge_transport::ws::tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = "ws://127.0.0.1/mqtt".into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    request
}

/// A shutdown that could not finish has begun the close frame: a later write is refused, and
/// never lands inside it.
#[tokio::test]
async fn no_frame_follows_a_close_that_was_begun() {
    let (mut ws, _client, gate) = gated_server().await;
    gate.blocked.store(true, SeqCst);
    let shutdown = tokio::time::timeout(Duration::from_millis(50), ws.shutdown()).await;
    assert!(shutdown.is_err(), "the close frame is blocked");
    gate.blocked.store(false, SeqCst);
    let err = ws.write_all(b"hello").await.expect_err("closing");
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    ws.shutdown().await.expect("the close frame goes out");
    let sent = gate.written.lock().unwrap().clone();
    assert_eq!(
        &sent[..2],
        &[0x88, 0x00],
        "a close frame and nothing else: {sent:?}"
    );
}
