//! `midge sub`: subscribes and prints what arrives, one message a line.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::Poll;

use bytes::Bytes;
use clap::Args;
use futures_core::Stream;
use midge_client::codec::{UnsubscribeProperties, UserProperties};
use midge_client::{
    ClientError, CloseReason, ConnectionEvent, Message, PublishOptions, QoS, ReasonCode,
    SubscribeOptions, Subscription,
};
use midge_topic::{TopicFilter, TopicName};
use tokio::sync::broadcast::error::RecvError;

use super::format::{stdout_failed, Output};
use super::{
    connected, connection_failure, deadline, describe, last_disconnect, parse_properties,
    parse_qos, start, until, ConnectArgs, Failure,
};

/// `midge sub` options.
#[derive(Debug, Args)]
pub(crate) struct SubArgs {
    /// Topic filter to subscribe to; repeat it for several. Required unless an mqtt(s):// URL (-L) gives one.
    #[arg(short, long = "topic")]
    pub(crate) topic: Vec<String>,
    /// Maximum QoS of the subscriptions: 0, 1 or 2.
    #[arg(short, long, default_value = "0", value_parser = parse_qos)]
    pub(crate) qos: QoS,
    /// Exit (with 0) after COUNT messages.
    #[arg(short = 'C', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
    #[command(flatten)]
    pub(crate) output: Output,
    /// Print no stale messages: those with the retain flag set.
    #[arg(short = 'R')]
    pub(crate) no_retained: bool,
    /// Print only retained messages, and exit (with 0) at the first message that is not.
    #[arg(long = "retained-only")]
    pub(crate) retained_only: bool,
    /// Clear each retained message received: publish an empty retained message to its
    /// topic (-T keeps some).
    #[arg(long = "remove-retained")]
    pub(crate) remove_retained: bool,
    /// Topic filter whose messages are not printed (nor removed); repeat it for several.
    #[arg(short = 'T', value_name = "FILTER")]
    pub(crate) filter_out: Vec<String>,
    /// Unsubscribe from this filter (of a persistent session, -c); repeat it for several.
    #[arg(short = 'U', long = "unsubscribe", value_name = "FILTER")]
    pub(crate) unsubscribe: Vec<String>,
    /// Exit (with 0) once the broker has answered every subscription (and -U).
    #[arg(short = 'E')]
    pub(crate) exit_when_subscribed: bool,
    /// Print only this percentage of the messages received, at random (0 to 100).
    #[arg(long = "random-filter", value_name = "PERCENT", value_parser = parse_percent)]
    pub(crate) random_filter: Option<f64>,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    s.parse()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .ok_or_else(|| "--random-filter takes a percentage from 0 to 100".to_owned())
}

/// Runs `midge sub`.
pub(crate) fn main(mut args: SubArgs) -> ExitCode {
    args.connect.command = "sub";
    let quiet = args.connect.quiet;
    super::run("sub", quiet, subscribe(args))
}

/// One subscription stream.
struct Feed {
    filter: String,
    messages: Subscription,
    ended: bool,
}

