#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod connector;
mod driver;
mod error;
mod message;
mod options;

pub use client::{Client, ClientBuilder, ConnectionEvent, PublishHandle, Subscription};
pub use connector::Connector;
pub use error::{ClientError, CloseReason, ConnectError, InputKind, InvalidInput};
pub use message::Message;
pub use options::{Limits, PublishOptions, ReconnectPolicy, SubscribeOptions};

/// The packet types and values the API uses (`QoS`, `ReasonCode`, `Will`, properties), from
/// `midge-codec`.
pub use midge_codec as codec;
pub use midge_codec::{ProtocolVersion, QoS, ReasonCode};
