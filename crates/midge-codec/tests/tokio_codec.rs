//! `MqttCodec` (feature `tokio-util`) driven through `Decoder::decode` / `Encoder::encode`
//! directly, as `Framed` would, without a runtime.
#![cfg(feature = "tokio-util")]

mod common;

use bytes::BytesMut;
use common::{hex, pid, s, V3_1_1, V5};
use midge_codec::{
    CodecError, Connect, DecodeError, Disconnect, MqttCodec, Packet, PubAck, Publish, QoS,
    ReasonCode, MAX_PACKET_SIZE,
};
use tokio_util::codec::{Decoder, Encoder};

/// 5.0 §3.1 CONNECT, level 5, Clean Start, Keep Alive 60, no properties, client "cid".
const CONNECT_V5: &str = "10 10 0004 4d515454 05 02 003c 00 0003 636964";

#[test]
fn decoding_a_v5_connect_switches_the_codec_to_v5() {
    let mut codec = MqttCodec::new(V3_1_1);
    assert_eq!(codec.max_packet_size, MAX_PACKET_SIZE);
    let mut src = BytesMut::from(&hex(CONNECT_V5)[..]);
    // A partial packet is `Ok(None)` and leaves the codec as it was.
    let mut partial = BytesMut::from(&hex(CONNECT_V5)[..7]);
    assert!(codec.decode(&mut partial).unwrap().is_none());
    assert_eq!(codec.version, V3_1_1);

    let packet = codec.decode(&mut src).unwrap();
    assert_eq!(
        packet,
        Some(Packet::Connect(Box::new(Connect::new(V5, "cid"))))
    );
    assert_eq!(codec.version, V5);
    assert!(src.is_empty());

    // The next packets are read as 5.0: a 3-byte PUBACK with a reason code is valid only there.
    src.extend_from_slice(&hex("40 03 0007 10"));
    let ack = PubAck {
        reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ..PubAck::new(pid(7))
    };
    assert_eq!(codec.decode(&mut src).unwrap(), Some(Packet::PubAck(ack)));
}

#[test]
fn encoder_and_decoder_carry_a_session_in_sequence() {
    // Client side: encoding its CONNECT sets the version.
    let mut client = MqttCodec::new(V3_1_1);
    let mut server = MqttCodec::new(V3_1_1);
    let mut to_server = BytesMut::new();
    let mut to_client = BytesMut::new();

    let connect = Packet::Connect(Box::new(Connect::new(V5, "cid")));
    client.encode(&connect, &mut to_server).unwrap();
    assert_eq!(client.version, V5);
    let publish = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: s("a/b"),
        packet_id: Some(pid(1)),
        payload: bytes::Bytes::from_static(b"hi"),
        ..Publish::default()
    });
    client.encode(publish.clone(), &mut to_server).unwrap();
    client
        .encode(Packet::Disconnect(Disconnect::default()), &mut to_server)
        .unwrap();

    // Server side, all three in one read.
    assert_eq!(server.decode(&mut to_server).unwrap(), Some(connect));
    assert_eq!(server.version, V5);
    assert_eq!(server.decode(&mut to_server).unwrap(), Some(publish));
    assert_eq!(
        server.decode(&mut to_server).unwrap(),
        Some(Packet::Disconnect(Disconnect::default()))
    );
    assert_eq!(server.decode(&mut to_server).unwrap(), None);

    server
        .encode(Packet::ConnAck(Box::default()), &mut to_client)
        .unwrap();
    assert_eq!(
        &to_client[..],
        &hex("20 03 00 00 00")[..],
        "5.0 CONNACK carries a property length"
    );
    assert_eq!(
        client.decode(&mut to_client).unwrap(),
        Some(Packet::ConnAck(Box::default()))
    );
}

#[test]
fn codec_errors_carry_the_decode_and_encode_errors() {
    let mut codec = MqttCodec::new(V5).with_max_packet_size(16);
    let mut src = BytesMut::from(&hex("30 ff ff ff 7f")[..]);
    match codec.decode(&mut src) {
        Err(CodecError::Decode(DecodeError::PacketTooLarge { max: 16, .. })) => {}
        other => panic!("expected PacketTooLarge, got {other:?}"),
    }
    let mut codec = MqttCodec::new(V3_1_1);
    let mut dst = BytesMut::new();
    match codec.encode(Packet::Auth(Default::default()), &mut dst) {
        Err(CodecError::Encode(midge_codec::EncodeError::RequiresV5("AUTH"))) => {}
        other => panic!("expected RequiresV5, got {other:?}"),
    }
    assert!(dst.is_empty());
}
