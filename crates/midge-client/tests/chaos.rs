//! 10,000 numbered messages through a proxy that cuts connections at random, against the
//! midge broker: QoS 1 loses none; QoS 2 loses none and duplicates none. Both clients keep
//! persistent sessions, so every reconnection resumes and resends with DUP.

mod common;

use std::sync::atomic::Ordering::Relaxed;
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
    numbered_messages(proxy.addr, version, qos, N, tag, |received| {
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
    })
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
