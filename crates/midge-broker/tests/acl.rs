//! ACL enforcement in the broker, over real connections: what a SUBSCRIBE, a PUBLISH, a will,
//! a delivery, a retained message and a resumed session's queue become under an `acl_file`,
//! and what a reload changes for clients already connected.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{Peer, Recv, TempDir, V311, V5};
use midge_auth::passwd::{PasswordFile, Scheme};
use midge_broker::{Broker, BrokerConfig, BrokerHandle};
use midge_codec::{
    Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode, SubscriptionOptions, Will,
};
use midge_proto::Message;

/// Every user's password.
const PASSWORD: &str = "secret";

/// Writes a password file with `users`, each with [`PASSWORD`], hashed cheaply.
fn password_file(path: &Path, users: &[&str]) {
    let mut file = PasswordFile::new();
    for user in users {
        file.set_password(
            user,
            PASSWORD.as_bytes(),
            Scheme::Pbkdf2Sha512 { iterations: 1000 },
        )
        .expect("set password");
    }
    file.write(path).expect("write password file");
}

/// A broker on 127.0.0.1 with a password file of `users` and an ACL file of `acl`, both in
/// the directory, and `extra` in its `[auth]` section.
struct Setup {
    dir: TempDir,
    broker: BrokerHandle,
}

impl Setup {
    async fn new(name: &str, users: &[&str], acl: &str, extra: &str) -> Self {
        Self::with(name, users, acl, |passwd| {
            format!(
                "[auth]\npassword_file = {passwd:?}\n{extra}\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
            )
        })
        .await
    }

    /// A broker configured by `config`, given the password file's path, to which the ACL
    /// file and `[sys]` are added.
    async fn with(
        name: &str,
        users: &[&str],
        acl: &str,
        config: impl FnOnce(&Path) -> String,
    ) -> Self {
        let dir = TempDir::new(name);
        let (passwd, acl_file) = (dir.path("passwd"), dir.path("acl"));
        password_file(&passwd, users);
        std::fs::write(&acl_file, acl).expect("write acl");
        let text = format!(
            "{}\n[sys]\ninterval_secs = 0\n",
            config(&passwd).replacen("[auth]\n", &format!("[auth]\nacl_file = {acl_file:?}\n"), 1)
        );
        let mut config: BrokerConfig =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        config.limits.close_timeout_ms = 500;
        let broker = Broker::builder()
            .config(config)
            .start()
            .await
            .expect("broker starts");
        Self { dir, broker }
    }

    fn addr(&self) -> SocketAddr {
        self.broker.local_addr()
    }

    /// Rewrites the ACL file and reloads.
    fn reload_acl(&self, acl: &str) {
        std::fs::write(self.dir.path("acl"), acl).expect("write acl");
        self.broker.reload().expect("reloads");
    }

    /// Rewrites the password file with `users` and the ACL file, and reloads.
    fn reload_all(&self, users: &[&str], acl: &str) {
        password_file(&self.dir.path("passwd"), users);
        self.reload_acl(acl);
    }
}

/// A CONNECT of `version` with clean start, user `user` (and [`PASSWORD`]) if any.
fn login(version: ProtocolVersion, id: &str, user: Option<&str>) -> Connect {
    let mut c = Connect::new(version, id.to_owned());
    c.username = user.map(|u| u.to_owned().into());
    c.password = user.map(|_| Bytes::from_static(PASSWORD.as_bytes()));
    c
}

/// A client of `user` connected with `version`.
async fn client(addr: SocketAddr, version: ProtocolVersion, id: &str, user: &str) -> Peer {
    connected(addr, login(version, id, Some(user))).await
}

async fn connected(addr: SocketAddr, connect: Connect) -> Peer {
    let (peer, ack) = Peer::connect_with(addr, connect).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "CONNACK {ack:?}");
    peer
}

/// The reason codes of one SUBSCRIBE of `filters`.
async fn subscribe(peer: &mut Peer, filters: &[(&str, QoS)]) -> Vec<ReasonCode> {
    let filters: Vec<_> = filters
        .iter()
        .map(|(f, q)| (*f, SubscriptionOptions::qos(*q)))
        .collect();
    peer.subscribe_opts(&filters, None).await.reason_codes
}

/// The topics of the messages `peer` receives up to and including one on `last`.
async fn topics_until(peer: &mut Peer, last: &str) -> Vec<String> {
    let mut topics = Vec::new();
    loop {
        let p = peer.recv_publish().await;
        topics.push(p.topic.as_str().to_owned());
        if p.topic.as_str() == last {
            return topics;
        }
    }
}

/// The topics of the messages `peer` receives until nothing comes for a while.
async fn topics_until_silence(peer: &mut Peer) -> Vec<String> {
    let mut topics = Vec::new();
    loop {
        match peer.try_recv_publish(Duration::from_millis(300)).await {
            Ok(p) => topics.push(p.topic.as_str().to_owned()),
            Err(Recv::Timeout) => return topics,
            Err(other) => panic!("expected PUBLISH or nothing, got {other:?}"),
        }
    }
}

