//! The scenarios: setting clients up, the publisher and subscriber loops, and the summary.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use midge_codec::{Packet, PacketId, ProtocolVersion, QoS, MAX_PACKET_SIZE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at};

use super::client::{Conn, ConnectOptions, SetupError, Template};
use super::pattern::{check_topic_filter, check_topic_name, Pattern};
use super::report::{cpu_of, rate, rss_of, BrokerUsage, Counters, Latencies, Progress, Summary};
use super::track::{now_ns, Header, Seen, SeqSet};
use super::{MessagePlan, Plan, Setup, MAX_TRACKING_BITS};

/// Messages encoded into one buffer before a write.
const BATCH: u64 = 64;
/// Streams one subscriber tracks; deliveries of further streams are counted as untracked.
const MAX_STREAMS_PER_SUBSCRIBER: usize = 1 << 20;

/// One publisher of an end-to-end scenario.
#[derive(Clone, Debug)]
pub(crate) struct PublisherSpec {
    pub(crate) topics: Vec<String>,
    /// Seed for a random topic per message; `None`: cycle through the topics.
    pub(crate) random: Option<u64>,
}

/// Which subscribers get a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Routing {
    /// Every subscriber gets every message.
    All,
    /// Stream `j` of every publisher goes to subscriber `j` only.
    StreamToSubscriber,
}

/// An end-to-end scenario: publishers and subscribers in this process, every delivery checked.
#[derive(Clone, Debug)]
pub(crate) struct EndToEnd {
    pub(crate) name: &'static str,
    pub(crate) publishers: Vec<PublisherSpec>,
    /// The filters of each subscriber.
    pub(crate) subscribers: Vec<Vec<String>>,
    pub(crate) routing: Routing,
    pub(crate) msg: MessagePlan,
    pub(crate) idle: Duration,
}

impl EndToEnd {
    pub(crate) fn fanin(prefix: &str, publishers: u64, msg: MessagePlan, idle: Duration) -> Self {
        Self {
            name: "fanin",
            publishers: (0..publishers)
                .map(|i| PublisherSpec {
                    topics: vec![format!("{prefix}/{i}")],
                    random: None,
                })
                .collect(),
            subscribers: vec![vec![format!("{prefix}/+")]],
            routing: Routing::All,
            msg,
            idle,
        }
    }

    pub(crate) fn fanout(prefix: &str, subscribers: u64, msg: MessagePlan, idle: Duration) -> Self {
        let topic = format!("{prefix}/fanout");
        Self {
            name: "fanout",
            publishers: vec![PublisherSpec {
                topics: vec![topic.clone()],
                random: None,
            }],
            subscribers: (0..subscribers).map(|_| vec![topic.clone()]).collect(),
            routing: Routing::All,
            msg,
            idle,
        }
    }

    pub(crate) fn latency(prefix: &str, msg: MessagePlan, idle: Duration) -> Self {
        let topic = format!("{prefix}/latency");
        Self {
            name: "latency",
            publishers: vec![PublisherSpec {
                topics: vec![topic.clone()],
                random: None,
            }],
            subscribers: vec![vec![topic]],
            routing: Routing::All,
            msg,
            idle,
        }
    }

    /// Subscriber `j` holds `<prefix>/j/x`, `<prefix>/j/+` or `<prefix>/j/#` (by `j % 3`); each
    /// message goes to `<prefix>/k/x` for a random `k`, which matches subscriber `k` only.
    pub(crate) fn filters(
        prefix: &str,
        subscribers: u64,
        publishers: u64,
        seed: u64,
        msg: MessagePlan,
        idle: Duration,
    ) -> Self {
        let topics: Vec<String> = (0..subscribers)
            .map(|j| format!("{prefix}/{j}/x"))
            .collect();
        Self {
            name: "filters",
            publishers: (0..publishers)
                .map(|i| PublisherSpec {
                    topics: topics.clone(),
                    random: Some(seed.wrapping_add(i)),
                })
                .collect(),
            subscribers: (0..subscribers)
                .map(|j| {
                    let last = ["x", "+", "#"][(j % 3) as usize];
                    vec![format!("{prefix}/{j}/{last}")]
                })
                .collect(),
            routing: Routing::StreamToSubscriber,
            msg,
            idle,
        }
    }
}

/// How a publisher picks the topic of its next message.
#[derive(Debug)]
enum Pick {
    Cycle(usize),
    Random(fastrand::Rng),
}

impl Pick {
    fn new(random: Option<u64>) -> Self {
        random.map_or(Self::Cycle(0), |seed| {
            Self::Random(fastrand::Rng::with_seed(seed))
        })
    }

    fn next(&mut self, n: usize) -> usize {
        match self {
            Self::Cycle(i) => {
                let k = *i % n;
                *i = k + 1;
                k
            }
            Self::Random(rng) => rng.usize(..n),
        }
    }
}

/// What every task of a run shares.
#[derive(Clone, Debug)]
struct Ctx {
    run_id: u32,
    /// Keep Alive sent in CONNECT, in seconds (0: off).
    keep_alive: u16,
    version: ProtocolVersion,
    start: Instant,
    deadline: Instant,
    counters: Arc<Counters>,
    latencies: Latencies,
    ack_latencies: Latencies,
}

/// What one publisher did.
#[derive(Debug)]
struct PubOutcome {
    /// The publisher's index, as in its payload headers.
    index: u32,
    sent: u64,
    acked: u64,
    rejected: u64,
    /// Per stream: messages acknowledged (QoS 1/2) or written (QoS 0).
    acked_sets: Vec<SeqSet>,
    finished: Instant,
    timed_out: bool,
    error: Option<String>,
    /// Kept open until the run ends, so that nothing in flight is cut off.
    conn: Conn,
}

#[derive(Debug)]
struct InFlight {
    stream: u32,
    seq: u32,
    sent: Instant,
    /// QoS 2: PUBREC arrived, PUBREL sent.
    released: bool,
}

