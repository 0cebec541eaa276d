//! The listening socket: its backlog, and IPv6. In a test binary of its own, so that no other
//! test's sockets share the process while it fills the kernel's accept queue.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use midge_broker::{BrokerConfig, BrokerHandle};

/// Opens connections to `addr` one after the other, without yielding to the runtime, until
/// one is not answered within half a second or `max` are open; returns how many were.
///
/// The test runs on a current-thread runtime, and blocking it keeps the broker's accept task
/// from running: every connection the kernel completes waits in the listener's accept queue,
/// and once that queue holds the backlog, a new connection's SYN is dropped and its connect
/// times out. So the count is the backlog the listener was given (Linux holds one more).
fn fill_accept_queue(addr: SocketAddr, max: usize) -> Vec<TcpStream> {
    let mut open = Vec::new();
    while open.len() < max {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(stream) => open.push(stream),
            Err(_) => break,
        }
    }
    open
}

/// The kernel's cap on a listen backlog.
fn somaxconn() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(128)
}

async fn with_backlog(backlog: u32) -> BrokerHandle {
    let mut config: BrokerConfig = test_config();
    config.listeners[0].backlog = backlog;
    start(config).await
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "current_thread")]
async fn the_listener_queues_as_many_connections_as_its_backlog() {
    // Above the 128 that tokio's `bind` gives, within what the kernel allows.
    let large = 600.min(somaxconn());
    for backlog in [16, large] {
        let broker = with_backlog(backlog as u32).await;
        let addr = broker.local_addr();
        let open = fill_accept_queue(addr, backlog + 50);
        let queued = open.len();
        assert!(
            (backlog..=backlog + 1).contains(&queued),
            "backlog {backlog}: {queued} connections were queued"
        );
        // Let the broker run: it accepts every queued connection, and serves.
        drop(open);
        let deadline = tokio::time::Instant::now() + WAIT;
        while broker.stats().connections_total < queued as u64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "backlog {backlog}: {:?}",
                broker.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_healthy(addr).await;
        broker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_serves_on_ipv6() {
    let config = test_config();
    let started = midge_broker::Broker::builder()
        .config(config)
        .bind("[::1]:0".parse().expect("addr"))
        .start()
        .await;
    let broker = match started {
        Ok(broker) => broker,
        Err(err) => {
            // A machine without IPv6 on loopback cannot run this test.
            eprintln!("SKIPPED: cannot listen on [::1]: {err}");
            return;
        }
    };
    assert!(broker.local_addr().is_ipv6());
    assert_healthy(broker.local_addr()).await;
    broker.shutdown().await;
}
