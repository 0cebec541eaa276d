//! The client against the midge broker over TCP on loopback: acknowledgements, subscriptions,
//! properties, back-pressure, reconnection through a proxy that cuts connections, and the
//! cancel safety of every public `async fn`. Timers and packet-by-packet behaviour are tested
//! against a scripted broker on tokio's paused clock, in `scripted.rs`.

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
use midge_client::codec::{PayloadFormat, SubscriptionId, Will};
use midge_client::{
    ClientError, CloseReason, ConnectionEvent, InputKind, Limits, ProtocolVersion, PublishOptions,
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
        Err(ClientError::InvalidInput(e)) if e.kind() == InputKind::Options
    ));
    assert!(matches!(
        client
            .publish("bad/+/topic", "", PublishOptions::new())
            .await,
        Err(ClientError::InvalidInput(e)) if e.kind() == InputKind::TopicName
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
        Err(ClientError::InvalidInput(e)) if e.kind() == InputKind::TopicFilter
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
    // Only the responder's own subscription stays: the response subscriptions are gone.
    let before = 1;
    within("response subscriptions removed", async {
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
            ConnectionEvent::Disconnected { .. } => disconnected += 1,
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
        ConnectionEvent::Disconnected {
            reason: CloseReason::Io(_)
        }
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
        err == midge_client::ConnectError::Failed(CloseReason::Io(
            std::io::ErrorKind::ConnectionRefused
        )),
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
