//! Manual acknowledgement (`ClientBuilder::manual_acks`): a received QoS 1 or 2 message is
//! acknowledged only when the application acks its `Ack`, in arrival order; a dropped `Ack`
//! abandons the message, which a resumed session brings again. Packet by packet against a
//! scripted broker on tokio's paused clock, and end to end against the midge broker.

mod common;

use std::time::Duration;

use common::script::{self, Network, Peer};
use common::{builder, start_broker, within, Proxy};
use midge_client::codec::{Packet, PacketId, PubAck, Publish};
use midge_client::{
    Ack, Client, ConnectionEvent, Limits, Message, ProtocolVersion, PublishOptions, QoS,
    ReasonCode, SubscribeOptions, Subscription,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const QOS1: QoS = QoS::AtLeastOnce;
const QOS2: QoS = QoS::ExactlyOnce;

/// Virtual time in which the client would have answered, had it been going to.
const SILENCE: Duration = Duration::from_secs(5);

fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("a packet identifier")
}

fn sub(qos: QoS) -> SubscribeOptions {
    SubscribeOptions::with_qos(qos)
}

/// A connected client with manual acknowledgements and one stream per filter, against the
/// scripted broker.
async fn scripted(
    version: ProtocolVersion,
    name: &str,
    filters: &[&str],
    configure: impl FnOnce(midge_client::ClientBuilder) -> midge_client::ClientBuilder,
) -> (Network, Peer, Client, Vec<Subscription>) {
    let (mut network, builder) = Network::client(version, name);
    let client = configure(builder.manual_acks(true).keep_alive(0))
        .build()
        .unwrap();
    let mut peer = network.accept().await;
    peer.accept_connect(false).await;
    within("connected", client.wait_connected()).await.unwrap();
    let mut streams = Vec::new();
    for filter in filters {
        let subscribing = {
            let client = client.clone();
            let filter = (*filter).to_owned();
            tokio::spawn(async move { client.subscribe(filter, sub(QOS2)).await })
        };
        peer.grant_subscribe().await;
        streams.push(within("SUBACK", subscribing).await.unwrap().unwrap().1);
    }
    (network, peer, client, streams)
}

async fn take(stream: &mut Subscription, payload: &str) -> (Message, Ack) {
    let mut message = within("a message", stream.recv()).await.expect("a message");
    assert_eq!(message.payload(), payload);
    let ack = message
        .take_ack()
        .expect("a QoS 1/2 message carries an Ack");
    assert!(message.take_ack().is_none(), "the Ack is taken once");
    (message, ack)
}

/// Acknowledgements wait for the application, and go out in arrival order whatever order it
/// acks in; a clone carries no `Ack`.
// Conformance: [MQTT-5:4.6.0-2] [MQTT-3.1.1:4.6.0-2]
#[tokio::test(start_paused = true)]
async fn nothing_is_acknowledged_before_the_application_acks_and_acks_keep_arrival_order() {
    for version in [V5, V311] {
        let (_network, mut peer, _client, mut streams) =
            scripted(version, "order", &["m/#"], |b| b).await;
        let stream = &mut streams[0];
        peer.send(script::publish("m/1", 1, "one")).await;
        peer.send(script::publish_with("m/2", 2, "two", QOS2, &[]))
            .await;
        peer.send(script::publish("m/3", 3, "three")).await;
        let (message, one) = take(stream, "one").await;
        assert!(message.clone().take_ack().is_none(), "a clone has no Ack");
        assert_eq!(message.clone(), message);
        let (_, two) = take(stream, "two").await;
        let (_, three) = take(stream, "three").await;
        assert_eq!((one.packet_id(), two.packet_id()), (1, 2));
        // Read, not acked: nothing goes out.
        assert_eq!(peer.next(SILENCE).await, None, "{version:?}: acked unasked");
        // Acked out of order: the answers wait for the first.
        three.ack();
        two.ack();
        assert_eq!(peer.next(SILENCE).await, None, "{version:?}: out of order");
        one.ack();
        assert_eq!(peer.recv_packet().await, Packet::PubAck(PubAck::new(id(1))));
        assert_eq!(peer.recv_packet().await, Packet::PubRec(PubAck::new(id(2))));
        assert_eq!(peer.recv_packet().await, Packet::PubAck(PubAck::new(id(3))));
    }
}

