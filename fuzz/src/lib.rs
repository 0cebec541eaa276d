//! Shared checks for the fuzz targets.

use bytes::{Bytes, BytesMut};
use midge_codec::{Packet, ProtocolVersion, MAX_PACKET_SIZE};

/// Decodes every packet in `data` as `version`. Whatever decodes must encode, and the encoding
/// must decode to the same packet: the codec accepts nothing it cannot reproduce.
pub fn decode_all(data: &[u8], version: ProtocolVersion) {
    let mut buf = BytesMut::from(data);
    // The version a CONNECT names applies to the packets after it, as on a real connection.
    let mut version = version;
    loop {
        let before = buf.len();
        match Packet::decode(&mut buf, version, MAX_PACKET_SIZE) {
            Ok(Some(packet)) => {
                if let Packet::Connect(c) = &packet {
                    version = c.protocol;
                }
                roundtrip(&packet, version);
            }
            // Incomplete input consumes nothing.
            Ok(None) => {
                assert_eq!(buf.len(), before);
                return;
            }
            Err(_) => return,
        }
    }
}

/// Encodes `packet` for `version`, checks the length promise, and decodes it back.
pub fn roundtrip(packet: &Packet, version: ProtocolVersion) {
    let len = packet
        .encoded_len(version)
        .expect("a decoded packet encodes");
    let mut out = BytesMut::new();
    packet
        .encode(version, &mut out)
        .expect("a decoded packet encodes");
    assert_eq!(out.len(), len, "encoded_len matches encode");
    let mut bytes = Bytes::from(out);
    let again = Packet::decode_bytes(&mut bytes, version, MAX_PACKET_SIZE)
        .expect("re-encoded packet decodes")
        .expect("re-encoded packet is complete");
    assert!(bytes.is_empty(), "decode consumed the whole encoding");
    assert_eq!(&again, packet);
}
