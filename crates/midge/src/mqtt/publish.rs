//! `midge pub`: publishes one message, a file, stdin, or each line of stdin.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgGroup, Args};
use midge_client::codec::PublishProperties;
use midge_client::{
    Client, ClientError, CloseReason, ConnectionEvent, PublishHandle, PublishOptions, QoS,
    ReasonCode,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{
    connect, connection_failure, deadline, describe, last_disconnect, parse_properties, parse_qos,
    until, ConnectArgs, Failure, MAX_PAYLOAD,
};

/// Publishes in flight at once with `-l` before the oldest outcome is awaited (unless -M).
const PIPELINE: usize = 64;

/// `midge pub` options.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("payload").required(true).args(["message", "file", "lines", "null", "stdin"])))]
pub(crate) struct PubArgs {
    /// Topic to publish to; repeat it to publish the same message(s) to several topics. Required unless an mqtt(s):// URL (-L) gives one.
    #[arg(short, long = "topic")]
    pub(crate) topic: Vec<String>,
    /// The message payload.
    #[arg(short, long)]
    pub(crate) message: Option<String>,
    /// Send the contents of FILE as the message.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Read stdin and send each line as a message (the newline removed; an empty line is an
    /// empty message).
    #[arg(short, long)]
    pub(crate) lines: bool,
    /// Send a null (zero-length) message.
    #[arg(short, long)]
    pub(crate) null: bool,
    /// Read stdin to its end and send it all as one message.
    #[arg(short, long)]
    pub(crate) stdin: bool,
    /// QoS: 0, 1 or 2.
    #[arg(short, long, default_value = "0", value_parser = parse_qos)]
    pub(crate) qos: QoS,
    /// Retain the message.
    #[arg(short, long)]
    pub(crate) retain: bool,
    /// With -m, -f, -n or -s: publish the message N times.
    #[arg(long, value_name = "N", value_parser = parse_repeat)]
    pub(crate) repeat: Option<u32>,
    /// With --repeat: wait this many seconds (a fraction too) between publishes (default 0).
    #[arg(long = "repeat-delay", value_name = "SECONDS", allow_negative_numbers = true, value_parser = parse_delay)]
    pub(crate) repeat_delay: Option<Duration>,
    /// With -l: QoS 1 and 2 messages in flight at once (default 64; the broker's Receive
    /// Maximum may lower it).
    #[arg(short = 'M', value_name = "N", value_parser = parse_inflight)]
    pub(crate) max_inflight: Option<usize>,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

fn parse_repeat(s: &str) -> Result<u32, String> {
    s.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "--repeat must be a whole number above 0".to_owned())
}

fn parse_delay(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .ok_or_else(|| "--repeat-delay must be a number of seconds, 0 or more".to_owned())
}

fn parse_inflight(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "-M (maximum messages in flight) must be above 0".to_owned())
}

/// Runs `midge pub`.
pub(crate) fn main(mut args: PubArgs) -> ExitCode {
    args.connect.command = "pub";
    let quiet = args.connect.quiet;
    super::run("pub", quiet, publish(args))
}