/// PINGREQ (§3.12).
const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// When a client that last wrote at `last_write` sends a PINGREQ: after half the Keep Alive,
/// well within the 1.5 times the server allows [MQTT-3.1.2-24].
fn ping_time(last_write: Instant, keep_alive: u16) -> Option<Instant> {
    (keep_alive > 0).then(|| last_write + Duration::from_millis(u64::from(keep_alive) * 500))
}

fn put_ack(out: &mut BytesMut, first: u8, id: PacketId) {
    // PUBACK/PUBREC/PUBREL/PUBCOMP with Remaining Length 2: success in every version (5.0
    // §3.4.2.1 allows leaving the reason code out).
    out.put_slice(&[first, 0x02]);
    out.put_u16(id.get());
}

/// Publishes `msg.count` messages (or until the deadline), at `msg.rate` or flat out.
async fn publish(
    mut conn: Conn,
    index: u32,
    templates: Arc<Vec<Template>>,
    random: Option<u64>,
    msg: MessagePlan,
    track: bool,
    ctx: Ctx,
) -> PubOutcome {
    let qos0 = msg.qos == QoS::AtMostOnce;
    let window = if qos0 {
        u64::MAX
    } else {
        let server_max = conn.receive_maximum.map_or(usize::MAX, usize::from);
        msg.inflight.min(server_max) as u64
    };
    let streams = templates.len();
    let mut pick = Pick::new(random);
    let mut seqs = vec![0u32; streams];
    let mut out = PubOutcome {
        index,
        sent: 0,
        acked: 0,
        rejected: 0,
        acked_sets: vec![SeqSet::default(); streams],
        finished: ctx.start,
        timed_out: false,
        error: None,
        conn: Conn {
            stream: conn.stream,
            buf: BytesMut::new(),
            version: conn.version,
            receive_maximum: None,
        },
    };
    let mut buf = std::mem::take(&mut conn.buf);
    let stream = &mut out.conn.stream;
    let mut inflight: HashMap<u16, InFlight> = HashMap::new();
    let mut next_id: u16 = 0;
    let mut wbuf =
        BytesMut::with_capacity(BATCH as usize * templates.first().map_or(64, Template::len));
    let mut written: Vec<(u32, u32)> = Vec::with_capacity(BATCH as usize);
    let mut ack_lat: Vec<u64> = Vec::new();
    let mut stop = false;
    // End-to-end runs validated their counts up front; `pub` keeps no sets at all.
    let mut budget = if track { u64::MAX } else { 0 };
    let mut last_write = Instant::now();
    loop {
        let now = Instant::now();
        if now >= ctx.deadline {
            out.timed_out = out.sent < msg.count || !inflight.is_empty();
            break;
        }
        let sending = !stop && out.sent < msg.count;
        if !sending && inflight.is_empty() && wbuf.is_empty() {
            break;
        }
        let room = window.saturating_sub(inflight.len() as u64);
        let mut n = 0;
        if sending {
            let due = if msg.rate > 0.0 {
                let due_total = (now.duration_since(ctx.start).as_secs_f64() * msg.rate) as u64 + 1;
                due_total.saturating_sub(out.sent)
            } else {
                u64::MAX
            };
            n = BATCH.min(room).min(due).min(msg.count - out.sent);
        }
        if n > 0 || !wbuf.is_empty() {
            let sent_ns = now_ns();
            for _ in 0..n {
                let s = pick.next(streams);
                let seq = seqs[s];
                seqs[s] = seq.wrapping_add(1);
                let id = if qos0 {
                    None
                } else {
                    // The next identifier not in flight; the window is below 65 535.
                    loop {
                        next_id = next_id.checked_add(1).unwrap_or(1);
                        if !inflight.contains_key(&next_id) {
                            break;
                        }
                    }
                    inflight.insert(
                        next_id,
                        InFlight {
                            stream: s as u32,
                            seq,
                            sent: now,
                            released: false,
                        },
                    );
                    PacketId::new(next_id)
                };
                let header = Header {
                    run: ctx.run_id,
                    publisher: index,
                    stream: s as u32,
                    seq,
                    sent_ns,
                };
                templates[s].put(&mut wbuf, id, &header);
                if qos0 {
                    written.push((s as u32, seq));
                }
            }
            match timeout_at(ctx.deadline.into(), stream.write_all(&wbuf)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    out.error = Some(format!("publisher {index}: write: {e}"));
                    break;
                }
                Err(_) => {
                    out.timed_out = true;
                    break;
                }
            }
            wbuf.clear();
            last_write = Instant::now();
            if n == 0 {
                continue;
            }
            out.sent += n;
            Counters::add(&ctx.counters.published, n);
            if qos0 {
                for &(s, seq) in &written {
                    out.acked_sets[s as usize].insert(seq, &mut budget);
                }
                out.acked += written.len() as u64;
                Counters::add(&ctx.counters.acked, written.len() as u64);
                written.clear();
            }
            out.finished = Instant::now();
            continue;
        }
        // Nothing can go now: wait for acknowledgements, the next due time, a PINGREQ, or the
        // deadline.
        let next_due = (sending && msg.rate > 0.0 && room > 0)
            .then(|| ctx.start + Duration::from_secs_f64(out.sent as f64 / msg.rate));
        let waiting = !inflight.is_empty();
        let ping_at = ping_time(last_write, ctx.keep_alive);
        tokio::select! {
            () = sleep_until(ping_at.unwrap_or(ctx.deadline).into()), if ping_at.is_some() => {
                wbuf.put_slice(&PINGREQ);
                continue;
            }
            r = stream.read_buf(&mut buf), if waiting => match r {
                Ok(0) => {
                    out.error = Some(format!("publisher {index}: the broker closed the connection"));
                    break;
                }
                Err(e) => {
                    out.error = Some(format!("publisher {index}: read: {e}"));
                    break;
                }
                Ok(_) => {}
            },
            () = sleep_until(next_due.unwrap_or(ctx.deadline).into()), if next_due.is_some() => {}
            () = sleep_until(ctx.deadline.into()) => {}
        }
        let now = Instant::now();
        let acked_before = out.acked;
        loop {
            match Packet::decode(&mut buf, ctx.version, MAX_PACKET_SIZE) {
                Ok(Some(Packet::PubAck(a))) if msg.qos == QoS::AtLeastOnce => {
                    match inflight.remove(&a.packet_id.get()) {
                        Some(f) if a.reason_code.0 < 0x80 => {
                            out.acked_sets[f.stream as usize].insert(f.seq, &mut budget);
                            out.acked += 1;
                            ack_lat.push(now.duration_since(f.sent).as_nanos() as u64);
                        }
                        Some(_) => out.rejected += 1,
                        None => {
                            out.error = Some(format!(
                                "publisher {index}: PUBACK for unknown packet id {}",
                                a.packet_id
                            ));
                            stop = true;
                        }
                    }
                }
                Ok(Some(Packet::PubRec(a))) if msg.qos == QoS::ExactlyOnce => {
                    let id = a.packet_id.get();
                    match inflight.get_mut(&id) {
                        Some(_) if a.reason_code.0 >= 0x80 => {
                            // A PUBREC with a failure code ends the flow (5.0 §4.3.3).
                            inflight.remove(&id);
                            out.rejected += 1;
                        }
                        Some(f) if !f.released => {
                            f.released = true;
                            out.acked_sets[f.stream as usize].insert(f.seq, &mut budget);
                            out.acked += 1;
                            put_ack(&mut wbuf, 0x62, a.packet_id);
                        }
                        // A repeated PUBREC: send PUBREL again [MQTT-4.3.3-4].
                        Some(_) => put_ack(&mut wbuf, 0x62, a.packet_id),
                        None => {
                            out.error = Some(format!(
                                "publisher {index}: PUBREC for unknown packet id {id}"
                            ));
                            stop = true;
                        }
                    }
                }
                Ok(Some(Packet::PubComp(a))) if msg.qos == QoS::ExactlyOnce => {
                    if let Some(f) = inflight.remove(&a.packet_id.get()) {
                        ack_lat.push(now.duration_since(f.sent).as_nanos() as u64);
                    }
                }
                Ok(Some(Packet::Disconnect(d))) => {
                    out.error = Some(format!(
                        "publisher {index}: the broker sent DISCONNECT {:?}",
                        d.reason_code
                    ));
                    stop = true;
                    inflight.clear();
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(format!("publisher {index}: undecodable packet: {e}"));
                    stop = true;
                    inflight.clear();
                    break;
                }
            }
        }
        Counters::add(&ctx.counters.acked, out.acked - acked_before);
        ctx.ack_latencies.record(&mut ack_lat);
        if stop && out.error.is_some() {
            break;
        }
    }
    if out.error.is_some() {
        Counters::add(&ctx.counters.errors, 1);
    }
    out
}

