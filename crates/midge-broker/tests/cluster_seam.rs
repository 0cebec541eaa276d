//! The `Cluster` seam on the real broker: it learns of each subscription entering and leaving
//! the index (subscribe, unsubscribe, a session's end), is offered every routed message, and
//! what comes back from other nodes (`ClusterInlet`) is routed without being offered again;
//! retained messages from other nodes are kept only through `retain_local`.
#![cfg(feature = "runtime")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use midge_broker::codec::QoS;
use midge_broker::proto::Message;
use midge_broker::{Broker, BrokerConfig, BrokerHandle, Cluster};
use midge_client::{Client, PublishOptions, ReasonCode, SubscribeOptions, Subscription};
use midge_topic::TopicFilter;

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Cluster for Recorder {
    fn forward(&self, message: &Arc<Message>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("forward {}", message.topic.as_str()));
    }

    fn subscribed(&self, filter: &TopicFilter<'_>) {
        self.0.lock().unwrap().push(format!("+{filter}"));
    }

    fn unsubscribed(&self, filter: &TopicFilter<'_>) {
        self.0.lock().unwrap().push(format!("-{filter}"));
    }
}

async fn start(recorder: Arc<Recorder>) -> BrokerHandle {
    let mut config = BrokerConfig::default();
    config.sys.interval_secs = 0;
    Broker::builder()
        .config(config)
        .cluster(recorder)
        .bind("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("the broker starts")
}

async fn client(broker: &BrokerHandle, id: &str, clean: bool) -> Client {
    let addr = broker.local_addr();
    Client::builder(addr.ip().to_string(), addr.port())
        .client_id(id)
        .clean_start(clean)
        .session_expiry(if clean { 0 } else { 600 })
        .connect()
        .await
        .expect("connects")
}

async fn recv(sub: &mut Subscription) -> Option<midge_client::Message> {
    tokio::time::timeout(Duration::from_millis(500), sub.recv())
        .await
        .ok()
        .flatten()
}

/// Waits until the recorder holds `expected` (in any order), and takes it.
async fn expect(recorder: &Recorder, expected: &[&str]) {
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen.extend(recorder.take());
        if seen.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    seen.extend(recorder.take());
    seen.sort();
    let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seam_sees_each_subscription_enter_and_leave_the_index() {
    let recorder = Arc::new(Recorder::default());
    let broker = start(recorder.clone()).await;
    let one = client(&broker, "one", true).await;
    let two = client(&broker, "two", true).await;
    let (_, _a) = one
        .subscribe("a/+", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let (_, _shared) = two
        .subscribe("$share/g/a/+", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let (_, _b) = two
        .subscribe("a/+", SubscribeOptions::with_qos(QoS::AtMostOnce))
        .await
        .unwrap();
    expect(&recorder, &["+a/+", "+$share/g/a/+", "+a/+"]).await;
    // The same filter again in one session changes its options, not the index's entries.
    let (_, _again) = one
        .subscribe("a/+", SubscribeOptions::with_qos(QoS::ExactlyOnce))
        .await
        .unwrap();
    expect(&recorder, &[]).await;
    one.unsubscribe("a/+").await.unwrap();
    expect(&recorder, &["-a/+"]).await;
    // The session ends with its connection: its subscriptions leave.
    two.disconnect(ReasonCode::SUCCESS).await;
    expect(&recorder, &["-$share/g/a/+", "-a/+"]).await;
    // A persistent session keeps its subscriptions while offline, and through a resumption.
    let three = client(&broker, "three", false).await;
    let (_, _c) = three
        .subscribe("c/#", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    expect(&recorder, &["+c/#"]).await;
    three.disconnect(ReasonCode::SUCCESS).await;
    let _three = client(&broker, "three", false).await;
    expect(&recorder, &[]).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_other_nodes_are_routed_and_not_forwarded_again() {
    let recorder = Arc::new(Recorder::default());
    let broker = start(recorder.clone()).await;
    let subscriber = client(&broker, "sub", true).await;
    let (_, mut sub) = subscriber
        .subscribe("r/+", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    expect(&recorder, &["+r/+"]).await;
    // A client's message is offered to the seam.
    subscriber
        .publish("r/local", "x", PublishOptions::with_qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await.unwrap().topic(), "r/local");
    expect(&recorder, &["forward r/local"]).await;

    // A retained message from another node: delivered with its flag, not forwarded, not kept.
    let inlet = broker.cluster_inlet();
    let mut remote = Message::new("r/remote", Bytes::from_static(b"y"), QoS::AtLeastOnce);
    remote.retain = true;
    assert_eq!(inlet.publish_remote(remote), 1);
    let message = recv(&mut sub).await.expect("the remote message");
    assert_eq!(message.topic(), "r/remote");
    expect(&recorder, &[]).await;
    assert_eq!(broker.stats().retained_messages, 0);

    // Retained through the shared store: kept, sent to nobody, not forwarded.
    let mut kept = Message::new("r/kept", Bytes::from_static(b"z"), QoS::AtLeastOnce);
    kept.retain = true;
    inlet.retain_local(kept);
    assert!(recv(&mut sub).await.is_none());
    expect(&recorder, &[]).await;
    assert_eq!(broker.stats().retained_messages, 1);
    let late = client(&broker, "late", true).await;
    let (_, mut late_sub) = late
        .subscribe("r/+", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let message = recv(&mut late_sub).await.expect("the retained message");
    assert_eq!((message.topic(), message.retain()), ("r/kept", true));
    assert!(recv(&mut late_sub).await.is_none());
    // And deleted by an empty one.
    let mut deletion = Message::new("r/kept", Bytes::new(), QoS::AtMostOnce);
    deletion.retain = true;
    inlet.retain_local(deletion);
    assert_eq!(broker.stats().retained_messages, 0);
    broker.shutdown().await;
}
