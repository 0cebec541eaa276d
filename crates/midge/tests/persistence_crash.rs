//! `midge broker` with `[persistence]`, killed with SIGKILL and started again on the same
//! store: every QoS 1 and 2 message it acknowledged (PUBACK, or PUBREC for QoS 2) still reaches
//! every persistent subscriber whose subscription matched it (QoS 2 exactly once), in order;
//! retained messages, subscriptions, packet identifiers in flight, wills and expiry times come
//! back too. Also the broker's refusals of a store it cannot use, and of messages once the
//! store is full.
//!
//! The crash loop is seeded: `MIDGE_CRASH_SEED` replays a run (timing still varies), and
//! `MIDGE_CRASH_ROUNDS` sets how many rounds it runs (20 by default). The seed is printed
//! first and with every failure.
#![allow(missing_docs)]

mod crashkit;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crashkit::*;
use midge_codec::{ByteStr, Packet, PacketId, ProtocolVersion, PubAck, Publish, QoS, ReasonCode};

const DEFAULT_ROUNDS: u32 = 20;
/// Session Expiry Interval of the 5.0 clients whose sessions persist.
const SESSION_EXPIRY: u32 = 3600;
/// How long after the last packet a subscriber counts as having received everything.
const QUIET: Duration = Duration::from_millis(500);
/// Message Expiry Interval of the messages in the loop that carry one.
const LOOP_EXPIRY_SECS: u32 = 2;
/// Will Delay Interval of the 5.0 will in the loop.
const WILL_DELAY_SECS: u32 = 1;