/// A dropped `Ack` (or a message dropped with its `Ack`) is never acknowledged, and the
/// answers to later messages no longer wait for it.
#[tokio::test(start_paused = true)]
async fn a_dropped_ack_is_never_acknowledged() {
    let (_network, mut peer, _client, mut streams) = scripted(V5, "drop", &["d/#"], |b| b).await;
    let stream = &mut streams[0];
    peer.send(script::publish("d/1", 1, "one")).await;
    peer.send(script::publish("d/2", 2, "two")).await;
    peer.send(script::publish("d/3", 3, "three")).await;
    let (_, one) = take(stream, "one").await;
    drop(one);
    // Dropped with its Ack inside.
    let message = within("two", stream.recv()).await.unwrap();
    drop(message);
    let (_, three) = take(stream, "three").await;
    three.ack();
    assert_eq!(peer.recv_packet().await, Packet::PubAck(PubAck::new(id(3))));
    assert_eq!(
        peer.next(SILENCE).await,
        None,
        "an abandoned message was acked"
    );
}

/// One PUBLISH for two streams: acknowledged once both copies are acked; abandoned when one
/// copy's `Ack` is dropped, whatever the other does.
#[tokio::test(start_paused = true)]
async fn a_message_for_several_streams_needs_every_copy_acked() {
    let (_network, mut peer, _client, mut streams) =
        scripted(V311, "copies", &["c/#", "c/+"], |b| b).await;
    // 3.1.1: one PUBLISH reaches every matching stream.
    peer.send(script::publish("c/x", 1, "both")).await;
    peer.send(script::publish("c/x", 2, "abandoned")).await;
    let (_, first_a) = take(&mut streams[0], "both").await;
    let (_, first_b) = take(&mut streams[1], "both").await;
    let (_, second_a) = take(&mut streams[0], "abandoned").await;
    let (_, second_b) = take(&mut streams[1], "abandoned").await;
    first_a.ack();
    assert_eq!(peer.next(SILENCE).await, None, "acked with one copy left");
    first_b.ack();
    assert_eq!(peer.recv_packet().await, Packet::PubAck(PubAck::new(id(1))));
    drop(second_a);
    second_b.ack();
    assert_eq!(
        peer.next(SILENCE).await,
        None,
        "acked with one copy abandoned"
    );
}