const GRANTED_1: ReasonCode = ReasonCode(1);
const GRANTED_2: ReasonCode = ReasonCode(2);
/// The 3.1.1 SUBACK failure return code.
const FAILURE_V3: ReasonCode = ReasonCode::UNSPECIFIED_ERROR;

#[tokio::test]
async fn a_denied_filter_fails_alone_in_its_suback() {
    let acl = "user alice\ntopic read a/#\ntopic read b/+\n\
               user writer\ntopic write #\n";
    let s = Setup::new("suback", &["alice", "writer"], acl, "").await;
    let addr = s.addr();
    let filters = [
        ("a/#", QoS::AtLeastOnce),
        ("secret/#", QoS::ExactlyOnce),
        ("b/x", QoS::ExactlyOnce),
        ("$SYS/#", QoS::AtMostOnce),
    ];
    // One code per filter, in order: the granted QoS, or 0x87 Not authorized at 5.0
    // [MQTT-5:3.8.4-5] [MQTT-5:3.8.4-6] [MQTT-5:3.8.4-7] [MQTT-5:3.9.3-1] [MQTT-5:3.9.3-2].
    let mut v5 = client(addr, V5, "alice5", "alice").await;
    assert_eq!(
        subscribe(&mut v5, &filters).await,
        [
            GRANTED_1,
            ReasonCode::NOT_AUTHORIZED,
            GRANTED_2,
            ReasonCode::NOT_AUTHORIZED
        ]
    );
    // 3.1.1 has one failure code, 0x80
    // [MQTT-3.1.1:3.8.4-4] [MQTT-3.1.1:3.8.4-5] [MQTT-3.1.1:3.9.3-1] [MQTT-3.1.1:3.9.3-2].
    let mut v3 = client(addr, V311, "alice3", "alice").await;
    assert_eq!(
        subscribe(&mut v3, &filters).await,
        [GRANTED_1, FAILURE_V3, GRANTED_2, FAILURE_V3]
    );
    assert_eq!(s.broker.stats().subscriptions_denied, 4);
    // The granted ones work at their QoS; the refused one was not made: a message on it
    // matches no subscription (0x10).
    let mut writer = client(addr, V5, "writer", "writer").await;
    assert_eq!(
        writer
            .publish("secret/x", "s", QoS::AtLeastOnce, false)
            .await,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    writer.publish("b/x", "b", QoS::ExactlyOnce, false).await;
    for peer in [&mut v5, &mut v3] {
        let b = peer.recv_publish().await;
        assert_eq!((b.topic.as_str(), b.qos), ("b/x", QoS::ExactlyOnce));
    }
    writer.publish("a/1", "a", QoS::ExactlyOnce, false).await;
    for peer in [&mut v5, &mut v3] {
        let a = peer.recv_publish().await;
        assert_eq!((a.topic.as_str(), a.qos), ("a/1", QoS::AtLeastOnce));
    }
}

#[tokio::test]
async fn a_denied_publish_is_refused_at_5_acknowledged_at_3_1_1_and_never_routed() {
    let acl = "user writer\ntopic write allowed/#\n\
               user reader\ntopic read #\n";
    let s = Setup::new("publish", &["writer", "reader"], acl, "").await;
    let addr = s.addr();
    // A retained message the writer may not replace or clear.
    let mut kept = Message::new("forbidden/r", "kept", QoS::AtLeastOnce);
    kept.retain = true;
    s.broker.publish(kept);
    let mut reader = client(addr, V5, "reader", "reader").await;
    assert_eq!(
        subscribe(&mut reader, &[("#", QoS::AtLeastOnce)]).await,
        [GRANTED_1]
    );
    assert_eq!(reader.recv_publish().await.topic.as_str(), "forbidden/r");

    let mut v5 = client(addr, V5, "writer5", "writer").await;
    // QoS 1: PUBACK 0x87 [MQTT-5:3.4.2-1] [MQTT-5:3.3.4-1].
    assert_eq!(
        v5.publish("forbidden/1", "x", QoS::AtLeastOnce, false)
            .await,
        ReasonCode::NOT_AUTHORIZED
    );
    // QoS 2: PUBREC 0x87, which ends the exchange [MQTT-5:3.5.2-1]...
    let denied = v5.publish_packet("forbidden/2", "x", QoS::ExactlyOnce, false);
    let id = denied.packet_id.expect("packet id");
    v5.send(Packet::Publish(denied)).await;
    match v5.recv_packet().await {
        Packet::PubRec(rec) => {
            assert_eq!(rec.packet_id, id);
            assert_eq!(rec.reason_code, ReasonCode::NOT_AUTHORIZED);
        }
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // ... so the identifier is free: a PUBLISH that reuses it is a new message
    // [MQTT-5:4.3.3-9].
    let reused = Publish {
        qos: QoS::ExactlyOnce,
        topic: "allowed/reused".into(),
        packet_id: Some(id),
        payload: Bytes::from_static(b"y"),
        ..Publish::default()
    };
    assert_eq!(v5.publish_full(reused).await, ReasonCode::SUCCESS);
    // QoS 0: nothing to answer. A denied retained message changes no retained message, nor
    // does a denied empty one clear it.
    v5.publish("forbidden/0", "x", QoS::AtMostOnce, false).await;
    assert_eq!(
        v5.publish("forbidden/r", "", QoS::AtLeastOnce, true).await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        v5.publish("forbidden/r", "new", QoS::AtLeastOnce, true)
            .await,
        ReasonCode::NOT_AUTHORIZED
    );

    // 3.1.1 cannot refuse a PUBLISH: the usual acknowledgement, and the message goes nowhere
    // [MQTT-3.1.1:3.3.5-2].
    let mut v3 = client(addr, V311, "writer3", "writer").await;
    assert_eq!(
        v3.publish("forbidden/1", "x", QoS::AtLeastOnce, false)
            .await,
        ReasonCode::SUCCESS
    );
    assert_eq!(
        v3.publish("forbidden/2", "x", QoS::ExactlyOnce, false)
            .await,
        ReasonCode::SUCCESS
    );
    v3.publish("forbidden/0", "x", QoS::AtMostOnce, false).await;
    v3.publish("allowed/end", "x", QoS::AtLeastOnce, false)
        .await;

    // The reader, allowed to read all of them, got only the allowed ones.
    assert_eq!(
        topics_until(&mut reader, "allowed/end").await,
        ["allowed/reused", "allowed/end"]
    );
    assert_eq!(s.broker.stats().publishes_denied, 8);
    // The retained message is the broker's.
    let mut late = client(addr, V5, "late", "reader").await;
    subscribe(&mut late, &[("forbidden/r", QoS::AtLeastOnce)]).await;
    let r = late.recv_publish().await;
    assert_eq!(
        (r.topic.as_str(), &r.payload[..], r.retain),
        ("forbidden/r", &b"kept"[..], true)
    );
}

#[tokio::test]
async fn a_wildcard_subscription_receives_only_what_its_user_may_read() {
    let acl = "user writer\ntopic write #\n\
               user reader\ntopic read a/#\ntopic read b/open\ntopic deny a/secret/#\n";
    let s = Setup::new("wildcard", &["writer", "reader"], acl, "").await;
    let addr = s.addr();
    let mut reader = client(addr, V5, "reader", "reader").await;
    // Allowed: something under each can be read. Refused: nothing under it can be.
    assert_eq!(
        subscribe(
            &mut reader,
            &[
                ("#", QoS::AtLeastOnce),
                ("+/+", QoS::AtLeastOnce),
                ("a/secret/#", QoS::AtLeastOnce),
                ("c/#", QoS::AtLeastOnce),
            ]
        )
        .await,
        [
            GRANTED_1,
            GRANTED_1,
            ReasonCode::NOT_AUTHORIZED,
            ReasonCode::NOT_AUTHORIZED
        ]
    );
    let mut writer = client(addr, V5, "writer", "writer").await;
    for topic in [
        "a/1",
        "b/open",
        "b/closed",
        "a/secret/x",
        "c/1",
        "a/2/3",
        "a/end",
    ] {
        writer.publish(topic, "x", QoS::AtLeastOnce, false).await;
    }
    // One delivery per message, whichever of the two filters matched it.
    assert_eq!(
        topics_until(&mut reader, "a/end").await,
        ["a/1", "b/open", "a/2/3", "a/end"]
    );
    assert_eq!(s.broker.stats().deliveries_denied, 3);
}

#[tokio::test]
async fn retained_messages_sent_on_subscribe_are_filtered_by_read_access() {
    let acl = "user writer\ntopic write #\n\
               user reader\ntopic read a/#\ntopic deny a/secret\n";
    let s = Setup::new("retained", &["writer", "reader"], acl, "").await;
    let addr = s.addr();
    let mut writer = client(addr, V5, "writer", "writer").await;
    for topic in ["a/1", "a/secret", "b/1", "a/2"] {
        writer.publish(topic, "r", QoS::AtLeastOnce, true).await;
    }
    let mut reader = client(addr, V5, "reader", "reader").await;
    assert_eq!(
        subscribe(&mut reader, &[("#", QoS::AtLeastOnce)]).await,
        [GRANTED_1]
    );
    // Live messages come after the retained ones [MQTT-5:3.3.1-9].
    writer
        .publish("a/end", "live", QoS::AtLeastOnce, false)
        .await;
    let mut topics = topics_until(&mut reader, "a/end").await;
    assert_eq!(topics.pop().as_deref(), Some("a/end"));
    topics.sort();
    assert_eq!(topics, ["a/1", "a/2"]);
    assert_eq!(s.broker.stats().deliveries_denied, 2);
}

#[tokio::test]
async fn a_resumed_sessions_queue_keeps_only_what_its_user_may_still_read() {
    let before = "user writer\ntopic write #\n\
                  user reader\ntopic read a/#\ntopic read b/#\n";
    let after = "user writer\ntopic write #\n\
                 user reader\ntopic read a/#\n";
    let s = Setup::new("resume", &["writer", "reader"], before, "").await;
    let addr = s.addr();
    for version in [V5, V311] {
        let id = format!("reader-{version:?}");
        let mut persistent = login(version, &id, Some("reader"));
        persistent.clean_start = false;
        if version == V5 {
            persistent.properties.session_expiry_interval = Some(600);
        }
        let (mut reader, ack) = Peer::connect_with(addr, persistent.clone()).await;
        assert!(!ack.session_present, "{version:?}");
        subscribe(&mut reader, &[("#", QoS::AtLeastOnce)]).await;
        reader.disconnect().await;
        s.reload_acl(before);

        let mut writer = client(addr, V5, "writer", "writer").await;
        for topic in ["a/1", "b/1", "a/2", "b/2"] {
            assert_eq!(
                writer.publish(topic, "q", QoS::AtLeastOnce, false).await,
                ReasonCode::SUCCESS,
                "queued for the offline session"
            );
        }
        let denied_before = s.broker.stats().deliveries_denied;
        s.reload_acl(after);
        let (mut reader, ack) = Peer::connect_with(addr, persistent).await;
        // [MQTT-5:3.2.2-3] [MQTT-3.1.1:3.2.2-2]
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        assert!(ack.session_present, "{version:?}");
        writer.publish("a/end", "e", QoS::AtLeastOnce, false).await;
        assert_eq!(
            topics_until(&mut reader, "a/end").await,
            ["a/1", "a/2", "a/end"],
            "{version:?}"
        );
        assert_eq!(s.broker.stats().deliveries_denied - denied_before, 2);
        reader.disconnect().await;
        writer.disconnect().await;
    }
}

#[tokio::test]
async fn rights_that_change_on_reload_apply_to_a_connected_client_from_the_next_message() {
    let before = "user writer\ntopic write #\n\
                  user reader\ntopic read a/#\ntopic read b/#\n";
    let after = "user writer\ntopic write #\n\
                 user reader\ntopic read a/#\ntopic read c/#\n";
    let s = Setup::new("live", &["writer", "reader"], before, "").await;
    let addr = s.addr();
    let mut reader = client(addr, V5, "reader", "reader").await;
    subscribe(&mut reader, &[("#", QoS::AtLeastOnce)]).await;
    let mut writer = client(addr, V5, "writer", "writer").await;
    writer.publish("b/1", "x", QoS::AtLeastOnce, false).await;
    writer.publish("c/1", "x", QoS::AtLeastOnce, false).await;
    writer.publish("a/1", "x", QoS::AtLeastOnce, false).await;
    assert_eq!(topics_until(&mut reader, "a/1").await, ["b/1", "a/1"]);
    s.reload_acl(after);
    writer.publish("b/2", "x", QoS::AtLeastOnce, false).await;
    writer.publish("c/2", "x", QoS::AtLeastOnce, false).await;
    writer.publish("a/2", "x", QoS::AtLeastOnce, false).await;
    // What was taken away stops, what was given starts, on the same subscription.
    assert_eq!(topics_until(&mut reader, "a/2").await, ["c/2", "a/2"]);
    assert_eq!(s.broker.stats().deliveries_denied, 2);
    // And new subscriptions are checked against the new rules.
    assert_eq!(
        subscribe(
            &mut reader,
            &[("b/#", QoS::AtLeastOnce), ("c/#", QoS::AtLeastOnce)]
        )
        .await,
        [ReasonCode::NOT_AUTHORIZED, GRANTED_1]
    );
}

fn will(topic: &str) -> Will {
    Will {
        topic: topic.to_owned().into(),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    }
}

#[tokio::test]
async fn a_will_the_client_may_not_publish_is_refused_at_connect() {
    let acl = "user alice\ntopic write wills/alice\n\
               user watcher\ntopic read wills/#\n";
    let s = Setup::new("will", &["alice", "watcher"], acl, "").await;
    let addr = s.addr();
    let mut watcher = client(addr, V5, "watcher", "watcher").await;
    subscribe(&mut watcher, &[("wills/#", QoS::AtLeastOnce)]).await;
    // 0x87 at 5.0, 5 at 3.1.1; Session Present 0, and the connection closes
    // [MQTT-5:3.1.4-2] [MQTT-5:3.2.2-6] [MQTT-5:3.2.2-7]
    // [MQTT-3.1.1:3.2.2-4] [MQTT-3.1.1:3.2.2-5].
    for version in [V5, V311] {
        let mut c = login(version, "alice", Some("alice"));
        c.will = Some(will("wills/bob"));
        let (mut peer, ack) = Peer::connect_with(addr, c).await;
        assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED, "{version:?}");
        assert!(!ack.session_present);
        assert!(peer.until_closed().await.is_empty());
    }
    let stats = s.broker.stats();
    assert_eq!(stats.publishes_denied, 2);
    // The client's credentials were right: not an authentication failure.
    assert_eq!(stats.auth_failures, 0);
    // A will it may publish is accepted, and published when the connection is lost.
    let mut c = login(V5, "alice", Some("alice"));
    c.will = Some(will("wills/alice"));
    let mut alice = connected(addr, c.clone()).await;
    alice.shutdown().await;
    assert_eq!(watcher.recv_publish().await.topic.as_str(), "wills/alice");
    // One that was allowed at CONNECT and is no longer when it is due is not published.
    let mut alice = connected(addr, c).await;
    s.reload_acl("user alice\nuser watcher\ntopic read wills/#\n");
    alice.shutdown().await;
    watcher.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_shared_subscription_is_checked_against_its_filter() {
    let acl = "user worker\ntopic read jobs/#\n\
               user writer\ntopic write #\n";
    let s = Setup::new("shared", &["worker", "writer"], acl, "").await;
    let addr = s.addr();
    let mut w1 = client(addr, V5, "w1", "worker").await;
    let mut w2 = client(addr, V5, "w2", "worker").await;
    assert_eq!(
        subscribe(
            &mut w1,
            &[
                ("$share/g/jobs/#", QoS::AtLeastOnce),
                ("$share/g/secret/#", QoS::AtLeastOnce),
                ("$share/jobs/secret", QoS::AtLeastOnce),
            ]
        )
        .await,
        [
            GRANTED_1,
            ReasonCode::NOT_AUTHORIZED,
            ReasonCode::NOT_AUTHORIZED
        ]
    );
    assert_eq!(
        subscribe(&mut w2, &[("$share/g/jobs/#", QoS::AtLeastOnce)]).await,
        [GRANTED_1]
    );
    let mut writer = client(addr, V5, "writer", "writer").await;
    for i in 0..4 {
        assert_eq!(
            writer
                .publish(&format!("jobs/{i}"), "j", QoS::AtLeastOnce, false)
                .await,
            ReasonCode::SUCCESS
        );
    }
    // The refused shared subscription was not made.
    assert_eq!(
        writer
            .publish("secret/1", "s", QoS::AtLeastOnce, false)
            .await,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    // Each message to one member of the group.
    let (first, second) = (
        topics_until_silence(&mut w1).await,
        topics_until_silence(&mut w2).await,
    );
    assert!(
        !first.is_empty() && !second.is_empty(),
        "{first:?} {second:?}"
    );
    let mut all: Vec<_> = first.into_iter().chain(second).collect();
    all.sort();
    assert_eq!(all, ["jobs/0", "jobs/1", "jobs/2", "jobs/3"]);
}

#[tokio::test]
async fn sys_topics_are_readable_only_where_the_acl_names_them() {
    let acl = "user all\ntopic read #\n\
               user sys\ntopic readwrite $SYS/#\n\
               user uptime\ntopic read #\ntopic read $SYS/broker/uptime\n";
    let s = Setup::new("sys", &["all", "sys", "uptime"], acl, "").await;
    let addr = s.addr();
    // `#` does not reach `$` topics, in an ACL as in a subscription
    // [MQTT-5:4.7.2-1] [MQTT-3.1.1:4.7.2-1].
    let mut all = client(addr, V5, "all", "all").await;
    assert_eq!(
        subscribe(
            &mut all,
            &[("#", QoS::AtMostOnce), ("$SYS/#", QoS::AtMostOnce)]
        )
        .await,
        [ReasonCode::GRANTED_QOS_0, ReasonCode::NOT_AUTHORIZED]
    );
    let mut sys = client(addr, V5, "sys", "sys").await;
    assert_eq!(
        subscribe(&mut sys, &[("$SYS/#", QoS::AtMostOnce)]).await,
        [ReasonCode::GRANTED_QOS_0]
    );
    let mut uptime = client(addr, V311, "uptime", "uptime").await;
    assert_eq!(
        subscribe(
            &mut uptime,
            &[
                ("$SYS/#", QoS::AtMostOnce),
                ("$SYS/broker/version", QoS::AtMostOnce)
            ]
        )
        .await,
        [ReasonCode::GRANTED_QOS_0, FAILURE_V3]
    );
    // `uptime` subscribes to all of `$SYS`, where it may read one topic: its `#` rule gives it
    // none of the others as they are delivered.
    s.broker.publish_sys();
    let topics = topics_until_silence(&mut sys).await;
    assert!(topics.len() > 5, "{topics:?}");
    assert!(topics.iter().all(|t| t.starts_with("$SYS/")), "{topics:?}");
    assert!(topics.iter().any(|t| t == "$SYS/broker/uptime"));
    assert_eq!(
        topics_until_silence(&mut uptime).await,
        ["$SYS/broker/uptime"]
    );
    assert_eq!(topics_until_silence(&mut all).await, Vec::<String>::new());
    // Publishing into `$SYS` is the broker's alone, whatever the ACL says.
    assert_eq!(
        sys.publish("$SYS/broker/uptime", "forged", QoS::AtLeastOnce, false)
            .await,
        ReasonCode::NOT_AUTHORIZED
    );
    sys.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(s.broker.stats().dropped_sys_publish, 1);
    assert_eq!(
        s.broker.stats().deliveries_denied,
        topics.len() as u64 - 1,
        "all but one for `uptime`; none for `all`, whose `#` matches no $SYS topic"
    );
}

#[tokio::test]
async fn a_session_resumed_under_another_user_name_delivers_only_what_that_user_may_read() {
    let acl = "user writer\ntopic write #\n\
               user alice\ntopic read alice/#\n\
               user mallory\ntopic read mallory/#\n";
    let s = Setup::new("other-user", &["writer", "alice", "mallory"], acl, "").await;
    let addr = s.addr();
    let persistent = |user| {
        let mut c = login(V5, "device", Some(user));
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(600);
        c
    };
    let mut alice = connected(addr, persistent("alice")).await;
    subscribe(&mut alice, &[("alice/#", QoS::AtLeastOnce)]).await;
    alice.disconnect().await;
    let mut writer = client(addr, V5, "writer", "writer").await;
    writer
        .publish("alice/1", "x", QoS::AtLeastOnce, false)
        .await;
    // Mallory takes alice's session, with alice's subscription and queue: neither brings it
    // anything of alice's.
    let (mut mallory, ack) = Peer::connect_with(addr, persistent("mallory")).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert!(ack.session_present);
    subscribe(&mut mallory, &[("mallory/#", QoS::AtLeastOnce)]).await;
    writer
        .publish("alice/2", "x", QoS::AtLeastOnce, false)
        .await;
    writer
        .publish("mallory/end", "x", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(
        topics_until(&mut mallory, "mallory/end").await,
        ["mallory/end"]
    );
    assert_eq!(s.broker.stats().deliveries_denied, 2);
}

/// Read access is checked as a message enters an offline session's queue, not only as it
/// leaves: otherwise the queue fills with messages its user may not read, and refuses
/// readable ones (a 5.0 publisher would get 0x97).
#[tokio::test]
async fn unreadable_messages_do_not_crowd_readable_ones_out_of_an_offline_queue() {
    let acl = "user writer\ntopic write #\n\
               user reader\ntopic read a/#\n";
    let s = Setup::with("crowding", &["writer", "reader"], acl, |passwd| {
        format!(
            "[auth]\npassword_file = {passwd:?}\n[sessions]\nmax_queued_messages = 2\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\n"
        )
    })
    .await;
    let addr = s.addr();
    let mut c = login(V5, "reader", Some("reader"));
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(600);
    let mut reader = connected(addr, c.clone()).await;
    subscribe(&mut reader, &[("#", QoS::AtLeastOnce)]).await;
    reader.disconnect().await;
    let mut writer = client(addr, V5, "writer", "writer").await;
    for topic in ["b/1", "b/2"] {
        writer.publish(topic, "x", QoS::AtLeastOnce, false).await;
    }
    assert_eq!(
        writer.publish("a/1", "x", QoS::AtLeastOnce, false).await,
        ReasonCode::SUCCESS
    );
    let mut reader = connected(addr, c).await;
    writer.publish("a/end", "x", QoS::AtLeastOnce, false).await;
    assert_eq!(topics_until(&mut reader, "a/end").await, ["a/1", "a/end"]);
}

#[tokio::test]
async fn a_user_name_in_a_pattern_is_one_level_of_text_never_a_wildcard() {
    // CVE-2017-7650: users named `+`, `#` and `a/b` must not read user `a`'s topics through
    // `users/%u/#`. Each also may read `users/public/#`, so that its subscriptions are
    // accepted where something could be delivered, and the last message reaches everyone.
    let attackers = ["+", "#", "a/b"];
    // (The anonymous rule is for user `#` should a user name that no password file checks
    // ever count as anonymous; see the ignored test below.)
    let mut acl = String::from(
        "topic read users/public/#\npattern read users/%u/#\nuser writer\ntopic write #\n",
    );
    for name in attackers {
        acl.push_str(&format!("user {name}\ntopic read users/public/#\n"));
    }
    // A password file cannot hold a name that starts with `#`: user `#` comes through a second
    // listener, which has no password file and takes any user name unchecked.
    let s = Setup::with("cve-2017-7650", &["a", "writer", "+", "a/b"], &acl, |passwd| {
        format!(
            "[auth]\nallow_anonymous = true\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\npassword_file = {passwd:?}\nallow_anonymous = false\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\n"
        )
    })
    .await;
    let addr = s.addr();
    let unchecked = s.broker.listener_addr(1).expect("second listener");
    let (_, ack) = Peer::connect_with(addr, login(V5, "attacker", Some("#"))).await;
    assert_eq!(ack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let mut a = client(addr, V5, "a", "a").await;
    assert_eq!(
        subscribe(
            &mut a,
            &[
                ("users/a/#", QoS::AtLeastOnce),
                ("users/b/#", QoS::AtLeastOnce)
            ]
        )
        .await,
        [GRANTED_1, ReasonCode::NOT_AUTHORIZED]
    );
    let mut peers = Vec::new();
    for (i, name) in attackers.into_iter().enumerate() {
        let at = if name == "#" { unchecked } else { addr };
        let mut peer = client(at, V5, &format!("attacker{i}"), name).await;
        assert_eq!(
            subscribe(
                &mut peer,
                &[
                    ("users/#", QoS::AtLeastOnce),
                    ("users/a/#", QoS::AtLeastOnce),
                    ("users/a/b/#", QoS::AtLeastOnce),
                    ("users/+/+", QoS::AtLeastOnce),
                ]
            )
            .await,
            [
                GRANTED_1,
                ReasonCode::NOT_AUTHORIZED,
                ReasonCode::NOT_AUTHORIZED,
                GRANTED_1
            ],
            "user {name:?}"
        );
        peers.push((name, peer));
    }
    let mut writer = client(addr, V5, "writer", "writer").await;
    for topic in ["users/a/x", "users/a/b/c", "users/a/b", "users/public/end"] {
        writer.publish(topic, "d", QoS::AtLeastOnce, false).await;
    }
    assert_eq!(
        topics_until_silence(&mut a).await,
        ["users/a/x", "users/a/b/c", "users/a/b"]
    );
    for (name, peer) in &mut peers {
        assert_eq!(
            topics_until(peer, "users/public/end").await,
            ["users/public/end"],
            "user {name:?}"
        );
    }
    // Each message under users/a went to each attacker once (one delivery per message,
    // whichever of its subscriptions match), and was denied there.
    assert_eq!(s.broker.stats().deliveries_denied, 9);
}

#[tokio::test]
async fn a_client_identifier_in_a_pattern_is_one_level_of_text_never_a_wildcard() {
    let acl = "pattern read devices/%c/#\n\
               user writer\ntopic write #\n\
               user u\ntopic read devices/public\n";
    let s = Setup::new("pattern-c", &["u", "writer"], acl, "").await;
    let addr = s.addr();
    let mut peers = Vec::new();
    for id in ["dev1", "+", "#", "dev1/x"] {
        let mut peer = client(addr, V5, id, "u").await;
        let expected = if id == "dev1" {
            [GRANTED_1, GRANTED_1]
        } else {
            [GRANTED_1, ReasonCode::NOT_AUTHORIZED]
        };
        assert_eq!(
            subscribe(
                &mut peer,
                &[
                    ("devices/#", QoS::AtLeastOnce),
                    ("devices/dev1/#", QoS::AtLeastOnce)
                ]
            )
            .await,
            expected,
            "client {id:?}"
        );
        peers.push((id, peer));
    }
    let mut writer = client(addr, V5, "writer", "writer").await;
    for topic in ["devices/dev1/x", "devices/dev2/x", "devices/public"] {
        writer.publish(topic, "d", QoS::AtLeastOnce, false).await;
    }
    for (id, peer) in &mut peers {
        let expected: &[&str] = if *id == "dev1" {
            &["devices/dev1/x", "devices/public"]
        } else {
            &["devices/public"]
        };
        assert_eq!(
            topics_until(peer, "devices/public").await,
            expected,
            "client {id:?}"
        );
    }
}

#[tokio::test]
async fn anonymous_rules_apply_to_clients_without_a_user_name_only() {
    let acl = "topic read anon/#\ntopic write anon/in\n\
               user alice\ntopic read alice/#\ntopic write #\n";
    let s = Setup::new(
        "anonymous",
        &["alice", "carol"],
        acl,
        "allow_anonymous = true",
    )
    .await;
    let addr = s.addr();
    let filters = [
        ("anon/#", QoS::AtLeastOnce),
        ("alice/#", QoS::AtLeastOnce),
        ("#", QoS::AtLeastOnce),
    ];
    let mut anon = connected(addr, login(V5, "anon", None)).await;
    assert_eq!(
        subscribe(&mut anon, &filters).await,
        [GRANTED_1, ReasonCode::NOT_AUTHORIZED, GRANTED_1]
    );
    let mut alice = client(addr, V5, "alice", "alice").await;
    assert_eq!(
        subscribe(&mut alice, &filters).await,
        [ReasonCode::NOT_AUTHORIZED, GRANTED_1, GRANTED_1]
    );
    // A user the file does not name has no rules at all: not the anonymous ones either.
    let mut carol = client(addr, V5, "carol", "carol").await;
    assert_eq!(
        subscribe(&mut carol, &filters).await,
        [ReasonCode::NOT_AUTHORIZED; 3]
    );
    assert_eq!(
        carol.publish("anon/in", "c", QoS::AtLeastOnce, false).await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        anon.publish("alice/x", "a", QoS::AtLeastOnce, false).await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        anon.publish("anon/in", "a", QoS::AtLeastOnce, false).await,
        ReasonCode::SUCCESS
    );
    assert_eq!(anon.recv_publish().await.topic.as_str(), "anon/in");
    alice.publish("anon/1", "x", QoS::AtLeastOnce, false).await;
    alice.publish("alice/1", "x", QoS::AtLeastOnce, false).await;
    assert_eq!(topics_until_silence(&mut anon).await, ["anon/1"]);
    assert_eq!(topics_until_silence(&mut alice).await, ["alice/1"]);
    // On `#`: anon/in and anon/1 to alice, alice/1 to anon.
    assert_eq!(s.broker.stats().deliveries_denied, 3);
}

/// A client whose user name nothing checked is anonymous to the ACL too: with a listener for
/// guests beside one with passwords, a guest who says "alice" must not read alice's topics.
/// (mosquitto gives it alice's rules.)
#[tokio::test]
async fn a_user_name_that_no_password_file_checks_gets_the_anonymous_rules() {
    let acl = "topic read public/#\nuser alice\ntopic read alice/#\n";
    let s = Setup::with("unchecked", &["alice"], acl, |passwd| {
        format!(
            "[auth]\nallow_anonymous = true\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\npassword_file = {passwd:?}\nallow_anonymous = false\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\n"
        )
    })
    .await;
    let guests = s.broker.listener_addr(1).expect("second listener");
    let mut guest = connected(guests, login(V5, "guest", None)).await;
    let filters = [
        ("alice/#", QoS::AtLeastOnce),
        ("public/#", QoS::AtLeastOnce),
    ];
    assert_eq!(
        subscribe(&mut guest, &filters).await,
        [ReasonCode::NOT_AUTHORIZED, GRANTED_1]
    );
    let mut claimed = Connect::new(V5, "impostor".to_owned());
    claimed.username = Some("alice".into());
    let mut impostor = connected(guests, claimed).await;
    assert_eq!(
        subscribe(&mut impostor, &filters).await,
        [ReasonCode::NOT_AUTHORIZED, GRANTED_1]
    );
}

#[tokio::test]
async fn a_deleted_users_open_connection_keeps_only_what_the_acl_gives_anonymous_clients() {
    let before = "pattern read public/#\npattern read home/%u/#\n\
                  user bob\ntopic read bob/#\ntopic write bob/#\n\
                  user alice\ntopic write #\n";
    let after = "pattern read public/#\npattern read home/%u/#\n\
                 user alice\ntopic write #\n";
    let s = Setup::new("deleted", &["alice", "bob"], before, "").await;
    let addr = s.addr();
    let mut bob = client(addr, V5, "bob", "bob").await;
    assert_eq!(
        subscribe(
            &mut bob,
            &[("bob/#", QoS::AtLeastOnce), ("public/#", QoS::AtLeastOnce)]
        )
        .await,
        [GRANTED_1, GRANTED_1]
    );
    let mut alice = client(addr, V5, "alice", "alice").await;
    alice.publish("bob/1", "x", QoS::AtLeastOnce, false).await;
    assert_eq!(bob.recv_publish().await.topic.as_str(), "bob/1");

    s.reload_all(&["alice"], after);
    // A new CONNECT as bob is refused.
    let (_, ack) = Peer::connect_with(addr, login(V5, "bob2", Some("bob"))).await;
    assert_eq!(ack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    // The open connection stays, anonymous to the ACL now: only the patterns without `%u`
    // give it rights. Its subscription to `bob/#` stays too, and brings nothing.
    assert_eq!(
        subscribe(
            &mut bob,
            &[("bob/#", QoS::AtLeastOnce), ("home/+/#", QoS::AtLeastOnce)]
        )
        .await,
        [ReasonCode::NOT_AUTHORIZED, ReasonCode::NOT_AUTHORIZED]
    );
    let denied = s.broker.stats().deliveries_denied;
    for topic in [
        "bob/2",
        "public/1",
        "home/bob/1",
        "home/alice/1",
        "public/end",
    ] {
        alice.publish(topic, "x", QoS::AtLeastOnce, false).await;
    }
    assert_eq!(
        topics_until(&mut bob, "public/end").await,
        ["public/1", "public/end"]
    );
    assert_eq!(s.broker.stats().deliveries_denied - denied, 1);
    assert_eq!(
        bob.publish("bob/x", "x", QoS::AtLeastOnce, false).await,
        ReasonCode::NOT_AUTHORIZED
    );
    // Still connected.
    bob.send(Packet::PingReq).await;
    assert!(matches!(bob.recv_packet().await, Packet::PingResp));
}