/// The broker's configuration: persistence on `store`, and limits high enough that no message
/// is refused for want of room in a session, so that every refusal or loss the checks see is
/// the store's. `extra` goes into `[persistence]`.
fn broker_body(store: &Path, extra: &str) -> String {
    format!(
        "[sys]\ninterval_secs = 0\n\
         [limits]\nbackpressure_timeout_ms = 60000\nmax_queued_bytes_total = 4294967296\n\
         [sessions]\nmax_queued_messages = 10000000\nmax_queued_bytes = 1073741824\n\
         [persistence]\npath = {}\n{extra}",
        toml_path(store)
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

/// A subscriber of the loop.
struct Sub {
    name: String,
    client_id: String,
    version: ProtocolVersion,
    qos: QoS,
    filter: String,
    /// Connected while the broker is killed (else subscribed earlier and disconnected).
    online: bool,
    /// How long it holds each answer (PUBACK, PUBREC, PUBCOMP) back until the first kill.
    reply_delay: Duration,
    log: Arc<Mutex<SubLog>>,
}

/// Connects with a session that persists (Clean Start 0; 5.0 with a Session Expiry
/// Interval); returns the connection and the CONNACK's Session Present.
async fn connect_persistent(
    port: u16,
    version: ProtocolVersion,
    client_id: &str,
    will: Option<midge_codec::Will>,
) -> std::io::Result<(Client, bool)> {
    let connect = connect_packet(version, client_id, false, SESSION_EXPIRY, will);
    let (client, ack) = Client::connect(port, &connect).await?;
    if ack.reason_code != ReasonCode::SUCCESS {
        return Err(std::io::Error::other(format!(
            "{client_id}: CONNACK 0x{:02x}",
            ack.reason_code.0
        )));
    }
    Ok((client, ack.session_present))
}

/// Ends `client_id`'s session: a connection with a clean start and no Session Expiry
/// Interval, closed normally.
async fn forget_session(
    port: u16,
    version: ProtocolVersion,
    client_id: &str,
) -> std::io::Result<()> {
    let connect = connect_packet(version, client_id, true, 0, None);
    let (client, ack) = Client::connect(port, &connect).await?;
    if ack.reason_code != ReasonCode::SUCCESS {
        return Err(std::io::Error::other(format!(
            "CONNACK 0x{:02x}",
            ack.reason_code.0
        )));
    }
    client.disconnect().await
}

/// A task receiving for `log` until the connection is lost or `stop` is set.
fn spawn_receiver(
    client: Client,
    sub: &Sub,
    delay: Duration,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let (log, stop) = (Arc::clone(&sub.log), Arc::clone(stop));
    let mut client = client;
    tokio::spawn(async move { receive_flow(&mut client, &log, &stop, delay).await })
}

/// Waits for `task` at most `limit`.
async fn join_within<T>(task: tokio::task::JoinHandle<T>, limit: Duration) -> Option<T> {
    match tokio::time::timeout(limit, task).await {
        Ok(joined) => Some(joined.expect("task panicked")),
        Err(_) => None,
    }
}

/// What a round found.
struct RoundReport {
    summary: String,
    failures: Vec<String>,
}

/// Counts for the summary line.
#[derive(Default)]
struct Tally {
    acked_before_kill: usize,
    acked: usize,
    refused: usize,
    expected: usize,
    delivered: usize,
    qos1_duplicates: usize,
    lost: usize,
    qos2_duplicates: usize,
    out_of_order: usize,
    reordered_by_expiry: usize,
    expired_not_delivered: usize,
}

/// Tasks of resumed clients: subscribers receiving, publishers settling what they have in
/// flight.
type Resumed = (
    Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
);

/// Reconnects every subscriber with its session (Clean Start 0), expecting Session Present 1
/// [MQTT-3.2.2-3], and starts it receiving; starts every publisher resuming its session.
async fn resume_everyone(
    broker: &mut BrokerProcess,
    subs: &[Sub],
    will_sub: &Sub,
    pubs: &[(PubSpec, Arc<Mutex<PubLog>>)],
    stop: &Arc<AtomicBool>,
    failures: &mut Vec<String>,
) -> Resumed {
    let port = broker.port;
    let mut receivers = Vec::new();
    for sub in subs.iter().chain([will_sub]) {
        let resumed = connect_persistent(port, sub.version, &sub.client_id, None).await;
        let (client, present) = broker.check(resumed, format!("{} reconnects", sub.name));
        if !present {
            failures.push(format!(
                "{}: Session Present 0 after a restart: its session (subscription, queue) is lost",
                sub.name
            ));
            // A client told so drops its side of the session too [MQTT-3.2.2-5].
            lock(&sub.log).awaiting_release.clear();
        }
        // Quick now: slow answers after a restart would only make the round longer.
        receivers.push(spawn_receiver(client, sub, Duration::ZERO, stop));
    }
    let mut publishers = Vec::new();
    for (spec, log) in pubs {
        let (spec, log) = (spec.clone(), Arc::clone(log));
        publishers.push(tokio::spawn(async move {
            let present =
                resume_publisher(port, &spec, &log, SESSION_EXPIRY, Duration::from_secs(30))
                    .await?;
            if present {
                Ok(())
            } else {
                Err(std::io::Error::other(
                    "Session Present 0 after a restart [MQTT-3.2.2-3]",
                ))
            }
        }));
    }
    (receivers, publishers)
}

/// One round: subscribe, publish at load, SIGKILL (one round in five SIGTERM) at a seeded
/// moment, restart on the same store (in one round in three, SIGKILL again while the clients
/// resume, and restart once more), resume every client, receive until quiet, check, end every
/// session, stop the broker (SIGTERM or SIGKILL). The store is `store`, shared by every round
/// of the loop, so each round also starts on a store that earlier rounds crashed and left
/// retained messages in.
async fn run_round(round: u32, seed: u64, dir: &Path, store: &Path) -> RoundReport {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut failures = Vec::new();
    let r = format!("c{round}");
    let body = broker_body(store, "");
    let mut broker = BrokerProcess::start(dir, &body);
    let port = broker.port;
    let stop = Arc::new(AtomicBool::new(false));

    // Persistent subscribers: both versions, both QoS, online at the crash or offline since
    // before the first message. One subscribes only to the plain data topics, not to the
    // retained ones, so that a message must reach exactly those whose filter matches it.
    let mut subs = Vec::new();
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for online in [true, false] {
                let v = if version.is_v5() { 5 } else { 3 };
                let q = qos as u8;
                let state = if online { "on" } else { "off" };
                let narrow = version.is_v5() && qos == QoS::AtLeastOnce && online;
                let filter = if narrow {
                    format!("{r}/d/+")
                } else {
                    format!("{r}/d/#")
                };
                let name = format!("s{v}q{q}{state}");
                // Some answer slowly, so that more is in flight to them at the kill. Less than
                // `QUIET`, so that a quiet subscriber has sent all its answers.
                let slow = rng.bool();
                let reply_delay = Duration::from_millis(if slow { rng.u64(50..=300) } else { 0 });
                subs.push(Sub {
                    client_id: format!("{r}-{name}"),
                    name,
                    version,
                    qos,
                    filter,
                    online,
                    reply_delay,
                    log: Arc::default(),
                });
            }
        }
    }
    let mut receivers = Vec::new();
    for sub in &subs {
        let connected = connect_persistent(port, sub.version, &sub.client_id, None).await;
        let (mut client, present) = broker.check(connected, format!("{} connects", sub.name));
        assert!(
            !present,
            "{}: a new client identifier has no session",
            sub.name
        );
        let subscribed = client.subscribe(&sub.filter, sub.qos).await;
        broker.check(subscribed, format!("{} subscribes", sub.name));
        if sub.online {
            receivers.push(spawn_receiver(client, sub, sub.reply_delay, &stop));
        } else {
            let closed = client.disconnect().await;
            broker.check(closed, format!("{} disconnects", sub.name));
        }
    }

    // Wills: a 3.1.1 and a 5.0 client connected at the crash, each with a will; a
    // subscriber to their topics, connected too.
    let will_filter = format!("{r}/will/#");
    let will_sub = Sub {
        name: "will-sub".into(),
        client_id: format!("{r}-will-sub"),
        version: ProtocolVersion::V5,
        qos: QoS::AtLeastOnce,
        filter: will_filter.clone(),
        online: true,
        reply_delay: Duration::ZERO,
        log: Arc::default(),
    };
    {
        let connected = connect_persistent(port, will_sub.version, &will_sub.client_id, None).await;
        let (mut client, _) = broker.check(connected, "the will subscriber connects");
        let subscribed = client.subscribe(&will_filter, QoS::AtLeastOnce).await;
        broker.check(subscribed, "the will subscriber subscribes");
        receivers.push(spawn_receiver(client, &will_sub, Duration::ZERO, &stop));
    }
    let will_clients = [
        (ProtocolVersion::V3_1_1, format!("{r}-w3"), 0),
        (ProtocolVersion::V5, format!("{r}-w5"), WILL_DELAY_SECS),
    ];
    let mut will_topics = Vec::new();
    let mut will_connections: Vec<Client> = Vec::new();
    for (version, client_id, delay) in &will_clients {
        let topic = format!("{r}/will/{client_id}");
        let w = will(*version, &topic, &format!("will of {client_id}"), *delay);
        let connected = connect_persistent(port, *version, client_id, Some(w)).await;
        let (client, _) = broker.check(connected, format!("{client_id} connects"));
        will_topics.push(topic);
        will_connections.push(client);
    }

    // Publishers: both versions, QoS 1 and 2, each with its own window and retained topic;
    // the 5.0 ones give some messages a short Message Expiry Interval.
    let mut pubs = Vec::new();
    for (id, (version, qos)) in [
        (ProtocolVersion::V5, QoS::AtLeastOnce),
        (ProtocolVersion::V5, QoS::ExactlyOnce),
        (ProtocolVersion::V3_1_1, QoS::AtLeastOnce),
        (ProtocolVersion::V3_1_1, QoS::ExactlyOnce),
    ]
    .into_iter()
    .enumerate()
    {
        pubs.push((
            PubSpec {
                id,
                client_id: format!("{r}-p{id}"),
                version,
                qos,
                window: rng.usize(8..=64),
                max_messages: 4000,
                topic: format!("{r}/d/{id}"),
                retained_topic: format!("{r}/d/ret/{id}"),
                retain_every: rng.u32(5..=15),
                expiry_every: 7,
                expiry_secs: LOOP_EXPIRY_SECS,
                // Some QoS 2 publishers are slow to release, so that the broker holds more of
                // their identifiers at the kill.
                pubrel_delay: Duration::from_millis(if rng.bool() { rng.u64(20..=250) } else { 0 }),
            },
            Arc::new(Mutex::new(PubLog::default())),
        ));
    }
    let mut publishers = Vec::new();
    for (spec, log) in &pubs {
        let connected = connect_persistent(port, spec.version, &spec.client_id, None).await;
        let (mut client, _) = broker.check(connected, format!("publisher {} connects", spec.id));
        let (spec, log, stop) = (spec.clone(), Arc::clone(log), Arc::clone(&stop));
        publishers.push(tokio::spawn(async move {
            publish_flow(&mut client, &spec, &log, &stop).await
        }));
    }

    // Mostly SIGKILL; sometimes SIGTERM, a clean stop under the same load, which must keep
    // everything acknowledged just as well.
    let kill_after = Duration::from_millis(rng.u64(50..=1500));
    let graceful = rng.u32(0..5) == 0;
    tokio::time::sleep(kill_after).await;
    let killed_at = Instant::now();
    if graceful {
        // Closed first: a clean stop waits up to `close_timeout_ms` for clients to close the
        // connections it ends, and these do not read.
        will_connections.clear();
        broker.send_term();
        while !broker.exited_cleanly() {
            assert!(
                killed_at.elapsed() < Duration::from_secs(20),
                "the broker did not stop on SIGTERM; log:\n{}",
                broker.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    } else {
        broker.kill9();
    }
    let stopped_in = killed_at.elapsed();
    drop(will_connections);

    for task in publishers {
        if join_within(task, Duration::from_secs(10)).await.is_none() {
            failures.push("a publisher did not notice the broker's death within 10 s".into());
        }
    }
    for task in receivers {
        if join_within(task, Duration::from_secs(10)).await.is_none() {
            failures.push("a subscriber did not notice the broker's death within 10 s".into());
        }
    }
    // A clean stop closes the will clients' connections, so their wills may go out then, or
    // be dropped with the delayed one: the will checks are for crashes.
    let wills_before_kill = lock(&will_sub.log).received.len();
    if wills_before_kill > 0 && !graceful {
        failures.push(format!(
            "{wills_before_kill} will messages published while their clients were connected"
        ));
    }

    // Restart on the same store, and resume every client. In some rounds the broker is
    // killed again while they resume, and restarted once more: what it restored must
    // survive a second crash as well.
    let second_kill = (rng.u32(0..3) == 0).then(|| Duration::from_millis(rng.u64(20..=400)));
    let mut broker = BrokerProcess::start(dir, &body);
    let mut restarted_at = Instant::now();
    let mut resumed =
        resume_everyone(&mut broker, &subs, &will_sub, &pubs, &stop, &mut failures).await;
    if let Some(after) = second_kill {
        tokio::time::sleep(after).await;
        broker.kill9();
        let (receivers, publishers) = resumed;
        for task in publishers.into_iter().chain(receivers) {
            if join_within(task, Duration::from_secs(10)).await.is_none() {
                failures.push("a client did not notice the second kill within 10 s".into());
            }
        }
        broker = BrokerProcess::start(dir, &body);
        restarted_at = Instant::now();
        resumed = resume_everyone(&mut broker, &subs, &will_sub, &pubs, &stop, &mut failures).await;
    }
    let port = broker.port;
    let (receivers, publishers) = resumed;
    for ((spec, _), task) in pubs.iter().zip(publishers) {
        match join_within(task, Duration::from_secs(40)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => failures.push(format!("publisher {}: resuming: {e}", spec.id)),
            None => failures.push(format!("publisher {}: resuming hung", spec.id)),
        }
    }

    // Receive until every subscriber has been quiet for a while and the wills are in (the
    // 5.0 one after its delay).
    let deadline = restarted_at + Duration::from_secs(30);
    loop {
        let now = Instant::now();
        let quiet = subs.iter().chain([&will_sub]).all(|s| {
            let last = lock(&s.log).last_activity.unwrap_or(restarted_at);
            now.duration_since(last.max(restarted_at)) >= QUIET
        });
        let wills_in = will_topics
            .iter()
            .all(|t| lock(&will_sub.log).received.iter().any(|m| &m.topic == t))
            || graceful
            || now > restarted_at + Duration::from_secs(u64::from(WILL_DELAY_SECS) + 5);
        if (quiet && wills_in) || now > deadline {
            if now > deadline {
                failures.push("subscribers still receiving 30 s after the restart".into());
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in receivers {
        match join_within(task, Duration::from_secs(5)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => failures.push(format!("a subscriber failed after the restart: {e}")),
            None => failures.push("a subscriber did not stop".into()),
        }
    }

    // A new subscriber to the retained topics.
    let retained = fresh_retained(port, &format!("{r}/d/ret/+")).await;
    let retained = broker.check(retained, "a new subscriber reads the retained messages");

    // Leave the store with no session of this round; stop the broker cleanly or not.
    let sessions = subs
        .iter()
        .chain([&will_sub])
        .map(|s| (s.version, s.client_id.clone()))
        .chain(will_clients.iter().map(|(v, id, _)| (*v, id.clone())))
        .chain(pubs.iter().map(|(p, _)| (p.version, p.client_id.clone())));
    for (version, client_id) in sessions {
        let forgotten = forget_session(port, version, &client_id).await;
        broker.check(forgotten, format!("{client_id} ends its session"));
    }
    let clean_stop = rng.bool();
    if clean_stop {
        broker.terminate();
    } else {
        broker.kill9();
    }

    // The checks.
    let mut tally = Tally::default();
    let pub_logs: Vec<(PubSpec, std::sync::MutexGuard<'_, PubLog>)> =
        pubs.iter().map(|(s, l)| (s.clone(), lock(l))).collect();
    for (spec, log) in &pub_logs {
        for e in &log.errors {
            failures.push(format!("publisher {}: {e}", spec.id));
        }
        for m in log.sent.values() {
            match (m.acked_at, m.refused) {
                (Some(at), _) => {
                    tally.acked += 1;
                    if at < killed_at {
                        tally.acked_before_kill += 1;
                    }
                }
                (None, Some(_)) => tally.refused += 1,
                (None, None) => {}
            }
        }
        let refusals: Vec<u8> = log.sent.values().filter_map(|m| m.refused).collect();
        if !refusals.is_empty() {
            // The limits leave room for everything: a refusal is the broker failing.
            failures.push(format!(
                "publisher {}: {} messages refused, codes {:?}",
                spec.id,
                refusals.len(),
                refusals.iter().collect::<std::collections::BTreeSet<_>>()
            ));
        }
    }
    for sub in &subs {
        check_subscriber(sub, &pub_logs, killed_at, &mut tally, &mut failures);
    }
    if !graceful {
        check_wills(&will_sub, &will_topics, &mut failures);
    }
    check_retained(&pub_logs, &retained, &mut failures);

    let second = second_kill.map_or(String::new(), |d| {
        format!(", SIGKILL {} ms after the restart", d.as_millis())
    });
    let summary = format!(
        "round {round:>2} seed {seed:#018x}: {} at {:>4} ms (down in {} ms){second}; acknowledged {} before the kill, {} \
         in all ({} refused); deliveries expected {}, delivered {}, lost {}; duplicates QoS 1 {}, \
         QoS 2 {}; out of order {} (and {} resent after expiring); expiring not delivered {}; ended \
         by {}; failures {}",
        if graceful { "SIGTERM" } else { "SIGKILL" },
        kill_after.as_millis(),
        stopped_in.as_millis(),
        tally.acked_before_kill,
        tally.acked,
        tally.refused,
        tally.expected,
        tally.delivered,
        tally.lost,
        tally.qos1_duplicates,
        tally.qos2_duplicates,
        tally.out_of_order,
        tally.reordered_by_expiry,
        tally.expired_not_delivered,
        if clean_stop { "SIGTERM" } else { "SIGKILL" },
        failures.len(),
    );
    RoundReport { summary, failures }
}

/// The QoS of a delivery: the lower of the message's and the subscription's.
fn delivered_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) < (b as u8) {
        a
    } else {
        b
    }
}

fn check_subscriber(
    sub: &Sub,
    pubs: &[(PubSpec, std::sync::MutexGuard<'_, PubLog>)],
    killed_at: Instant,
    tally: &mut Tally,
    failures: &mut Vec<String>,
) {
    let log = lock(&sub.log);
    for e in &log.errors {
        failures.push(format!("{}: {e}", sub.name));
    }
    if !log.awaiting_release.is_empty() {
        failures.push(format!(
            "{}: QoS 2 deliveries never released (no PUBREL) for packet ids {:?}",
            sub.name,
            log.awaiting_release.keys().collect::<Vec<_>>()
        ));
    }
    // Onward deliveries of each (publisher, sequence number), and when the first came.
    let mut onward: HashMap<(usize, u32), (usize, Instant)> = HashMap::new();
    // Per publisher, the sequence numbers in the order of their first delivery.
    let mut firsts: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    let mut strays = Problems::default();
    for m in log.received.iter().filter(|m| m.onward) {
        let Some((p, seq)) = parse_payload(&m.payload) else {
            strays.add(usize::MAX, format!("{:?} on {}", m.payload, m.topic));
            continue;
        };
        let sent = pubs.get(p).and_then(|(_, l)| l.sent.get(&seq));
        match sent {
            None => strays.add(p, format!("p{p}:{seq} (never sent)")),
            Some(sent) if sent.topic != m.topic => {
                strays.add(
                    p,
                    format!("p{p}:{seq} on {} (sent to {})", m.topic, sent.topic),
                );
            }
            Some(_) if !matches(&sub.filter, &m.topic) => {
                strays.add(p, format!("p{p}:{seq} on {} (not matched)", m.topic));
            }
            Some(_) => {}
        }
        let entry = onward.entry((p, seq)).or_insert((0, m.at));
        entry.0 += 1;
        if entry.0 == 1 {
            firsts.entry(p).or_default().push(seq);
        }
        tally.delivered += 1;
    }
    strays.report(
        failures,
        &sub.name,
        "delivered other than sent (never sent, another topic, or a filter that does not match)",
    );
    let mut lost = Problems::default();
    let mut doubled = Problems::default();
    let mut late = Problems::default();
    for (spec, plog) in pubs {
        for (&seq, m) in &plog.sent {
            if !matches(&sub.filter, &m.topic) {
                continue;
            }
            let (count, first_at) = onward
                .get(&(spec.id, seq))
                .copied()
                .map_or((0, None), |(n, at)| (n, Some(at)));
            let qos = delivered_qos(m.qos, sub.qos);
            if qos == QoS::ExactlyOnce && count > 1 {
                tally.qos2_duplicates += 1;
                doubled.add(
                    spec.id,
                    format!(
                        "p{}:{seq} x{count} ({})",
                        spec.id,
                        acked_when(m.acked_at, killed_at)
                    ),
                );
            }
            if qos == QoS::AtLeastOnce && count > 1 {
                tally.qos1_duplicates += count - 1;
            }
            if let (Some(expiry), Some(first_at)) = (m.expiry, first_at) {
                // The broker received it before it was acknowledged, and must not start
                // delivering it once its interval has passed [MQTT-3.3.2-5]; a second covers
                // the whole seconds the broker counts in and the way to us.
                let latest =
                    m.acked_at.unwrap_or(m.sent_at) + Duration::from_secs(u64::from(expiry) + 1);
                if first_at > latest {
                    late.add(
                        spec.id,
                        format!(
                            "p{}:{seq} {} ms after its {expiry} s",
                            spec.id,
                            (first_at - latest).as_millis() + 1000
                        ),
                    );
                }
            }
            if m.acked_at.is_none() {
                continue;
            }
            if m.expiry.is_some() {
                // It may have expired while queued: no promise to check.
                if count == 0 {
                    tally.expired_not_delivered += 1;
                }
                continue;
            }
            tally.expected += 1;
            if count == 0 {
                tally.lost += 1;
                lost.add(
                    spec.id,
                    format!(
                        "p{}:{seq} (QoS {}{}, {})",
                        spec.id,
                        m.qos as u8,
                        if m.retain { " retained" } else { "" },
                        acked_when(m.acked_at, killed_at)
                    ),
                );
            }
        }
    }
    lost.report(failures, &sub.name, "acknowledged and never delivered");
    doubled.report(
        failures,
        &sub.name,
        "delivered more than once at QoS 2 [MQTT-4.3.3-10]",
    );
    late.report(
        failures,
        &sub.name,
        "first delivered after their Message Expiry Interval ran out [MQTT-3.3.2-5]",
    );
    let mut disordered = Problems::default();
    for (&p, seqs) in &firsts {
        let mut highest = 0;
        for &seq in seqs {
            if seq < highest {
                // A message whose first copy expired before it was delivered, and which its
                // publisher sent again after a restart, comes after what was published later:
                // the copy that arrives is the resend, received after those.
                let m = &pubs[p].1.sent[&seq];
                let first_at = onward[&(p, seq)].1;
                let expired_then_resent = m.resent > 0
                    && m.expiry
                        .is_some_and(|e| first_at >= m.sent_at + Duration::from_secs(u64::from(e)));
                if expired_then_resent {
                    tally.reordered_by_expiry += 1;
                } else {
                    tally.out_of_order += 1;
                    disordered.add(p, format!("p{p}:{seq} after p{p}:{highest}"));
                }
            }
            highest = highest.max(seq);
        }
    }
    disordered.report(
        failures,
        &sub.name,
        "first delivered out of their publisher's order",
    );
}

/// Problems of one kind, by publisher, reported as one line per publisher with the first few
/// examples.
#[derive(Default)]
struct Problems(BTreeMap<usize, Vec<String>>);

impl Problems {
    fn add(&mut self, publisher: usize, example: String) {
        self.0.entry(publisher).or_default().push(example);
    }

    fn report(&self, failures: &mut Vec<String>, who: &str, what: &str) {
        for (p, examples) in &self.0 {
            let shown = examples
                .iter()
                .take(8)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            let more = examples.len().saturating_sub(8);
            let from = if *p == usize::MAX {
                "unknown".to_owned()
            } else {
                format!("p{p}")
            };
            failures.push(format!(
                "{who}: {} of {from}'s messages {what}: {shown}{}",
                examples.len(),
                if more > 0 {
                    format!(", and {more} more")
                } else {
                    String::new()
                }
            ));
        }
    }
}

fn acked_when(acked_at: Option<Instant>, killed_at: Instant) -> &'static str {
    match acked_at {
        Some(at) if at < killed_at => "acknowledged before the kill",
        Some(_) => "acknowledged after the restart",
        None => "never acknowledged",
    }
}

fn check_wills(will_sub: &Sub, topics: &[String], failures: &mut Vec<String>) {
    let log = lock(&will_sub.log);
    for topic in topics {
        let wills: Vec<&Received> = log.received.iter().filter(|m| &m.topic == topic).collect();
        let n = wills.len();
        // A resend after a restart may repeat it; on one connection it came once.
        for connection in 1..=log.connection {
            let fresh = wills
                .iter()
                .filter(|m| m.connection == connection && !m.dup)
                .count();
            if fresh > 1 {
                failures.push(format!(
                    "the will on {topic} was published {fresh} times (connection {connection})"
                ));
            }
        }
        if n == 0 {
            failures.push(format!(
                "the will on {topic}, of a client connected at the crash, was not published after \
                 the restart"
            ));
        }
    }
}

/// Retained messages a new subscriber to `filter` gets: topic → payload.
async fn fresh_retained(port: u16, filter: &str) -> std::io::Result<HashMap<String, Bytes>> {
    let connect = connect_packet(ProtocolVersion::V5, "retained-reader", true, 0, None);
    let (mut client, _) = Client::connect(port, &connect).await?;
    client.subscribe(filter, QoS::AtLeastOnce).await?;
    let mut got = HashMap::new();
    while let Some(packet) = client.recv_within(Duration::from_millis(300)).await? {
        if let Packet::Publish(p) = packet {
            assert!(
                p.retain,
                "a new subscription gets retained messages with RETAIN set"
            );
            if let Some(id) = p.packet_id {
                client.send(&Packet::PubAck(PubAck::new(id))).await?;
            }
            got.insert(p.topic.as_str().to_owned(), p.payload);
        }
    }
    client.disconnect().await?;
    Ok(got)
}

fn check_retained(
    pubs: &[(PubSpec, std::sync::MutexGuard<'_, PubLog>)],
    retained: &HashMap<String, Bytes>,
    failures: &mut Vec<String>,
) {
    for (spec, log) in pubs {
        let last_acked = log
            .sent
            .iter()
            .filter(|(_, m)| m.retain && m.acked_at.is_some())
            .map(|(seq, _)| *seq)
            .max();
        let Some(last_acked) = last_acked else {
            continue;
        };
        match retained.get(&spec.retained_topic).map(|p| parse_payload(p)) {
            None => failures.push(format!(
                "{}: no retained message after the restart; p{}:{last_acked} was acknowledged",
                spec.retained_topic, spec.id
            )),
            Some(Some((p, seq)))
                if p == spec.id && log.sent.get(&seq).is_some_and(|m| m.retain) =>
            {
                if seq < last_acked {
                    failures.push(format!(
                        "{}: retained p{p}:{seq} after the restart, older than p{p}:{last_acked}, \
                         which was acknowledged",
                        spec.retained_topic
                    ));
                }
            }
            Some(other) => failures.push(format!(
                "{}: retained {other:?}, which was not published retained there",
                spec.retained_topic
            )),
        }
    }
}

#[test]
fn acknowledged_messages_survive_sigkill_round_after_round() {
    let seed = env_u64("MIDGE_CRASH_SEED").unwrap_or_else(|| fastrand::u64(..));
    let rounds = env_u64("MIDGE_CRASH_ROUNDS").map_or(DEFAULT_ROUNDS, |n| n as u32);
    eprintln!(
        "crash loop: MIDGE_CRASH_SEED={seed:#018x} MIDGE_CRASH_ROUNDS={rounds} (one store, reused \
         by every round)"
    );
    let dir = TempDir::new("loop");
    let store = dir.file("store.redb");
    let mut seeds = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let mut failed = Vec::new();
    runtime().block_on(async {
        for round in 0..rounds {
            let report = run_round(round, seeds.u64(..), dir.path(), &store).await;
            eprintln!("{}", report.summary);
            for f in &report.failures {
                eprintln!("  round {round} (MIDGE_CRASH_SEED={seed:#018x}): {f}");
            }
            if !report.failures.is_empty() {
                failed.push(report.summary);
            }
        }
    });
    eprintln!(
        "crash loop: {rounds} rounds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "MIDGE_CRASH_SEED={seed:#018x}: {} of {rounds} rounds failed (details above):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// Publishes one QoS 1 message and waits for its PUBACK; returns its reason code.
async fn publish_acked(
    client: &mut Client,
    topic: &str,
    payload: &str,
    retain: bool,
    expiry: Option<u32>,
) -> ReasonCode {
    let packet_id = PacketId::new(7).expect("non-zero");
    let mut publish = Publish {
        qos: QoS::AtLeastOnce,
        retain,
        topic: ByteStr::from(topic.to_owned()),
        packet_id: Some(packet_id),
        payload: Bytes::from(payload.to_owned()),
        ..Publish::default()
    };
    publish.properties.message_expiry_interval = expiry;
    client
        .send(&Packet::Publish(publish))
        .await
        .expect("PUBLISH");
    match client.answer().await.expect("PUBACK") {
        Packet::PubAck(ack) if ack.packet_id == packet_id => ack.reason_code,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// What a resumed or new session receives until it has been quiet for `QUIET`: topic,
/// payload and Message Expiry Interval of each PUBLISH, acknowledged as they come.
async fn collect(client: &mut Client) -> Vec<(String, String, Option<u32>)> {
    let mut got = Vec::new();
    while let Some(packet) = client.recv_within(QUIET).await.expect("receives") {
        match packet {
            Packet::Publish(p) => {
                if let Some(id) = p.packet_id {
                    client
                        .send(&Packet::PubAck(PubAck::new(id)))
                        .await
                        .expect("PUBACK");
                }
                got.push((
                    p.topic.as_str().to_owned(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                    p.properties.message_expiry_interval,
                ));
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    got
}

async fn offline_subscriber(
    port: u16,
    version: ProtocolVersion,
    client_id: &str,
    session_expiry: u32,
    filter: &str,
) {
    let connect = connect_packet(version, client_id, false, session_expiry, None);
    let (mut client, _) = Client::connect(port, &connect).await.expect("connects");
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribes");
    client.disconnect().await.expect("disconnect");
}

/// Session and message expiry go on counting while the broker is down: a session whose
/// Session Expiry Interval ran out during the downtime is gone [MQTT-3.1.2-23], a queued or
/// retained message whose Message Expiry Interval ran out is not delivered [MQTT-3.3.2-5],
/// and one still valid is sent with what is left of its interval, downtime deducted
/// [MQTT-3.3.2-6].
#[test]
fn expiry_counts_the_time_the_broker_was_down() {
    let dir = TempDir::new("expiry");
    let store = dir.file("store.redb");
    let body = broker_body(&store, "");
    let down = Duration::from_millis(2500);
    runtime().block_on(async {
        let mut broker = BrokerProcess::start(dir.path(), &body);
        let port = broker.port;
        offline_subscriber(port, ProtocolVersion::V5, "keeps-60", 60, "x/m/#").await;
        offline_subscriber(port, ProtocolVersion::V3_1_1, "keeps-311", 0, "x/m/#").await;
        let connect = connect_packet(ProtocolVersion::V5, "publisher", true, 0, None);
        let (mut publisher, _) = Client::connect(port, &connect).await.expect("connects");
        for (topic, retain, expiry) in [
            ("x/r/keep", true, None),
            ("x/r/short", true, Some(1)),
            ("x/m/long", false, Some(30)),
            ("x/m/none", false, None),
        ] {
            let code = publish_acked(&mut publisher, topic, topic, retain, expiry).await;
            assert!(code.is_success(), "{topic}: 0x{:02x}", code.0);
        }
        // Last, so that all of the 1-second intervals run while the broker is down.
        offline_subscriber(port, ProtocolVersion::V5, "expires-1", 1, "x/m/#").await;
        // A DISCONNECT has no answer: give the broker time to record that the session went
        // offline, or the crash finds it connected and its expiry counts from the restart.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let code = publish_acked(&mut publisher, "x/m/short", "x/m/short", false, Some(1)).await;
        assert!(code.is_success(), "0x{:02x}", code.0);
        let killed_at = Instant::now();
        broker.kill9();
        drop(publisher);
        tokio::time::sleep_until((killed_at + down).into()).await;
        let broker = BrokerProcess::start(dir.path(), &body);
        let port = broker.port;

        let (_client, ack) = Client::connect(
            port,
            &connect_packet(ProtocolVersion::V5, "expires-1", false, 1, None),
        )
        .await
        .expect("connects");
        assert!(
            !ack.session_present,
            "a session with a 1 s Session Expiry Interval, disconnected just before the broker \
             was down for {} ms, came back",
            down.as_millis()
        );

        for (version, client_id, expiry) in [
            (ProtocolVersion::V5, "keeps-60", 60),
            (ProtocolVersion::V3_1_1, "keeps-311", 0),
        ] {
            let connect = connect_packet(version, client_id, false, expiry, None);
            let (mut client, ack) = Client::connect(port, &connect).await.expect("connects");
            assert!(ack.session_present, "{client_id}: its session was kept");
            let got = collect(&mut client).await;
            let topics: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
            assert_eq!(
                topics,
                ["x/m/long", "x/m/none"],
                "{client_id}: x/m/short's 1 s ran out while the broker was down"
            );
            if version.is_v5() {
                let left = got[0]
                    .2
                    .expect("x/m/long carries what is left of its interval");
                assert!(
                    left <= 28,
                    "{client_id}: x/m/long has {left} s of its 30 left after {} ms of downtime",
                    down.as_millis()
                );
                assert_eq!(got[1].2, None, "x/m/none has no interval");
            }
        }

        let connect = connect_packet(ProtocolVersion::V5, "retained-reader", true, 0, None);
        let (mut reader, _) = Client::connect(port, &connect).await.expect("connects");
        reader
            .subscribe("x/r/#", QoS::AtLeastOnce)
            .await
            .expect("subscribes");
        let got = collect(&mut reader).await;
        let topics: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            ["x/r/keep"],
            "the retained x/r/short's 1 s ran out while the broker was down"
        );
    });
}

/// Starts the broker on `store` expecting it to refuse: a non-zero exit with an error that
/// names the file.
fn assert_refuses(dir: &Path, store: &Path, what: &str) -> String {
    match BrokerProcess::start_with(dir, &broker_body(store, "")) {
        Started::Listening(broker) => panic!(
            "the broker started on {what}; log:\n{}",
            broker.log_tail(20)
        ),
        Started::Exited { status, stderr } => {
            assert!(!status.success(), "{what}: exit {status}");
            let path = store.to_str().expect("UTF-8 path");
            assert!(
                stderr.contains(path),
                "{what}: the error names the store's file {path}:\n{stderr}"
            );
            stderr
        }
    }
}

/// A store with something in it: a persistent session with a queued message, and a retained
/// message, written by the broker and left by a clean stop.
fn write_real_store(dir: &Path, store: &Path) {
    let mut broker = BrokerProcess::start(dir, &broker_body(store, ""));
    let port = broker.port;
    runtime().block_on(async {
        offline_subscriber(port, ProtocolVersion::V5, "kept", SESSION_EXPIRY, "t/#").await;
        let connect = connect_packet(ProtocolVersion::V5, "publisher", true, 0, None);
        let (mut publisher, _) = Client::connect(port, &connect).await.expect("connects");
        for i in 0..50 {
            let code =
                publish_acked(&mut publisher, "t/r", &format!("m{i}"), i % 10 == 0, None).await;
            assert!(code.is_success(), "0x{:02x}", code.0);
        }
    });
    broker.terminate();
}

/// Writes `format` into the store's `meta` table, as a midge of that format would have.
fn set_format(path: &Path, format: u32) {
    let db = redb::Database::open(path).expect("redb opens it");
    let txn = db.begin_write().expect("write");
    {
        let mut meta = txn.open_table(META).expect("meta");
        meta.insert("format", format).expect("insert");
    }
    txn.commit().expect("commit");
}

fn format_of(path: &Path) -> u32 {
    let db = redb::Database::open(path).expect("redb opens it");
    let txn = redb::ReadableDatabase::begin_read(&db).expect("read");
    let meta = txn.open_table(META).expect("meta");
    let format = redb::ReadableTable::get(&meta, "format")
        .expect("get")
        .expect("a format");
    format.value()
}

/// The store's table of its format, as midge-store defines it.
const META: redb::TableDefinition<'_, &str, u32> = redb::TableDefinition::new("meta");

/// Where `after` differs from `before`, for a failure message.
fn describe_change(before: &[u8], after: &[u8]) -> String {
    let differ: Vec<usize> = before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect();
    format!(
        "{} bytes before, {} after; {} bytes differ, first at {:?}, last at {:?}",
        before.len(),
        after.len(),
        differ.len(),
        differ.first(),
        differ.last()
    )
}

#[test]
fn the_broker_refuses_a_store_it_cannot_use_and_leaves_it_as_it_was() {
    let dir = TempDir::new("bad");

    // Not a store at all.
    let garbage = dir.file("garbage.redb");
    let mut noise = fastrand::Rng::with_seed(7);
    let bytes: Vec<u8> = (0..64 * 1024).map(|_| noise.u8(..)).collect();
    std::fs::write(&garbage, &bytes).expect("write");
    let stderr = assert_refuses(dir.path(), &garbage, "a file of random bytes");
    assert!(stderr.contains("not a readable midge store"), "{stderr}");
    let after = std::fs::read(&garbage).expect("read");
    assert!(
        after == bytes,
        "a file that is not a store is left untouched: {}",
        describe_change(&bytes, &after)
    );

    // A real store, damaged on every page past redb's header, and one cut short.
    let real = dir.file("real.redb");
    write_real_store(dir.path(), &real);
    let good = std::fs::read(&real).expect("read");
    let mut damaged = good.clone();
    for page in damaged.chunks_mut(4096).skip(1) {
        for b in page.iter_mut().take(64) {
            *b ^= 0x5a;
        }
    }
    let damaged_path = dir.file("damaged.redb");
    std::fs::write(&damaged_path, &damaged).expect("write");
    let stderr = assert_refuses(dir.path(), &damaged_path, "a damaged store");
    assert!(stderr.contains("not a readable midge store"), "{stderr}");
    let after = std::fs::read(&damaged_path).expect("read");
    assert!(
        after == damaged,
        "a damaged store is left as it was, for whoever repairs it: {}",
        describe_change(&damaged, &after)
    );
    let short = dir.file("short.redb");
    std::fs::write(&short, &good[..good.len() / 2]).expect("write");
    let stderr = assert_refuses(dir.path(), &short, "a store cut in half");
    assert!(stderr.contains("not a readable midge store"), "{stderr}");

    // A store that a later midge wrote: its format, in the store's `meta` table, is one this
    // midge does not know. Refused, and still of that format, with everything in it, for the
    // later midge.
    let later = dir.file("later.redb");
    std::fs::copy(&real, &later).expect("copy");
    set_format(&later, midge_store::FORMAT + 1);
    let stderr = assert_refuses(dir.path(), &later, "a store of a later format");
    assert!(
        stderr.contains(&format!("format {}", midge_store::FORMAT + 1))
            && stderr.contains("later midge"),
        "the error says the store is of a later format:\n{stderr}"
    );
    assert_eq!(format_of(&later), midge_store::FORMAT + 1);
    set_format(&later, midge_store::FORMAT);
    let broker = BrokerProcess::start(dir.path(), &broker_body(&later, ""));
    runtime().block_on(async {
        let connect = connect_packet(ProtocolVersion::V5, "kept", false, SESSION_EXPIRY, None);
        let (mut client, ack) = Client::connect(broker.port, &connect)
            .await
            .expect("connects");
        assert!(ack.session_present, "the refused store kept its session");
        assert_eq!(collect(&mut client).await.len(), 50, "and its messages");
    });
    drop(broker);

    // A store whose file cannot be created: its directory would be a regular file (as root,
    // which ignores permissions, an unwritable directory would not stop it).
    let plain = dir.file("plain-file");
    std::fs::write(&plain, b"not a directory").expect("write");
    assert_refuses(
        dir.path(),
        &plain.join("store.redb"),
        "a store under a regular file",
    );
}

/// Once the store's file reaches `max_disk_bytes`, QoS 1 and 2 messages are refused rather
/// than acknowledged and lost: a 5.0 publisher gets PUBACK 0x97 Quota exceeded, a 3.1.1 one,
/// which cannot be told, is disconnected; QoS 0 messages, which promise nothing, still flow;
/// and what was acknowledged before the store filled survives a SIGKILL.
#[test]
fn a_full_store_refuses_qos_1_and_2_and_keeps_what_it_acknowledged() {
    let dir = TempDir::new("full");
    let store = dir.file("store.redb");
    // The size of a store with one session, so that the limit leaves room for some messages.
    {
        let mut broker = BrokerProcess::start(dir.path(), &broker_body(&store, ""));
        runtime().block_on(offline_subscriber(
            broker.port,
            ProtocolVersion::V5,
            "keeper",
            SESSION_EXPIRY,
            "f/#",
        ));
        broker.terminate();
    }
    let empty = std::fs::metadata(&store).expect("store").len();
    let limit = empty + 2 * 1024 * 1024;
    let body = broker_body(&store, &format!("max_disk_bytes = {limit}\n"));
    let mut broker = BrokerProcess::start(dir.path(), &body);
    let port = broker.port;
    let payload = "x".repeat(32 * 1024);
    let acked = runtime().block_on(async {
        let connect = connect_packet(ProtocolVersion::V5, "pub5", true, 0, None);
        let (mut pub5, _) = Client::connect(port, &connect).await.expect("connects");
        let mut acked = Vec::new();
        let refusal = loop {
            assert!(
                acked.len() < 2000,
                "no refusal after {} messages of 32 KiB with max_disk_bytes = {limit} (the file \
                 was {empty} bytes)",
                acked.len()
            );
            let text = format!("{}:{payload}", acked.len());
            let code = publish_acked(&mut pub5, "f/q1", &text, false, None).await;
            if !code.is_success() {
                break code;
            }
            acked.push(acked.len());
        };
        assert_eq!(refusal, ReasonCode::QUOTA_EXCEEDED);
        assert!(
            acked.len() >= 10,
            "the store had room for some messages first: {}",
            acked.len()
        );
        let mut publish = Publish {
            qos: QoS::ExactlyOnce,
            topic: ByteStr::from_static("f/q2"),
            packet_id: PacketId::new(9),
            payload: Bytes::from_static(b"q2"),
            ..Publish::default()
        };
        pub5.send(&Packet::Publish(publish.clone()))
            .await
            .expect("PUBLISH");
        match pub5.answer().await.expect("PUBREC") {
            Packet::PubRec(rec) => assert_eq!(rec.reason_code, ReasonCode::QUOTA_EXCEEDED),
            other => panic!("expected PUBREC, got {other:?}"),
        }

        // QoS 0 still flows, to an online subscriber.
        let connect = connect_packet(ProtocolVersion::V5, "live", true, 0, None);
        let (mut live, _) = Client::connect(port, &connect).await.expect("connects");
        live.subscribe("f/q0", QoS::AtLeastOnce)
            .await
            .expect("subscribes");
        publish.qos = QoS::AtMostOnce;
        publish.packet_id = None;
        publish.topic = ByteStr::from_static("f/q0");
        pub5.send(&Packet::Publish(publish)).await.expect("PUBLISH");
        match live
            .recv_within(Duration::from_secs(5))
            .await
            .expect("receives")
        {
            Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"q2"),
            other => panic!("the QoS 0 message did not arrive: {other:?}"),
        }

        // A 3.1.1 publisher cannot be sent a refusal: it is disconnected, unacknowledged.
        let connect = connect_packet(ProtocolVersion::V3_1_1, "pub3", true, 0, None);
        let (mut pub3, _) = Client::connect(port, &connect).await.expect("connects");
        pub3.send(&Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: ByteStr::from_static("f/q1"),
            packet_id: PacketId::new(1),
            payload: Bytes::from_static(b"3.1.1"),
            ..Publish::default()
        }))
        .await
        .expect("PUBLISH");
        match pub3.recv_within(Duration::from_secs(5)).await {
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ),
                "{e}"
            ),
            Ok(other) => panic!("a 3.1.1 publisher to a full store got {other:?}"),
        }
        acked
    });

    broker.kill9();
    let broker = BrokerProcess::start(dir.path(), &body);
    runtime().block_on(async {
        let connect = connect_packet(ProtocolVersion::V5, "keeper", false, SESSION_EXPIRY, None);
        let (mut keeper, ack) = Client::connect(broker.port, &connect)
            .await
            .expect("connects");
        assert!(ack.session_present);
        let got = collect(&mut keeper).await;
        let mut numbers: Vec<usize> = got
            .iter()
            .map(|(topic, text, _)| {
                assert_eq!(topic, "f/q1", "only acknowledged messages were kept");
                text.split(':')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("a refused message was kept: {text:.40}"))
            })
            .collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(
            numbers, acked,
            "every acknowledged message, and nothing else"
        );
    });
}

/// With `sync = "interval"` acknowledgements do not wait for the disk, but a clean stop
/// (SIGTERM) commits what is pending: nothing acknowledged is lost, however long the interval.
#[test]
fn interval_sync_keeps_everything_through_a_clean_stop() {
    let dir = TempDir::new("interval");
    let store = dir.file("store.redb");
    let body = broker_body(&store, "sync = \"interval\"\nsync_interval_ms = 600000\n");
    let mut broker = BrokerProcess::start(dir.path(), &body);
    let port = broker.port;
    runtime().block_on(async {
        offline_subscriber(port, ProtocolVersion::V3_1_1, "kept", 0, "i/#").await;
        let connect = connect_packet(ProtocolVersion::V5, "publisher", true, 0, None);
        let (mut publisher, _) = Client::connect(port, &connect).await.expect("connects");
        for i in 0..200 {
            let code = publish_acked(&mut publisher, "i/m", &i.to_string(), i == 199, None).await;
            assert!(code.is_success(), "0x{:02x}", code.0);
        }
    });
    broker.terminate();
    let broker = BrokerProcess::start(dir.path(), &body);
    runtime().block_on(async {
        let connect = connect_packet(ProtocolVersion::V3_1_1, "kept", false, 0, None);
        let (mut client, ack) = Client::connect(broker.port, &connect)
            .await
            .expect("connects");
        assert!(
            ack.session_present,
            "the subscription was committed at the stop"
        );
        let got: Vec<String> = collect(&mut client)
            .await
            .into_iter()
            .map(|m| m.1)
            .collect();
        let expected: Vec<String> = (0..200).map(|i: i32| i.to_string()).collect();
        assert_eq!(got, expected, "every acknowledged message, in order");
        let connect = connect_packet(ProtocolVersion::V5, "reader", true, 0, None);
        let (mut reader, _) = Client::connect(broker.port, &connect)
            .await
            .expect("connects");
        reader
            .subscribe("i/m", QoS::AtLeastOnce)
            .await
            .expect("subscribes");
        let retained: Vec<String> = collect(&mut reader)
            .await
            .into_iter()
            .map(|m| m.1)
            .collect();
        assert_eq!(retained, ["199"], "the retained message");
    });
}
