//! `midge rr`: one request, one response, as mosquitto_rr: subscribes to the response topic,
//! publishes the request (under 5.0 with Response Topic and Correlation Data), prints the
//! first response and exits.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{ArgGroup, Args};
use midge_client::{ClientError, Message, QoS, ReasonCode, SubscribeOptions, Subscription};
use midge_topic::TopicName;

use super::format::{stdout_failed, Output};
use super::publish::{check, publish_options, Source};
use super::{
    connect, connection_failure, deadline, describe, last_disconnect, parse_properties, parse_qos,
    until, ConnectArgs, Failure,
};

/// `midge rr` options.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("payload").required(true).args(["message", "file", "null", "stdin"])))]
// Request/response is a 5.0 feature: 5 is the default here, as in mosquitto_rr.
#[command(mut_arg("version", |arg| arg.default_value("5")))]
pub(crate) struct RrArgs {
    /// Topic to send the request to. Required unless an mqtt(s):// URL (-L) gives one.
    #[arg(short, long = "topic")]
    pub(crate) topic: Option<String>,
    /// Response topic: subscribed to before the request is sent, and named in the request's
    /// Response Topic property (5.0). The first message on it is the response.
    #[arg(short = 'e', long = "response-topic", value_name = "TOPIC")]
    pub(crate) response_topic: String,
    /// The request payload.
    #[arg(short, long)]
    pub(crate) message: Option<String>,
    /// Send the contents of FILE as the request.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Send a null (zero-length) request.
    #[arg(short, long)]
    pub(crate) null: bool,
    /// Read stdin to its end and send it all as the request.
    #[arg(short, long)]
    pub(crate) stdin: bool,
    /// QoS of the request and of the subscription to the response topic: 0, 1 or 2.
    #[arg(short, long, default_value = "0", value_parser = parse_qos)]
    pub(crate) qos: QoS,
    /// Skip retained messages on the response topic (stale ones, left by an earlier
    /// response): wait for a fresh response.
    #[arg(short = 'R', long = "no-retained")]
    pub(crate) no_retained: bool,
    #[command(flatten)]
    pub(crate) output: Output,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

/// Runs `midge rr`.
pub(crate) fn main(mut args: RrArgs) -> ExitCode {
    args.connect.command = "rr";
    let quiet = args.connect.quiet;
    super::run("rr", quiet, request(args))
}

/// The Correlation Data of a request: `-D publish correlation-data`, or 16 random hex digits.
fn correlation(given: Option<Bytes>) -> Bytes {
    given.unwrap_or_else(|| Bytes::from(format!("{:016x}", fastrand::u64(..))))
}

/// Whether a message on the response topic answers this request: under 5.0 a response that
/// carries Correlation Data must carry ours (others answer another request on the same
/// topic); one without any is taken, as from a responder that does not echo it.
fn answers(message: &Message, correlation: Option<&Bytes>) -> bool {
    match (correlation, message.correlation_data()) {
        (Some(ours), Some(theirs)) => *ours == theirs,
        _ => true,
    }
}

async fn request(mut args: RrArgs) -> Result<(), Failure> {
    let url_topic = args.connect.resolve()?;
    let topic = match (args.topic.take(), url_topic) {
        (Some(_), Some(_)) => {
            return Err(Failure::usage(
                "-t and the -L URL both give the request topic: give it in one place",
            ))
        }
        (Some(topic), None) | (None, Some(topic)) => topic,
        (None, None) => {
            return Err(Failure::usage(
                "-t is required (or an mqtt:// or mqtts:// URL with the topic as its path: -L mqtt://host/topic)",
            ))
        }
    };
    TopicName::new(&topic).map_err(|e| Failure::usage(format!("invalid topic {topic:?}: {e}")))?;
    let response_topic = args.response_topic.clone();
    TopicName::new(&response_topic).map_err(|e| {
        Failure::usage(format!(
            "invalid response topic {response_topic:?} (-e takes a topic name, without wildcards): {e}"
        ))
    })?;
    let mut properties = parse_properties(&args.connect, true)?;
    let publish = std::mem::take(&mut properties.publish);
    if publish.response_topic().is_some() {
        return Err(Failure::usage(
            "-D publish response-topic: rr sets the response topic from -e",
        ));
    }
    let given_correlation = publish.correlation_data();
    let disconnect = properties.disconnect.clone();
    let v5 = args.connect.version.is_v5();
    let correlation = v5.then(|| correlation(given_correlation));
    let mut options = publish_options(args.qos, false, publish);
    if v5 {
        options = options.response_topic(response_topic.clone());
    }
    if let Some(data) = &correlation {
        options = options.correlation_data(data.clone());
    }
    let deadline = deadline(&args.connect);
    let seconds = args.connect.timeout.unwrap_or(0);
    let source = Source {
        message: args.message.as_deref(),
        file: args.file.as_deref(),
        null: args.null,
        stdin: args.stdin,
    };
    // SIGINT (Ctrl-C) and SIGTERM end the run with 0, as with `midge pub` and `midge sub`:
    // once connected, after a DISCONNECT (so that the broker does not publish the will).
    let stop = crate::stop_signal();
    tokio::pin!(stop);
    let payload = tokio::select! {
        payload = source.read(deadline, seconds) => payload?.unwrap_or_default(),
        () = &mut stop => return Ok(()),
    };
    let builder = super::builder(&args.connect, properties, "midge-rr", false)?;
    let (client, mut events) = tokio::select! {
        connected = connect(&args.connect, builder) => connected?,
        () = until(deadline) => return Err(Failure::timeout(seconds)),
        () = &mut stop => return Ok(()),
    };
    // Kept until after DISCONNECT: dropping it earlier would unsubscribe.
    let mut responses: Option<Subscription> = None;
    let work = async {
        // Subscribed before the request goes out, so that no response can come first.
        let subscribed = client
            .subscribe(response_topic.clone(), SubscribeOptions::with_qos(args.qos))
            .await;
        let stream = match subscribed {
            Ok((granted, stream)) => {
                if args.connect.debug {
                    eprintln!(
                        "midge rr: subscribed to {response_topic:?} (granted QoS {})",
                        granted.0
                    );
                }
                responses.insert(stream)
            }
            Err(ClientError::Refused(code)) => {
                return Err(Failure::runtime(format!(
                    "the broker refused the subscription to {response_topic:?}: {}",
                    describe(code)
                )))
            }
            Err(ClientError::Closed) => {
                return Err(connection_failure(
                    &args.connect,
                    last_disconnect(&mut events, None),
                ))
            }
            Err(err) => {
                return Err(Failure::runtime(format!(
                    "cannot subscribe to {response_topic:?}: {err}"
                )))
            }
        };
        let sent = client.publish(topic.clone(), payload, options).await;
        check(&topic, sent).map_err(|sent| sent.into_failure(&args.connect, &mut events))?;
        if args.connect.debug {
            eprintln!("midge rr: request sent to {topic:?}; waiting for the response");
        }
        loop {
            let Some(message) = stream.recv().await else {
                return Err(connection_failure(
                    &args.connect,
                    last_disconnect(&mut events, None),
                ));
            };
            if args.no_retained && message.retain() {
                if args.connect.debug {
                    eprintln!("midge rr: skipped a retained message (-R)");
                }
                continue;
            }
            if !answers(&message, correlation.as_ref()) {
                if args.connect.debug {
                    eprintln!(
                        "midge rr: skipped a response with the correlation data of another request"
                    );
                }
                continue;
            }
            let mut out = std::io::stdout().lock();
            // rr chooses no subscription identifier (-D subscribe is sub's).
            return args
                .output
                .print(&mut out, &message, false)
                .and_then(|()| out.flush())
                .or_else(|err| stdout_failed(&err));
        }
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        () = until(deadline) => Err(Failure::timeout(seconds)),
        () = &mut stop => Ok(()),
    };
    client
        .disconnect_with(ReasonCode::SUCCESS, disconnect)
        .await;
    drop(responses);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_correlation_data_differs_between_requests() {
        let a = correlation(None);
        assert_eq!(a.len(), 16);
        assert_ne!(a, correlation(None));
        assert_eq!(correlation(Some("job-7".into())), Bytes::from("job-7"));
    }
}