async fn subscribe(mut args: SubArgs) -> Result<(), Failure> {
    if let Some(topic) = args.connect.resolve()? {
        args.topic.push(topic);
    }
    if args.topic.is_empty() {
        return Err(Failure::usage(
            "-t is required (or an mqtt:// or mqtts:// URL with the topic as its path: -L mqtt://host/topic)",
        ));
    }
    let properties = parse_properties(&args.connect, false)?;
    for filter in &args.topic {
        TopicFilter::new(filter)
            .map_err(|e| Failure::usage(format!("invalid topic filter {filter:?}: {e}")))?;
    }
    for filter in &args.unsubscribe {
        TopicFilter::new(filter)
            .map_err(|e| Failure::usage(format!("invalid -U topic filter {filter:?}: {e}")))?;
    }
    let filter_out = args
        .filter_out
        .iter()
        .map(|filter| {
            TopicFilter::new(filter)
                .map(|_| filter.clone())
                .map_err(|e| Failure::usage(format!("invalid -T topic filter {filter:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let requests = Requests {
        subscribe: properties.subscribe.clone(),
        unsubscribe: properties.unsubscribe.clone(),
    };
    let disconnect = properties.disconnect.clone();
    let mut options = SubscribeOptions::with_qos(args.qos);
    if let Some(id) = properties.subscription_identifier {
        options = options.subscription_identifier(id);
    }
    let deadline = deadline(&args.connect);
    let seconds = args.connect.timeout.unwrap_or(0);
    // Like mosquitto_sub, reconnect after a lost connection (and subscribe again when the
    // session is gone); only the first connection must succeed at once.
    let builder = super::builder(&args.connect, properties, "midge-sub", true)?;
    // SIGINT (Ctrl-C) and SIGTERM end the run normally, at any point, as with mosquitto_sub:
    // listened for from here on, so that neither ends the process before the DISCONNECT that
    // keeps the broker from publishing the will.
    let stop = crate::stop_signal();
    tokio::pin!(stop);
    let (client, mut events) = tokio::select! {
        started = start(&args.connect, builder) => started?,
        () = until(deadline) => return Err(Failure::timeout(seconds)),
        () = &mut stop => return Ok(()),
    };
    // The streams outlive `receive`: dropping the last stream of a filter unsubscribes, which
    // would empty a persistent session (-c). After DISCONNECT, dropping them sends nothing.
    let mut streams = Vec::new();
    let outcome = tokio::select! {
        outcome = receive(&args, options, &requests, &filter_out, &client, &mut events, &mut streams) => outcome,
        () = until(deadline) => Err(Failure::timeout(seconds)),
        () = &mut stop => Ok(()),
    };
    client
        .disconnect_with(ReasonCode::SUCCESS, disconnect)
        .await;
    drop(streams);
    // midge-client drops QoS 0 messages when a stream holds `max_buffered_qos0` unread
    // (stdout could not keep up); say so rather than lose them silently.
    let dropped = client.dropped_messages();
    if dropped > 0 {
        eprintln!(
            "midge sub: {dropped} messages were dropped: QoS 0 messages arrived faster than they could be printed (-q 1 has flow control)"
        );
    }
    outcome
}

/// The `-D subscribe` and `-D unsubscribe` user properties.
struct Requests {
    subscribe: UserProperties,
    unsubscribe: UnsubscribeProperties,
}

async fn receive(
    args: &SubArgs,
    options: SubscribeOptions,
    requests: &Requests,
    filter_out: &[String],
    client: &midge_client::Client,
    events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>,
    streams: &mut Vec<Feed>,
) -> Result<(), Failure> {
    // The subscriptions are asked for while the client connects, so that their streams
    // exist before CONNACK: a resumed session (-c) delivers its queued messages right after
    // it, and midge-client drops messages that match no stream.
    let subscribing =
        join_all(args.topic.iter().map(|filter| {
            client.subscribe_with(filter.clone(), options, requests.subscribe.clone())
        }));
    let unsubscribing = join_all(
        args.unsubscribe
            .iter()
            .map(|filter| client.unsubscribe_with(filter.clone(), requests.unsubscribe.clone())),
    );
    let ((), results, unsubscribed) = tokio::try_join!(
        connected(&args.connect, events),
        async { Ok(subscribing.await) },
        async { Ok(unsubscribing.await) }
    )?;
    for (filter, result) in args.unsubscribe.iter().zip(unsubscribed) {
        match result {
            Ok(code) if code.0 < 0x80 => {
                if args.connect.debug {
                    eprintln!("midge sub: unsubscribed from {filter:?}");
                }
            }
            Ok(code) => {
                if !args.connect.quiet {
                    eprintln!(
                        "midge sub: the broker refused to unsubscribe from {filter:?}: {}",
                        describe(code)
                    );
                }
            }
            Err(ClientError::Closed) => {
                return Err(connection_failure(
                    &args.connect,
                    last_disconnect(events, None),
                ))
            }
            Err(err) => {
                return Err(Failure::runtime(format!(
                    "cannot unsubscribe from {filter:?}: {err}"
                )))
            }
        }
    }
    for (filter, result) in args.topic.iter().zip(results) {
        match result {
            Ok((granted, messages)) => {
                if args.connect.debug {
                    eprintln!(
                        "midge sub: subscribed to {filter:?} (granted QoS {})",
                        granted.0
                    );
                }
                streams.push(Feed {
                    filter: filter.clone(),
                    messages,
                    ended: false,
                });
            }
            Err(ClientError::Refused(code)) => {
                if !args.connect.quiet {
                    eprintln!(
                        "midge sub: the broker refused the subscription to {filter:?}: {}",
                        describe(code)
                    );
                }
            }
            Err(ClientError::Closed) => {
                return Err(connection_failure(
                    &args.connect,
                    last_disconnect(events, None),
                ))
            }
            Err(err) => {
                return Err(Failure::runtime(format!(
                    "cannot subscribe to {filter:?}: {err}"
                )))
            }
        }
    }
    if streams.is_empty() {
        return Err(Failure::runtime("the broker refused every subscription"));
    }
    if args.exit_when_subscribed {
        return Ok(());
    }
    // %S shows subscription identifiers only when the user chose one.
    let chosen_ids = args
        .connect
        .properties
        .iter()
        .any(|p| p == "subscription-identifier");
    let mut received = 0u64;
    let mut lost = None;
    // Buffered, and flushed whenever no further message is waiting: a line appears as soon as
    // its message arrives, and a burst costs one write.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    loop {
        tokio::select! {
            next = next_message(streams) => {
                let mut next = next;
                loop {
                    let Some((index, message)) = next else {
                        // Every stream ended: the client closed for good.
                        return Err(connection_failure(&args.connect, last_disconnect(events, lost)));
                    };
                    if !delivered_earlier(streams, index, &message) {
                        match shown(args, filter_out, &message) {
                            Shown::No => {}
                            Shown::End => return out.flush().or_else(|err| stdout_failed(&err)),
                            Shown::Yes => {
                                if args.remove_retained && message.retain() {
                                    let clear =
                                        PublishOptions::with_qos(QoS::AtMostOnce).retain(true);
                                    // Handed to the connection before any DISCONNECT. A
                                    // failure shows as the loss of the connection, which
                                    // ends the run.
                                    let _ = client
                                        .publish(message.topic().to_owned(), Bytes::new(), clear)
                                        .await;
                                }
                                if let Err(err) = args.output.print(&mut out, &message, chosen_ids) {
                                    return stdout_failed(&err);
                                }
                                received += 1;
                                if args.count.is_some_and(|count| received >= count) {
                                    return out.flush().or_else(|err| stdout_failed(&err));
                                }
                            }
                        }
                    }
                    match ready_message(streams) {
                        Some(ready) => next = Some(ready),
                        None => break,
                    }
                }
                if let Err(err) = out.flush() {
                    return stdout_failed(&err);
                }
            }
            event = events.recv() => match event {
                Ok(ConnectionEvent::Disconnected { reason }) => {
                    // Another client took our client id: reconnecting would take it back, and
                    // the two would push each other out forever.
                    if reason == CloseReason::DisconnectedByBroker(ReasonCode::SESSION_TAKEN_OVER) {
                        return Err(connection_failure(&args.connect, Some(reason)));
                    }
                    lost = Some(reason);
                }
                Ok(ConnectionEvent::Reconnecting { attempt, delay }) if !args.connect.quiet => {
                    let why = connection_failure(&args.connect, lost).message;
                    eprintln!(
                        "midge sub: {why}; reconnecting in {} ms (attempt {attempt})",
                        delay.as_millis()
                    );
                }
                Ok(ConnectionEvent::Connected { session_present }) if !args.connect.quiet => {
                    eprintln!(
                        "midge sub: reconnected (session present: {})",
                        if session_present { "yes" } else { "no" }
                    );
                }
                Ok(ConnectionEvent::Closed) | Err(RecvError::Closed) => {
                    return Err(connection_failure(&args.connect, lost));
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
            },
        }
    }
}

/// Whether a message is printed.
enum Shown {
    Yes,
    /// Skipped: -R, -T or --random-filter.
    No,
    /// --retained-only met a message that is not retained: the run ends.
    End,
}

/// Applies -R, -T, --retained-only and --random-filter, in mosquitto_sub's order.
fn shown(args: &SubArgs, filter_out: &[String], message: &Message) -> Shown {
    if args.no_retained && message.retain() {
        return Shown::No;
    }
    if !filter_out.is_empty() {
        if let Ok(topic) = TopicName::new(message.topic()) {
            let hidden = filter_out
                .iter()
                .any(|f| TopicFilter::new(f).is_ok_and(|f| f.matches(&topic)));
            if hidden {
                return Shown::No;
            }
        }
    }
    if args.retained_only && !message.retain() {
        return Shown::End;
    }
    if let Some(percent) = args.random_filter {
        if fastrand::f64() * 100.0 >= percent {
            return Shown::No;
        }
    }
    Shown::Yes
}

/// Polls every future at once (so that each sends its request before any waits) and returns
/// their outputs in order.
async fn join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// The next message of any stream, with the index of its stream; `None` once all have ended.
///
/// Cancel-safe: a message is taken only when this returns it.
async fn next_message(streams: &mut [Feed]) -> Option<(usize, Message)> {
    std::future::poll_fn(|cx| {
        let mut open = false;
        for (index, stream) in streams.iter_mut().enumerate() {
            if stream.ended {
                continue;
            }
            match Pin::new(&mut stream.messages).poll_next(cx) {
                Poll::Ready(Some(message)) => return Poll::Ready(Some((index, message))),
                Poll::Ready(None) => stream.ended = true,
                Poll::Pending => open = true,
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    })
    .await
}

/// The next message if one is waiting already, without waiting.
fn ready_message(streams: &mut [Feed]) -> Option<(usize, Message)> {
    let mut next = std::pin::pin!(next_message(streams));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match next.as_mut().poll(&mut cx) {
        Poll::Ready(message) => message,
        Poll::Pending => None,
    }
}

/// midge-client hands one received PUBLISH to every subscription whose filter matches it,
/// while mosquitto_sub prints each PUBLISH once: a message from stream `index` whose topic
/// an earlier stream also matches was handed to that one too.
fn delivered_earlier(streams: &[Feed], index: usize, message: &Message) -> bool {
    let Ok(topic) = TopicName::new(message.topic()) else {
        return false;
    };
    streams.iter().take(index).any(|earlier| {
        !earlier.ended
            && TopicFilter::new(&earlier.filter).is_ok_and(|filter| filter.matches(&topic))
    })
}
