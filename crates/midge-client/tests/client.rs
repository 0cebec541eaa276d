//! The client against the midge broker over TCP on loopback: acknowledgements, subscriptions,
//! properties, back-pressure, reconnection, and the cancel safety of every public `async fn`.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use midge_broker::codec::SubscriptionOptions;
use midge_broker::{Broker, ClientInfo, Hooks};
use midge_client::codec::{
    ConnAck, Packet, PacketId, PayloadFormat, PubAck, Publish, SubAck, Subscribe, SubscriptionId,
    Will, MAX_PACKET_SIZE,
};
use midge_client::{
    ClientError, CloseReason, ConnectionEvent, Disconnect, Limits, ProtocolVersion, PublishOptions,
    QoS, ReasonCode, SubscribeOptions,
};
use tokio::sync::broadcast;

const QOS1: QoS = QoS::AtLeastOnce;
const QOS2: QoS = QoS::ExactlyOnce;

fn sub(qos: QoS) -> SubscribeOptions {
    SubscribeOptions::with_qos(qos)
}

fn pubq(qos: QoS) -> PublishOptions {
    PublishOptions::with_qos(qos)
}

/// Polls `fut` exactly once, then drops it: the cancellation at the most awkward moment, just
/// after the operation has started. Returns whether it had completed (possible when the driver
/// on the other worker is quick).
async fn poll_once_and_drop<F: Future>(fut: F) -> bool {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_ready())).await
}

