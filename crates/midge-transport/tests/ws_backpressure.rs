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

use midge_transport::ws::{accept, AcceptOptions};
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

#[tokio::test]
async fn a_pong_blocked_once_is_sent_by_reads_once_the_stream_takes_it() {
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
    let mut ws = accept(
        Gated {
            input: server,
            gate: gate.clone(),
        },
        &AcceptOptions::default(),
    )
    .await
    .expect("upgrade");
    gate.written.lock().unwrap().clear();
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