async fn publish(mut args: PubArgs) -> Result<(), Failure> {
    if let Some(topic) = args.connect.resolve()? {
        args.topic.push(topic);
    }
    if args.topic.is_empty() {
        return Err(Failure::usage(
            "-t is required (or an mqtt:// or mqtts:// URL with the topic as its path: -L mqtt://host/topic)",
        ));
    }
    let mut properties = parse_properties(&args.connect, true)?;
    let disconnect = properties.disconnect.clone();
    for topic in &args.topic {
        midge_topic::TopicName::new(topic)
            .map_err(|e| Failure::usage(format!("invalid topic {topic:?}: {e}")))?;
    }
    let options = publish_options(
        args.qos,
        args.retain,
        std::mem::take(&mut properties.publish),
    );
    let deadline = deadline(&args.connect);
    let seconds = args.connect.timeout.unwrap_or(0);
    // SIGINT (Ctrl-C) and SIGTERM end the run with 0, as with `midge sub`: once connected,
    // after a DISCONNECT (so that the broker does not publish the will); messages not yet
    // acknowledged then are not waited for.
    let stop = crate::stop_signal();
    tokio::pin!(stop);
    // The payload comes first (as with mosquitto_pub), so that a missing file costs no
    // connection and a slow stdin holds none open.
    let source = Source {
        message: args.message.as_deref(),
        file: args.file.as_deref(),
        null: args.null,
        stdin: args.stdin,
    };
    let payload = tokio::select! {
        payload = source.read(deadline, seconds) => payload?,
        () = &mut stop => return Ok(()),
    };
    // As mosquitto_pub: -s with nothing on stdin is an error (-n sends an empty message).
    if args.stdin && payload.as_ref().is_some_and(Bytes::is_empty) {
        return Err(Failure::usage(
            "-s: stdin is empty, so there is no message (-n sends an empty one)",
        ));
    }
    let builder = super::builder(&args.connect, properties, "midge-pub", false)?;
    let (client, mut events) = tokio::select! {
        connected = connect(&args.connect, builder) => connected?,
        () = until(deadline) => return Err(Failure::timeout(seconds)),
        () = &mut stop => return Ok(()),
    };
    let repeat = args.repeat.unwrap_or(1);
    let delay = args.repeat_delay.unwrap_or_default();
    let pipeline = args.max_inflight.unwrap_or(PIPELINE);
    let work = async {
        match payload {
            Some(payload) => {
                for i in 0..repeat {
                    if i > 0 && !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    send(&client, &args.topic, payload.clone(), &options).await?;
                }
                Ok(())
            }
            None => send_lines(&client, &args.topic, &options, &mut events, pipeline).await,
        }
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        () = until(deadline) => Err(Sent::Failed(Failure::timeout(seconds))),
        () = &mut stop => Ok(()),
    };
    let outcome = outcome.map_err(|failure| failure.into_failure(&args.connect, &mut events));
    client
        .disconnect_with(ReasonCode::SUCCESS, disconnect)
        .await;
    outcome
}

/// The options of a publish with QoS, RETAIN and the `-D publish` properties.
pub(crate) fn publish_options(
    qos: QoS,
    retain: bool,
    properties: PublishProperties,
) -> PublishOptions {
    PublishOptions::with_qos(qos)
        .retain(retain)
        .properties(properties)
}

/// Where the payload of a single message comes from: `-m`, `-f`, `-n` or `-s` (none of
/// them: `-l`, one message a line).
pub(crate) struct Source<'a> {
    pub(crate) message: Option<&'a str>,
    pub(crate) file: Option<&'a Path>,
    pub(crate) null: bool,
    pub(crate) stdin: bool,
}

impl Source<'_> {
    /// Reads the payload; `None` when no source is given. Reading stdin is bounded by the
    /// `-W` deadline.
    pub(crate) async fn read(
        &self,
        deadline: Option<tokio::time::Instant>,
        seconds: u64,
    ) -> Result<Option<Bytes>, Failure> {
        Ok(if let Some(message) = self.message {
            Some(Bytes::from(message.to_owned()))
        } else if let Some(path) = self.file {
            Some(read_file(path)?)
        } else if self.null {
            Some(Bytes::new())
        } else if self.stdin {
            tokio::select! {
                data = read_stdin() => Some(data?),
                () = until(deadline) => return Err(Failure::timeout(seconds)),
            }
        } else {
            None
        })
    }
}

/// Why publishing stopped.
pub(crate) enum Sent {
    /// The client closed: the connection was lost (for this reason, if already known).
    Closed(Option<CloseReason>),
    Failed(Failure),
}

impl Sent {
    /// The failure to report: for a closed client, the reason it closed.
    pub(crate) fn into_failure(
        self,
        args: &ConnectArgs,
        events: &mut broadcast::Receiver<ConnectionEvent>,
    ) -> Failure {
        match self {
            Self::Closed(known) => connection_failure(args, last_disconnect(events, known)),
            Self::Failed(failure) => failure,
        }
    }
}

impl From<Failure> for Sent {
    fn from(failure: Failure) -> Self {
        Self::Failed(failure)
    }
}

