//! 10,000 numbered messages through a proxy that cuts connections at random, against the
//! midge broker: QoS 1 loses none; QoS 2 loses none and duplicates none. Both clients keep
//! persistent sessions, so every reconnection resumes and resends with DUP.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use midge_client::{ProtocolVersion, QoS};

const N: usize = 10_000;

async fn through_random_cuts(qos: QoS, version: ProtocolVersion, tag: &str, seed: u64) {
    let mut config = broker_config();
    // The subscriber's session queues while it is cut off; room for the whole stream.
    config.sessions.max_queued_messages = 2 * N;
    let broker = midge_broker::Broker::builder()
        .config(config)
        .bind("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let proxy = Proxy::start(broker.local_addr(), seed).await;
    numbered_messages(
        proxy.addr,
        version,
        qos,
        qos == QoS::ExactlyOnce,
        N,
        tag,
        |received| {
            let proxy = &proxy;
            let broker = &broker;
            async move {
                proxy.chaos(true);
                // The connections made so far were accepted in peace: cut them too.
                proxy.cut_all();
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while received.load(Relaxed) < N {
                    if std::time::Instant::now() > deadline {
                        proxy.chaos(false);
                        proxy.cut_all();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        eprintln!("{tag} stuck, then calm for 1 s: {:?}", broker.stats());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                proxy.chaos(false);
            }
        },
    )
    .await;
    // Two first connections, and the cuts made many more.
    let connections = proxy.connections.load(Relaxed);
    assert!(
        connections >= 8,
        "only {connections} connections: too little chaos"
    );
    eprintln!("{tag}: {connections} connections through the proxy");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_loses_nothing_through_random_cuts() {
    through_random_cuts(
        QoS::AtLeastOnce,
        ProtocolVersion::V3_1_1,
        "chaos1",
        0x1234_5678,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_loses_and_duplicates_nothing_through_random_cuts() {
    through_random_cuts(QoS::ExactlyOnce, ProtocolVersion::V5, "chaos2", 0x9abc_def1).await;
}

/// (broker, message number, sessions it went to), for every message routed.
type Routed = Arc<Mutex<Vec<(u8, usize, usize)>>>;

/// Records the number in the payload of every message a broker routes, and how many sessions
/// it went to.
struct Recorder {
    broker: u8,
    routed: Routed,
}

impl midge_broker::Hooks for Recorder {
    fn on_message_published(
        &self,
        _client: Option<&midge_broker::ClientInfo>,
        message: &midge_broker::proto::Message,
        matched: usize,
    ) {
        if let Some(n) = std::str::from_utf8(&message.payload)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            let mut routed = self.routed.lock().unwrap();
            routed.push((self.broker, n, matched));
        }
    }
}

async fn recording_broker(broker: u8, routed: &Routed) -> midge_broker::BrokerHandle {
    let mut config = broker_config();
    config.sessions.max_queued_messages = 2 * N;
    midge_broker::Broker::builder()
        .config(config)
        .hooks(Recorder {
            broker,
            routed: routed.clone(),
        })
        .bind("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

/// With its default store the midge broker keeps sessions in memory only, so a restart loses
/// them (restart.rs restarts it on a store that keeps them), and with them
/// what it had queued for the subscriber: no client can get those back. What the client
/// guarantees, and this test checks, is the rest: every QoS 1 message reaches a broker (those
/// the dead one never acknowledged are sent again to the new one), the subscriber subscribes
/// again by itself when the new broker reports no session, and it receives every message the
/// new broker routed to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_reaches_a_broker_and_the_subscriber_resubscribes_when_the_midge_broker_restarts() {
    use midge_client::{PublishOptions, ReasonCode, SubscribeOptions};
    use std::collections::HashSet;

    let routed = Arc::new(Mutex::new(Vec::new()));
    let first = recording_broker(1, &routed).await;
    let proxy = Proxy::start(first.local_addr(), 11).await;
    let persistent = |id: &str| {
        builder(proxy.addr, id)
            .clean_start(false)
            .session_expiry(600)
    };
    let subscriber = persistent("restart-sub").connect().await.unwrap();
    let (_, mut stream) = subscriber
        .subscribe("restart/#", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    // A small queue keeps the stream going when the broker dies: at most 64 messages are
    // ahead of the acknowledgements.
    let mut limits = midge_client::Limits::default();
    limits.max_queued_publishes = 64;
    let publisher = persistent("restart-pub")
        .limits(limits)
        .connect()
        .await
        .unwrap();
    let enqueued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(HashSet::new()));
    let collector = tokio::spawn({
        let received = received.clone();
        async move {
            while let Some(message) = stream.recv().await {
                let n: usize = std::str::from_utf8(message.payload())
                    .unwrap()
                    .parse()
                    .unwrap();
                received.lock().unwrap().insert(n);
            }
        }
    });
    let producer = tokio::spawn({
        let publisher = publisher.clone();
        let enqueued = enqueued.clone();
        async move {
            let mut handles = Vec::with_capacity(N);
            for n in 0..N {
                let options = PublishOptions::with_qos(QoS::AtLeastOnce);
                handles.push(
                    publisher
                        .enqueue("restart/n", n.to_string(), options)
                        .await
                        .unwrap(),
                );
                enqueued.store(n + 1, Relaxed);
            }
            for (n, handle) in handles.into_iter().enumerate() {
                let outcome = handle.await;
                assert!(outcome.is_ok(), "message {n}: {outcome:?}");
            }
        }
    });
    within("a third of the stream", async {
        while enqueued.load(Relaxed) < N / 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    // Kill: the broker goes away mid-stream, and a new one with no sessions takes its place.
    first.shutdown().await;
    proxy.cut_all();
    let second = recording_broker(2, &routed).await;
    proxy.retarget(second.local_addr());
    within("every publish acknowledged", producer)
        .await
        .unwrap();
    within("resubscribed", async {
        while second.stats().subscriptions != 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let routed = routed.lock().unwrap().clone();
    let reached: HashSet<usize> = routed.iter().map(|&(_, n, _)| n).collect();
    let lost: Vec<_> = (0..N).filter(|n| !reached.contains(n)).collect();
    assert!(lost.is_empty(), "never reached a broker: {lost:?}");
    assert!(
        routed.iter().any(|&(broker, _, _)| broker == 2),
        "nothing went to the new broker"
    );
    let owed: Vec<usize> = routed
        .iter()
        .filter(|&&(broker, _, matched)| broker == 2 && matched > 0)
        .map(|&(_, n, _)| n)
        .collect();
    within(
        "everything the new broker routed to the subscriber",
        async {
            while owed.iter().any(|n| !received.lock().unwrap().contains(n)) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
    )
    .await;
    publisher.disconnect(ReasonCode::SUCCESS).await;
    subscriber.disconnect(ReasonCode::SUCCESS).await;
    collector.await.unwrap();
    second.shutdown().await;
}
