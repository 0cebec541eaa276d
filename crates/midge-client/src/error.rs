//! Errors.

use midge_codec::{EncodeError, ReasonCode};
use midge_proto::client::{CloseReason, PublishError, RequestError};

/// Why a client operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// [`Client::try_publish`](crate::Client::try_publish): `max_queued_publishes` publishes
    /// are already held. Nothing was queued.
    #[error("the publish queue is full")]
    QueueFull,
    /// The client is closed: [`Client::disconnect`](crate::Client::disconnect) was called,
    /// reconnection is off or gave up, or the broker refused us for good. Operations queued
    /// and not completed fail with this.
    #[error("the client is closed")]
    Closed,
    /// The client closed while a QoS 2 publish waited for PUBCOMP, after the broker had
    /// acknowledged receipt with PUBREC: the broker has the message, so do not publish it
    /// again (that would duplicate it). With a resumed session the release completes on the
    /// next connection; whether the broker forwards a message still unreleased depends on the
    /// broker.
    #[error("the client closed after the broker received the message (PUBREC), before PUBCOMP")]
    ReleasePending,
    /// The broker answered with a failure reason code (0x80 or above) in PUBACK, PUBREC,
    /// SUBACK or UNSUBACK, or the client refused to send a message the broker's limits rule
    /// out (`QOS_NOT_SUPPORTED`, `RETAIN_NOT_SUPPORTED`, `PACKET_TOO_LARGE`).
    #[error("refused with reason code {0}")]
    Refused(ReasonCode),
    /// The message cannot be published (invalid topic, limits, encoding).
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The subscribe or unsubscribe request is invalid.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A property cannot be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Request/response: no response within the timeout.
    #[error("no response in time")]
    Timeout,
    /// Request/response needs MQTT 5.0.
    #[error("request/response needs MQTT 5.0")]
    NeedsV5,
}

/// Why [`ClientBuilder::connect`](crate::ClientBuilder::connect) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration cannot be encoded as a CONNECT (for example 5.0 properties under
    /// 3.1.1).
    #[error("invalid configuration: {0}")]
    Config(#[from] EncodeError),
    /// The connection ended before it was accepted, and the reconnect policy did not try
    /// again.
    #[error("connection failed: {0:?}")]
    Failed(Disconnect),
}

/// Why a connection ended or could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The TCP connection could not be made or broke.
    Io(std::io::ErrorKind),
    /// The TCP connection did not come up within the connect timeout.
    ConnectTimeout,
    /// The MQTT session ended: refused in CONNACK, DISCONNECT from the broker, a protocol
    /// violation, a keepalive timeout, or our own disconnect.
    Mqtt(CloseReason),
}
