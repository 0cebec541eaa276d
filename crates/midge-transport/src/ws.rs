//! MQTT over WebSocket, as MQTT 5.0 section 6 (and 3.1.1 section 6) says: the MQTT byte
//! stream travels in binary frames, one packet may span frames and one frame may hold several
//! packets [MQTT-6.0.0-2], a text frame closes the connection [MQTT-6.0.0-1], and the
//! subprotocol is `mqtt` [MQTT-6.0.0-3], [MQTT-6.0.0-4] (`mqttv3.1` for MQTT 3.1 clients).
//!
//! [`WsStream`] turns a WebSocket into a tokio byte stream (`AsyncRead + AsyncWrite`): reads
//! yield the payloads of binary messages, in order; each write goes out as one binary
//! message. Pings are answered as they arrive.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use tokio_tungstenite;

/// The subprotocols a server accepts, in its order of preference.
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Why a WebSocket handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// The request or response was not a WebSocket upgrade we accept (no Upgrade header, a
    /// wrong path, an origin not allowed, no MQTT subprotocol). A server answers it with an
    /// HTTP error status before closing.
    #[error("WebSocket handshake refused: {0}")]
    Refused(String),
    /// The peer broke the protocol or the stream failed.
    #[error("WebSocket: {0}")]
    Protocol(#[from] tokio_tungstenite::tungstenite::Error),
}

/// What a server accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcceptOptions {
    /// The one HTTP path upgraded (default `/mqtt`); any other gets 404.
    pub path: String,
    /// Origins allowed (the browser's `Origin` header, e.g. `https://app.example.com`). Empty:
    /// any origin, and requests without one.
    pub allowed_origins: Vec<String>,
    /// Largest WebSocket message and frame accepted, in bytes, checked from the frame header
    /// before its payload is read. Set it to the MQTT maximum packet size.
    pub max_message_size: usize,
}

impl Default for AcceptOptions {
    fn default() -> Self {
        Self {
            path: "/mqtt".into(),
            allowed_origins: Vec::new(),
            max_message_size: 1 << 20,
        }
    }
}

/// Accepts a WebSocket upgrade on `stream` (already through TLS, for `wss`).
pub async fn accept<S>(stream: S, options: &AcceptOptions) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = (stream, options);
    todo!()
}

/// Opens a WebSocket on `stream` (already through TLS, for `wss`) to `url`
/// (`ws://host:port/path` or `wss://…`, which names the Host header and path), offering the
/// subprotocol `mqtt`. Messages from the server are bounded by `max_message_size`.
pub async fn connect<S>(
    stream: S,
    url: &str,
    max_message_size: usize,
) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = (stream, url, max_message_size);
    todo!()
}

/// A WebSocket as a byte stream. See the [module docs](self).
#[derive(Debug)]
pub struct WsStream<S> {
    inner: tokio_tungstenite::WebSocketStream<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let _ = (&self.inner, cx, buf);
        todo!()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let _ = (cx, buf);
        todo!()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let _ = cx;
        todo!()
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let _ = cx;
        todo!()
    }
}
