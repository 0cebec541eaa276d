//! Regression tests from a review of the broker's authentication. Each test's comment tells
//! what once went wrong; the test asserts the behaviour the documentation promises. The one
//! ignored test is a known limit, documented in `docs/security.md`.

mod common;

use common::auth::{config, connect, password_file, start};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Peer, Recv, TempDir, V5};
use midge_auth::passwd::{PasswordFile, Scheme};
use midge_auth::scram::{ScramClient, METHOD};
use midge_broker::{Broker, BrokerHandle, ConnectRequest, Hooks, Verification};
use midge_codec::{Connect, Packet, QoS, ReasonCode};

/// docs/broker-config.md `[auth] allow_anonymous`: "A client without a user name is
/// anonymous; so is one with a user name where no password file checks it." The ACL gives
/// anonymous clients the rules before the first `user` line. But the claimed user name stays
/// in `ClientInfo`, and the ACL grants it that user's rules: any client may claim `admin`.
#[tokio::test]
async fn review_an_unchecked_user_name_gets_that_users_acl_rights() {
    let dir = TempDir::new("unchecked");
    let acl = dir.path("acl");
    std::fs::write(
        &acl,
        "topic read public/#\nuser admin\ntopic readwrite secret/#\n",
    )
    .expect("acl");
    let broker = start(config(&format!(
        "[auth]\nallow_anonymous = true\nacl_file = {acl:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
    )))
    .await;
    // No password file: the user name is checked by nothing, so the client is anonymous.
    let (mut mallory, ack) = Peer::connect_with(
        broker.local_addr(),
        connect(V5, "mallory", Some("admin"), Some("anything")),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let suback = mallory.subscribe("secret/#", QoS::AtLeastOnce).await;
    assert_eq!(
        suback.reason_codes,
        vec![ReasonCode::NOT_AUTHORIZED],
        "an anonymous client (unchecked user name) got admin's ACL rights"
    );
}

/// docs/security.md "Reloading" and docs/broker-config.md "Signals": "A client whose user was
/// deleted stays connected ... with only the rights the ACL gives to users it does not
/// name". Nothing connects the password file to the ACL: the deleted user keeps every right
/// its `user` block gives.
#[tokio::test]
async fn review_a_deleted_user_keeps_its_acl_rights_after_reload() {
    let dir = TempDir::new("deleted");
    let (passwd, acl) = (dir.path("passwd"), dir.path("acl"));
    password_file(
        &passwd,
        &[("alice", "a"), ("bob", "b")],
        Scheme::SCRAM_DEFAULT,
    );
    std::fs::write(&acl, "user bob\ntopic readwrite private/#\n").expect("acl");
    let broker = start(config(&format!(
        "[auth]\npassword_file = {passwd:?}\nacl_file = {acl:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
    )))
    .await;
    let (mut bob, ack) = Peer::connect_with(
        broker.local_addr(),
        connect(V5, "bob", Some("bob"), Some("b")),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    // bob is deleted; the ACL file is left as it was.
    password_file(&passwd, &[("alice", "a")], Scheme::SCRAM_DEFAULT);
    broker.reload().expect("reload");
    // A user the ACL does not name has no rights here.
    let suback = bob.subscribe("private/#", QoS::AtLeastOnce).await;
    assert_eq!(
        suback.reason_codes,
        vec![ReasonCode::NOT_AUTHORIZED],
        "a deleted user kept its ACL rights"
    );
}

/// Checks made by the hooks' `verify`, not yet dropped.
static LIVE_CHECKS: AtomicUsize = AtomicUsize::new(0);
/// Checks made by the hooks' `verify`.
static MADE_CHECKS: AtomicUsize = AtomicUsize::new(0);

struct LiveCheck;

impl Drop for LiveCheck {
    fn drop(&mut self) {
        LIVE_CHECKS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A `verify` whose first check blocks until released: the one verification thread is busy.
struct SlowVerify {
    gate: Arc<Mutex<()>>,
}

impl Hooks for SlowVerify {
    fn verify(&self, _request: &ConnectRequest<'_>) -> Option<Verification> {
        LIVE_CHECKS.fetch_add(1, Ordering::SeqCst);
        MADE_CHECKS.fetch_add(1, Ordering::SeqCst);
        let live = LiveCheck;
        let gate = self.gate.clone();
        Some(Box::new(move || {
            let _live = live;
            drop(gate.lock());
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        }))
    }
}

/// core/verify.rs: the queue holds "at most one [check] per connection waiting for its
/// CONNECT's answer, so bounded by the connection limit". A check whose connection closed is
/// only marked abandoned: it stays queued (with the password it captured) until a
/// verification thread comes to it. While the threads are busy, connections that send a
/// CONNECT and close pile up checks without bound, past `limits.max_connections`.
#[tokio::test]
#[expect(
    clippy::await_holding_lock,
    reason = "the held gate is what keeps the one verification thread busy"
)]
async fn review_abandoned_checks_pile_up_past_the_connection_limit() {
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().expect("gate");
    let mut config = config(
        "[auth]\nallow_anonymous = true\nverify_threads = 1\nmax_failed_attempts = 0\n[[listener]]\nbind = \"127.0.0.1:0\"\n",
    );
    config.limits.max_connections = 4;
    // A connection waiting for its check reads nothing, so it learns that its client hung
    // up only when the wait times out.
    config.limits.connect_timeout_ms = 100;
    let broker = Broker::builder()
        .config(config)
        .hooks(SlowVerify { gate: gate.clone() })
        .start()
        .await
        .expect("broker starts");
    let peer: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
    for i in 0..50 {
        let (client, server) = tokio::io::duplex(64 * 1024);
        broker.serve(server, peer);
        let mut p = Peer::new(client, V5);
        let c = connect(V5, &format!("c{i}"), Some("u"), Some(&"p".repeat(60_000)));
        p.send(Packet::Connect(Box::new(c))).await;
        // Wait for the check to be asked for, then hang up.
        while MADE_CHECKS.load(Ordering::SeqCst) <= i {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(p);
        while broker.stats().connections > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let live = LIVE_CHECKS.load(Ordering::SeqCst);
    drop(held);
    assert!(
        live <= 4 + 1,
        "{live} checks (each holding a 60 kB password) outlive their closed connections, \
         with max_connections = 4 and no connection open"
    );
}

/// The salt of a SCRAM server-first message.
async fn scram_salt(broker: &BrokerHandle, peer: SocketAddr, user: &str) -> String {
    let mut scram = ScramClient::new(user, b"whatever").expect("client");
    let mut c = Connect::new(V5, format!("salt-{user}"));
    c.properties.authentication_method = Some(METHOD.into());
    c.properties.authentication_data = Some(scram.client_first().into());
    let (client, server) = tokio::io::duplex(64 * 1024);
    broker.serve(server, peer);
    let mut p = Peer::new(client, V5);
    p.send(Packet::Connect(Box::new(c))).await;
    let data = match p.recv().await {
        Recv::Packet(Packet::Auth(auth)) => auth.properties.authentication_data.expect("data"),
        other => panic!("expected AUTH, got {other:?}"),
    };
    let text = String::from_utf8(data.to_vec()).expect("utf-8");
    text.split(',')
        .find_map(|a| a.strip_prefix("s="))
        .expect("salt")
        .to_owned()
}

/// docs/security.md: "A user without a SCRAM entry, or an unknown one, fails as a wrong
/// password does, after an exchange that looks the same." auth.rs says the mock key is
/// derived from the file "so that the same unknown user gets the same salt across
/// restarts". It is a hash of the whole file, so any edit of the file (adding an unrelated
/// user) changes every unknown user's salt, while a real SCRAM user's salt stays: asking
/// for the salt before and after an edit tells who exists.
#[tokio::test]
async fn review_scram_salts_tell_real_users_from_unknown_ones_across_a_file_change() {
    let dir = TempDir::new("salt");
    let passwd = dir.path("passwd");
    password_file(&passwd, &[("carol", "c")], Scheme::SCRAM_DEFAULT);
    let broker = start(config(&format!(
        "[auth]\npassword_file = {passwd:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
    )))
    .await;
    let peer: SocketAddr = "127.0.0.1:6000".parse().expect("addr");
    let carol_before = scram_salt(&broker, peer, "carol").await;
    let nobody_before = scram_salt(&broker, peer, "nobody").await;
    // The administrator adds an unrelated user; carol's entry stays as it was.
    let mut file = PasswordFile::read(&passwd).expect("read");
    file.set_password("dave", b"d", Scheme::SCRAM_DEFAULT)
        .expect("set password");
    file.write(&passwd).expect("write");
    broker.reload().expect("reload");
    let carol_after = scram_salt(&broker, peer, "carol").await;
    let nobody_after = scram_salt(&broker, peer, "nobody").await;
    assert_eq!(carol_before, carol_after, "a real user's salt is stable");
    assert_eq!(
        nobody_before, nobody_after,
        "an unknown user's SCRAM salt changed with an unrelated edit of the password file"
    );
}

/// hooks.rs `authorize_read`: "A refused message is skipped for this client". For a shared
/// subscription the member is picked first and asked after: a message picked for a member
/// that may not read it is dropped for the whole group, though another member may read it.
/// QoS 1 messages acknowledged to their publisher are lost.
#[tokio::test]
#[ignore = "known limit: a shared group's member is chosen before its read access is checked"]
async fn review_a_shared_subscription_loses_messages_picked_for_a_member_that_may_not_read() {
    let dir = TempDir::new("shared");
    let (passwd, acl) = (dir.path("passwd"), dir.path("acl"));
    password_file(
        &passwd,
        &[("a", "a"), ("b", "b"), ("p", "p")],
        Scheme::SCRAM_DEFAULT,
    );
    std::fs::write(
        &acl,
        "user a\ntopic read t/#\nuser b\ntopic read x/#\nuser p\ntopic write t/#\n",
    )
    .expect("acl");
    let broker = start(config(&format!(
        "[auth]\npassword_file = {passwd:?}\nacl_file = {acl:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
    )))
    .await;
    let addr = broker.local_addr();
    let (mut a, _) = Peer::connect_with(addr, connect(V5, "a", Some("a"), Some("a"))).await;
    let (mut b, _) = Peer::connect_with(addr, connect(V5, "b", Some("b"), Some("b"))).await;
    let (mut p, _) = Peer::connect_with(addr, connect(V5, "p", Some("p"), Some("p"))).await;
    for member in [&mut a, &mut b] {
        let suback = member.subscribe("$share/g/#", QoS::AtLeastOnce).await;
        assert_eq!(suback.reason_codes, vec![ReasonCode(1)]);
    }
    for i in 0..10 {
        let code = p
            .publish("t/1", &i.to_string(), QoS::AtLeastOnce, false)
            .await;
        assert_eq!(code, ReasonCode::SUCCESS);
    }
    let mut got = 0;
    while a.try_recv_publish(Duration::from_millis(500)).await.is_ok() {
        got += 1;
    }
    assert_eq!(
        got, 10,
        "QoS 1 messages acknowledged to the publisher were dropped for the group"
    );
}

/// docs/security.md: "A client without credentials is accepted over loopback (`127.0.0.0/8`,
/// `::1`)". On a dual-stack listener (`[::]:port`, Linux's default) an IPv4 client's address
/// is IPv4-mapped (`::ffff:127.0.0.1`), which `Ipv6Addr::is_loopback` does not call
/// loopback: the local client is refused.
#[tokio::test]
async fn review_ipv4_loopback_through_a_dual_stack_listener_is_local() {
    let Ok(broker) = Broker::builder()
        .config(config("[[listener]]\nbind = \"[::]:0\"\n"))
        .start()
        .await
    else {
        eprintln!("no IPv6 here");
        return;
    };
    let port = broker.local_addr().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let (_, ack) = Peer::connect_with(addr, connect(V5, "local", None, None)).await;
    assert_eq!(
        ack.reason_code,
        ReasonCode::SUCCESS,
        "a client on 127.0.0.1 was refused as remote"
    );
}

/// hooks.rs `authorize_read`: read access is asked "as the message is delivered, so that a
/// wildcard subscription brings only what its client may read". Routing to an offline
/// session asks nothing: its queue fills with messages its client may never read, which then
/// crowd out the ones it may (the publisher of a readable QoS 1 message gets 0x97 Quota
/// exceeded, and the message is lost).
#[tokio::test]
async fn review_an_offline_session_fills_with_messages_its_client_may_not_read() {
    let dir = TempDir::new("offline");
    let (passwd, acl) = (dir.path("passwd"), dir.path("acl"));
    password_file(&passwd, &[("s", "s"), ("p", "p")], Scheme::SCRAM_DEFAULT);
    std::fs::write(&acl, "user s\ntopic read a/#\nuser p\ntopic write #\n").expect("acl");
    let mut config = config(&format!(
        "[auth]\npassword_file = {passwd:?}\nacl_file = {acl:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
    ));
    config.sessions.max_queued_messages = 5;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let persistent = || {
        let mut c = connect(V5, "s", Some("s"), Some("s"));
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
        c
    };
    let (mut s, _) = Peer::connect_with(addr, persistent()).await;
    // Allowed: `a/...` messages can arrive on `#`.
    assert_eq!(
        s.subscribe("#", QoS::AtLeastOnce).await.reason_codes,
        vec![ReasonCode(1)]
    );
    s.disconnect().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut p, _) = Peer::connect_with(addr, connect(V5, "p", Some("p"), Some("p"))).await;
    for i in 0..5 {
        p.publish("b/unreadable", &i.to_string(), QoS::AtLeastOnce, false)
            .await;
    }
    let code = p.publish("a/readable", "x", QoS::AtLeastOnce, false).await;
    assert_eq!(
        code,
        ReasonCode::SUCCESS,
        "a message s may read was refused: s's offline queue is full of messages it may not read"
    );
}

/// The hooks.rs example: a password checked in `Hooks::authenticate`.
struct OnlyAlice;

impl Hooks for OnlyAlice {
    fn authenticate(&self, req: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        match (req.username, req.password) {
            (Some("alice"), Some(b"secret")) => Ok(()),
            _ => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        }
    }

    fn proves_usernames(&self) -> bool {
        true
    }
}

/// Hooks that check passwords in `Hooks::authenticate` and say so
/// (`Hooks::proves_usernames`) have their users named to the ACL file.
#[tokio::test]
async fn review_a_password_checked_by_authenticate_is_no_proof_for_the_acl() {
    let dir = TempDir::new("authenticate-proof");
    let acl = dir.path("acl");
    std::fs::write(&acl, "user alice\ntopic readwrite home/#\n").expect("acl");
    let broker = Broker::builder()
        .config(config(&format!(
            "[auth]\nallow_anonymous = true\nacl_file = {acl:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
        )))
        .hooks(OnlyAlice)
        .start()
        .await
        .expect("broker starts");
    let (mut alice, ack) = Peer::connect_with(
        broker.local_addr(),
        connect(V5, "alice", Some("alice"), Some("secret")),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        alice
            .subscribe("home/#", QoS::AtLeastOnce)
            .await
            .reason_codes,
        vec![ReasonCode(1)],
        "alice's password was checked by the hooks, but the ACL treats her as anonymous"
    );
}

/// A `Hooks::verify` that checks something other than the user name (here: any costly check
/// of the client, which passes) makes the claimed user name "verified": with no password
/// file, a client claiming `admin` gets admin's ACL rules again.
struct DeviceRegistry;

impl Hooks for DeviceRegistry {
    fn verify(&self, _request: &ConnectRequest<'_>) -> Option<Verification> {
        Some(Box::new(|| Ok(())))
    }
}

#[tokio::test]
async fn review_any_passing_verify_makes_a_claimed_user_name_proven() {
    let dir = TempDir::new("verify-proof");
    let acl = dir.path("acl");
    std::fs::write(
        &acl,
        "topic read public/#\nuser admin\ntopic readwrite secret/#\n",
    )
    .expect("acl");
    let broker = Broker::builder()
        .config(config(&format!(
            "[auth]\nallow_anonymous = true\nacl_file = {acl:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n"
        )))
        .hooks(DeviceRegistry)
        .start()
        .await
        .expect("broker starts");
    let (mut mallory, ack) = Peer::connect_with(
        broker.local_addr(),
        connect(V5, "mallory", Some("admin"), None),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        mallory
            .subscribe("secret/#", QoS::AtLeastOnce)
            .await
            .reason_codes,
        vec![ReasonCode::NOT_AUTHORIZED],
        "a user name nothing checked got that user's ACL rules"
    );
}
