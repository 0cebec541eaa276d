//! MQTT over WebSocket, as MQTT 5.0 section 6 (and 3.1.1 section 6) says: the MQTT byte
//! stream travels in binary frames, one packet may span frames and one frame may hold several
//! packets [MQTT-6.0.0-2], a text frame closes the connection [MQTT-6.0.0-1], and the
//! subprotocol is `mqtt` [MQTT-6.0.0-3], [MQTT-6.0.0-4] (`mqttv3.1` for MQTT 3.1 clients).
//!
//! [`WsStream`] turns a WebSocket into a tokio byte stream (`AsyncRead + AsyncWrite`): reads
//! yield the payloads of binary messages, in order; each write goes out as one binary
//! message. Pings are answered as they arrive.
//!
//! Neither [`accept`] nor [`connect`] has a timeout of its own: wrap them in
//! `tokio::time::timeout`, or a peer that sends half a request holds the task forever.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::header::{self, HeaderValue};
use tungstenite::http::StatusCode;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::Message;

pub use tokio_tungstenite;

/// The subprotocols a server accepts, in its order of preference.
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// The subprotocol a client offers [MQTT-6.0.0-3].
const CLIENT_SUBPROTOCOL: &str = "mqtt";

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
    Protocol(#[from] tungstenite::Error),
}

/// What a server accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcceptOptions {
    /// The one HTTP path upgraded (default `/mqtt`); any other gets 404. The query string is
    /// not part of the path.
    pub path: String,
    /// Origins allowed (the browser's `Origin` header, e.g. `https://app.example.com`,
    /// compared without regard to ASCII case). Empty: any origin, and requests without one.
    /// Not empty: a request whose origin is not listed, or that has none, gets 403.
    pub allowed_origins: Vec<String>,
    /// Largest WebSocket message and frame accepted, in bytes, checked from the frame header
    /// before its payload is read. Set it to the MQTT maximum packet size; a value below
    /// [`MAX_WRITE_MESSAGE`] counts as that, so that a peer that gathers small packets into
    /// messages as large as [`WsStream`] writes is served.
    pub max_message_size: usize,
}

/// Largest message a [`WsStream`] writes: a longer write is cut into messages of this size
/// (an MQTT packet may span messages [MQTT-6.0.0-2]), so that output gathered from many packets
/// never exceeds the message limit of a peer that bounds messages by its packet size.
pub const MAX_WRITE_MESSAGE: usize = 64 * 1024;

impl Default for AcceptOptions {
    fn default() -> Self {
        Self {
            path: "/mqtt".into(),
            allowed_origins: Vec::new(),
            max_message_size: 1 << 20,
        }
    }
}

/// The WebSocket settings of both ends.
fn config(max_message_size: usize) -> WebSocketConfig {
    let max_message_size = max_message_size.max(MAX_WRITE_MESSAGE);
    WebSocketConfig::default()
        // The read buffer is allocated up front for every connection and kept while it is
        // idle (128 KiB by default). MQTT connections are many and mostly quiet, so keep it
        // small: a larger frame makes tungstenite reserve room for that frame's payload
        // (after the size check below), so big messages still arrive in one piece.
        .read_buffer_size(4 * 1024)
        // 0: each message is written to the stream as it is sent, not gathered until 128 KiB
        // have piled up. The MQTT layer above decides when to flush; buffering here too would
        // only delay packets and hold memory. (A TLS stream below buffers its records anyway.)
        .write_buffer_size(0)
        // Both limits are checked before any payload is read: tungstenite-0.30.0
        // src/protocol/frame/mod.rs, `FrameCodec::read_frame`, compares the length from the
        // frame header with `max_frame_size` ("Enforce frame size limit early") right after
        // `FrameHeader::parse`, before `in_buffer.reserve(len)`, and fails with
        // `CapacityError::MessageTooLong`. `max_message_size` bounds the sum of fragments
        // (`IncompleteMessage::extend`) as each fragment arrives.
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// An HTTP error response with a short plain-text body, after which the connection closes.
fn refusal(status: StatusCode, body: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let len = response.body().as_ref().map_or(0, String::len);
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// The subprotocols a request offers, in its order, across all its `Sec-WebSocket-Protocol`
/// headers.
fn offered_subprotocols(request: &Request) -> Vec<&str> {
    request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// The checks of [`accept`], on the parsed request: path, origin, subprotocol. On success,
/// the response carries the chosen subprotocol, which is also returned.
fn check_request(
    options: &AcceptOptions,
    request: &Request,
    mut response: Response,
) -> Result<(Response, Option<&'static str>), ErrorResponse> {
    let path = request.uri().path();
    if path != options.path {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            format!("no WebSocket endpoint at {path}\n"),
        ));
    }
    if !options.allowed_origins.is_empty() {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        let allowed = origin.is_some_and(|origin| {
            options
                .allowed_origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(origin))
        });
        if !allowed {
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "origin not allowed\n".to_owned(),
            ));
        }
    }
    let offered = offered_subprotocols(request);
    if offered.is_empty() {
        // Lenient: [MQTT-6.0.0-3] says the client MUST offer "mqtt", but some clients offer
        // nothing; they get a WebSocket without a subprotocol and speak MQTT on it anyway.
        return Ok((response, None));
    }
    let Some(chosen) = SUBPROTOCOLS.into_iter().find(|ours| offered.contains(ours)) else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            format!(
                "no MQTT WebSocket subprotocol offered (accepted: {})\n",
                SUBPROTOCOLS.join(", ")
            ),
        ));
    };
    // [MQTT-6.0.0-4]: the server selects one of the subprotocols the client offered.
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(chosen),
    );
    Ok((response, Some(chosen)))
}

