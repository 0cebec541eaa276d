//! The HAProxy PROXY protocol, versions 1 (text) and 2 (binary).
//!
//! A load balancer in front of the broker opens its own TCP connection to it, so the broker
//! sees the balancer's address, not the client's. With the PROXY protocol the balancer sends
//! one header first, before any MQTT byte, naming the client's address.
//!
//! The header is parsed by the `ppp` crate; this module only reads it off the stream, exactly
//! to its last byte. See <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest header accepted: a version 1 header is at most 107 bytes; version 2 headers carry
/// TLVs, bounded here so that a hostile peer cannot make the broker buffer more.
pub const MAX_HEADER_LEN: usize = 1024;

/// The start of a version 1 header.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest version 1 header, `\r\n` included.
const V1_MAX_LEN: usize = 107;
/// The shortest version 1 header: `PROXY UNKNOWN\r\n`.
const V1_MIN_LEN: usize = 15;
/// The 12-byte signature of a version 2 header.
const V2_SIGNATURE: &[u8] = ppp::v2::PROTOCOL_PREFIX;
/// Signature, version and command, family and protocol, 2 bytes of length.
const V2_FIXED_LEN: usize = 16;

/// What a PROXY header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyHeader {
    /// The client's address, or `None` for `UNKNOWN` (v1) and `LOCAL` (v2) headers, which a
    /// balancer sends for its own health checks (and for v2 headers with an unspecified or
    /// Unix-socket address).
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
///
/// It reads one byte first: anything but `P` or `\r` is [`ProxyError::Missing`] at once, so
/// that a client that sends a short MQTT CONNECT straight away and waits for the CONNACK is
/// told apart without waiting for bytes that never come. Then, for `P`, up to the 15 bytes of
/// the shortest version 1 header, and one byte at a time up to `\r\n` (at most 107 bytes);
/// for `\r`, the 16 fixed bytes of a version 2 header, then the rest its length field
/// announces (at most [`MAX_HEADER_LEN`] in all). Use it on a stream without a read buffer
/// of its own (a `TcpStream`); on a buffered one, keep using that buffered stream afterwards.
///
/// It has no timeout: wrap it in `tokio::time::timeout`, as a peer that sends nothing holds
/// it forever. Not cancel-safe: bytes read before cancellation are lost.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let first = stream.read_u8().await?;
    let fixed_len = match first {
        b'P' => V1_MIN_LEN,
        b'\r' => V2_FIXED_LEN,
        _ => return Err(ProxyError::Missing),
    };
    let mut header = vec![first; fixed_len];
    if let Some(rest) = header.get_mut(1..) {
        stream.read_exact(rest).await?;
    }
    if header.starts_with(V2_SIGNATURE) {
        let length = match header.get(V2_FIXED_LEN - 2..V2_FIXED_LEN) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return Err(ProxyError::Malformed("truncated".into())),
        };
        let total = V2_FIXED_LEN + length;
        if total > MAX_HEADER_LEN {
            return Err(ProxyError::Malformed(format!(
                "a version 2 header of {total} bytes, more than the {MAX_HEADER_LEN} accepted"
            )));
        }
        header.resize(total, 0);
        if let Some(rest) = header.get_mut(V2_FIXED_LEN..) {
            stream.read_exact(rest).await?;
        }
        let parsed = ppp::v2::Header::try_from(header.as_slice())
            .map_err(|e| ProxyError::Malformed(format!("version 2: {e}")))?;
        Ok(from_v2(&parsed))
    } else if header.starts_with(V1_PREFIX) {
        while !header.ends_with(b"\r\n") {
            if header.len() >= V1_MAX_LEN {
                return Err(ProxyError::Malformed(format!(
                    "a version 1 header without \\r\\n in its first {V1_MAX_LEN} bytes"
                )));
            }
            header.push(stream.read_u8().await?);
        }
        let parsed = ppp::v1::Header::try_from(header.as_slice())
            .map_err(|e| ProxyError::Malformed(format!("version 1: {e}")))?;
        // ppp parses up to the first `\r`: a header with a stray `\r` inside is cut short
        // there; the bytes after it are not part of a valid header.
        if parsed.header.len() != header.len() {
            return Err(ProxyError::Malformed(
                "version 1: a carriage return inside the header".into(),
            ));
        }
        Ok(from_v1(&parsed))
    } else {
        Err(ProxyError::Missing)
    }
}

fn from_v1(header: &ppp::v1::Header<'_>) -> ProxyHeader {
    use ppp::v1::Addresses;
    match header.addresses {
        Addresses::Unknown => ProxyHeader {
            source: None,
            destination: None,
        },
        Addresses::Tcp4(a) => ProxyHeader {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        },
        Addresses::Tcp6(a) => ProxyHeader {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        },
    }
}

fn from_v2(header: &ppp::v2::Header<'_>) -> ProxyHeader {
    use ppp::v2::{Addresses, Command};
    let none = ProxyHeader {
        source: None,
        destination: None,
    };
    if header.command == Command::Local {
        // The balancer's own connection (a health check): the addresses, if any, are to be
        // ignored.
        return none;
    }
    match header.addresses {
        Addresses::IPv4(a) => ProxyHeader {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        },
        Addresses::IPv6(a) => ProxyHeader {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        },
        Addresses::Unspecified | Addresses::Unix(_) => none,
    }
}

/// Whether `start`, the first bytes of a stream, begin like a PROXY header: they are `PROXY `
/// or the version 2 signature, or a non-empty beginning of one of them (a short read). Empty
/// `start` is `false`. Used to tell a header sent to a listener that expects none: such a
/// connection is closed.
///
/// No MQTT connection, WebSocket upgrade or TLS handshake begins like this: an MQTT packet
/// starting with `P` (0x50) or `\r` (0x0D) has a type that no first packet has, a WebSocket
/// upgrade begins with `GET `, and a TLS handshake with 0x16.
pub fn looks_like_header(start: &[u8]) -> bool {
    let prefix_of = |signature: &[u8]| {
        let n = start.len().min(signature.len());
        start.get(..n) == signature.get(..n)
    };
    !start.is_empty() && (prefix_of(V1_PREFIX) || prefix_of(V2_SIGNATURE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_like_header_on_prefixes() {
        assert!(looks_like_header(b"PROXY TCP4 1.2.3.4"));
        assert!(looks_like_header(b"PROXY "));
        assert!(looks_like_header(b"PRO"));
        assert!(looks_like_header(b"\r\n\r\n\0\r\nQUIT\n\x21"));
        assert!(looks_like_header(b"\r\n\r"));
        assert!(!looks_like_header(b""));
        assert!(!looks_like_header(b"PROXX"));
        assert!(!looks_like_header(b"PROXYTCP4"));
        // An MQTT CONNECT, a WebSocket upgrade, a TLS ClientHello.
        assert!(!looks_like_header(&[
            0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T'
        ]));
        assert!(!looks_like_header(b"GET /mqtt HTTP/1.1\r\n"));
        assert!(!looks_like_header(&[0x16, 0x03, 0x01]));
    }
}