/// What one subscriber received.
#[derive(Debug, Default)]
struct SubOutcome {
    delivered: u64,
    duplicates: u64,
    untracked: u64,
    /// Sequence numbers per (run, publisher, stream).
    streams: HashMap<(u32, u32, u32), SeqSet>,
    first: Option<Instant>,
    last: Option<Instant>,
    timed_out: bool,
    error: Option<String>,
}

/// When a subscriber stops.
#[derive(Clone, Debug)]
struct SubStop {
    /// Deliveries after which it is done.
    expected: Option<u64>,
    /// Stop when nothing arrived for this long ...
    idle: Duration,
    /// ... once this says the publishers are done (`None`: after the first delivery).
    publishers_done: Option<watch::Receiver<bool>>,
    /// Stop once all subscribers of the run together have this many deliveries ...
    total: Option<u64>,
    /// ... which this says, for subscribers waiting for data.
    halt: Option<watch::Receiver<bool>>,
    /// 64-bit words of sequence-number bitmaps this subscriber may allocate.
    budget: u64,
    /// Count only deliveries of this run (end to end); `None`: count every delivery.
    run: Option<u32>,
}

/// Waits until `rx` says true, or forever without one.
async fn signalled(rx: Option<&mut watch::Receiver<bool>>) {
    match rx {
        Some(rx) => {
            if rx.wait_for(|d| *d).await.is_err() {
                // The sender is gone: no signal will come.
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Reads deliveries until the subscriber has what it expects, goes idle, or the deadline.
async fn subscribe_loop(
    mut conn: Conn,
    index: u64,
    mut stop: SubStop,
    ctx: Ctx,
) -> (SubOutcome, Conn) {
    let mut out = SubOutcome::default();
    let mut acks = BytesMut::new();
    let mut lat: Vec<u64> = Vec::new();
    // Idle time counts from the last delivery once the publishers are done (or, without
    // publishers of our own, from the first delivery on).
    let mut idle_from: Option<Instant> = None;
    let mut pubs_done = false;
    let mut last_write = Instant::now();
    loop {
        let arrived_ns = now_ns();
        let mut n = 0u64;
        let mut foreign = 0u64;
        loop {
            match Packet::decode(&mut conn.buf, ctx.version, MAX_PACKET_SIZE) {
                Ok(Some(Packet::Publish(p))) => {
                    n += 1;
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => put_ack(&mut acks, 0x40, id),
                        (QoS::ExactlyOnce, Some(id)) => put_ack(&mut acks, 0x50, id),
                        _ => {}
                    }
                    match Header::read(&p.payload) {
                        // Another run's message (a retained one, say) is not part of this run.
                        Some(h) if stop.run.is_some_and(|r| r != h.run) => {
                            foreign += 1;
                            out.untracked += 1;
                        }
                        Some(h) => {
                            lat.push(arrived_ns.saturating_sub(h.sent_ns));
                            let key = (h.run, h.publisher, h.stream);
                            let full = out.streams.len() >= MAX_STREAMS_PER_SUBSCRIBER;
                            match out.streams.get_mut(&key) {
                                Some(set) => match set.insert(h.seq, &mut stop.budget) {
                                    Seen::New => {}
                                    Seen::Duplicate => out.duplicates += 1,
                                    Seen::Untracked => out.untracked += 1,
                                },
                                None if full => out.untracked += 1,
                                None => {
                                    let mut set = SeqSet::default();
                                    if set.insert(h.seq, &mut stop.budget) == Seen::Untracked {
                                        out.untracked += 1;
                                    }
                                    out.streams.insert(key, set);
                                }
                            }
                        }
                        None => out.untracked += 1,
                    }
                }
                Ok(Some(Packet::PubRel(a))) => put_ack(&mut acks, 0x70, a.packet_id),
                Ok(Some(Packet::Disconnect(d))) => {
                    out.error = Some(format!(
                        "subscriber {index}: the broker sent DISCONNECT {:?}",
                        d.reason_code
                    ));
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(format!("subscriber {index}: undecodable packet: {e}"));
                    break;
                }
            }
        }
        let n = n - foreign;
        if n > 0 {
            let now = Instant::now();
            out.first.get_or_insert(now);
            out.last = Some(now);
            out.delivered += n;
            Counters::add(&ctx.counters.delivered, n);
            ctx.latencies.record(&mut lat);
            if pubs_done || stop.publishers_done.is_none() {
                idle_from = Some(now);
            }
        }
        if !acks.is_empty() {
            match timeout_at(ctx.deadline.into(), conn.stream.write_all(&acks)).await {
                Ok(Ok(())) => {
                    acks.clear();
                    last_write = Instant::now();
                }
                Ok(Err(e)) => {
                    out.error
                        .get_or_insert(format!("subscriber {index}: write: {e}"));
                }
                Err(_) => out.timed_out = true,
            }
        }
        if out.error.is_some() || out.timed_out {
            break;
        }
        if stop.expected.is_some_and(|e| out.delivered >= e)
            || stop
                .total
                .is_some_and(|t| ctx.counters.delivered.load(Relaxed) >= t)
        {
            break;
        }
        let idle_deadline = idle_from.map_or(ctx.deadline, |t| (t + stop.idle).min(ctx.deadline));
        let done_rx = stop.publishers_done.as_mut();
        let watching = !pubs_done && done_rx.is_some();
        let ping_at = ping_time(last_write, ctx.keep_alive);
        tokio::select! {
            () = sleep_until(ping_at.unwrap_or(ctx.deadline).into()), if ping_at.is_some() => {
                acks.put_slice(&PINGREQ);
            }
            r = conn.stream.read_buf(&mut conn.buf) => match r {
                Ok(0) => {
                    out.error = Some(format!("subscriber {index}: the broker closed the connection"));
                    break;
                }
                Err(e) => {
                    out.error = Some(format!("subscriber {index}: read: {e}"));
                    break;
                }
                Ok(_) => {}
            },
            () = signalled(done_rx), if watching => {
                pubs_done = true;
                idle_from = Some(Instant::now());
            }
            () = signalled(stop.halt.as_mut()) => break,
            () = sleep_until(idle_deadline.into()) => {
                out.timed_out = Instant::now() >= ctx.deadline;
                break;
            }
        }
    }
    if out.error.is_some() {
        ctx.counters.errors.fetch_add(1, Relaxed);
    }
    (out, conn)
}

/// Sets up `n` clients with at most `concurrency` at once; the first failure aborts.
async fn setup_clients<F, Fut>(
    n: u64,
    concurrency: usize,
    counters: &Counters,
    make: F,
) -> Result<Vec<Conn>, String>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Conn, String>> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    for i in 0..n {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let fut = make(i);
        set.spawn(async move {
            let r = fut.await;
            drop(permit);
            (i, r)
        });
        while let Some(done) = set.try_join_next() {
            let (i, r) = done.map_err(|e| e.to_string())?;
            conns[i as usize] = Some(r?);
            Counters::add(&counters.connected, 1);
        }
    }
    while let Some(done) = set.join_next().await {
        let (i, r) = done.map_err(|e| e.to_string())?;
        conns[i as usize] = Some(r?);
        Counters::add(&counters.connected, 1);
    }
    Ok(conns.into_iter().flatten().collect())
}

fn client_error(role: &str, id: &str, addr: std::net::SocketAddr, e: SetupError) -> String {
    format!("{role} {id}: cannot connect to {addr}: {e}")
}

async fn connect_publisher(opts: ConnectOptions, id: String) -> Result<Conn, String> {
    Conn::connect(&opts, &id)
        .await
        .map_err(|e| client_error("publisher", &id, opts.addr, e))
}

async fn connect_subscriber(
    opts: ConnectOptions,
    id: String,
    filters: Vec<String>,
    qos: QoS,
) -> Result<Conn, String> {
    let mut conn = Conn::connect(&opts, &id)
        .await
        .map_err(|e| client_error("subscriber", &id, opts.addr, e))?;
    let deadline = Instant::now() + opts.timeout;
    conn.subscribe(&filters, qos, deadline)
        .await
        .map_err(|e| format!("subscriber {id}: cannot subscribe to {filters:?}: {e}"))?;
    Ok(conn)
}

fn templates_for(
    version: ProtocolVersion,
    topics: &[String],
    msg: &MessagePlan,
) -> Result<Arc<Vec<Template>>, String> {
    topics
        .iter()
        .map(|t| Template::new(version, t, msg.qos, msg.retain, msg.size))
        .collect::<Result<Vec<_>, _>>()
        .map(Arc::new)
}

fn qos_number(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// Runs a plan and returns its summary; `Err` when the run could not start.
pub(crate) async fn run(setup: Setup, plan: Plan) -> Result<Summary, String> {
    let cpu_before = cpu_of(None).unwrap_or(0.0);
    let broker_before = match setup.broker_pid {
        Some(pid) => Some((rss_of(pid)?, cpu_of(Some(pid)).unwrap_or(0.0))),
        None => None,
    };
    let counters = Arc::new(Counters::default());
    let progress = Progress::start(counters.clone(), setup.progress);
    let mut summary = match plan {
        Plan::Conn {
            clients,
            rate,
            settle,
            hold,
        } => conn_scenario(&setup, counters.clone(), clients, rate, settle, hold).await?,
        Plan::Pub {
            clients,
            topics,
            index_offset,
            msg,
        } => {
            pub_scenario(
                &setup,
                counters.clone(),
                clients,
                &topics,
                index_offset,
                msg,
            )
            .await?
        }
        Plan::Sub {
            clients,
            filters,
            qos,
            count,
            idle,
            index_offset,
        } => {
            sub_scenario(
                &setup,
                counters.clone(),
                clients,
                &filters,
                qos,
                count,
                idle,
                index_offset,
            )
            .await?
        }
        Plan::EndToEnd(e) => end_to_end(&setup, counters.clone(), e).await?,
    };
    drop(progress);
    summary.broker = setup.broker.clone();
    summary.protocol = setup.protocol;
    summary.bench_cpu_s = cpu_of(None).unwrap_or(0.0) - cpu_before;
    if let (Some(pid), Some((rss_before, cpu0))) = (setup.broker_pid, broker_before) {
        let usage = summary.broker_usage.get_or_insert(BrokerUsage {
            pid,
            rss_before_bytes: rss_before,
            ..BrokerUsage::default()
        });
        if usage.rss_after_bytes == 0 {
            usage.rss_after_bytes = rss_of(pid).unwrap_or(0);
        }
        usage.cpu_s = cpu_of(Some(pid)).unwrap_or(cpu0) - cpu0;
    }
    Ok(summary)
}

fn new_ctx(setup: &Setup, counters: Arc<Counters>) -> Ctx {
    let start = Instant::now();
    Ctx {
        run_id: fastrand::u32(..),
        keep_alive: setup.connect.keep_alive,
        version: setup.connect.version,
        start,
        deadline: start + setup.duration,
        counters,
        latencies: Latencies::new(),
        ack_latencies: Latencies::new(),
    }
}

/// Restarts the clock of a context once the clients are set up.
fn restart(ctx: &mut Ctx, duration: Duration) {
    ctx.start = Instant::now();
    ctx.deadline = ctx.start + duration;
}

async fn conn_scenario(
    setup: &Setup,
    counters: Arc<Counters>,
    clients: u64,
    conn_rate: f64,
    settle: Duration,
    hold: Duration,
) -> Result<Summary, String> {
    let ctx = new_ctx(setup, counters.clone());
    let rss_before = match setup.broker_pid {
        Some(pid) => Some(rss_of(pid)?),
        None => None,
    };
    let mut summary = Summary {
        scenario: "conn",
        ..Summary::default()
    };
    let sem = Arc::new(Semaphore::new(setup.concurrency));
    let mut set: JoinSet<Result<(Conn, Duration), String>> = JoinSet::new();
    let held: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let pinger = keep_alive_pinger(held.clone(), setup.connect.keep_alive);
    let mut lat = Vec::new();
    let mut last_connack = ctx.start;
    let mut handle = |r: Result<Result<(Conn, Duration), String>, tokio::task::JoinError>,
                      held: &Mutex<Vec<Conn>>,
                      summary: &mut Summary,
                      lat: &mut Vec<u64>| {
        match r {
            Ok(Ok((c, took))) => {
                lock(held).push(c);
                lat.push(took.as_nanos() as u64);
                last_connack = Instant::now();
                Counters::add(&counters.connected, 1);
            }
            Ok(Err(e)) => {
                summary.error(e);
                Counters::add(&counters.errors, 1);
            }
            Err(e) => summary.error(e.to_string()),
        }
    };
    for i in 0..clients {
        if conn_rate > 0.0 {
            sleep_until((ctx.start + Duration::from_secs_f64(i as f64 / conn_rate)).into()).await;
        }
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => p.map_err(|e| e.to_string())?,
            () = sleep_until(ctx.deadline.into()) => {
                summary.timed_out = true;
                break;
            }
        };
        if Instant::now() >= ctx.deadline {
            summary.timed_out = true;
            break;
        }
        let opts = setup.connect.clone();
        let id = format!("{}-c{i}", setup.id_prefix);
        set.spawn(async move {
            let t = Instant::now();
            let r = Conn::connect(&opts, &id).await;
            drop(permit);
            r.map(|c| (c, t.elapsed()))
                .map_err(|e| client_error("client", &id, opts.addr, e))
        });
        while let Some(r) = set.try_join_next() {
            handle(r, &held, &mut summary, &mut lat);
        }
    }
    loop {
        match timeout_at(ctx.deadline.into(), set.join_next()).await {
            Ok(Some(r)) => handle(r, &held, &mut summary, &mut lat),
            Ok(None) => break,
            Err(_) => {
                summary.timed_out = true;
                set.abort_all();
                break;
            }
        }
    }
    ctx.latencies.record(&mut lat);
    let connections = lock(&held).len() as u64;
    if connections == 0 {
        return Err(summary
            .error_messages
            .first()
            .cloned()
            .unwrap_or_else(|| "no connection was made".into()));
    }
    summary.connections = connections;
    summary.elapsed_s = last_connack.duration_since(ctx.start).as_secs_f64();
    summary.connect_rate = Some(rate(summary.connections, summary.elapsed_s));
    summary.latency = ctx.latencies.stats();
    // Let the broker finish what each connection costs it before measuring.
    tokio::time::sleep(settle).await;
    if let (Some(pid), Some(before)) = (setup.broker_pid, rss_before) {
        let after = rss_of(pid)?;
        summary.broker_usage = Some(BrokerUsage {
            pid,
            rss_before_bytes: before,
            rss_after_bytes: after,
            bytes_per_connection: Some((after as f64 - before as f64) / connections as f64),
            cpu_s: 0.0,
        });
    }
    tokio::time::sleep(hold).await;
    if let Some(p) = pinger {
        p.abort();
    }
    let held = std::mem::take(&mut *lock(&held));
    let closed = held.iter().filter(|c| !drain(c)).count() as u64;
    for c in &held {
        // DISCONNECT, so that the broker ends the session normally.
        let _ = c.stream.try_write(&[0xE0, 0x00]);
    }
    summary.closed_by_broker = Some(closed);
    Ok(summary)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads and discards what arrived (PINGRESP); `false` once the broker closed the connection.
fn drain(c: &Conn) -> bool {
    let mut scratch = [0u8; 256];
    loop {
        match c.stream.try_read(&mut scratch) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// With a Keep Alive, sends every held connection a PINGREQ at half its interval, so that
/// the broker keeps it [MQTT-3.1.2-22]; connections are held from their CONNACK on.
fn keep_alive_pinger(
    held: Arc<Mutex<Vec<Conn>>>,
    keep_alive: u16,
) -> Option<tokio::task::JoinHandle<()>> {
    if keep_alive == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(u64::from(keep_alive) * 500));
        tick.tick().await;
        loop {
            tick.tick().await;
            for c in lock(&held).iter() {
                drain(c);
                let _ = c.stream.try_write(&PINGREQ);
            }
        }
    }))
}

async fn pub_scenario(
    setup: &Setup,
    counters: Arc<Counters>,
    clients: u64,
    topics: &[Pattern],
    index_offset: u64,
    msg: MessagePlan,
) -> Result<Summary, String> {
    let mut ctx = new_ctx(setup, counters);
    let opts = setup.connect.clone();
    let prefix = setup.id_prefix.clone();
    let conns = setup_clients(clients, setup.concurrency, &ctx.counters, |i| {
        connect_publisher(opts.clone(), format!("{prefix}-p{}", i + index_offset))
    })
    .await?;
    let mut per_client = Vec::new();
    for i in 0..clients {
        let index = i + index_offset;
        let id = format!("{prefix}-p{index}");
        let expanded: Vec<String> = topics.iter().map(|p| p.expand(index, &id)).collect();
        for t in &expanded {
            check_topic_name(t)?;
        }
        per_client.push((index, templates_for(ctx.version, &expanded, &msg)?));
    }
    restart(&mut ctx, setup.duration);
    let mut set = JoinSet::new();
    for (conn, (index, templates)) in conns.into_iter().zip(per_client) {
        set.spawn(publish(
            conn,
            index as u32,
            templates,
            None,
            msg.clone(),
            false,
            ctx.clone(),
        ));
    }
    let mut summary = Summary {
        scenario: "pub",
        qos: qos_number(msg.qos),
        payload_bytes: msg.size,
        publishers: clients,
        connections: clients,
        ..Summary::default()
    };
    let mut finished = ctx.start;
    let mut outcomes = Vec::new();
    while let Some(r) = set.join_next().await {
        let o = r.map_err(|e| e.to_string())?;
        summary.published += o.sent;
        summary.acked += o.acked;
        summary.rejected += o.rejected;
        summary.timed_out |= o.timed_out && msg.count != u64::MAX;
        finished = finished.max(o.finished);
        if let Some(e) = o.error.clone() {
            summary.error(e);
        }
        outcomes.push(o);
    }
    summary.elapsed_s = finished.duration_since(ctx.start).as_secs_f64();
    summary.publish_rate = rate(summary.published, summary.elapsed_s);
    summary.ack_latency = ctx.ack_latencies.stats();
    disconnect_all(outcomes.into_iter().map(|o| o.conn)).await;
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
async fn sub_scenario(
    setup: &Setup,
    counters: Arc<Counters>,
    clients: u64,
    filters: &[Pattern],
    qos: QoS,
    count: Option<u64>,
    idle: Duration,
    index_offset: u64,
) -> Result<Summary, String> {
    let mut ctx = new_ctx(setup, counters.clone());
    let opts = setup.connect.clone();
    let prefix = setup.id_prefix.clone();
    let mut expanded = Vec::new();
    for i in 0..clients {
        let index = i + index_offset;
        let id = format!("{prefix}-s{index}");
        let fs: Vec<String> = filters.iter().map(|p| p.expand(index, &id)).collect();
        for f in &fs {
            check_topic_filter(f)?;
        }
        expanded.push((id, fs));
    }
    let expanded = Arc::new(expanded);
    let conns = setup_clients(clients, setup.concurrency, &ctx.counters, |i| {
        let (id, fs) = expanded[i as usize].clone();
        connect_subscriber(opts.clone(), id, fs, qos)
    })
    .await?;
    // Scripts and tests start publishing once they read this line.
    eprintln!("midge bench: {clients} subscribers ready");
    restart(&mut ctx, setup.duration);
    // Stop when the total count is reached: each subscriber checks the shared counter.
    let mut set = JoinSet::new();
    let (total_tx, total_rx) = watch::channel(false);
    for (i, conn) in conns.into_iter().enumerate() {
        let stop = SubStop {
            expected: None,
            idle,
            publishers_done: None,
            total: count,
            halt: Some(total_rx.clone()),
            budget: MAX_TRACKING_BITS / 64 / clients,
            run: None,
        };
        let ctx = ctx.clone();
        set.spawn(async move {
            subscribe_loop(conn, i as u64 + index_offset, stop, ctx)
                .await
                .0
        });
    }
    if let Some(count) = count {
        let counters = counters.clone();
        let deadline = ctx.deadline;
        tokio::spawn(async move {
            while Instant::now() < deadline {
                if counters.delivered.load(Relaxed) >= count {
                    let _ = total_tx.send(true);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    let mut summary = Summary {
        scenario: "sub",
        qos: qos_number(qos),
        subscribers: clients,
        connections: clients,
        ..Summary::default()
    };
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    while let Some(r) = set.join_next().await {
        let o = r.map_err(|e| e.to_string())?;
        add_sub_outcome(&mut summary, &o, &mut first, &mut last);
        summary.lost += o.streams.values().map(SeqSet::gaps).sum::<u64>();
    }
    summary.elapsed_s = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    summary.delivery_rate = rate(summary.delivered, summary.elapsed_s);
    summary.latency = ctx.latencies.stats();
    Ok(summary)
}

fn add_sub_outcome(
    summary: &mut Summary,
    o: &SubOutcome,
    first: &mut Option<Instant>,
    last: &mut Option<Instant>,
) {
    summary.delivered += o.delivered;
    summary.duplicates += o.duplicates;
    summary.untracked += o.untracked;
    summary.timed_out |= o.timed_out;
    if let Some(e) = &o.error {
        summary.error(e.clone());
    }
    if let Some(f) = o.first {
        *first = Some(first.map_or(f, |x| x.min(f)));
    }
    if let Some(l) = o.last {
        *last = Some(last.map_or(l, |x| x.max(l)));
    }
}

/// Deliveries each subscriber should get if every message arrives.
fn expected_per_subscriber(e: &EndToEnd) -> Vec<u64> {
    let subs = e.subscribers.len();
    match e.routing {
        Routing::All => {
            let total = e.msg.count.saturating_mul(e.publishers.len() as u64);
            vec![total; subs]
        }
        Routing::StreamToSubscriber => {
            let mut per = vec![0u64; subs];
            for p in &e.publishers {
                let mut pick = Pick::new(p.random);
                for _ in 0..e.msg.count {
                    let k = pick.next(p.topics.len());
                    if let Some(slot) = per.get_mut(k) {
                        *slot += 1;
                    }
                }
            }
            per
        }
    }
}

/// Acknowledged messages that matching subscribers never got, counted per subscriber.
fn count_lost(
    routing: Routing,
    run_id: u32,
    publishers: &[(u32, &[SeqSet])],
    subscribers: &[&HashMap<(u32, u32, u32), SeqSet>],
) -> u64 {
    let mut lost = 0;
    for (j, got) in subscribers.iter().enumerate() {
        for &(index, acked) in publishers {
            match routing {
                Routing::All => {
                    for (s, set) in acked.iter().enumerate() {
                        lost += set.count_missing_from(got.get(&(run_id, index, s as u32)));
                    }
                }
                Routing::StreamToSubscriber => {
                    if let Some(set) = acked.get(j) {
                        lost += set.count_missing_from(got.get(&(run_id, index, j as u32)));
                    }
                }
            }
        }
    }
    lost
}

async fn end_to_end(
    setup: &Setup,
    counters: Arc<Counters>,
    e: EndToEnd,
) -> Result<Summary, String> {
    let mut ctx = new_ctx(setup, counters);
    let opts = setup.connect.clone();
    let prefix = setup.id_prefix.clone();
    let qos = e.msg.qos;
    let filters = Arc::new(e.subscribers.clone());
    let sub_conns = setup_clients(
        e.subscribers.len() as u64,
        setup.concurrency,
        &ctx.counters,
        |i| {
            connect_subscriber(
                opts.clone(),
                format!("{prefix}-s{i}"),
                filters[i as usize].clone(),
                qos,
            )
        },
    )
    .await?;
    let pub_conns = setup_clients(
        e.publishers.len() as u64,
        setup.concurrency,
        &ctx.counters,
        |i| connect_publisher(opts.clone(), format!("{prefix}-p{i}")),
    )
    .await?;
    let mut templates = Vec::new();
    for p in &e.publishers {
        templates.push(templates_for(ctx.version, &p.topics, &e.msg)?);
    }
    let expected = expected_per_subscriber(&e);
    restart(&mut ctx, setup.duration);
    let (done_tx, done_rx) = watch::channel(false);
    let mut subs = JoinSet::new();
    for (j, conn) in sub_conns.into_iter().enumerate() {
        let stop = SubStop {
            expected: expected.get(j).copied(),
            idle: e.idle,
            publishers_done: Some(done_rx.clone()),
            total: None,
            halt: None,
            // The counts were checked against MAX_TRACKING_BITS up front.
            budget: u64::MAX,
            run: Some(ctx.run_id),
        };
        let ctx = ctx.clone();
        subs.spawn(async move { (j, subscribe_loop(conn, j as u64, stop, ctx).await) });
    }
    let mut pubs = JoinSet::new();
    for (i, (conn, t)) in pub_conns.into_iter().zip(templates).enumerate() {
        let random = e.publishers[i].random;
        pubs.spawn(publish(
            conn,
            i as u32,
            t,
            random,
            e.msg.clone(),
            true,
            ctx.clone(),
        ));
    }
    let mut summary = Summary {
        scenario: e.name,
        qos: qos_number(qos),
        payload_bytes: e.msg.size,
        publishers: e.publishers.len() as u64,
        subscribers: e.subscribers.len() as u64,
        connections: (e.publishers.len() + e.subscribers.len()) as u64,
        ..Summary::default()
    };
    let mut pub_outcomes: Vec<PubOutcome> = Vec::new();
    let mut published_at = ctx.start;
    while let Some(r) = pubs.join_next().await {
        let o = r.map_err(|e| e.to_string())?;
        summary.published += o.sent;
        summary.acked += o.acked;
        summary.rejected += o.rejected;
        summary.timed_out |= o.timed_out;
        published_at = published_at.max(o.finished);
        if let Some(err) = o.error.clone() {
            summary.error(err);
        }
        pub_outcomes.push(o);
    }
    let _ = done_tx.send(true);
    let mut sub_outcomes: Vec<(usize, SubOutcome)> = Vec::new();
    let mut first = None;
    let mut last = None;
    while let Some(r) = subs.join_next().await {
        let (j, (o, _conn)) = r.map_err(|e| e.to_string())?;
        add_sub_outcome(&mut summary, &o, &mut first, &mut last);
        sub_outcomes.push((j, o));
    }
    sub_outcomes.sort_by_key(|(j, _)| *j);
    let sets: Vec<(u32, &[SeqSet])> = pub_outcomes
        .iter()
        .map(|o| (o.index, o.acked_sets.as_slice()))
        .collect();
    let got: Vec<&HashMap<(u32, u32, u32), SeqSet>> =
        sub_outcomes.iter().map(|(_, o)| &o.streams).collect();
    summary.lost = count_lost(e.routing, ctx.run_id, &sets, &got);
    summary.expected = Some(match e.routing {
        Routing::All => summary.acked * e.subscribers.len() as u64,
        Routing::StreamToSubscriber => summary.acked,
    });
    let end = last.unwrap_or(published_at).max(published_at);
    summary.elapsed_s = end.duration_since(ctx.start).as_secs_f64();
    summary.publish_rate = rate(
        summary.published,
        published_at.duration_since(ctx.start).as_secs_f64(),
    );
    summary.delivery_rate = rate(
        summary.delivered,
        last.map_or(0.0, |l| l.duration_since(ctx.start).as_secs_f64()),
    );
    summary.latency = ctx.latencies.stats();
    summary.ack_latency = ctx.ack_latencies.stats();
    // Close the clients only now, so that nothing in flight was cut off.
    disconnect_all(pub_outcomes.into_iter().map(|o| o.conn)).await;
    Ok(summary)
}

/// Sends DISCONNECT on each connection and waits (up to 2 s) for the broker to close it
/// [MQTT-3.14.4-1]. Closing a socket with unread input (a PINGRESP, say) would reset it and
/// could discard messages still queued in the kernel towards the broker.
async fn disconnect_all(conns: impl Iterator<Item = Conn>) {
    let mut set = JoinSet::new();
    for mut conn in conns {
        set.spawn(async move {
            if conn.stream.write_all(&[0xE0, 0x00]).await.is_err() {
                return;
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut scratch = [0u8; 1024];
            while let Ok(Ok(n)) = timeout_at(deadline.into(), conn.stream.read(&mut scratch)).await
            {
                if n == 0 {
                    break;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(count: u64) -> MessagePlan {
        MessagePlan {
            count,
            rate: 0.0,
            qos: QoS::AtLeastOnce,
            size: 64,
            retain: false,
            inflight: 16,
        }
    }

    #[test]
    fn filters_scenario_uses_distinct_filters_of_three_kinds() {
        let e = EndToEnd::filters("b", 6, 2, 7, msg(1000), Duration::from_secs(1));
        let all: Vec<&str> = e.subscribers.iter().map(|f| f[0].as_str()).collect();
        assert_eq!(all, ["b/0/x", "b/1/+", "b/2/#", "b/3/x", "b/4/+", "b/5/#"]);
        assert_eq!(e.publishers.len(), 2);
        assert_eq!(e.publishers[0].topics[4], "b/4/x");
        let per = expected_per_subscriber(&e);
        assert_eq!(
            per.iter().sum::<u64>(),
            2000,
            "every message matches one subscriber"
        );
        assert!(
            per.iter().all(|&n| n > 200),
            "spread over all of them: {per:?}"
        );
        assert_eq!(
            per,
            expected_per_subscriber(&e),
            "the same seed, the same topics"
        );
    }

    #[test]
    fn expected_deliveries_for_fan_in_and_out() {
        let e = EndToEnd::fanin("b", 8, msg(100), Duration::from_secs(1));
        assert_eq!(expected_per_subscriber(&e), vec![800]);
        let e = EndToEnd::fanout("b", 3, msg(100), Duration::from_secs(1));
        assert_eq!(expected_per_subscriber(&e), vec![100, 100, 100]);
    }

    #[test]
    fn loss_is_counted_per_subscriber_and_stream() {
        let mut budget = u64::MAX;
        let mut acked = SeqSet::default();
        for s in 0..10 {
            acked.insert(s, &mut budget);
        }
        let acked = [acked];
        let mut got_all = HashMap::new();
        let mut full = SeqSet::default();
        for s in 0..10 {
            full.insert(s, &mut budget);
        }
        got_all.insert((9, 0, 0), full.clone());
        let mut got_some = HashMap::new();
        let mut part = SeqSet::default();
        for s in 0..7 {
            part.insert(s, &mut budget);
        }
        got_some.insert((9, 0, 0), part);
        let empty = HashMap::new();
        let pubs = [(0u32, &acked[..])];
        assert_eq!(count_lost(Routing::All, 9, &pubs, &[&got_all]), 0);
        assert_eq!(
            count_lost(Routing::All, 9, &pubs, &[&got_all, &got_some, &empty]),
            3 + 10
        );
        // Another run's sets do not count.
        assert_eq!(count_lost(Routing::All, 8, &pubs, &[&got_all]), 10);
        // Stream 0 goes to subscriber 0 only.
        assert_eq!(
            count_lost(Routing::StreamToSubscriber, 9, &pubs, &[&got_all, &empty]),
            0
        );
    }

    #[test]
    fn pings_at_half_the_keep_alive() {
        let t = Instant::now();
        assert_eq!(ping_time(t, 0), None);
        assert_eq!(ping_time(t, 1), Some(t + Duration::from_millis(500)));
        assert_eq!(ping_time(t, 60), Some(t + Duration::from_secs(30)));
    }

    #[test]
    fn pick_cycles_or_draws() {
        let mut p = Pick::new(None);
        let got: Vec<usize> = (0..5).map(|_| p.next(3)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1]);
        let mut p = Pick::new(Some(1));
        assert!((0..100).all(|_| p.next(3) < 3));
    }
}
