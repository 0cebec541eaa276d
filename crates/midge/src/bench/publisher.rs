//! The publisher loop: pre-encoded messages at a rate or flat out, a window of QoS 1/2
//! messages in flight, and the acknowledgements that come back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use midge_codec::{Packet, PacketId, QoS, MAX_PACKET_SIZE};
use tokio::io::AsyncReadExt;
use tokio::time::{sleep_until, timeout_at};

use super::client::{ping_time, put_ack, Conn, Template, PINGREQ};
use super::report::Counters;
use super::run::Ctx;
use super::track::{now_ns, Header, SeqSet};
use super::MessagePlan;

/// Messages encoded into one buffer before a write.
const BATCH: u64 = 64;

/// How a publisher picks the topic of its next message.
#[derive(Debug)]
pub(crate) enum Pick {
    Cycle(usize),
    Random(fastrand::Rng),
}

impl Pick {
    pub(crate) fn new(random: Option<u64>) -> Self {
        random.map_or(Self::Cycle(0), |seed| {
            Self::Random(fastrand::Rng::with_seed(seed))
        })
    }

    pub(crate) fn next(&mut self, n: usize) -> usize {
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

/// What one publisher did.
#[derive(Debug)]
pub(crate) struct PubOutcome {
    /// The publisher's index, as in its payload headers.
    pub(crate) index: u32,
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    pub(crate) rejected: u64,
    /// Per stream: messages acknowledged (QoS 1/2) or written (QoS 0).
    pub(crate) acked_sets: Vec<SeqSet>,
    pub(crate) finished: Instant,
    pub(crate) timed_out: bool,
    pub(crate) error: Option<String>,
    /// Kept open until the run ends, so that nothing in flight is cut off.
    pub(crate) conn: Conn,
}

#[derive(Debug)]
struct InFlight {
    pub(crate) stream: u32,
    pub(crate) seq: u32,
    pub(crate) sent: Instant,
    /// QoS 2: PUBREC arrived, PUBREL sent.
    pub(crate) released: bool,
}

/// Publishes `msg.count` messages (or until the deadline), at `msg.rate` or flat out.
pub(crate) async fn publish(
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
            session_present: false,
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
            match timeout_at(ctx.deadline.into(), stream.send(&wbuf)).await {
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