async fn next_event(events: &mut broadcast::Receiver<ConnectionEvent>) -> ConnectionEvent {
    within("a connection event", events.recv())
        .await
        .expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_resolves_with_the_brokers_reason_code_for_that_message() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let client = builder(addr, "ack").connect().await.unwrap();
    // 5.0: no subscriber yet, so PUBACK and PUBREC say 0x10 (§3.4.2.1, §3.5.2.1).
    for qos in [QOS1, QOS2] {
        let code = client.publish("acks/x", "1", pubq(qos)).await.unwrap();
        assert_eq!(code, ReasonCode::NO_MATCHING_SUBSCRIBERS, "{qos:?}");
    }
    let (granted, mut messages) = client.subscribe("acks/#", sub(QOS2)).await.unwrap();
    assert_eq!(granted, ReasonCode::GRANTED_QOS_2);
    for qos in [QoS::AtMostOnce, QOS1, QOS2] {
        let code = client.publish("acks/x", "2", pubq(qos)).await.unwrap();
        assert_eq!(code, ReasonCode::SUCCESS, "{qos:?}");
        let message = within("echo", messages.recv()).await.unwrap();
        assert_eq!((message.topic(), message.qos()), ("acks/x", qos));
    }
    // Many concurrent publishes from many tasks each get their own outcome.
    let mut tasks = Vec::new();
    for task in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..50 {
                let payload = format!("{task}/{n}");
                assert_eq!(
                    client.publish("acks/many", payload, pubq(QOS1)).await,
                    Ok(ReasonCode::SUCCESS)
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut seen = 0;
    while seen < 400 {
        let m = within("fan-in", messages.recv()).await.unwrap();
        assert_eq!(m.topic(), "acks/many");
        seen += 1;
    }
    client.disconnect(ReasonCode::SUCCESS).await;
    assert!(client.is_closed());
    assert_eq!(
        client.publish("acks/x", "late", pubq(QOS1)).await,
        Err(ClientError::Closed)
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_publishes_and_subscribes() {
    let broker = start_broker().await;
    let client = builder(broker.local_addr(), "v311")
        .version(ProtocolVersion::V3_1_1)
        .connect()
        .await
        .unwrap();
    let (granted, mut messages) = client.subscribe("old/+", sub(QOS2)).await.unwrap();
    assert_eq!(granted, ReasonCode::GRANTED_QOS_2);
    for qos in [QoS::AtMostOnce, QOS1, QOS2] {
        // 3.1.1 acknowledgements have no reason code: success.
        assert_eq!(
            client.publish("old/t", "v", pubq(qos)).await,
            Ok(ReasonCode::SUCCESS)
        );
        assert_eq!(within("3.1.1", messages.recv()).await.unwrap().qos(), qos);
    }
    assert_eq!(
        client
            .request("svc", "x", PublishOptions::new(), Duration::from_secs(1))
            .await
            .unwrap_err(),
        ClientError::NeedsV5
    );
    client.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_messages_expose_every_v5_property() {
    let broker = start_broker().await;
    let client = builder(broker.local_addr(), "props")
        .connect()
        .await
        .unwrap();
    let (_, mut messages) = client
        .subscribe(
            "props/#",
            sub(QOS1).subscription_identifier(SubscriptionId::new(42).unwrap()),
        )
        .await
        .unwrap();
    let options = pubq(QOS1)
        .content_type("application/json")
        .response_topic("props/reply")
        .correlation_data(&b"corr-1"[..])
        .user_property("k1", "v1")
        .user_property("k2", "v2")
        .message_expiry(300)
        .utf8_payload();
    client.publish("props/a", "{}", options).await.unwrap();
    let m = within("message", messages.recv()).await.unwrap();
    assert_eq!(m.content_type().unwrap().as_str(), "application/json");
    assert_eq!(m.response_topic().unwrap().as_str(), "props/reply");
    assert_eq!(m.correlation_data().unwrap(), Bytes::from_static(b"corr-1"));
    let users: Vec<_> = m
        .user_properties()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
        .collect();
    assert_eq!(
        users,
        [("k1".into(), "v1".into()), ("k2".into(), "v2".into())]
    );
    let expiry = m.message_expiry_interval().unwrap();
    assert!((290..=300).contains(&expiry), "{expiry}");
    assert_eq!(m.payload_format(), Some(PayloadFormat::Utf8));
    assert_eq!(m.subscription_identifiers(), [42]);
    // A property that cannot be encoded fails the publish, and nothing is queued.
    let too_long = "x".repeat(70_000);
    assert!(matches!(
        client
            .publish("props/a", "", PublishOptions::new().content_type(too_long))
            .await,
        Err(ClientError::Encode(_))
    ));
    assert!(matches!(
        client
            .publish("bad/+/topic", "", PublishOptions::new())
            .await,
        Err(ClientError::Publish(_))
    ));
    client.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
}

struct RefuseSecret {
    subscribes: Arc<AtomicUsize>,
}

impl Hooks for RefuseSecret {
    fn authorize_subscribe(
        &self,
        _client: &ClientInfo,
        filter: &str,
        _options: &SubscriptionOptions,
    ) -> Result<(), ReasonCode> {
        self.subscribes.fetch_add(1, Relaxed);
        if filter.starts_with("secret") {
            Err(ReasonCode::NOT_AUTHORIZED)
        } else {
            Ok(())
        }
    }
}

async fn broker_with_counter() -> (midge_broker::BrokerHandle, Arc<AtomicUsize>) {
    let subscribes = Arc::new(AtomicUsize::new(0));
    let broker = Broker::builder()
        .config(broker_config())
        .hooks(RefuseSecret {
            subscribes: subscribes.clone(),
        })
        .bind("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    (broker, subscribes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_refusal_unsubscribe_and_dropping_the_last_stream() {
    let (broker, _) = broker_with_counter().await;
    let client = builder(broker.local_addr(), "subs")
        .connect()
        .await
        .unwrap();
    assert_eq!(
        client.subscribe("secret/x", sub(QOS1)).await.unwrap_err(),
        ClientError::Refused(ReasonCode::NOT_AUTHORIZED)
    );
    assert!(matches!(
        client.subscribe("bad/#/filter", sub(QOS1)).await,
        Err(ClientError::Request(_))
    ));
    // Two streams of one filter both get every message.
    let (_, mut a) = client.subscribe("two/#", sub(QOS1)).await.unwrap();
    let (_, mut b) = client.subscribe("two/#", sub(QOS1)).await.unwrap();
    client.publish("two/x", "m", pubq(QOS1)).await.unwrap();
    assert_eq!(within("a", a.recv()).await.unwrap().topic(), "two/x");
    assert_eq!(within("b", b.recv()).await.unwrap().topic(), "two/x");
    // Dropping one keeps the subscription for the other.
    drop(a);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(broker.stats().subscriptions, 1);
    client.publish("two/y", "m", pubq(QOS1)).await.unwrap();
    assert_eq!(within("b", b.recv()).await.unwrap().topic(), "two/y");
    // Unsubscribe ends the stream.
    assert_eq!(client.unsubscribe("two/#").await, Ok(ReasonCode::SUCCESS));
    assert!(within("end of stream", b.recv()).await.is_none());
    assert_eq!(
        client.publish("two/z", "m", pubq(QOS1)).await,
        Ok(ReasonCode::NO_MATCHING_SUBSCRIBERS)
    );
    // Dropping the last stream of a filter unsubscribes.
    let (_, c) = client.subscribe("three", sub(QOS1)).await.unwrap();
    assert_eq!(broker.stats().subscriptions, 1);
    drop(c);
    within("unsubscribed", async {
        while broker.stats().subscriptions != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    client.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_round_trip() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let server = builder(addr, "responder").connect().await.unwrap();
    let (_, mut requests) = server.subscribe("svc/echo", sub(QOS1)).await.unwrap();
    let responder = tokio::spawn({
        let server = server.clone();
        async move {
            while let Some(request) = requests.recv().await {
                let mut answer = b"echo:".to_vec();
                answer.extend_from_slice(request.payload());
                server.respond(&request, answer, pubq(QOS1)).await.unwrap();
            }
        }
    });
    let client = builder(addr, "requester").connect().await.unwrap();
    for n in 0..5 {
        let response = client
            .request("svc/echo", format!("{n}"), pubq(QOS1), WAIT)
            .await
            .unwrap();
        assert_eq!(response.payload(), &Bytes::from(format!("echo:{n}")));
    }
    // No responder: a timeout, and the response subscription is gone afterwards: only the
    // responder's own subscription stays.
    let before = 1;
    assert_eq!(
        client
            .request("svc/nobody", "x", pubq(QOS1), Duration::from_millis(100))
            .await
            .unwrap_err(),
        ClientError::Timeout
    );
    within("response subscription removed", async {
        while broker.stats().subscriptions != before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // Cancel safety: a request dropped after it started leaves no subscription behind, and
    // the next one works.
    let _ = poll_once_and_drop(client.request("svc/echo", "gone", pubq(QOS1), WAIT)).await;
    let response = client
        .request("svc/echo", "again", pubq(QOS1), WAIT)
        .await
        .unwrap();
    assert_eq!(response.payload(), &Bytes::from_static(b"echo:again"));
    within("response subscriptions removed", async {
        while broker.stats().subscriptions != before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // respond, dropped after it started: the response still goes out.
    let (_, mut manual) = server.subscribe("svc/manual", sub(QOS1)).await.unwrap();
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.request("svc/manual", "q", pubq(QOS1), WAIT).await }
    });
    let request = within("manual request", manual.recv()).await.unwrap();
    let _ = poll_once_and_drop(server.respond(&request, "dropped but sent", pubq(QOS1))).await;
    let response = within("response", asking).await.unwrap().unwrap();
    assert_eq!(response.payload(), &Bytes::from_static(b"dropped but sent"));
    client.disconnect(ReasonCode::SUCCESS).await;
    server.disconnect(ReasonCode::SUCCESS).await;
    responder.await.unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_publish_wait_and_try_publish_fail_and_offline_messages_go_later() {
    let broker = start_broker().await;
    let watcher = builder(broker.local_addr(), "watcher")
        .connect()
        .await
        .unwrap();
    let (_, mut seen) = watcher.subscribe("queue/#", sub(QOS1)).await.unwrap();
    // The publisher starts offline: its proxy leads nowhere yet.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let proxy = Proxy::start(dead_addr, 1).await;
    let mut limits = Limits::default();
    limits.max_queued_publishes = 3;
    let publisher = builder(proxy.addr, "queued")
        .limits(limits)
        .build()
        .unwrap();
    let mut handles = Vec::new();
    for n in 0..3 {
        handles.push(
            publisher
                .try_publish(format!("queue/{n}"), "m", pubq(QOS1))
                .unwrap(),
        );
    }
    assert_eq!(
        publisher
            .try_publish("queue/x", "m", pubq(QOS1))
            .unwrap_err(),
        ClientError::QueueFull
    );
    // `publish` waits for a place; cancelled while waiting, it queues nothing.
    assert!(tokio::time::timeout(
        Duration::from_millis(50),
        publisher.publish("queue/cancelled", "m", pubq(QOS1))
    )
    .await
    .is_err());
    assert!(tokio::time::timeout(
        Duration::from_millis(50),
        publisher.enqueue("queue/cancelled", "m", pubq(QOS1))
    )
    .await
    .is_err());
    // A fourth publish waits, and goes once the broker is reachable.
    let waiting = tokio::spawn({
        let publisher = publisher.clone();
        async move { publisher.publish("queue/3", "m", pubq(QOS1)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished());
    proxy.retarget(broker.local_addr());
    within("connected", publisher.wait_connected())
        .await
        .unwrap();
    for handle in handles {
        assert_eq!(within("ack", handle).await, Ok(ReasonCode::SUCCESS));
    }
    assert_eq!(
        within("waiting", waiting).await.unwrap(),
        Ok(ReasonCode::SUCCESS)
    );
    let mut topics = Vec::new();
    for _ in 0..4 {
        topics.push(
            within("seen", seen.recv())
                .await
                .unwrap()
                .topic()
                .to_owned(),
        );
    }
    assert_eq!(topics, ["queue/0", "queue/1", "queue/2", "queue/3"]);
    // Nothing cancelled was sent.
    publisher
        .publish("queue/end", "m", pubq(QOS1))
        .await
        .unwrap();
    assert_eq!(
        within("end", seen.recv()).await.unwrap().topic(),
        "queue/end"
    );
    publisher.disconnect(ReasonCode::SUCCESS).await;
    watcher.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_safety_of_publish_subscribe_unsubscribe_disconnect_and_recv() {
    let (broker, subscribes) = broker_with_counter().await;
    let addr = broker.local_addr();
    let client = builder(addr, "cancel").connect().await.unwrap();
    let (_, mut seen) = client.subscribe("cancel/seen", sub(QOS1)).await.unwrap();

    // publish and enqueue, dropped after they queued the message: it is still delivered.
    let _ = poll_once_and_drop(client.publish("cancel/seen", "p", pubq(QOS1))).await;
    assert_eq!(within("p", seen.recv()).await.unwrap().payload(), "p");
    let handle = client
        .enqueue("cancel/seen", "e", pubq(QOS1))
        .await
        .unwrap();
    drop(handle);
    assert_eq!(within("e", seen.recv()).await.unwrap().payload(), "e");

    // subscribe, dropped after it started: once its SUBACK is in, it is undone.
    let before = subscribes.load(Relaxed);
    let _ = poll_once_and_drop(client.subscribe("cancel/sub", sub(QOS1))).await;
    within("subscribe then unsubscribe", async {
        while subscribes.load(Relaxed) == before || broker.stats().subscriptions != 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert_eq!(
        client.publish("cancel/sub", "x", pubq(QOS1)).await,
        Ok(ReasonCode::NO_MATCHING_SUBSCRIBERS)
    );

    // unsubscribe, dropped after it started: it still happens.
    let (_, mut gone) = client.subscribe("cancel/unsub", sub(QOS1)).await.unwrap();
    let _ = poll_once_and_drop(client.unsubscribe("cancel/unsub")).await;
    assert!(within("stream ends", gone.recv()).await.is_none());
    within("unsubscribed", async {
        while broker.stats().subscriptions != 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;

    // recv is cancel-safe: cancelling it over and over loses no message.
    let publisher = client.clone();
    let sender = tokio::spawn(async move {
        for n in 0..200u32 {
            publisher
                .publish("cancel/seen", n.to_string(), pubq(QOS1))
                .await
                .unwrap();
        }
    });
    let mut next = 0u32;
    let mut cancelled = 0;
    while next < 200 {
        tokio::select! {
            m = seen.recv() => {
                assert_eq!(m.unwrap().payload(), &Bytes::from(next.to_string()));
                next += 1;
            }
            () = tokio::task::yield_now() => cancelled += 1,
        }
    }
    assert!(cancelled > 0);
    sender.await.unwrap();

    // wait_connected is cancel-safe (it only watches), and disconnect, dropped after it
    // started, still closes the client.
    assert!(poll_once_and_drop(client.wait_connected()).await);
    let _ = poll_once_and_drop(client.disconnect(ReasonCode::SUCCESS)).await;
    within("closed", async {
        while !client.is_closed() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(within("stream ends", seen.recv()).await.is_none());
    assert_eq!(client.wait_connected().await, Err(ClientError::Closed));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_dropped_while_waiting_for_connack_ends_the_driver() {
    // A listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let connect = builder(addr, "silent").connect();
    assert!(tokio::time::timeout(Duration::from_millis(100), connect)
        .await
        .is_err());
    let (mut socket, _) = within("accepted", silent.accept()).await.unwrap();
    // The dropped client's driver closes its socket: read sees CONNECT, then end of stream.
    let mut buf = Vec::new();
    within(
        "socket closed",
        tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut buf),
    )
    .await
    .unwrap();
    assert_eq!(buf.first(), Some(&0x10), "CONNECT was sent first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_from_a_handler_under_full_back_pressure_completes() {
    const N: usize = 2000;
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut limits = Limits::default();
    limits.max_queued_publishes = 2;
    limits.receive_maximum = 4;
    // The handler's client: it answers every message on in/# with a publish on out/#, and
    // reads its own answers back on a second subscription.
    let handler = builder(addr, "handler")
        .limits(limits)
        .connect()
        .await
        .unwrap();
    let (_, mut inbox) = handler.subscribe("in/#", sub(QOS1)).await.unwrap();
    let (_, mut outbox) = handler.subscribe("out/#", sub(QOS1)).await.unwrap();
    let full = Arc::new(AtomicUsize::new(0));
    let handler_task = tokio::spawn({
        let handler = handler.clone();
        let full = full.clone();
        async move {
            let mut handled = 0;
            while let Some(message) = inbox.recv().await {
                let topic = message.topic().replacen("in/", "out/", 1);
                // First try without waiting; a full queue proves the back-pressure is real.
                match handler.try_publish(topic.clone(), message.payload().clone(), pubq(QOS1)) {
                    Ok(ack) => drop(ack),
                    Err(ClientError::QueueFull) => {
                        full.fetch_add(1, Relaxed);
                        handler
                            .publish(topic, message.payload().clone(), pubq(QOS1))
                            .await
                            .unwrap();
                    }
                    Err(err) => panic!("{err}"),
                }
                handled += 1;
                if handled == N {
                    break;
                }
            }
        }
    });
    let collector = tokio::spawn(async move {
        let mut got = vec![false; N];
        let mut count = 0;
        while count < N {
            let m = outbox.recv().await.unwrap();
            let n: usize = std::str::from_utf8(m.payload()).unwrap().parse().unwrap();
            if !got[n] {
                got[n] = true;
                count += 1;
            }
        }
    });
    let producer = builder(addr, "producer").connect().await.unwrap();
    for n in 0..N {
        let handle = producer
            .enqueue(format!("in/{}", n % 7), n.to_string(), pubq(QOS1))
            .await
            .unwrap();
        drop(handle);
    }
    within("handler done", handler_task).await.unwrap();
    within("every answer arrived", collector).await.unwrap();
    assert!(full.load(Relaxed) > 0, "the queue never filled up");
    producer.disconnect(ReasonCode::SUCCESS).await;
    handler.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_with_events_and_resubscribes_when_the_broker_lost_the_session() {
    let broker = start_broker().await;
    let proxy = Proxy::start(broker.local_addr(), 7).await;
    let client = builder(proxy.addr, "resub").connect().await.unwrap();
    let mut events = client.events();
    let (_, mut messages) = client.subscribe("resub/#", sub(QOS1)).await.unwrap();
    // The broker dies and a new one (no sessions) takes its place.
    broker.shutdown().await;
    let second = start_broker().await;
    proxy.retarget(second.local_addr());
    proxy.cut_all();
    let (mut disconnected, mut reconnecting) = (0, 0);
    loop {
        match next_event(&mut events).await {
            ConnectionEvent::Disconnected(_) => disconnected += 1,
            ConnectionEvent::Reconnecting { attempt, delay } => {
                assert!(attempt >= 1 && delay <= Duration::from_millis(100));
                reconnecting += 1;
            }
            ConnectionEvent::Connected { session_present } => {
                assert!(!session_present);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(disconnected >= 1 && reconnecting >= 1);
    // The stream from before carries on: the client subscribed again.
    within("resubscribed", async {
        while second.stats().subscriptions != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let other = builder(second.local_addr(), "other")
        .connect()
        .await
        .unwrap();
    other.publish("resub/x", "after", pubq(QOS1)).await.unwrap();
    assert_eq!(
        within("after", messages.recv()).await.unwrap().payload(),
        "after"
    );
    other.disconnect(ReasonCode::SUCCESS).await;
    client.disconnect(ReasonCode::SUCCESS).await;
    assert_eq!(next_event(&mut events).await, ConnectionEvent::Closed);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reconnection_a_lost_connection_closes_the_client_and_fails_what_is_pending() {
    let broker = start_broker().await;
    let proxy = Proxy::start(broker.local_addr(), 3).await;
    let client = builder(proxy.addr, "once")
        .reconnect(None)
        .connect()
        .await
        .unwrap();
    let (_, mut messages) = client.subscribe("once", sub(QOS1)).await.unwrap();
    let mut events = client.events();
    proxy.cut_all();
    assert!(matches!(
        next_event(&mut events).await,
        ConnectionEvent::Disconnected(
            Disconnect::Io(_) | Disconnect::Mqtt(CloseReason::ConnectionLost)
        )
    ));
    assert_eq!(next_event(&mut events).await, ConnectionEvent::Closed);
    assert_eq!(
        within("closed", client.wait_connected()).await,
        Err(ClientError::Closed)
    );
    assert!(client.is_closed());
    assert!(within("stream ends", messages.recv()).await.is_none());
    assert_eq!(
        client.publish("once", "x", pubq(QOS1)).await,
        Err(ClientError::Closed)
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_follow_the_policy_and_will_is_sent() {
    // Nothing listens: with reconnection off, connect fails at once; with a bounded policy,
    // after its attempts.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let err = builder(dead_addr, "x")
        .reconnect(None)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(err, midge_client::ConnectError::Failed(Disconnect::Io(_))),
        "{err:?}"
    );
    let bounded = fast_reconnect().max_attempts(3);
    let err = builder(dead_addr, "x")
        .reconnect(Some(bounded))
        .connect()
        .await;
    assert!(err.is_err());
    // A will reaches a subscriber when the connection dies without DISCONNECT.
    let broker = start_broker().await;
    let proxy = Proxy::start(broker.local_addr(), 9).await;
    let watcher = builder(broker.local_addr(), "will-watcher")
        .connect()
        .await
        .unwrap();
    let (_, mut wills) = watcher.subscribe("wills/#", sub(QOS1)).await.unwrap();
    let will = Will {
        topic: "wills/w".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QOS1,
        retain: false,
        properties: Default::default(),
    };
    let dying = builder(proxy.addr, "dying")
        .will(will)
        .reconnect(None)
        .connect()
        .await
        .unwrap();
    proxy.cut_all();
    assert_eq!(
        within("will", wills.recv()).await.unwrap().payload(),
        "gone"
    );
    assert!(
        within("closed", async {
            while !dying.is_closed() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            true
        })
        .await
    );
    watcher.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
}

/// The CONNECT a client sends carries its user properties in order, and a user name without a
/// password has no password field at all [MQTT-5:3.1.2-18] (the password flag is 0).
#[tokio::test]
async fn connect_carries_user_properties_and_a_user_name_without_password() {
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = midge_client::Client::builder("127.0.0.1", port)
        .client_id("props")
        .username("alice")
        .connect_user_property("region", "eu-1")
        .connect_user_property("region", "eu-2")
        .build()
        .unwrap();
    let (mut socket, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("the client connects")
        .unwrap();
    let mut buf = bytes::BytesMut::new();
    let connect = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read_buf(&mut buf))
            .await
            .expect("CONNECT arrives")
            .unwrap();
        assert!(n > 0, "closed before a whole CONNECT");
        if let Some(packet) =
            Packet::decode(&mut buf, ProtocolVersion::V5, MAX_PACKET_SIZE).unwrap()
        {
            break packet;
        }
    };
    let Packet::Connect(connect) = connect else {
        panic!("expected CONNECT, got {connect:?}");
    };
    assert_eq!(connect.username.as_ref().map(|u| u.as_str()), Some("alice"));
    assert_eq!(connect.password, None);
    let properties: Vec<(&str, &str)> = connect
        .properties
        .user_properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(properties, [("region", "eu-1"), ("region", "eu-2")]);
    drop(client);
}

/// Messages a resumed session delivers before the application subscribes again are held,
/// unacknowledged, and handed to the first stream that matches them: none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_a_resumed_session_wait_for_a_matching_stream() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let persistent = || builder(addr, "held").clean_start(false).session_expiry(300);
    let first = persistent().connect().await.unwrap();
    let (_, stream) = first.subscribe("held/#", sub(QOS1)).await.unwrap();
    // Keep the stream until after DISCONNECT, so the session keeps its subscription.
    first.disconnect(ReasonCode::SUCCESS).await;
    drop(stream);

    let publisher = builder(addr, "held-publisher").connect().await.unwrap();
    for n in 0..5 {
        publisher
            .publish("held/x", n.to_string(), pubq(QOS1))
            .await
            .unwrap();
    }
    publisher.disconnect(ReasonCode::SUCCESS).await;

    let again = persistent().connect().await.unwrap();
    // The queued messages arrive right after CONNACK, with no stream to take them yet.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, mut late) = again.subscribe("held/#", sub(QOS1)).await.unwrap();
    for n in 0..5 {
        let message = within("a held message", late.recv()).await.unwrap();
        assert_eq!(message.payload(), n.to_string().as_str());
    }
    assert_eq!(again.dropped_messages(), 0);
    again.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
}

/// QoS 0 has no flow control: past `max_buffered_qos0` unread messages, the newest are dropped,
/// and each is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_overflow_and_unmatched_messages_are_each_counted_once() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut limits = Limits::default();
    limits.max_buffered_qos0 = 2;
    let client = builder(addr, "qos0-drops")
        .limits(limits)
        .connect()
        .await
        .unwrap();
    let (_, mut stream) = client
        .subscribe("drops/a", sub(QoS::AtMostOnce))
        .await
        .unwrap();
    let (_, _other) = client
        .subscribe("drops/b", sub(QoS::AtMostOnce))
        .await
        .unwrap();
    let publisher = builder(addr, "qos0-drops-publisher")
        .connect()
        .await
        .unwrap();
    for n in 0..5 {
        publisher
            .publish("drops/a", n.to_string(), pubq(QoS::AtMostOnce))
            .await
            .unwrap();
    }
    // A marker on the other subscription: once it is there, the five have been routed.
    publisher
        .publish("drops/b", "marker", pubq(QOS1))
        .await
        .unwrap();
    within("the marker", async {
        while client.dropped_messages() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(client.dropped_messages(), 3, "5 sent, 2 buffered");
    for n in 0..2 {
        let message = within("a buffered message", stream.recv()).await.unwrap();
        assert_eq!(message.payload(), n.to_string().as_str());
    }
    publisher.disconnect(ReasonCode::SUCCESS).await;
    client.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
}

/// Held messages that no subscription claims are given up after `Limits::hold_unclaimed`, so
/// they cannot keep the broker's window shut: a later QoS 1 message on another stream still
/// arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclaimed_messages_are_given_up_and_do_not_block_the_window() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut limits = Limits::default();
    limits.receive_maximum = 2;
    limits.hold_unclaimed = Duration::from_millis(200);
    let persistent = || {
        builder(addr, "unclaimed")
            .clean_start(false)
            .session_expiry(300)
            .limits(limits)
    };
    let first = persistent().connect().await.unwrap();
    let (_, backlog) = first.subscribe("backlog/#", sub(QOS1)).await.unwrap();
    let (_, other) = first.subscribe("other/#", sub(QOS1)).await.unwrap();
    first.disconnect(ReasonCode::SUCCESS).await;
    drop((backlog, other));

    let publisher = builder(addr, "unclaimed-publisher")
        .connect()
        .await
        .unwrap();
    for n in 0..3 {
        publisher
            .publish("backlog/x", n.to_string(), pubq(QOS1))
            .await
            .unwrap();
    }
    let again = persistent().connect().await.unwrap();
    // Nobody asks for backlog/#; the two held messages fill the window of 2.
    let (_, mut other) = again.subscribe("other/#", sub(QOS1)).await.unwrap();
    publisher
        .publish("other/x", "through", pubq(QOS1))
        .await
        .unwrap();
    let message = within("the message behind the held ones", other.recv())
        .await
        .unwrap();
    assert_eq!(message.payload(), "through");
    within("all three given up", async {
        while again.dropped_messages() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(again.dropped_messages(), 3);
    publisher.disconnect(ReasonCode::SUCCESS).await;
    again.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
}

/// Out-of-range limits are clamped instead of panicking when the client is built.
#[tokio::test]
async fn huge_queue_limits_are_clamped() {
    let mut limits = Limits::default();
    limits.max_queued_publishes = usize::MAX;
    let client = midge_client::Client::builder("127.0.0.1", 9)
        .limits(limits)
        .reconnect(None)
        .build()
        .expect("built");
    drop(client);
}

/// A scripted broker on a raw socket, for brokers that misbehave or that must be watched
/// packet by packet.
struct Peer {
    socket: tokio::net::TcpStream,
    buf: bytes::BytesMut,
    version: ProtocolVersion,
}

impl Peer {
    async fn accept(listener: &tokio::net::TcpListener, version: ProtocolVersion) -> Self {
        Self {
            socket: within("connect", listener.accept()).await.unwrap().0,
            buf: bytes::BytesMut::new(),
            version,
        }
    }

    /// The next packet, or `None` if none comes within `wait` or the socket closes.
    async fn next(&mut self, wait: Duration) -> Option<Packet> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(p) = Packet::decode(&mut self.buf, self.version, MAX_PACKET_SIZE).unwrap() {
                return Some(p);
            }
            match tokio::time::timeout(wait, self.socket.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    async fn send(&mut self, packet: Packet) {
        use tokio::io::AsyncWriteExt;
        let mut out = bytes::BytesMut::new();
        packet.encode(self.version, &mut out).unwrap();
        self.socket.write_all(&out).await.unwrap();
    }

    /// Reads CONNECT and accepts it.
    async fn accept_connect(&mut self, session_present: bool) {
        let connect = self.next(WAIT).await;
        assert!(matches!(connect, Some(Packet::Connect(_))), "{connect:?}");
        let connack = ConnAck {
            session_present,
            ..ConnAck::default()
        };
        self.send(Packet::ConnAck(Box::new(connack))).await;
    }

    /// Reads a SUBSCRIBE and grants it; returns it.
    async fn grant_subscribe(&mut self) -> Subscribe {
        let packet = self.next(WAIT).await;
        let Some(Packet::Subscribe(sub)) = packet else {
            panic!("expected SUBSCRIBE, got {packet:?}");
        };
        self.send(Packet::SubAck(SubAck {
            packet_id: sub.packet_id,
            reason_codes: vec![ReasonCode(1); sub.filters.len()],
            properties: Default::default(),
        }))
        .await;
        sub
    }

    async fn publish(&mut self, topic: &str, id: u16, payload: &'static str) {
        self.publish_with(topic, id, payload, QOS1, &[]).await;
    }

    async fn publish_with(
        &mut self,
        topic: &str,
        id: u16,
        payload: &'static str,
        qos: QoS,
        subscription_ids: &[u32],
    ) {
        let mut properties = midge_client::codec::PublishProperties::default();
        let ids: Vec<_> = subscription_ids
            .iter()
            .map(|&id| SubscriptionId::new(id).unwrap())
            .collect();
        properties.set_subscription_identifiers(&ids);
        self.send(Packet::Publish(Publish {
            qos,
            topic: topic.to_owned().into(),
            packet_id: PacketId::new(id),
            payload: Bytes::from_static(payload.as_bytes()),
            properties,
            ..Publish::default()
        }))
        .await;
    }
}

/// A message held back on one connection (its stream was full) and taken by the stream after
/// a reconnect is not acknowledged on the new connection, where its packet identifier may
/// name another message; the new connection's own message with that identifier is
/// acknowledged when its stream takes it. (MQTT 3.1.1, session lost in between.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_never_crosses_to_a_later_connection() {
    const V: ProtocolVersion = ProtocolVersion::V3_1_1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut limits = Limits::default();
    limits.max_buffered_qos12 = 1;
    let client = builder(addr, "acks")
        .version(V)
        .limits(limits)
        .build()
        .unwrap();
    let subscribing = {
        let client = client.clone();
        tokio::spawn(async move { client.subscribe("acks/#", sub(QOS1)).await })
    };
    let mut first = Peer::accept(&listener, V).await;
    first.accept_connect(false).await;
    first.grant_subscribe().await;
    let (_, mut stream) = subscribing.await.unwrap().unwrap();
    first.publish("acks/x", 1, "buffered").await;
    first.publish("acks/x", 2, "old").await;
    // The first fills the stream's buffer and is acknowledged; "old" is held back.
    assert_eq!(
        first.next(WAIT).await,
        Some(Packet::PubAck(PubAck::new(PacketId::new(1).unwrap())))
    );
    drop(first); // cut before the application reads anything

    let mut second = Peer::accept(&listener, V).await;
    second.accept_connect(false).await;
    second.grant_subscribe().await;
    second.publish("acks/x", 2, "new").await;
    // Let the client take "new" in (held back behind "old") before "old" moves on.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let buffered = within("the buffered message", stream.recv()).await.unwrap();
    assert_eq!(buffered.payload(), "buffered");
    // "old" moves into the stream now; its acknowledgement belongs to the first connection.
    match second.next(Duration::from_millis(300)).await {
        None => {}
        Some(packet) => panic!("acknowledged on the wrong connection: {packet:?}"),
    }
    let old = within("the old message", stream.recv()).await.unwrap();
    assert_eq!(old.payload(), "old");
    // "new" moves into the stream, which acknowledges it on its own connection.
    assert_eq!(
        second.next(WAIT).await,
        Some(Packet::PubAck(PubAck::new(PacketId::new(2).unwrap())))
    );
    let new = within("the new message", stream.recv()).await.unwrap();
    assert_eq!(new.payload(), "new");
    drop(client);
}

/// A subscription the broker refuses to make again after a lost session is reported as an
/// event and its stream ends, instead of staying open and silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_resubscription_ends_its_stream_and_is_reported() {
    let first = start_broker().await;
    let proxy = Proxy::start(first.local_addr(), 11).await;
    let client = builder(proxy.addr, "relost").connect().await.unwrap();
    let mut events = client.events();
    let (_, mut secret) = client.subscribe("secret/#", sub(QOS1)).await.unwrap();
    let (_, mut open) = client.subscribe("open/#", sub(QOS1)).await.unwrap();
    // A new broker, without our session, that refuses `secret/...`.
    first.shutdown().await;
    let (second, _) = broker_with_counter().await;
    proxy.retarget(second.local_addr());
    proxy.cut_all();
    let lost = within("the lost subscription", async {
        loop {
            if let ConnectionEvent::SubscriptionLost {
                filter,
                reason_code,
            } = next_event(&mut events).await
            {
                break (filter, reason_code);
            }
        }
    })
    .await;
    assert_eq!(lost, ("secret/#".to_owned(), ReasonCode::NOT_AUTHORIZED));
    assert!(within("the stream ends", secret.recv()).await.is_none());
    let other = builder(second.local_addr(), "relost-pub")
        .connect()
        .await
        .unwrap();
    other.publish("open/x", "still", pubq(QOS1)).await.unwrap();
    assert_eq!(
        within("open/#", open.recv()).await.unwrap().payload(),
        "still"
    );
    other.disconnect(ReasonCode::SUCCESS).await;
    client.disconnect(ReasonCode::SUCCESS).await;
    second.shutdown().await;
}

/// 3.1.1 has no Receive Maximum, so a resumed session's broker may send more unclaimed
/// messages than the client holds (`receive_maximum`). Those beyond are never acknowledged:
/// the broker keeps them and sends them again on the next connection, where they reach the
/// stream. None is acknowledged before a stream has taken it, and the SUBACK that claims the
/// held ones is read at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflowing_held_messages_are_never_acknowledged_unseen() {
    const V: ProtocolVersion = ProtocolVersion::V3_1_1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut limits = Limits::default();
    limits.receive_maximum = 2;
    let client = builder(addr, "overflow")
        .version(V)
        .clean_start(false)
        .limits(limits)
        .build()
        .unwrap();
    let mut first = Peer::accept(&listener, V).await;
    first.accept_connect(true).await;
    for (id, payload) in [(1, "1"), (2, "2"), (3, "3"), (4, "4")] {
        first.publish("held/x", id, payload).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let subscribing = {
        let client = client.clone();
        tokio::spawn(async move { client.subscribe("held/#", sub(QOS1)).await })
    };
    // Nothing was acknowledged before the application subscribed.
    first.grant_subscribe().await;
    let (_, mut stream) = within("SUBACK", subscribing).await.unwrap().unwrap();
    for id in [1, 2] {
        assert_eq!(
            first.next(WAIT).await,
            Some(Packet::PubAck(PubAck::new(PacketId::new(id).unwrap())))
        );
    }
    match first.next(Duration::from_millis(300)).await {
        None => {}
        Some(packet) => panic!("an abandoned message was answered: {packet:?}"),
    }
    for payload in ["1", "2"] {
        assert_eq!(
            within("held", stream.recv()).await.unwrap().payload(),
            payload
        );
    }
    assert_eq!(client.dropped_messages(), 2, "two abandoned");
    // The next connection of the session brings them back.
    drop(first);
    let mut second = Peer::accept(&listener, V).await;
    second.accept_connect(true).await;
    for (id, payload) in [(3, "3"), (4, "4")] {
        second.publish("held/x", id, payload).await;
    }
    for payload in ["3", "4"] {
        assert_eq!(
            within("resent", stream.recv()).await.unwrap().payload(),
            payload
        );
    }
    for id in [3, 4] {
        assert_eq!(
            second.next(WAIT).await,
            Some(Packet::PubAck(PubAck::new(PacketId::new(id).unwrap())))
        );
    }
    drop(client);
}

/// Under 5.0 each subscribe call gets its own Subscription Identifier, and a broker that sends
/// one copy per matching subscription ([MQTT-3.3.4-5]) delivers each copy to its own stream
/// only; a single copy with both identifiers ([MQTT-3.3.4-4]) reaches each stream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_deliver_each_message_once_per_stream() {
    const V: ProtocolVersion = ProtocolVersion::V5;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = builder(addr, "overlap").build().unwrap();
    let mut peer = Peer::accept(&listener, V).await;
    peer.accept_connect(false).await;
    within("connected", client.wait_connected()).await.unwrap();
    let mut streams = Vec::new();
    let mut ids = Vec::new();
    for filter in ["o/#", "o/+"] {
        let subscribing = {
            let client = client.clone();
            tokio::spawn(async move { client.subscribe(filter, sub(QOS2)).await })
        };
        let subscribe = peer.grant_subscribe().await;
        let id = subscribe
            .properties
            .subscription_identifier
            .expect("an identifier")
            .get();
        ids.push(id);
        streams.push(within("SUBACK", subscribing).await.unwrap().unwrap().1);
    }
    assert_ne!(ids[0], ids[1]);
    // One copy per subscription, QoS 2, each with its own identifier.
    peer.publish_with("o/x", 1, "copies", QOS2, &[ids[0]]).await;
    peer.publish_with("o/x", 2, "copies", QOS2, &[ids[1]]).await;
    // One copy for both.
    peer.publish_with("o/x", 3, "single", QOS1, &[ids[0], ids[1]])
        .await;
    for stream in &mut streams {
        let first = within("copy", stream.recv()).await.unwrap();
        assert_eq!(first.payload(), "copies");
        let second = within("single", stream.recv()).await.unwrap();
        assert_eq!(second.payload(), "single", "a copy arrived twice");
    }
    drop(client);
}

/// A stream nobody reads does not stall the others: its messages are acknowledged as it
/// buffers them, so the broker's window stays open for a second stream and for a request's
/// response. Read later, it has lost nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_stream_stalls_neither_other_streams_nor_requests() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let responder = builder(addr, "stall-responder").connect().await.unwrap();
    let (_, mut requests) = responder.subscribe("svc/echo", sub(QOS1)).await.unwrap();
    let answering = tokio::spawn({
        let responder = responder.clone();
        async move {
            while let Some(request) = requests.recv().await {
                let _ = responder.respond(&request, "pong", pubq(QOS1)).await;
            }
        }
    });
    let mut limits = Limits::default();
    limits.receive_maximum = 5;
    let client = builder(addr, "stall")
        .limits(limits)
        .connect()
        .await
        .unwrap();
    let (_, mut noisy) = client.subscribe("noisy/#", sub(QOS1)).await.unwrap();
    let (_, mut quiet) = client.subscribe("quiet/#", sub(QOS1)).await.unwrap();
    let publisher = builder(addr, "stall-publisher").connect().await.unwrap();
    for n in 0..50 {
        publisher
            .publish("noisy/x", n.to_string(), pubq(QOS1))
            .await
            .unwrap();
    }
    publisher
        .publish("quiet/x", "through", pubq(QOS1))
        .await
        .unwrap();
    let through = tokio::time::timeout(Duration::from_secs(5), quiet.recv())
        .await
        .expect("the quiet stream is stalled by the unread one")
        .unwrap();
    assert_eq!(through.payload(), "through");
    let response = client
        .request("svc/echo", "ping", pubq(QOS1), Duration::from_secs(5))
        .await
        .expect("a request while a stream is unread");
    assert_eq!(response.payload(), "pong");
    for n in 0..50 {
        let m = within("noisy", noisy.recv()).await.unwrap();
        assert_eq!(m.payload(), n.to_string().as_str());
    }
    assert_eq!(client.dropped_messages(), 0);
    client.disconnect(ReasonCode::SUCCESS).await;
    responder.disconnect(ReasonCode::SUCCESS).await;
    answering.await.unwrap();
    publisher.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
}

/// A stream's buffer is bounded (`max_buffered_qos12`); beyond it the client holds messages
/// back unacknowledged, and the broker's window then pauses the flow. Nothing is dropped:
/// once read, every message arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_holds_messages_back_and_loses_none() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut limits = Limits::default();
    limits.receive_maximum = 3;
    limits.max_buffered_qos12 = 2;
    let client = builder(addr, "full")
        .limits(limits)
        .connect()
        .await
        .unwrap();
    let (_, mut stream) = client.subscribe("full/#", sub(QOS2)).await.unwrap();
    let publisher = builder(addr, "full-publisher").connect().await.unwrap();
    let mut handles = Vec::new();
    for n in 0..30 {
        let qos = if n % 2 == 0 { QOS1 } else { QOS2 };
        handles.push(
            publisher
                .enqueue("full/x", n.to_string(), pubq(qos))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..30 {
        let m = within("in order", stream.recv()).await.unwrap();
        assert_eq!(m.payload(), n.to_string().as_str());
    }
    for handle in handles {
        within("ack", handle).await.unwrap();
    }
    assert_eq!(client.dropped_messages(), 0);
    client.disconnect(ReasonCode::SUCCESS).await;
    publisher.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
}

/// Dropping the last handle does not discard queued publishes: the driver keeps going (and
/// reconnecting) for up to `linger`, sends them, then disconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_still_sends_the_queued_publishes() {
    let broker = start_broker().await;
    let watcher = builder(broker.local_addr(), "linger-watcher")
        .connect()
        .await
        .unwrap();
    let (_, mut seen) = watcher.subscribe("linger/#", sub(QOS1)).await.unwrap();
    // The publisher is offline: its proxy leads nowhere yet.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let proxy = Proxy::start(dead_addr, 5).await;
    let publisher = builder(proxy.addr, "linger")
        .linger(Duration::from_secs(10))
        .build()
        .unwrap();
    for n in 0..5 {
        let qos = if n % 2 == 0 { QOS1 } else { QoS::AtMostOnce };
        drop(
            publisher
                .try_publish(format!("linger/{n}"), "m", pubq(qos))
                .unwrap(),
        );
    }
    drop(publisher);
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.retarget(broker.local_addr());
    for n in 0..5 {
        let m = within("a queued publish", seen.recv()).await.unwrap();
        assert_eq!(m.topic(), format!("linger/{n}"));
    }
    watcher.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
}

/// A QoS 2 publish the broker has acknowledged with PUBREC is with the broker: when the client
/// closes before PUBCOMP, the outcome says so (`ReleasePending`), not `Closed`, so that the
/// caller does not publish it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_publish_the_broker_received_reports_release_pending_on_close() {
    const V: ProtocolVersion = ProtocolVersion::V5;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = builder(addr, "release").reconnect(None).build().unwrap();
    let mut peer = Peer::accept(&listener, V).await;
    peer.accept_connect(false).await;
    within("connected", client.wait_connected()).await.unwrap();
    let received = client.try_publish("r/x", "m", pubq(QOS2)).unwrap();
    let unsent = client.try_publish("r/y", "m", pubq(QOS2)).unwrap();
    let Some(Packet::Publish(first)) = peer.next(WAIT).await else {
        panic!("expected PUBLISH");
    };
    let Some(Packet::Publish(_)) = peer.next(WAIT).await else {
        panic!("expected PUBLISH");
    };
    let id = first.packet_id.unwrap();
    peer.send(Packet::PubRec(PubAck::new(id))).await;
    assert_eq!(peer.next(WAIT).await, Some(Packet::PubRel(PubAck::new(id))));
    client.disconnect(ReasonCode::SUCCESS).await;
    assert_eq!(
        within("outcome", received).await,
        Err(ClientError::ReleasePending)
    );
    assert_eq!(within("outcome", unsent).await, Err(ClientError::Closed));
}

/// Acknowledgements go out in the order the PUBLISHes arrived, whichever stream the
/// application reads first [MQTT-4.6.0-2].
// Conformance: [MQTT-5:4.6.0-2]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_follow_arrival_order_not_read_order() {
    const V: ProtocolVersion = ProtocolVersion::V5;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = builder(addr, "order").build().unwrap();
    let mut peer = Peer::accept(&listener, V).await;
    peer.accept_connect(false).await;
    let mut streams = Vec::new();
    for filter in ["a/#", "b/#"] {
        let subscribing = {
            let client = client.clone();
            tokio::spawn(async move { client.subscribe(filter, sub(QOS1)).await })
        };
        peer.grant_subscribe().await;
        streams.push(within("SUBACK", subscribing).await.unwrap().unwrap().1);
    }
    peer.publish("a/x", 1, "a").await;
    peer.publish("b/x", 2, "b").await;
    // The application reads b first.
    assert_eq!(within("b", streams[1].recv()).await.unwrap().payload(), "b");
    assert_eq!(within("a", streams[0].recv()).await.unwrap().payload(), "a");
    for id in [1, 2] {
        assert_eq!(
            peer.next(WAIT).await,
            Some(Packet::PubAck(PubAck::new(PacketId::new(id).unwrap())))
        );
    }
    drop(client);
}

/// A topic deeper than the 128 levels a broker refuses by default is still a valid topic:
/// what the broker delivers is bounded by our Maximum Packet Size, and it reaches the stream
/// instead of being acknowledged and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_of_any_depth_is_delivered() {
    const V: ProtocolVersion = ProtocolVersion::V5;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = builder(addr, "deep").build().unwrap();
    let mut peer = Peer::accept(&listener, V).await;
    peer.accept_connect(false).await;
    let subscribing = {
        let client = client.clone();
        tokio::spawn(async move { client.subscribe("deep/#", sub(QOS1)).await })
    };
    let subscribe = peer.grant_subscribe().await;
    let (_, mut stream) = within("SUBACK", subscribing).await.unwrap().unwrap();
    let id = subscribe
        .properties
        .subscription_identifier
        .map(|i| i.get());
    let topic = format!("deep{}", "/l".repeat(300));
    peer.publish_with(&topic, 1, "deep", QOS1, &id.into_iter().collect::<Vec<_>>())
        .await;
    let m = within("the deep message", stream.recv()).await.unwrap();
    assert_eq!(m.topic(), topic);
    assert_eq!(
        peer.next(WAIT).await,
        Some(Packet::PubAck(PubAck::new(PacketId::new(1).unwrap())))
    );
    assert_eq!(client.dropped_messages(), 0);
    drop(client);
}
