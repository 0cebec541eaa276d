//! The scenarios: setting clients up, running them, and turning their outcomes into a summary.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use midge_codec::{ProtocolVersion, QoS};
use tokio::io::AsyncReadExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at};

use super::client::{Conn, ConnectOptions, Session, SetupError, Template, PINGREQ};
use super::pattern::{check_topic_filter, check_topic_name, Pattern};
use super::publisher::{publish, Pick, PubOutcome};
use super::report::{
    cpu_of, rate, rss_of, BrokerUsage, Counters, Goal, Latencies, Measure, Progress, Summary,
};
use super::subscriber::{subscribe_loop, SubOutcome, SubStop};
use super::track::SeqSet;
use super::{MessagePlan, Plan, Setup, MAX_TRACKING_BITS};

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
    /// The subscribers' sessions (publishers' are always clean).
    pub(crate) session: Session,
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
            session: Session::Clean,
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
            session: Session::Clean,
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
            session: Session::Clean,
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
            session: Session::Clean,
        }
    }
}

/// What every task of a run shares.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) run_id: u32,
    /// Keep Alive sent in CONNECT, in seconds (0: off).
    pub(crate) keep_alive: u16,
    pub(crate) version: ProtocolVersion,
    pub(crate) start: Instant,
    pub(crate) deadline: Instant,
    pub(crate) counters: Arc<Counters>,
    pub(crate) latencies: Latencies,
    pub(crate) ack_latencies: Latencies,
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

fn client_error(role: &str, id: &str, broker: &str, e: SetupError) -> String {
    format!("{role} {id}: cannot connect to {broker}: {e}")
}

async fn connect_publisher(opts: ConnectOptions, id: String) -> Result<Conn, String> {
    Conn::connect(&opts, &id)
        .await
        .map_err(|e| client_error("publisher", &id, &opts.broker, e))
}

async fn connect_subscriber(
    opts: ConnectOptions,
    id: String,
    filters: Vec<String>,
    qos: QoS,
    session: Session,
) -> Result<Conn, String> {
    let mut conn = Conn::connect_with(&opts, &id, session)
        .await
        .map_err(|e| client_error("subscriber", &id, &opts.broker, e))?;
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

/// What the progress bar of a plan counts: its connections, then its messages when a count
/// bounds the run, else the time limit.
fn goal_of(plan: &Plan, duration: Duration) -> Goal {
    let bounded = |count: u64, measure: fn(u64) -> Measure| {
        if count == u64::MAX {
            Measure::Time(duration)
        } else {
            measure(count)
        }
    };
    let (clients, measure) = match plan {
        Plan::Conn { clients, .. } => (*clients, Measure::Connections),
        Plan::Pub { clients, msg, .. } => (
            *clients,
            bounded(msg.count.saturating_mul(*clients), Measure::Published),
        ),
        Plan::Sub { clients, count, .. } => (
            *clients,
            bounded(count.unwrap_or(u64::MAX), Measure::Delivered),
        ),
        Plan::EndToEnd(e) => {
            let publishers = e.publishers.len() as u64;
            (
                publishers + e.subscribers.len() as u64,
                bounded(e.msg.count.saturating_mul(publishers), Measure::Published),
            )
        }
    };
    Goal { clients, measure }
}

/// Runs a plan and returns its summary; `Err` when the run could not start.
pub(crate) async fn run(setup: Setup, plan: Plan) -> Result<Summary, String> {
    let cpu_before = cpu_of(None).unwrap_or(0.0);
    let broker_before = match setup.broker_pid {
        Some(pid) => Some((rss_of(pid)?, cpu_of(Some(pid)).unwrap_or(0.0))),
        None => None,
    };
    let counters = Arc::new(Counters::default());
    let progress = Progress::start(
        counters.clone(),
        goal_of(&plan, setup.duration),
        setup.progress,
    );
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
            session,
            disconnect_after_subscribe,
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
                session,
                disconnect_after_subscribe,
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
                .map_err(|e| client_error("client", &id, &opts.broker, e))
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
    let mut held = std::mem::take(&mut *lock(&held));
    let closed = held.iter_mut().map(|c| u64::from(!drain(c))).sum::<u64>();
    for c in &mut held {
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
fn drain(c: &mut Conn) -> bool {
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
            for c in lock(&held).iter_mut() {
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
    session: Session,
    disconnect_after_subscribe: bool,
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
        connect_subscriber(opts.clone(), id, fs, qos, session)
    })
    .await?;
    let mut summary = Summary {
        scenario: "sub",
        qos: qos_number(qos),
        subscribers: clients,
        connections: clients,
        sessions_present: sessions_present(session, &conns),
        ..Summary::default()
    };
    if disconnect_after_subscribe {
        // The sessions stay in the broker, subscribed, for messages to queue up in.
        summary.elapsed_s = ctx.start.elapsed().as_secs_f64();
        summary.connect_rate = Some(rate(clients, summary.elapsed_s));
        disconnect_all(conns.into_iter()).await;
        return Ok(summary);
    }
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
        set.spawn(subscribe_loop(conn, i as u64 + index_offset, stop, ctx));
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
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let mut done = Vec::new();
    while let Some(r) = set.join_next().await {
        let (o, conn) = r.map_err(|e| e.to_string())?;
        add_sub_outcome(&mut summary, &o, &mut first, &mut last);
        summary.lost += o.streams.values().map(SeqSet::gaps).sum::<u64>();
        done.push(conn);
    }
    if session == Session::Persistent {
        // A normal end of each connection, so that the broker keeps the session as it is
        // (what was delivered is acknowledged) rather than after a lost connection.
        disconnect_all(done.into_iter()).await;
    }
    summary.elapsed_s = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    summary.delivery_rate = rate(summary.delivered, summary.elapsed_s);
    summary.latency = ctx.latencies.stats();
    Ok(summary)
}

/// With persistent sessions: how many the broker still held.
fn sessions_present(session: Session, conns: &[Conn]) -> Option<u64> {
    (session == Session::Persistent)
        .then(|| conns.iter().filter(|c| c.session_present).count() as u64)
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
    let session = e.session;
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
                session,
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
    let present = sessions_present(session, &sub_conns);
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
        sessions_present: present,
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
    let mut sub_conns = Vec::new();
    let mut first = None;
    let mut last = None;
    while let Some(r) = subs.join_next().await {
        let (j, (o, conn)) = r.map_err(|e| e.to_string())?;
        add_sub_outcome(&mut summary, &o, &mut first, &mut last);
        sub_outcomes.push((j, o));
        sub_conns.push(conn);
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
    if session == Session::Persistent {
        disconnect_all(sub_conns.into_iter()).await;
    }
    Ok(summary)
}

/// Sends DISCONNECT on each connection and waits (up to 2 s) for the broker to close it
/// [MQTT-3.14.4-1]. Closing a socket with unread input (a PINGRESP, say) would reset it and
/// could discard messages still queued in the kernel towards the broker.
async fn disconnect_all(conns: impl Iterator<Item = Conn>) {
    let mut set = JoinSet::new();
    for mut conn in conns {
        set.spawn(async move {
            if conn.stream.send(&[0xE0, 0x00]).await.is_err() {
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
    fn pick_cycles_or_draws() {
        let mut p = Pick::new(None);
        let got: Vec<usize> = (0..5).map(|_| p.next(3)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1]);
        let mut p = Pick::new(Some(1));
        assert!((0..100).all(|_| p.next(3) < 3));
    }
}
