//! Client publish throughput: midge-client against rumqttc 0.25, both MQTT 3.1.1 over TCP to
//! the same in-process midge broker (its own runtime, one worker thread), in the same run.
//!
//! Each iteration publishes a batch of messages with a 64-byte payload and waits until the
//! broker has them all: at QoS 1 until every PUBACK is in, at QoS 0 until the PUBACK of one
//! QoS 1 message sent after the batch (the broker handles a connection's packets in order).
//! Both clients run on one current-thread runtime and get the same window of 1,000
//! messages in flight. Figures and the command are in `docs/benchmarks-client.md`.
//!
//! Under `cargo test` (no `--bench` argument) the batch shrinks to 100 messages.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use midge_broker::{Broker, BrokerConfig, BrokerHandle};
use midge_client::{Limits, ProtocolVersion, PublishOptions, QoS, ReasonCode};
use tokio::runtime::Runtime;
use tokio::sync::watch;

const WINDOW: u16 = 1000;
const PAYLOAD: &[u8] = &[0x5a; 64];
const TOPIC: &str = "bench/client/publish";

fn batch_size() -> u64 {
    if std::env::args().any(|a| a == "--bench") {
        10_000
    } else {
        100
    }
}

struct Midge {
    client: midge_client::Client,
}

impl Midge {
    async fn connect(port: u16) -> Self {
        let mut limits = Limits::default();
        limits.max_queued_publishes = usize::from(WINDOW);
        let client = midge_client::Client::builder("127.0.0.1", port)
            .client_id("midge-bench")
            .version(ProtocolVersion::V3_1_1)
            .limits(limits)
            .connect()
            .await
            .expect("midge-client connects");
        Self { client }
    }

    async fn batch(&self, qos: QoS, n: u64) {
        let payload = Bytes::from_static(PAYLOAD);
        let mut handles = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let handle = self
                .client
                .enqueue(TOPIC, payload.clone(), PublishOptions::with_qos(qos))
                .await
                .expect("queued");
            if qos != QoS::AtMostOnce {
                handles.push(handle);
            }
        }
        for handle in handles {
            handle.await.expect("acknowledged");
        }
        if qos == QoS::AtMostOnce {
            let options = PublishOptions::with_qos(QoS::AtLeastOnce);
            self.client
                .publish(TOPIC, payload, options)
                .await
                .expect("fence acknowledged");
        }
    }
}

struct Rumqttc {
    client: rumqttc::AsyncClient,
    acks: watch::Receiver<u64>,
}

impl Rumqttc {
    async fn connect(port: u16) -> Self {
        let mut options = rumqttc::MqttOptions::new("rumqttc-bench", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_inflight(WINDOW);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, usize::from(WINDOW));
        let (acks_tx, acks) = watch::channel(0u64);
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        acks_tx.send_modify(|n| *n += 1);
                    }
                    Ok(_) => {}
                    Err(err) => panic!("rumqttc: {err}"),
                }
            }
        });
        connected.await.expect("rumqttc connects");
        Self { client, acks }
    }

    async fn batch(&mut self, qos: QoS, n: u64) {
        let start = *self.acks.borrow();
        let rqos = match qos {
            QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
            _ => rumqttc::QoS::AtLeastOnce,
        };
        let payload = Bytes::from_static(PAYLOAD);
        for _ in 0..n {
            self.client
                .publish_bytes(TOPIC, rqos, false, payload.clone())
                .await
                .expect("queued");
        }
        let expected = if qos == QoS::AtMostOnce {
            self.client
                .publish_bytes(TOPIC, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .expect("fence queued");
            1
        } else {
            n
        };
        self.acks
            .wait_for(|acks| *acks >= start + expected)
            .await
            .expect("acknowledged");
    }
}

fn broker(runtime: &Runtime) -> BrokerHandle {
    let mut config = BrokerConfig::default();
    config.sys.interval_secs = 0;
    runtime.block_on(async {
        Broker::builder()
            .config(config)
            .bind("127.0.0.1:0".parse().expect("address"))
            .start()
            .await
            .expect("broker starts")
    })
}

fn main() {
    let broker_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("broker runtime");
    let handle = broker(&broker_runtime);
    let port = handle.local_addr().port();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let midge = runtime.block_on(Midge::connect(port));
    let mut rumqttc = runtime.block_on(Rumqttc::connect(port));
    let n = batch_size();
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = criterion.benchmark_group("client_publish");
    group.throughput(Throughput::Elements(n));
    // The two clients alternate per QoS, so that machine noise hits both alike.
    for (name, qos) in [("qos0", QoS::AtMostOnce), ("qos1", QoS::AtLeastOnce)] {
        group.bench_function(format!("midge/{name}"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        midge.batch(qos, n).await;
                    }
                    start.elapsed()
                })
            });
        });
        group.bench_function(format!("rumqttc/{name}"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        rumqttc.batch(qos, n).await;
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
    runtime.block_on(midge.client.disconnect(ReasonCode::SUCCESS));
    broker_runtime.block_on(handle.shutdown());
    criterion.final_summary();
}
