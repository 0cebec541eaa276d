#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::indexing_slicing))]

mod alias;
pub mod client;
mod inflight;
mod keepalive;
mod message;
mod packets;
pub mod server;
pub mod session;
pub mod splitmix64;

pub use message::Message;

/// Bytes [`client::Client::poll_transmit`] and [`server::ServerConnection::poll_transmit`]
/// write per call before they yield, so that one call never builds an unbounded buffer.
pub const TRANSMIT_BATCH: usize = 64 * 1024;
