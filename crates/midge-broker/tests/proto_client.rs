//! The broker driven by the project's own sans-IO client, `midge_proto::client::Client`, over
//! real TCP: the two halves of the protocol, written separately, agree on the wire.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use midge_codec::{ByteStr, ProtocolVersion, QoS, SubscribeProperties, SubscriptionOptions};
use midge_proto::client::{Client, ClientConfig, Event};
use midge_proto::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A minimal driver: the run loop the crate documentation describes, with a deadline.
struct Driver {
    client: Client,
    stream: TcpStream,
    rx: BytesMut,
    events: Vec<Event>,
}

impl Driver {
    async fn connect(addr: std::net::SocketAddr, config: ClientConfig) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connects");
        let mut client = Client::new(Arc::new(config), Instant::now()).expect("config encodes");
        client.connect(Instant::now());
        let mut driver = Self {
            client,
            stream,
            rx: BytesMut::new(),
            events: Vec::new(),
        };
        driver.run_until(|d| d.client.is_connected()).await;
        driver
    }

    /// Drives I/O until `done` holds; panics after 5 s.
    async fn run_until(&mut self, mut done: impl FnMut(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut tx = BytesMut::new();
            while self.client.poll_transmit(Instant::now(), &mut tx) {}
            if !tx.is_empty() {
                self.stream.write_all(&tx).await.expect("writes");
            }
            while let Some(event) = self.client.poll_event() {
                self.events.push(event);
            }
            if done(self) {
                return;
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rx));
            match read.await {
                Ok(Ok(0)) | Ok(Err(_)) => self.client.connection_lost(),
                Ok(Ok(_)) => self.client.handle_bytes(Instant::now(), &mut self.rx),
                Err(_) => panic!("timed out; events so far: {:?}", self.events),
            }
        }
    }

    /// Subscribes to one filter and waits for the SUBACK.
    async fn subscribe(&mut self, filter: &'static str, qos: QoS) {
        let filters = vec![(ByteStr::from(filter), SubscriptionOptions::qos(qos))];
        self.client
            .subscribe(filters, SubscribeProperties::default())
            .expect("subscribes");
        self.run_until(|d| {
            d.events
                .iter()
                .any(|e| matches!(e, Event::Subscribed { .. }))
        })
        .await;
    }

    fn received(&self) -> Vec<&Message> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m),
                _ => None,
            })
            .collect()
    }
}

// Conformance: [MQTT-3.1.1:7.1.2-1] [MQTT-5:4.2.0-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto_client_publishes_and_receives_at_every_qos() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in [
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ] {
        let mut sub = Driver::connect(addr, ClientConfig::new(version, "proto-sub")).await;
        sub.subscribe("proto/#", QoS::ExactlyOnce).await;

        let mut publisher = Driver::connect(addr, ClientConfig::new(version, "proto-pub")).await;
        let mut ids = Vec::new();
        for (n, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            let message = Message::new("proto/x", n.to_string().into_bytes(), qos);
            ids.extend(publisher.client.publish(message).expect("queued"));
        }
        // Both QoS 1 and QoS 2 complete with success.
        publisher
            .run_until(|d| {
                d.events.iter().filter(|e| matches!(e, Event::Published { reason_code, .. } if reason_code.is_success())).count()
                    == ids.len()
            })
            .await;
        sub.run_until(|d| d.received().len() == 3).await;
        let got: Vec<(QoS, Vec<u8>)> = sub
            .received()
            .iter()
            .map(|m| (m.qos, m.payload.to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                (QoS::AtMostOnce, b"0".to_vec()),
                (QoS::AtLeastOnce, b"1".to_vec()),
                (QoS::ExactlyOnce, b"2".to_vec()),
            ],
            "{version:?}"
        );
        publisher
            .client
            .disconnect(midge_codec::ReasonCode::SUCCESS);
        sub.client.disconnect(midge_codec::ReasonCode::SUCCESS);
        publisher.run_until(|d| !d.client.is_connected()).await;
        sub.run_until(|d| !d.client.is_connected()).await;
        let _ = (
            publisher.stream.shutdown().await,
            sub.stream.shutdown().await,
        );
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto_client_resumes_its_session_and_gets_what_it_missed() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut config = ClientConfig::new(ProtocolVersion::V5, "resumer");
    config.clean_start = false;
    config.properties.session_expiry_interval = Some(60);
    let mut sub = Driver::connect(addr, config.clone()).await;
    sub.subscribe("missed/#", QoS::AtLeastOnce).await;
    // Gone without DISCONNECT: the session stays on the broker.
    drop(sub);

    let mut p = Peer::connect(addr, ProtocolVersion::V5, "while-away").await;
    p.publish("missed/a", "while you were away", QoS::AtLeastOnce, false)
        .await;

    let mut back = Driver::connect(addr, config).await;
    let present = back.events.iter().find_map(|e| match e {
        Event::Connected(c) => Some(c.session_present),
        _ => None,
    });
    assert_eq!(present, Some(true));
    back.run_until(|d| d.received().len() == 1).await;
    assert_eq!(back.received()[0].payload.as_ref(), b"while you were away");
    broker.shutdown().await;
}