/// The response tungstenite does not send when the request is no WebSocket upgrade at all.
fn bad_request(reason: &str) -> Vec<u8> {
    let body = format!("not a WebSocket upgrade: {reason}\n");
    format!(
        "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Accepts a WebSocket upgrade on `stream` (already through TLS, for `wss`).
///
/// The request must name [`AcceptOptions::path`] (else 404), come from an allowed origin
/// (else 403), and, if it offers subprotocols, offer one of [`SUBPROTOCOLS`] (else 400). A
/// request that offers none is accepted without one ([`WsStream::subprotocol`] is `None`).
/// A request that is no WebSocket upgrade at all (a plain `GET`, a `POST`) is answered
/// `400 Bad Request`. In every refused case the error is [`WsError::Refused`], and the
/// caller should drop the stream.
pub async fn accept<S>(mut stream: S, options: &AcceptOptions) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = config(options.max_message_size);
    let mut subprotocol = None;
    let callback = |request: &Request, response: Response| {
        let (response, chosen) = check_request(options, request, response)?;
        subprotocol = chosen;
        Ok(response)
    };
    // The handshake runs on `&mut stream`, so that when tungstenite refuses a request without
    // answering it (it answers only what the callback refuses) the stream is still here to
    // answer on. After a successful handshake nothing is buffered: tungstenite refuses bytes
    // after the request (`JunkAfterRequest`), as a client must wait for the 101 response.
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(&mut stream, callback, Some(config)).await;
    match handshake {
        Ok(ws) => drop(ws),
        Err(tungstenite::Error::Http(response)) => {
            // The callback refused it, and tungstenite has sent the response.
            return Err(WsError::Refused(format!("HTTP {}", response.status())));
        }
        Err(e @ (tungstenite::Error::Io(_) | tungstenite::Error::ConnectionClosed)) => {
            return Err(WsError::Protocol(e));
        }
        Err(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::HandshakeIncomplete,
        )) => {
            return Err(WsError::Refused(
                "the peer closed the connection before the end of its request".into(),
            ));
        }
        Err(e) => {
            // No Upgrade or Connection header, another method than GET, a malformed or
            // oversized request: tungstenite fails before the callback runs and sends
            // nothing. Answer 400 ourselves, best effort (the peer may be gone).
            let reason = e.to_string();
            let _ = stream.write_all(&bad_request(&reason)).await;
            let _ = stream.shutdown().await;
            return Err(WsError::Refused(reason));
        }
    }
    let inner =
        tokio_tungstenite::WebSocketStream::from_raw_socket(stream, Role::Server, Some(config))
            .await;
    Ok(WsStream::new(inner, subprotocol, Role::Server))
}

/// Opens a WebSocket on `stream` (already through TLS, for `wss`) to `url`
/// (`ws://host:port/path` or `wss://…`, which names the Host header and path), offering the
/// subprotocol `mqtt`. Messages from the server are bounded by `max_message_size`.
///
/// A server that answers without choosing `mqtt` is refused ([`WsError::Refused`]), as is
/// one that answers with an HTTP error status.
pub async fn connect<S>(
    stream: S,
    url: &str,
    max_message_size: usize,
) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(CLIENT_SUBPROTOCOL),
    );
    let config = config(max_message_size);
    let (inner, response) =
        match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok(done) => done,
            Err(tungstenite::Error::Http(response)) => {
                return Err(WsError::Refused(format!(
                    "the server answered HTTP {}",
                    response.status()
                )));
            }
            Err(tungstenite::Error::Protocol(
                e @ tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(_),
            )) => {
                return Err(WsError::Refused(format!(
                    "the server did not choose the subprotocol {CLIENT_SUBPROTOCOL}: {e}"
                )));
            }
            Err(e) => return Err(WsError::Protocol(e)),
        };
    // tungstenite checks that the server chose one of the offered subprotocols (or none, which
    // it refuses when some were offered); check again, as [MQTT-6.0.0-4] is what we rely on.
    let chosen = response.headers().get(header::SEC_WEBSOCKET_PROTOCOL);
    if chosen.map(HeaderValue::as_bytes) != Some(CLIENT_SUBPROTOCOL.as_bytes()) {
        return Err(WsError::Refused(format!(
            "the server chose the subprotocol {chosen:?}, not {CLIENT_SUBPROTOCOL}"
        )));
    }
    Ok(WsStream::new(inner, Some(CLIENT_SUBPROTOCOL), Role::Client))
}

