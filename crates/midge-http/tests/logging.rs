//! What the HTTP layer logs of the admin API's actions: nothing. The broker logs a kick and a
//! deleted retained message itself (with the client id and topic escaped); a second line
//! here would double them, and print user-controlled text as it came.

mod common;

use std::sync::Mutex;

use common::*;
use hyper::{Method, StatusCode};
use midge_client::{PublishOptions, QoS};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// The target and fields of every event at `info` or above.
static EVENTS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct Recorder;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::INFO
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        EVENTS
            .lock()
            .unwrap()
            .push((event.metadata().target().to_owned(), fields.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicks_and_deleted_retained_messages_are_logged_once_by_the_broker() {
    tracing::subscriber::set_global_default(Recorder).expect("the only subscriber");
    let setup = start_default(Some(TOKEN)).await;
    let victim = client(setup.mqtt(), "victim").await;
    victim
        .publish(
            "doomed",
            "x",
            PublishOptions::with_qos(QoS::AtLeastOnce).retain(true),
        )
        .await
        .unwrap();
    let kicked = request(
        setup.addr(),
        Method::POST,
        "/api/v1/clients/victim/kick",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(kicked.status, StatusCode::NO_CONTENT, "{}", kicked.body);
    let deleted = request(
        setup.addr(),
        Method::DELETE,
        "/api/v1/retained?topic=doomed",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let events = EVENTS.lock().unwrap().clone();
    for what in ["victim", "doomed"] {
        let from = |target: &str| {
            events
                .iter()
                .filter(|(t, fields)| t.starts_with(target) && fields.contains(what))
                .count()
        };
        assert_eq!(from("midge_http"), 0, "{what}: {events:?}");
        assert!(from("midge_broker") >= 1, "{what}: {events:?}");
    }
    drop(victim);
    setup.stop().await;
}
