//! `tokio_util::codec` support.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::{DecodeError, EncodeError, Packet, ProtocolVersion, MAX_PACKET_SIZE};

/// A `Decoder` and `Encoder` of [`Packet`]s for `tokio_util::codec::Framed`.
///
/// It carries the connection's protocol version and the largest packet it accepts. Decoding or
/// encoding a CONNECT sets the version to the one the CONNECT names, so a server's codec
/// follows its client's version without further calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqttCodec {
    /// Protocol version of the connection.
    pub version: ProtocolVersion,
    /// Largest packet accepted, fixed header included; larger ones are refused from the fixed
    /// header alone.
    pub max_packet_size: u32,
}

impl MqttCodec {
    /// A codec for `version` that accepts packets up to the protocol's maximum size.
    pub const fn new(version: ProtocolVersion) -> Self {
        Self {
            version,
            max_packet_size: MAX_PACKET_SIZE,
        }
    }

    /// Sets the largest packet accepted.
    #[must_use]
    pub const fn with_max_packet_size(mut self, max_packet_size: u32) -> Self {
        self.max_packet_size = max_packet_size;
        self
    }
}

/// An error from [`MqttCodec`]: the transport's, or a packet's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The peer sent a packet that breaks the protocol.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The packet cannot be encoded for this protocol version.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl Decoder for MqttCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let packet = Packet::decode(src, self.version, self.max_packet_size)?;
        if let Some(Packet::Connect(connect)) = &packet {
            self.version = connect.protocol;
        }
        Ok(packet)
    }
}

impl Encoder<Packet> for MqttCodec {
    type Error = CodecError;

    fn encode(&mut self, packet: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        <Self as Encoder<&Packet>>::encode(self, &packet, dst)
    }
}

impl Encoder<&Packet> for MqttCodec {
    type Error = CodecError;

    fn encode(&mut self, packet: &Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        if let Packet::Connect(connect) = packet {
            self.version = connect.protocol;
        }
        packet.encode(self.version, dst)?;
        Ok(())
    }
}
