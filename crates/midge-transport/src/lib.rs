//! Byte streams for MQTT on tokio.
//!
//! MQTT runs over any ordered, reliable byte stream. This crate opens and accepts the ones a
//! deployment needs, and hands each over as a tokio `AsyncRead + AsyncWrite`, so that the
//! MQTT code above it (midge-broker's connections, midge-client) does not know which one it
//! runs on:
//!
//! - [`tls`]: TLS 1.2 and 1.3 with rustls and the ring provider. Server configurations from
//!   PEM files, with client-certificate verification, ALPN `mqtt`, and reloading while
//!   running; client configurations with system or given roots and client certificates.
//! - [`ws`]: MQTT over WebSocket (MQTT 5.0 section 6): binary frames carry the byte stream,
//!   the subprotocol is `mqtt` (or `mqttv3.1`), and frame and message sizes are bounded.
//! - [`proxy`]: the HAProxy PROXY protocol header (v1 and v2), which carries the real client
//!   address through a load balancer.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod proxy;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "ws")]
pub mod ws;
