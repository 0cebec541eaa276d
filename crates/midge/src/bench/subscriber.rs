//! The subscriber loop: deliveries counted per stream, acknowledged, timed, and the rules for
//! when a subscriber is done.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use midge_codec::{Packet, QoS, MAX_PACKET_SIZE};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout_at};

use super::client::{ping_time, put_ack, Conn, PINGREQ};
use super::report::Counters;
use super::run::Ctx;
use super::track::{now_ns, Header, Seen, SeqSet};

/// Streams one subscriber tracks; deliveries of further streams are counted as untracked.
const MAX_STREAMS_PER_SUBSCRIBER: usize = 1 << 20;

/// What one subscriber received.
#[derive(Debug, Default)]
pub(crate) struct SubOutcome {
    pub(crate) delivered: u64,
    pub(crate) duplicates: u64,
    pub(crate) untracked: u64,
    /// Sequence numbers per (run, publisher, stream).
    pub(crate) streams: HashMap<(u32, u32, u32), SeqSet>,
    pub(crate) first: Option<Instant>,
    pub(crate) last: Option<Instant>,
    pub(crate) timed_out: bool,
    pub(crate) error: Option<String>,
}

/// When a subscriber stops.
#[derive(Clone, Debug)]
pub(crate) struct SubStop {
    /// Deliveries after which it is done.
    pub(crate) expected: Option<u64>,
    /// Stop when nothing arrived for this long ...
    pub(crate) idle: Duration,
    /// ... once this says the publishers are done (`None`: after the first delivery).
    pub(crate) publishers_done: Option<watch::Receiver<bool>>,
    /// Stop once all subscribers of the run together have this many deliveries ...
    pub(crate) total: Option<u64>,
    /// ... which this says, for subscribers waiting for data.
    pub(crate) halt: Option<watch::Receiver<bool>>,
    /// 64-bit words of sequence-number bitmaps this subscriber may allocate.
    pub(crate) budget: u64,
    /// Count only deliveries of this run (end to end); `None`: count every delivery.
    pub(crate) run: Option<u32>,
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
pub(crate) async fn subscribe_loop(
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
            match timeout_at(ctx.deadline.into(), conn.stream.send(&acks)).await {
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
