#![doc = include_str!("../README.md")]
// Without the `tokio-util` feature, the README's link to `MqttCodec` goes to docs.rs.
#![cfg_attr(
    not(feature = "tokio-util"),
    doc = "",
    doc = "[`MqttCodec`]: https://docs.rs/midge-codec/latest/midge_codec/struct.MqttCodec.html"
)]
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    warn(
        clippy::std_instead_of_core,
        clippy::unwrap_used,
        clippy::indexing_slicing
    )
)]

extern crate alloc;

mod decode;
mod encode;
mod error;
mod packet;
pub mod properties;
mod reason;
mod types;
mod wire;

#[cfg(feature = "tokio-util")]
mod codec;

#[cfg(feature = "tokio-util")]
pub use codec::{CodecError, MqttCodec};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketType, PubAck, Publish, PublishRef, SubAck,
    Subscribe, UnsubAck, Unsubscribe, Will,
};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperties, WillProperties,
};
pub use reason::ReasonCode;
pub use types::{
    ByteStr, PacketId, PayloadFormat, ProtocolVersion, QoS, RetainHandling, SubscriptionId,
    SubscriptionOptions,
};

/// The largest packet MQTT can express: a 5-byte fixed header and a Remaining Length of
/// 268,435,455 bytes (§2.1.4). Pass it as `max_packet_size` to impose no limit of your own.
pub const MAX_PACKET_SIZE: u32 = 1 + 4 + wire::MAX_VARINT;
