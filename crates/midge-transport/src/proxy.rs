//! The HAProxy PROXY protocol, versions 1 (text) and 2 (binary).
//!
//! A load balancer in front of the broker opens its own TCP connection to it, so the broker
//! sees the balancer's address, not the client's. With the PROXY protocol the balancer sends
//! one header first, before any MQTT byte, naming the client's address.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncRead;

/// Longest header accepted: a version 1 header is at most 107 bytes; version 2 headers carry
/// TLVs, bounded here so that a hostile peer cannot make the broker buffer more.
pub const MAX_HEADER_LEN: usize = 1024;

/// What a PROXY header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyHeader {
    /// The client's address, or `None` for `UNKNOWN` (v1) and `LOCAL` (v2) headers, which a
    /// balancer sends for its own health checks.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when the header names one.
    pub destination: Option<SocketAddr>,
}

/// Why a PROXY header could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The stream does not begin with a PROXY header (v1 `PROXY ` or the v2 signature).
    #[error("no PROXY protocol header where one is required")]
    Missing,
    /// The header is malformed or longer than [`MAX_HEADER_LEN`].
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// The stream ended or failed first.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one PROXY header (v1 or v2) from the start of `stream`, and not one byte past it, so
/// that the stream goes on with the first byte the client sent.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let _ = stream;
    todo!()
}

/// Whether `start`, the first bytes of a stream, begin like a PROXY header. Used to tell a
/// header sent to a listener that expects none: such a connection is closed.
pub fn looks_like_header(start: &[u8]) -> bool {
    let _ = start;
    todo!()
}

#[allow(dead_code)]
const _UNUSED: Option<Duration> = None;
