#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod alias;
pub mod client;
pub mod inflight;
pub mod keepalive;
mod message;
pub mod server;
pub mod session;

pub use message::Message;