/// A WebSocket as a byte stream. See the [module docs](self).
///
/// Reading: the payloads of binary messages, in order, with no regard to message boundaries
/// [MQTT-6.0.0-2]. A text message is an error of kind `InvalidData` [MQTT-6.0.0-1] (and a
/// close frame is sent); a close frame, or the end of the stream, is the end of file. Pings
/// are answered with pongs, which are flushed as the ping is read, so a connection that only
/// reads answers them too. Reading is cancel-safe: nothing is lost when a read future is
/// dropped.
///
/// Writing: each `poll_write` sends one binary message with the buffer, or with its first
/// [`MAX_WRITE_MESSAGE`] bytes when it is longer (and says so in the count it returns).
/// `poll_shutdown` sends a close frame and then shuts the stream below down.
///
/// A server's messages, which are not masked, go from the caller's buffer to the stream below
/// in one vectored write of frame header and payload, with no copy; only what the stream does
/// not take at once is kept, and written before anything else. A client's are masked, and
/// written by tungstenite.
#[derive(Debug)]
pub struct WsStream<S> {
    inner: tokio_tungstenite::WebSocketStream<S>,
    /// Server: frames are written directly ([`WsStream`]'s docs).
    server: bool,
    /// Server: the rest of a frame the stream below took only part of. Nothing else is
    /// written, nor read (tungstenite may write a pong as it reads), until it is out.
    unsent: bytes::BytesMut,
    /// tungstenite may hold output of its own (a pong, a close frame) not yet flushed: flushed
    /// before a frame is written directly.
    replies_queued: bool,
    /// A close frame was received or sent: no more messages may be written.
    closing: bool,
    /// The unread rest of the current binary message; empty (no allocation held) otherwise.
    pending: Bytes,
    subprotocol: Option<&'static str>,
    /// A close frame, the end of the stream or a text message was read: reads return EOF.
    read_done: bool,
    /// The close frame of `poll_shutdown` was sent.
    close_sent: bool,
    /// A pong could not be written at once: no more is read until it is.
    pong_unflushed: bool,
}

impl<S> WsStream<S> {
    fn new(
        inner: tokio_tungstenite::WebSocketStream<S>,
        subprotocol: Option<&'static str>,
        role: Role,
    ) -> Self {
        Self {
            inner,
            server: role == Role::Server,
            unsent: bytes::BytesMut::new(),
            replies_queued: false,
            closing: false,
            pending: Bytes::new(),
            subprotocol,
            read_done: false,
            close_sent: false,
            pong_unflushed: false,
        }
    }

    /// The subprotocol agreed in the handshake: `mqtt` or `mqttv3.1`, or `None` when the
    /// client offered none.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol
    }

    /// The stream below (a TCP or TLS stream, say, to read its peer address or certificate).
    pub fn get_ref(&self) -> &S
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.inner.get_ref()
    }
}

/// A tungstenite error as an I/O error.
fn io_error(e: tungstenite::Error) -> io::Error {
    use tungstenite::Error;
    match e {
        Error::Io(e) => e,
        Error::ConnectionClosed | Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, e)
        }
        Error::Protocol(tungstenite::error::ProtocolError::SendAfterClosing) => {
            io::Error::new(io::ErrorKind::BrokenPipe, e)
        }
        Error::Capacity(_) | Error::Protocol(_) | Error::Utf8(_) | Error::AttackAttempt => {
            io::Error::new(io::ErrorKind::InvalidData, e)
        }
        e => io::Error::other(e),
    }
}