/// A QoS 1 `Ack` of an earlier connection is ignored: the resumed session brings the message
/// again, with a new `Ack`. A QoS 2 `Ack` holds for the session: the broker's resend is
/// answered with it, and not delivered twice.
#[tokio::test(start_paused = true)]
async fn acks_across_a_reconnect() {
    let (mut network, mut peer, client, mut streams) = scripted(V5, "across", &["a/#"], |b| {
        b.clean_start(false).session_expiry(600)
    })
    .await;
    let stream = &mut streams[0];
    let mut events = client.events();
    peer.send(script::publish("a/1", 1, "one")).await;
    peer.send(script::publish_with("a/2", 2, "two", QOS2, &[]))
        .await;
    let (_, one) = take(stream, "one").await;
    let (_, two) = take(stream, "two").await;
    drop(peer);
    loop {
        let event = within("reconnected", events.recv()).await.unwrap();
        if let ConnectionEvent::Reconnecting { .. } = event {
            break;
        }
    }
    // Acked while offline: the QoS 1 one is of the lost connection.
    one.ack();
    let mut peer = network.accept().await;
    peer.accept_connect(true).await;
    peer.send(Packet::Publish(Publish {
        dup: true,
        ..match script::publish("a/1", 1, "one") {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }))
    .await;
    peer.send(Packet::Publish(Publish {
        dup: true,
        ..match script::publish_with("a/2", 2, "two", QOS2, &[]) {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }))
    .await;
    // The QoS 1 message comes again (the old Ack meant nothing); the QoS 2 one does not.
    let (_, again) = take(stream, "one").await;
    assert_eq!(peer.next(SILENCE).await, None, "the old QoS 1 Ack was sent");
    again.ack();
    assert_eq!(peer.recv_packet().await, Packet::PubAck(PubAck::new(id(1))));
    // The QoS 2 Ack of the earlier connection answers the resend.
    two.ack();
    assert_eq!(peer.recv_packet().await, Packet::PubRec(PubAck::new(id(2))));
    assert!(
        tokio::time::timeout(SILENCE, stream.recv()).await.is_err(),
        "the QoS 2 message was delivered twice"
    );
}

/// 5.0 announces `receive_maximum` as Receive Maximum, which bounds what the application
/// holds unacknowledged; 3.1.1 cannot, and the client stops reading while the application
/// holds that many `Ack`s.
#[tokio::test(start_paused = true)]
async fn held_acks_bound_what_is_read() {
    let mut limits = Limits::default();
    limits.receive_maximum = 2;
    let (mut network, builder) = Network::client(V5, "window");
    let _client = builder.manual_acks(true).limits(limits).build().unwrap();
    let mut peer = network.accept().await;
    let connect = peer.accept_connect(false).await;
    assert_eq!(connect.properties.receive_maximum.map(|m| m.get()), Some(2));

    let (_network, mut peer, _client, mut streams) =
        scripted(V311, "window", &["w/#"], |b| b.limits(limits)).await;
    let stream = &mut streams[0];
    peer.send(script::publish("w/x", 1, "one")).await;
    peer.send(script::publish("w/x", 2, "two")).await;
    let (_, one) = take(stream, "one").await;
    let (_, _two) = take(stream, "two").await;
    // Sent once the application holds two: the client does not read it.
    peer.send(script::publish("w/x", 3, "three")).await;
    assert!(
        tokio::time::timeout(SILENCE, stream.recv()).await.is_err(),
        "read past the window"
    );
    one.ack();
    assert_eq!(peer.recv_packet().await, Packet::PubAck(PubAck::new(id(1))));
    let (_, _three) = take(stream, "three").await;
}

// ------------------------------------------------------------------ against the midge broker

fn numbered(n: usize) -> String {
    format!("m{n}")
}

/// End to end, through a proxy that cuts the connection: messages acked before the cut are
/// not sent again, the others (abandoned, or held unacked) come again in the resumed session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_come_again_in_the_resumed_session_and_acked_ones_do_not() {
    let broker = start_broker().await;
    let proxy = Proxy::start(broker.local_addr(), 3).await;
    for version in [V5, V311] {
        let subscriber = builder(proxy.addr, &format!("manual-{version:?}"))
            .version(version)
            .clean_start(false)
            .session_expiry(600)
            .manual_acks(true)
            .connect()
            .await
            .unwrap();
        let mut events = subscriber.events();
        let (_, mut stream) = subscriber.subscribe("manual/#", sub(QOS1)).await.unwrap();
        let publisher = builder(broker.local_addr(), "manual-publisher")
            .connect()
            .await
            .unwrap();
        for n in 0..6 {
            publisher
                .publish("manual/x", numbered(n), PublishOptions::with_qos(QOS1))
                .await
                .unwrap();
        }
        // m0, m1 acked; m2 abandoned; m3 acked (after an abandoned one: still goes out);
        // m4 held unacked; m5 read, its message dropped (abandoned).
        let mut held = Vec::new();
        for n in 0..6 {
            let mut message = within("a message", stream.recv()).await.unwrap();
            assert_eq!(message.payload(), numbered(n).as_str(), "{version:?}");
            if n == 5 {
                drop(message);
                continue;
            }
            let ack = message.take_ack().expect("an Ack");
            match n {
                0 | 1 | 3 => ack.ack(),
                2 => drop(ack),
                _ => held.push(ack),
            }
        }
        // Let the acknowledgements reach the broker before the cut.
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut_all();
        loop {
            match within("reconnected", events.recv()).await.unwrap() {
                ConnectionEvent::Connected { session_present } => {
                    assert!(session_present, "{version:?}");
                    break;
                }
                _ => continue,
            }
        }
        // The unacknowledged ones come again, in order; the acked ones do not.
        for n in [2, 4, 5] {
            let mut message = within("again", stream.recv()).await.unwrap();
            assert_eq!(message.payload(), numbered(n).as_str(), "{version:?}");
            message.take_ack().expect("an Ack").ack();
        }
        // The old connection's Ack means nothing now.
        drop(held);
        if let Ok(again) = tokio::time::timeout(Duration::from_millis(300), stream.recv()).await {
            panic!("{version:?}: an acknowledged message came again: {again:?}");
        }
        // Acked now: a further cut brings nothing back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut_all();
        loop {
            if let ConnectionEvent::Connected { .. } =
                within("reconnected", events.recv()).await.unwrap()
            {
                break;
            }
        }
        if let Ok(again) = tokio::time::timeout(Duration::from_millis(300), stream.recv()).await {
            panic!(
                "{version:?}: an acknowledged message came again after the second cut: {again:?}"
            );
        }
        publisher.disconnect(ReasonCode::SUCCESS).await;
        subscriber.disconnect(ReasonCode::SUCCESS).await;
    }
    broker.shutdown().await;
}
