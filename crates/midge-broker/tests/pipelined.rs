//! A client that pipelines more SUBSCRIBE and UNSUBSCRIBE packets than a connection keeps
//! answers for (`midge_proto::server::MAX_PENDING_REQUESTS`) is slowed down, not cut off: the
//! broker answers each one, in order, and packets sent after them come after them.

mod common;

use bytes::BytesMut;
use common::*;
use midge_codec::{Packet, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions, Unsubscribe};
use midge_proto::server::MAX_PENDING_REQUESTS;

#[tokio::test]
async fn pipelined_requests_are_all_answered_in_order() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in [V311, V5] {
        let mut c = Peer::connect(addr, version, &format!("pipe-{version:?}")).await;
        let requests = 2 * MAX_PENDING_REQUESTS as u16 + 3;
        let mut out = BytesMut::new();
        for n in 1..=requests {
            let packet = if n % 4 == 0 {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id: pid(n),
                    filters: vec![format!("p/{}", n - 1).into()],
                    properties: Default::default(),
                })
            } else {
                Packet::Subscribe(Subscribe {
                    packet_id: pid(n),
                    filters: vec![(
                        format!("p/{n}").into(),
                        SubscriptionOptions::qos(QoS::AtMostOnce),
                    )],
                    properties: Default::default(),
                })
            };
            packet.encode(version, &mut out).expect("encodes");
        }
        // Sent after the requests, to a filter subscribed by the first one: it arrives once
        // every request is answered.
        let publish = Publish {
            topic: "p/1".into(),
            payload: bytes::Bytes::from_static(b"after"),
            ..Publish::default()
        };
        Packet::Publish(publish)
            .encode(version, &mut out)
            .expect("encodes");
        c.send_raw(&out).await;
        for n in 1..=requests {
            match c.recv_packet().await {
                Packet::SubAck(ack) if n % 4 != 0 => {
                    assert_eq!(ack.packet_id, pid(n));
                    assert_eq!(ack.reason_codes, [ReasonCode::GRANTED_QOS_0]);
                }
                Packet::UnsubAck(ack) if n % 4 == 0 => assert_eq!(ack.packet_id, pid(n)),
                other => panic!("{version:?}: answer {n}: {other:?}"),
            }
        }
        match c.recv_packet().await {
            Packet::Publish(p) => assert_eq!(&p.payload[..], b"after"),
            other => panic!("{version:?}: {other:?}"),
        }
    }
}