/// The header of a final binary frame of `len` bytes, unmasked (a server's): its bytes and
/// their number.
fn binary_frame_header(len: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x82;
    match len {
        0..=125 => {
            header[1] = len as u8;
            (header, 2)
        }
        126..=0xffff => {
            header[1] = 126;
            header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            (header, 4)
        }
        _ => {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            (header, 10)
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Writes out the rest of a frame the stream below took only part of.
    fn poll_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use bytes::Buf;
        while !self.unsent.is_empty() {
            let stream = Pin::new(self.inner.get_mut());
            match ready!(stream.poll_write(cx, &self.unsent))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.unsent.advance(n),
            }
        }
        // Held only while a frame is under way.
        if self.unsent.capacity() > 0 {
            self.unsent = bytes::BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Flushes what tungstenite holds of its own, once nothing of ours is half written.
    fn poll_replies(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_unsent(cx))?;
        if self.replies_queued {
            ready!(Pin::new(&mut self.inner).poll_flush(cx)).map_err(io_error)?;
            self.replies_queued = false;
        }
        Poll::Ready(Ok(()))
    }

    /// A server's message: header and payload in one vectored write, straight from `payload`.
    fn poll_write_frame(
        &mut self,
        cx: &mut Context<'_>,
        payload: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_replies(cx))?;
        let (header, header_len) = binary_frame_header(payload.len());
        let header = &header[..header_len];
        let parts = [io::IoSlice::new(header), io::IoSlice::new(payload)];
        let stream = Pin::new(self.inner.get_mut());
        let written = ready!(stream.poll_write_vectored(cx, &parts))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        // The frame is ours now: what the stream did not take goes out before anything else.
        if written < header.len() {
            self.unsent.extend_from_slice(&header[written..]);
            self.unsent.extend_from_slice(payload);
        } else if written < header.len() + payload.len() {
            self.unsent
                .extend_from_slice(&payload[written - header.len()..]);
        }
        Poll::Ready(Ok(payload.len()))
    }

    /// Flushes what tungstenite queued on its own (a pong, a close reply), best effort: an
    /// error is returned, but `Pending` is not, as the next read tries again.
    fn flush_replies(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_replies(cx) {
            Poll::Ready(Err(e)) => Err(e),
            Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
        }
    }

    /// Sends a close frame for a text message, best effort (the connection ends anyway).
    fn close_for_text(&mut self, cx: &mut Context<'_>) {
        self.closing = true;
        if !matches!(self.poll_replies(cx), Poll::Ready(Ok(()))) {
            return;
        }
        let mut inner = Pin::new(&mut self.inner);
        if let Poll::Ready(Ok(())) = inner.as_mut().poll_ready(cx) {
            let frame = CloseFrame {
                code: CloseCode::Unsupported,
                reason: "MQTT takes binary frames only [MQTT-6.0.0-1]".into(),
            };
            if inner
                .as_mut()
                .start_send(Message::Close(Some(frame)))
                .is_ok()
            {
                let _ = inner.poll_flush(cx);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pong_unflushed && this.pending.is_empty() {
                ready!(this.poll_replies(cx))?;
                this.pong_unflushed = false;
            }
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                if n == this.pending.len() {
                    // Drop the message, so that no reference to tungstenite's buffer is kept.
                    buf.put_slice(&std::mem::take(&mut this.pending));
                } else {
                    buf.put_slice(&this.pending.split_to(n));
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_done || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // tungstenite writes as it reads only what it queued on a ping or a close, which
            // `pong_unflushed` and `read_done` have sent before this: never into the middle of
            // a frame of ours, and reading goes on while a frame of ours waits.
            let message = match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                // The close handshake is over, or the stream ended.
                None => {
                    this.read_done = true;
                    return Poll::Ready(Ok(()));
                }
                Some(Ok(message)) => message,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            };
            match message {
                Message::Binary(payload) => this.pending = payload,
                Message::Text(_) => {
                    this.read_done = true;
                    this.close_for_text(cx);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a WebSocket text frame: MQTT is carried in binary frames only, the connection is closed [MQTT-6.0.0-1]",
                    )));
                }
                Message::Ping(_) => {
                    this.pong_unflushed = true;
                    this.replies_queued = true;
                }
                Message::Close(_) => {
                    // tungstenite queued the close reply; send it along.
                    this.read_done = true;
                    this.closing = true;
                    this.replies_queued = true;
                    this.flush_replies(cx)?;
                    return Poll::Ready(Ok(()));
                }
                Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        let message = &buf[..buf.len().min(MAX_WRITE_MESSAGE)];
        if this.server {
            if this.closing {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the WebSocket is closing",
                )));
            }
            return this.poll_write_frame(cx, message);
        }
        let mut inner = Pin::new(&mut this.inner);
        ready!(inner.as_mut().poll_ready(cx)).map_err(io_error)?;
        inner
            .start_send(Message::Binary(Bytes::copy_from_slice(message)))
            .map_err(io_error)?;
        Poll::Ready(Ok(message.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_unsent(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx)).map_err(io_error)?;
        this.replies_queued = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_unsent(cx))?;
        if !this.close_sent {
            // Before the close frame is begun: once tungstenite has started it, no frame of
            // ours may follow, even if this shutdown is never polled again.
            this.closing = true;
            match ready!(Pin::new(&mut this.inner).poll_close(cx)) {
                Ok(()) | Err(tungstenite::Error::AlreadyClosed) => {}
                Err(e) => return Poll::Ready(Err(io_error(e))),
            }
            this.close_sent = true;
        }
        Pin::new(this.inner.get_mut()).poll_shutdown(cx)
    }
}
