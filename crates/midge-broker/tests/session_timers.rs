//! The deadlines of offline sessions through the tokio driver on a real clock: a client that
//! comes back leaves nothing of its session's deadlines behind, however far off they were. The
//! timing rules themselves, on both sides of each deadline, are in `tests/virtual_time.rs` (the
//! core) and `tests/driver_virtual_time.rs` (the driver's timer task, on tokio's paused clock).
//!
//! The tests here run one at a time ([`one_at_a_time`]): one measures the process's memory,
//! which another test running beside it would disturb.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use midge_codec::{Connect, ReasonCode};
use tokio::sync::{Mutex, MutexGuard};

/// Reconnects in the test; `MIDGE_RECONNECTS` sets another number (100,000 takes about a
/// minute in a debug build).
const RECONNECTS: usize = 10_000;

async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::const_new(());
    SERIAL.lock().await
}

/// CONNECT of a session that outlives its connection by `expiry` seconds, with a will
/// delayed by `will_delay` seconds.
fn persistent(id: &str, expiry: u32, will_delay: u32) -> Connect {
    let mut connect = Connect::new(V5, id.to_owned());
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(expiry);
    connect.will = Some(delayed_will(&format!("will/{id}"), will_delay));
    connect
}

/// Connects, then closes without DISCONNECT, so that the will stays, waiting for its delay,
/// and waits until the broker has closed its side: by then the session is offline.
async fn connect_and_drop(addr: SocketAddr, connect: &Connect, present: bool) {
    let (mut client, ack) = Peer::connect_with(addr, connect.clone()).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(ack.session_present, present);
    client.shutdown().await;
    client.until_closed().await;
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Each reconnect of a persistent session [MQTT-3.1.2-23] cancels the deadlines its session
/// had while offline, its will's [MQTT-3.1.3-9] and its expiry, even when they lie 136 years
/// ahead: the broker keeps no task, no timer entry and no memory for them. (A timer task per
/// offline session that notices the client's return only when it wakes would leave a task and
/// about 650 bytes per reconnect.)
// Conformance: [MQTT-5:3.1.2-23]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_of_a_long_lived_session_leave_no_timers_behind() {
    let reconnects = std::env::var("MIDGE_RECONNECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(RECONNECTS);
    let _serial = one_at_a_time().await;
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let connect = persistent("returning", u32::MAX - 1, u32::MAX - 1);

    connect_and_drop(addr, &connect, false).await;
    // Warm up the allocator and the runtime before measuring.
    for _ in 0..100 {
        connect_and_drop(addr, &connect, true).await;
    }
    let tasks_before = alive_tasks();
    let rss_before = rss_kib();
    let started = std::time::Instant::now();
    for i in 0..reconnects {
        connect_and_drop(addr, &connect, true).await;
        if i % 1000 == 0 {
            assert_eq!(
                broker.pending_session_deadlines(),
                2,
                "the will and the expiry"
            );
        }
    }
    let took = started.elapsed();
    // The last connections' tasks end just after their sockets close.
    for _ in 0..300 {
        if alive_tasks() <= tasks_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tasks_after = alive_tasks();
    let rss_after = rss_kib();
    eprintln!(
        "{reconnects} reconnects in {took:?}: tasks {tasks_before} -> {tasks_after}, \
         RSS {rss_before:?} -> {rss_after:?} KiB"
    );
    assert_eq!(broker.stats().sessions, 1);
    assert_eq!(
        broker.pending_session_deadlines(),
        2,
        "one will and one expiry, of the session offline now"
    );
    assert!(
        tasks_after <= tasks_before,
        "tasks grew from {tasks_before} to {tasks_after} over {reconnects} reconnects"
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let grown = after.saturating_sub(before);
        assert!(
            grown < 1024,
            "RSS grew by {grown} KiB ({before} -> {after}) over {reconnects} reconnects"
        );
    }
    // Online, the session has no deadline at all.
    let (back, ack) = Peer::connect_with(addr, connect.clone()).await;
    assert!(ack.session_present);
    assert_eq!(broker.pending_session_deadlines(), 0);
    drop(back);
    broker.shutdown().await;
}