fn read_file(path: &Path) -> Result<Bytes, Failure> {
    let cannot = |e: std::io::Error| Failure::usage(format!("cannot read {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut data = Vec::new();
    // Checked while reading, not from metadata, so that pipes and growing files are bounded too.
    file.take(MAX_PAYLOAD + 1)
        .read_to_end(&mut data)
        .map_err(cannot)?;
    if data.len() as u64 > MAX_PAYLOAD {
        return Err(Failure::usage(format!(
            "{} is larger than an MQTT message can be ({MAX_PAYLOAD} bytes)",
            path.display()
        )));
    }
    Ok(Bytes::from(data))
}

async fn read_stdin() -> Result<Bytes, Failure> {
    let mut data = Vec::new();
    tokio::io::stdin()
        .take(MAX_PAYLOAD + 1)
        .read_to_end(&mut data)
        .await
        .map_err(|e| Failure::runtime(format!("cannot read stdin: {e}")))?;
    if data.len() as u64 > MAX_PAYLOAD {
        return Err(Failure::usage(format!(
            "stdin is larger than an MQTT message can be ({MAX_PAYLOAD} bytes)"
        )));
    }
    Ok(Bytes::from(data))
}

async fn send(
    client: &Client,
    topics: &[String],
    payload: Bytes,
    options: &PublishOptions,
) -> Result<(), Sent> {
    for topic in topics {
        let outcome = client
            .publish(topic.clone(), payload.clone(), options.clone())
            .await;
        check(topic, outcome)?;
    }
    Ok(())
}

/// `-l`: each line of stdin is a message to every topic. Up to [`PIPELINE`] publishes are in
/// flight; an outcome is checked before more are queued.
async fn send_lines(
    client: &Client,
    topics: &[String],
    options: &PublishOptions,
    events: &mut broadcast::Receiver<ConnectionEvent>,
    pipeline: usize,
) -> Result<(), Sent> {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut pending: VecDeque<(&String, PublishHandle)> = VecDeque::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line may not grow past the largest message.
        // While it waits for a line, a lost connection ends the run at once.
        let mut limited = (&mut stdin).take(MAX_PAYLOAD + 1);
        let read = tokio::select! {
            read = limited.read_until(b'\n', &mut line) => {
                read.map_err(|e| Failure::runtime(format!("cannot read stdin: {e}")))?
            }
            lost = closed(events) => return Err(Sent::Closed(lost)),
        };
        if read == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() as u64 > MAX_PAYLOAD {
            return Err(Failure::usage(format!(
                "a line of stdin is longer than an MQTT message can be ({MAX_PAYLOAD} bytes)"
            ))
            .into());
        }
        let payload = Bytes::copy_from_slice(&line);
        for topic in topics {
            let handle = client
                .enqueue(topic.clone(), payload.clone(), options.clone())
                .await;
            match handle {
                Ok(handle) => pending.push_back((topic, handle)),
                Err(err) => check(topic, Err(err))?,
            }
            while pending.len() >= pipeline {
                if let Some((topic, handle)) = pending.pop_front() {
                    check(topic, handle.await)?;
                }
            }
        }
    }
    for (topic, handle) in pending {
        check(topic, handle.await)?;
    }
    Ok(())
}

/// Waits until the client closes; returns the last connection loss it reported.
async fn closed(events: &mut broadcast::Receiver<ConnectionEvent>) -> Option<CloseReason> {
    let mut lost = None;
    loop {
        match events.recv().await {
            Ok(ConnectionEvent::Disconnected { reason }) => lost = Some(reason),
            Ok(ConnectionEvent::Closed) | Err(RecvError::Closed) => return lost,
            Ok(_) | Err(RecvError::Lagged(_)) => {}
        }
    }
}

/// The outcome of a publish to `topic`, as `Sent` on failure.
pub(crate) fn check(topic: &str, outcome: Result<ReasonCode, ClientError>) -> Result<(), Sent> {
    match outcome {
        Ok(_) => Ok(()),
        Err(ClientError::Closed) => Err(Sent::Closed(None)),
        Err(ClientError::Refused(code)) => Err(Failure::runtime(format!(
            "the broker refused the publish to {topic:?}: {}",
            describe(code)
        ))
        .into()),
        Err(err) => Err(Failure::runtime(format!("cannot publish to {topic:?}: {err}")).into()),
    }
}
