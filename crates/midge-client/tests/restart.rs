//! 10,000 numbered messages while the midge broker is shut down and a new one started on the
//! same store, in the middle of the stream: QoS 1 loses none; QoS 2 loses none and duplicates
//! none. The clients reach the brokers through proxies, so their addresses stay the same. Both
//! clients keep persistent sessions. The subscriber is cut off first and the publisher goes on,
//! so the broker queues messages in the subscriber's session after saving it; the broker then
//! stops and writes both sessions to the store (with that queue and the QoS 2 state of both
//! flows), and the second broker restores them: the clients resume and resend what was not
//! acknowledged, with DUP.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use midge_broker::{Broker, BrokerHandle, BrokerStats, MemoryStore};
use midge_client::{ProtocolVersion, QoS};

const N: usize = 10_000;

async fn broker_on(store: &Arc<MemoryStore>) -> BrokerHandle {
    let mut config = broker_config();
    // The subscriber's session queues while it is away; room for the whole stream.
    config.sessions.max_queued_messages = 2 * N;
    Broker::builder()
        .config(config)
        .store(store.clone())
        .bind("127.0.0.1:0".parse().expect("address"))
        .start()
        .await
        .expect("broker starts")
}

/// An address where nothing listens: connections to it are refused.
fn nowhere() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

async fn wait_for(
    what: &str,
    broker: &Mutex<Option<BrokerHandle>>,
    done: impl Fn(&BrokerStats) -> bool,
) {
    within(what, async {
        loop {
            let stats = broker
                .lock()
                .expect("broker")
                .as_ref()
                .map(BrokerHandle::stats);
            if stats.as_ref().is_some_and(&done) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

async fn through_a_restart(qos: QoS, version: ProtocolVersion, tag: &str) {
    let store = Arc::new(MemoryStore::keeping_sessions());
    let first = broker_on(&store).await;
    // One proxy per client, so that the subscriber can be cut off alone.
    let sub_proxy = Proxy::start(first.local_addr(), 7).await;
    let pub_proxy = Proxy::start(first.local_addr(), 8).await;
    let broker = Mutex::new(Some(first));
    // Distinct messages received when the first broker had stopped, and messages the first
    // broker had received when the subscriber was cut off.
    let at_restart = AtomicUsize::new(0);
    let at_cut = AtomicU64::new(0);
    numbered_messages_via(
        sub_proxy.addr,
        pub_proxy.addr,
        version,
        qos,
        qos == QoS::ExactlyOnce,
        N,
        tag,
        |received| {
            let (sub_proxy, pub_proxy, broker, store) = (&sub_proxy, &pub_proxy, &broker, &store);
            let (at_restart, at_cut) = (&at_restart, &at_cut);
            async move {
                // A third of the stream has reached the broker: cut the subscriber off, so
                // that its session is saved as it goes offline, and goes on queueing.
                wait_for("a third of the stream", broker, |s| {
                    s.messages_received >= N as u64 / 3
                })
                .await;
                sub_proxy.retarget(nowhere());
                sub_proxy.cut_all();
                wait_for("the subscriber offline", broker, |s| {
                    s.clients_connected == 1
                })
                .await;
                let cut = broker
                    .lock()
                    .expect("broker")
                    .as_ref()
                    .map_or(0, |b| b.stats().messages_received);
                at_cut.store(cut, Relaxed);
                // Messages routed into the offline session after that save, while the
                // publisher is still in the middle of the stream.
                wait_for("more of the stream", broker, |s| {
                    s.messages_received >= cut + N as u64 / 6
                })
                .await;
                // Stop the broker, and lose what was on its way to the publisher, as when a
                // broker dies: PUBRECs for messages the broker has routed, so that the
                // publisher sends those again, to the second broker.
                let first = broker.lock().expect("broker").take().expect("first broker");
                pub_proxy.retarget(nowhere());
                pub_proxy.cut_all();
                first.shutdown().await;
                at_restart.store(received.load(Relaxed), Relaxed);
                assert_eq!(store.session_count(), 2, "{tag}: both sessions stored");
                let second = broker_on(store).await;
                sub_proxy.retarget(second.local_addr());
                pub_proxy.retarget(second.local_addr());
                *broker.lock().expect("broker") = Some(second);
            }
        },
    )
    .await;
    let at_restart = at_restart.load(Relaxed);
    assert!(
        at_restart < N,
        "{tag}: the subscriber had everything before the restart"
    );
    let second = broker
        .lock()
        .expect("broker")
        .take()
        .expect("second broker");
    let stats = second.stats();
    // The publisher was in the middle of the stream too: more than the end marker went
    // through the second broker.
    assert!(stats.messages_received > 1, "{tag}: {stats:?}");
    eprintln!(
        "{tag}: subscriber cut off after {} of {N} messages reached the broker, broker restarted after the subscriber had {at_restart}; second broker {stats:?}",
        at_cut.load(Relaxed)
    );
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_loses_nothing_when_the_midge_broker_restarts_mid_stream() {
    through_a_restart(QoS::AtLeastOnce, ProtocolVersion::V5, "restart-q1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_loses_and_duplicates_nothing_when_the_midge_broker_restarts_mid_stream() {
    through_a_restart(QoS::ExactlyOnce, ProtocolVersion::V5, "restart-q2-v5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_loses_and_duplicates_nothing_when_the_midge_broker_restarts_mid_stream_v311() {
    through_a_restart(QoS::ExactlyOnce, ProtocolVersion::V3_1_1, "restart-q2-v311").await;
}
