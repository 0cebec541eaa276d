//! `midge pub`, `midge sub` and `midge rr`: command-line clients on `midge-client` with the
//! flags of mosquitto_pub, mosquitto_sub and mosquitto_rr.
//!
//! Exit codes, as mosquitto_pub's, mosquitto_sub's and mosquitto_rr's (also in `midge pub
//! --help` and the README): 0 success; 1 invalid arguments or a runtime failure (cannot
//! connect, connection lost, a publish or every subscription refused); 27 the `-W` time limit
//! passed; the broker's CONNACK code when it refused the connection (1–5 under 3.x, 128–255
//! under 5.0).

pub(crate) mod format;
pub(crate) mod publish;
pub(crate) mod rr;
pub(crate) mod subscribe;
pub(crate) mod transport;

use std::ffi::OsString;
use std::future::Future;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::parser::ValueSource;
use clap::{ArgAction, Args};
use midge_client::codec::{
    ByteStr, DisconnectProperties, PayloadFormat, PublishProperties, SubscriptionId,
    UnsubscribeProperties, UserProperties, Will, WillProperties, MAX_PACKET_SIZE,
};
use midge_client::tls::ClientTlsOptions;
use midge_client::{
    AuthError, Authenticator, Client, ClientBuilder, CloseReason, ConnectError, ConnectionEvent,
    Connector, ConnectorError, Limits, ProtocolVersion, QoS, ReasonCode, ReconnectPolicy, Scheme,
    TlsFailure,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// The exit code of the `-W` time limit: mosquitto_sub's and mosquitto_rr's.
pub(crate) const EXIT_TIMEOUT: u8 = 27;
/// A runtime failure.
const EXIT_FAILURE: u8 = 1;
/// Invalid arguments: 1, as mosquitto_pub, mosquitto_sub and mosquitto_rr (clap's usage
/// errors too, see [`parse_args`]).
const EXIT_USAGE: u8 = 1;

/// QoS 0 messages `sub` holds per filter before midge-client drops new ones (its default is
/// 1,000). The driver and the printer share one thread, so a burst that arrives in one read
/// lands in this buffer before any of it is printed.
const QOS0_BUFFER: usize = 100_000;

/// The longest UTF-8 string or binary value MQTT can encode (§1.5.4, §1.5.6).
const MAX_STRING: usize = 65_535;

/// The exit codes, for `--help`.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0        success (the codes are mosquitto_pub's, mosquitto_sub's and mosquitto_rr's)
  1        invalid arguments (bad topic, bad -L URL, unreadable file or certificate, --cert
           without --key, unsupported -D, ...), or a runtime failure: cannot connect,
           connection lost, a publish or every subscription refused
  27       the -W time limit passed
  1-5      under MQTT 3.x, the broker refused the connection: its CONNACK return code
           (4 bad user name or password, 5 not authorized)
  128-255  under MQTT 5.0, the broker refused the connection: its CONNACK reason code
           (134 bad user name or password, 135 not authorized)

Default options: midge pub, midge sub and midge rr read $XDG_CONFIG_HOME/midge_pub,
midge_sub or midge_rr (or ~/.config/midge_pub and so on when XDG_CONFIG_HOME is not set)
first, if there is one: one option a line, as on the command line (-q 1, or --retain), the
value being the rest of the line; lines that start with # are comments. The command line
overrides them (an option given twice takes its last value), except sub's -t, -T, -U and -D,
which add to the file's; pub's -t on the command line replaces the file's, and -L, --unix,
-h or -p on the command line set aside the file's way to connect.";

/// Why a command failed: the exit code and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_FAILURE,
            message: message.into(),
        }
    }

    pub(crate) fn timeout(seconds: u64) -> Self {
        Self {
            code: EXIT_TIMEOUT,
            message: format!("timed out after {seconds} s (-W)"),
        }
    }
}

/// Prints the failure as `midge <command>: <message>` (unless `quiet`) and turns it into
/// the exit code.
pub(crate) fn exit(command: &str, quiet: bool, result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !quiet {
                eprintln!("midge {command}: {}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}

/// Parses the command line as `T::parse` does, with two differences for `midge pub`, `midge
/// sub` and `midge rr`, as mosquitto_pub, mosquitto_sub and mosquitto_rr behave: the options
/// of the command's config file ([`config_file_args`]) come before the command line's, which
/// override them (an option given twice takes its last value; `-t`, `-T`, `-U` and `-D` add
/// up, but pub's `-t` on the command line replaces the file's), and a usage error exits with 1
/// (clap's code is 2).
pub(crate) fn parse_args<T: clap::Parser>() -> T {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let client = argv
        .get(1)
        .and_then(|a| a.to_str())
        .filter(|a| matches!(*a, "pub" | "sub" | "rr"))
        .map(str::to_owned);
    let mut command = T::command();
    if let Some(name) = &client {
        match config_file_args(name) {
            Ok(lines) => {
                let defaults = file_defaults(&T::command(), name, &argv, lines);
                argv.splice(2..2, defaults);
            }
            Err(message) => {
                eprintln!("midge {name}: {message}");
                std::process::exit(i32::from(EXIT_USAGE));
            }
        }
        command = command.mut_subcommand(name, last_value_wins);
    }
    let parsed = command
        .try_get_matches_from_mut(argv)
        .and_then(|matches| T::from_arg_matches(&matches))
        .map_err(|err| err.format(&mut command));
    match parsed {
        Ok(parsed) => parsed,
        Err(err) => {
            if client.is_some() && err.use_stderr() {
                let _ = err.print();
                std::process::exit(i32::from(EXIT_USAGE));
            }
            err.exit()
        }
    }
}

/// The payload options of `pub` and `rr`: one of them, once, as mosquitto_pub and
/// mosquitto_rr take them ("only one type of message can be sent at once").
const PAYLOAD_ARGS: [&str; 5] = ["message", "file", "lines", "null", "stdin"];

/// Lets every option of `command` be given again, the last value winning, as mosquitto's
/// clients take them (and as a config file's defaults need), except the payload options.
fn last_value_wins(mut command: clap::Command) -> clap::Command {
    let ids: Vec<clap::Id> = command
        .get_arguments()
        // Repeatable options (-t, -T, -D, -U) add up instead.
        .filter(|arg| {
            matches!(
                arg.get_action(),
                ArgAction::Set | ArgAction::SetTrue | ArgAction::SetFalse
            )
        })
        .map(|arg| arg.get_id().clone())
        .filter(|id| !PAYLOAD_ARGS.contains(&id.as_str()))
        .collect();
    for id in ids {
        command = command.mut_arg(id.clone(), |arg| arg.overrides_with(id));
    }
    command
}

/// Where `midge <command>` reads its default options: `$XDG_CONFIG_HOME/midge_<command>`, or
/// `$HOME/.config/midge_<command>` when XDG_CONFIG_HOME is not set.
pub(crate) fn config_file_path(command: &str) -> Option<PathBuf> {
    let name = format!("midge_{command}");
    match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join(name)),
        None => std::env::var_os("HOME")
            .filter(|d| !d.is_empty())
            .map(|home| PathBuf::from(home).join(".config").join(name)),
    }
}

/// The options of `midge <command>`'s config file ([`config_file_path`]), a line's
/// arguments each, none if there is no such file.
fn config_file_args(command: &str) -> Result<Vec<Vec<OsString>>, String> {
    let Some(path) = config_file_path(command) else {
        return Ok(Vec::new());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => config_lines(&text)
            .map_err(|(line, message)| format!("{} line {line}: {message}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(format!("cannot read {}: {err}", path.display())),
    }
}

/// The options of `midge <command>` that `args` (the command's own arguments) give, by the
/// ids of their arguments, as clap parses them (grouped short flags and all). Errors (a
/// required option missing, a bad value) are left for the real parse.
fn given_ids(command: &clap::Command, name: &str, args: &[OsString]) -> Vec<String> {
    let probe = command
        .clone()
        .mut_subcommand(name, last_value_wins)
        .ignore_errors(true);
    let argv = [OsString::from("midge"), OsString::from(name)]
        .into_iter()
        .chain(args.iter().cloned());
    let Ok(matches) = probe.try_get_matches_from(argv) else {
        return Vec::new();
    };
    let Some(sub) = matches.subcommand_matches(name) else {
        return Vec::new();
    };
    sub.ids()
        .filter(|id| sub.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_owned())
        .collect()
}

/// The config file's options (`lines`, one option a line) less those that the command line
/// (`argv`) replaces: pub's `-t` (and then the topic of the file's `-L` URL too), and where to
/// connect (`-L` or `--unix` replace the file's `-h`, `-p`, `-L` and `--unix`; `-h` or `-p`
/// replace its `-L` and `--unix`).
fn file_defaults(
    command: &clap::Command,
    name: &str,
    argv: &[OsString],
    lines: Vec<Vec<OsString>>,
) -> Vec<OsString> {
    let given = given_ids(command, name, argv.get(2..).unwrap_or_default());
    let gives = |id: &str| given.iter().any(|g| g == id);
    let mut dropped: Vec<&str> = Vec::new();
    let topic_given = name == "pub" && gives("topic");
    if topic_given {
        // pub's topics are the command line's when it gives any.
        dropped.push("topic");
    }
    if gives("url") || gives("unix") {
        dropped.extend(["host", "port", "url", "unix"]);
    } else if gives("host") || gives("port") {
        dropped.extend(["url", "unix"]);
    }
    let mut defaults = Vec::new();
    for line in lines {
        let in_line = given_ids(command, name, &line);
        if in_line.iter().any(|id| dropped.contains(&id.as_str())) {
            continue;
        }
        if topic_given && in_line.iter().any(|id| id == "url") {
            // The file's URL still says where to connect, but not where to publish.
            if let Some(url) = url_of(command, name, &line) {
                defaults.push(OsString::from("--url"));
                defaults.push(OsString::from(without_path(&url)));
                continue;
            }
        }
        defaults.extend(line);
    }
    defaults
}

/// The `-L` value that one config file line gives.
fn url_of(command: &clap::Command, name: &str, line: &[OsString]) -> Option<String> {
    let argv = [OsString::from("midge"), OsString::from(name)]
        .into_iter()
        .chain(line.iter().cloned());
    let matches = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(argv)
        .ok()?;
    matches
        .subcommand_matches(name)?
        .get_one::<String>("url")
        .cloned()
}

/// A broker URL without its path (an mqtt:// URL's topic).
fn without_path(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find('/') {
        Some(i) => &url[..start + i],
        None => url,
    }
}

/// The arguments a config file's text gives: one option a line, `-option value` (the value
/// is the rest of the line, spaces and all; `-D`'s values are split at spaces), as on the
/// command line. A value joined to its option (`--option=value`) is likewise the rest of the
/// line: the line is one argument. Short options run together (`-rd`, `-ifoo`) must be the
/// whole line, or the line is refused. Empty lines and lines that start with `#` are
/// skipped. The error gives the line number.
fn config_lines(text: &str) -> Result<Vec<Vec<OsString>>, (usize, String)> {
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut args = Vec::new();
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split(char::is_whitespace).next().unwrap_or(line);
        if first.starts_with("--") && first.contains('=') {
            // `--option=value`: the value is the rest of the line.
            lines.push(vec![OsString::from(line)]);
            continue;
        }
        if first.starts_with('-') && !first.starts_with("--") && first.chars().count() > 2 {
            if first != line {
                return Err((
                    number + 1,
                    format!(
                        "'{line}': a line holds one option ('-o VALUE', '--option=VALUE'); \
                         short options run together, or one with its value joined, must be \
                         the whole line"
                    ),
                ));
            }
            lines.push(vec![OsString::from(line)]);
            continue;
        }
        let (option, value) = match line.split_once(char::is_whitespace) {
            Some((option, value)) => (option, Some(value.trim_start())),
            None => (line, None),
        };
        args.push(OsString::from(option));
        match value {
            Some(value) if matches!(option, "-D" | "--property") => {
                args.extend(value.split_whitespace().map(OsString::from));
            }
            Some(value) => args.push(OsString::from(value)),
            None => {}
        }
        lines.push(args);
    }
    Ok(lines)
}

/// Runs `work` on a single-threaded runtime (one connection needs no more).
pub(crate) fn run(
    command: &str,
    quiet: bool,
    work: impl Future<Output = Result<(), Failure>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            return exit(
                command,
                quiet,
                Err(Failure::runtime(format!("cannot start the runtime: {err}"))),
            )
        }
    };
    let outcome = runtime.block_on(work);
    // A read of stdin (`-l`, `-s`) on tokio's blocking pool cannot be cancelled: do not wait
    // for it when -W or a failure ends the run while stdin is still open.
    runtime.shutdown_background();
    exit(command, quiet, outcome)
}

/// The options `midge pub`, `midge sub` and `midge rr` share: where to connect and how. `Debug` shows
/// no password (neither `-P` nor one in the `-L` URL).
#[derive(Clone, Args)]
pub(crate) struct ConnectArgs {
    /// Broker host (default localhost).
    #[arg(short = 'h', long)]
    pub(crate) host: Option<String>,
    /// Broker port (default 1883, or 8883 with TLS).
    #[arg(short, long)]
    pub(crate) port: Option<u16>,
    #[command(flatten)]
    pub(crate) transport: transport::TransportArgs,
    /// Client identifier (default: midge-pub-, midge-sub- or midge-rr- and 8 random hex
    /// digits).
    #[arg(short = 'i', long = "id")]
    pub(crate) id: Option<String>,
    /// Client identifier prefix: the id is this prefix followed by the process id (for
    /// brokers that grant rights by prefix). Not with -i.
    #[arg(short = 'I', long = "id-prefix", value_name = "PREFIX")]
    pub(crate) id_prefix: Option<String>,
    /// Local address (or host name) to connect from, to choose the network interface.
    #[arg(short = 'A', value_name = "ADDRESS")]
    pub(crate) bind_address: Option<String>,
    /// Accepted for mosquitto's sake: midge always sends at once (Nagle's algorithm off).
    #[arg(long)]
    pub(crate) nodelay: bool,
    /// Print no error messages (the exit code still tells).
    #[arg(long)]
    pub(crate) quiet: bool,
    /// User name.
    #[arg(short, long)]
    pub(crate) username: Option<String>,
    /// Password (needs -u).
    #[arg(short = 'P', long = "pw")]
    pub(crate) password: Option<String>,
    /// Keep Alive in seconds (0: off).
    #[arg(short, long, default_value_t = 60)]
    pub(crate) keepalive: u16,
    /// MQTT version: 5 (mqttv5), 311 (mqttv311, 3.1.1) or 31 (mqttv31, 3.1).
    #[arg(short = 'V', long = "protocol-version", default_value = "311", value_parser = parse_version)]
    pub(crate) version: ProtocolVersion,
    /// Persistent session: clean start off, so the broker keeps the session (and, for
    /// sub, queues messages) while the client is away. Needs -i. Under 5.0 the session never
    /// expires unless -x says otherwise.
    #[arg(short = 'c', long = "disable-clean-session")]
    pub(crate) persistent: bool,
    /// 5.0 Session Expiry Interval in seconds; -1 never expires (default: -1 with -c, else 0).
    #[arg(short = 'x', long = "session-expiry", allow_negative_numbers = true, value_parser = parse_expiry)]
    pub(crate) session_expiry: Option<u32>,
    /// Time limit in seconds for the whole run, connecting included; exits with 27 when it passes.
    #[arg(short = 'W', long = "timeout", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) timeout: Option<u64>,
    /// Will topic: the broker publishes the will there if the connection ends without DISCONNECT.
    #[arg(long)]
    pub(crate) will_topic: Option<String>,
    /// Will payload (default: empty).
    #[arg(long)]
    pub(crate) will_payload: Option<String>,
    /// Will QoS.
    #[arg(long, value_parser = parse_qos)]
    pub(crate) will_qos: Option<QoS>,
    /// Retain the will.
    #[arg(long)]
    pub(crate) will_retain: bool,
    /// MQTT 5.0 property: -D COMMAND NAME VALUE, or -D COMMAND user-property KEY VALUE.
    /// Supported: `connect` authentication-data, authentication-method, maximum-packet-size,
    /// receive-maximum, request-problem-information, request-response-information,
    /// session-expiry-interval, topic-alias-maximum, user-property; `publish` (pub and rr;
    /// rr sets response-topic itself) content-type, correlation-data, message-expiry-interval,
    /// payload-format-indicator, response-topic, topic-alias (midge picks the aliases),
    /// user-property; `subscribe` (sub only) subscription-identifier, user-property;
    /// `unsubscribe` (sub only) user-property; `disconnect` session-expiry-interval,
    /// user-property; `will` content-type, correlation-data, message-expiry-interval,
    /// payload-format-indicator, response-topic, user-property, will-delay-interval. Needs
    /// -V 5.
    #[arg(short = 'D', long = "property", num_args = 3..=4, action = ArgAction::Append,
          value_names = ["COMMAND", "NAME", "VALUE"])]
    pub(crate) properties: Vec<String>,
    /// Debug messages on stderr: connection and subscription progress.
    #[arg(short = 'd', long)]
    pub(crate) debug: bool,
    /// Print help (-h is the host, as in mosquitto).
    #[arg(long, action = ArgAction::Help)]
    pub(crate) help: Option<bool>,
    /// `pub`, `sub` or `rr`, for messages.
    #[arg(skip)]
    pub(crate) command: &'static str,
    /// Where to connect, once [`ConnectArgs::resolve`] has checked the flags.
    #[arg(skip)]
    pub(crate) target: Option<transport::Target>,
}

impl std::fmt::Debug for ConnectArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectArgs")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .field("id", &self.id)
            .field("id_prefix", &self.id_prefix)
            .field("bind_address", &self.bind_address)
            .field("nodelay", &self.nodelay)
            .field("quiet", &self.quiet)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .field("keepalive", &self.keepalive)
            .field("version", &self.version)
            .field("persistent", &self.persistent)
            .field("session_expiry", &self.session_expiry)
            .field("timeout", &self.timeout)
            .field("will_topic", &self.will_topic)
            .field("will_payload", &self.will_payload)
            .field("will_qos", &self.will_qos)
            .field("will_retain", &self.will_retain)
            .field("properties", &self.properties)
            .field("debug", &self.debug)
            .field("command", &self.command)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ConnectArgs {
    /// Checks -h, -p, -L, --unix and the TLS flags; returns the topic an
    /// `mqtt(s)://host/topic` URL gives.
    pub(crate) fn resolve(&mut self) -> Result<Option<String>, Failure> {
        let target = transport::target(
            self.host.as_deref(),
            self.port,
            "localhost",
            &self.transport,
        )
        .map_err(Failure::usage)?;
        let topic = target.topic.clone();
        self.target = Some(target);
        Ok(topic)
    }

    /// The broker, as messages name it (never with a password).
    pub(crate) fn at(&self) -> String {
        match &self.target {
            Some(target) => target.display(),
            None => format!(
                "{}:{}",
                self.host.as_deref().unwrap_or("localhost"),
                self.port.unwrap_or(1883)
            ),
        }
    }
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "31" | "3.1" | "mqttv31" => Ok(ProtocolVersion::V3_1),
        "311" | "3.1.1" | "mqttv311" => Ok(ProtocolVersion::V3_1_1),
        "5" | "5.0" | "mqttv5" => Ok(ProtocolVersion::V5),
        _ => Err(format!(
            "unknown MQTT version {s:?}: use 5 (mqttv5), 311 (mqttv311) or 31 (mqttv31)"
        )),
    }
}

pub(crate) fn parse_qos(s: &str) -> Result<QoS, String> {
    match s {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        "2" => Ok(QoS::ExactlyOnce),
        _ => Err(format!("invalid QoS {s:?}: use 0, 1 or 2")),
    }
}

fn parse_expiry(s: &str) -> Result<u32, String> {
    match s {
        "-1" | "∞" => Ok(u32::MAX),
        _ => s
            .parse()
            .map_err(|_| format!("invalid session expiry {s:?}: seconds, or -1 for never")),
    }
}

/// 5.0 properties from `-D`, by the packet they go in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Properties {
    /// `-D publish` (pub and rr), in the order given.
    pub(crate) publish: PublishProperties,
    pub(crate) will: WillProperties,
    /// `-D connect` properties.
    pub(crate) connect: ConnectProperties,
    /// `-D subscribe subscription-identifier` (sub only).
    pub(crate) subscription_identifier: Option<SubscriptionId>,
    /// `-D subscribe user-property` (sub only).
    pub(crate) subscribe: UserProperties,
    /// `-D unsubscribe user-property` (sub only).
    pub(crate) unsubscribe: UnsubscribeProperties,
    /// `-D disconnect`.
    pub(crate) disconnect: DisconnectProperties,
}

/// `-D connect` properties.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ConnectProperties {
    pub(crate) user_properties: Vec<(String, String)>,
    pub(crate) session_expiry: Option<u32>,
    pub(crate) receive_maximum: Option<u16>,
    pub(crate) maximum_packet_size: Option<u32>,
    pub(crate) topic_alias_maximum: Option<u16>,
    pub(crate) request_problem_information: Option<bool>,
    pub(crate) request_response_information: Option<bool>,
    pub(crate) authentication_method: Option<String>,
    pub(crate) authentication_data: Option<Bytes>,
}

fn string(what: &str, value: &str) -> Result<ByteStr, Failure> {
    if value.len() > MAX_STRING {
        return Err(Failure::usage(format!(
            "-D {what}: longer than {MAX_STRING} bytes"
        )));
    }
    Ok(ByteStr::from(value.to_owned()))
}

fn seconds(what: &str, value: &str) -> Result<u32, Failure> {
    value
        .parse()
        .map_err(|_| Failure::usage(format!("-D {what}: {value:?} is not a number of seconds")))
}

/// A 0-or-1 byte property (a flag, or the payload format indicator).
fn flag(what: &str, value: &str) -> Result<bool, Failure> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(Failure::usage(format!("-D {what}: use 0 or 1"))),
    }
}

/// The message properties `publish` and `will` share; false if `name` is none of them.
fn message_property(
    target: &mut PublishProperties,
    what: &str,
    name: &str,
    value: &str,
) -> Result<bool, Failure> {
    let invalid = |e: midge_client::codec::EncodeError| Failure::usage(format!("-D {what}: {e}"));
    match name {
        "content-type" => target
            .set_content_type(Some(string(what, value)?))
            .map_err(invalid)?,
        "response-topic" => {
            midge_topic::TopicName::new(value)
                .map_err(|e| Failure::usage(format!("-D {what}: {e}")))?;
            target
                .set_response_topic(Some(string(what, value)?))
                .map_err(invalid)?;
        }
        "correlation-data" => {
            string(what, value)?;
            target
                .set_correlation_data(Some(Bytes::from(value.to_owned())))
                .map_err(invalid)?;
        }
        "message-expiry-interval" => target.message_expiry_interval = Some(seconds(what, value)?),
        "payload-format-indicator" => {
            target.payload_format_indicator = Some(if flag(what, value)? {
                PayloadFormat::Utf8
            } else {
                PayloadFormat::Unspecified
            });
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The `-D` properties midge knows, for messages.
const SUPPORTED_PROPERTIES: &str = "connect authentication-data|authentication-method|\
    maximum-packet-size|receive-maximum|request-problem-information|\
    request-response-information|session-expiry-interval|topic-alias-maximum|user-property; \
    publish (pub, rr) content-type|correlation-data|message-expiry-interval|\
    payload-format-indicator|response-topic|topic-alias|user-property; subscribe (sub) \
    subscription-identifier|user-property; unsubscribe (sub) user-property; disconnect \
    session-expiry-interval|user-property; will content-type|correlation-data|\
    message-expiry-interval|payload-format-indicator|response-topic|user-property|\
    will-delay-interval";

/// Parses the `-D` arguments; `publish_allowed` is true for pub and rr, false for sub.
pub(crate) fn parse_properties(
    args: &ConnectArgs,
    publish_allowed: bool,
) -> Result<Properties, Failure> {
    let mut properties = Properties::default();
    if !args.properties.is_empty() && !args.version.is_v5() {
        return Err(Failure::usage(
            "-D sets MQTT 5.0 properties: add -V 5 (or -V mqttv5)",
        ));
    }
    // clap hands over the values of every -D in one list; user-property takes one more.
    let mut values = args.properties.iter().map(String::as_str);
    while let Some(command) = values.next() {
        let mut parts = vec![command];
        parts.extend(values.next());
        let arity = if parts.get(1) == Some(&"user-property") {
            2
        } else {
            1
        };
        parts.extend(values.by_ref().take(arity));
        let what = parts.join(" ");
        let invalid =
            |e: midge_client::codec::EncodeError| Failure::usage(format!("-D {what}: {e}"));
        let known = match parts.as_slice() {
            ["publish", "user-property", key, value] if publish_allowed => {
                properties
                    .publish
                    .push_user_property(string(&what, key)?, string(&what, value)?)
                    .map_err(invalid)?;
                true
            }
            // midge-client picks the aliases itself when the broker allows them.
            ["publish", "topic-alias", value] if publish_allowed => {
                value
                    .parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Failure::usage(format!("-D {what}: use 1 to 65535")))?;
                true
            }
            ["publish", name, value] if publish_allowed => {
                message_property(&mut properties.publish, &what, name, value)?
            }
            ["will", "user-property", key, value] => {
                properties
                    .will
                    .message
                    .push_user_property(string(&what, key)?, string(&what, value)?)
                    .map_err(invalid)?;
                true
            }
            ["will", "will-delay-interval", value] => {
                properties.will.will_delay_interval = Some(seconds(&what, value)?);
                true
            }
            ["will", name, value] => {
                message_property(&mut properties.will.message, &what, name, value)?
            }
            ["subscribe", "subscription-identifier", value] if !publish_allowed => {
                let id = value
                    .parse()
                    .ok()
                    .and_then(SubscriptionId::new)
                    .ok_or_else(|| Failure::usage(format!("-D {what}: use 1 to 268435455")))?;
                properties.subscription_identifier = Some(id);
                true
            }
            ["connect", "session-expiry-interval", value] => {
                properties.connect.session_expiry = Some(seconds(&what, value)?);
                true
            }
            ["connect", "receive-maximum", value] => {
                // 0 is a Protocol Error (5.0 §3.1.2.11.3).
                let n = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Failure::usage(format!("-D {what}: use 1 to 65535")))?;
                properties.connect.receive_maximum = Some(n);
                true
            }
            ["connect", "maximum-packet-size", value] => {
                // 0 is a Protocol Error (5.0 §3.1.2.11.4).
                let n = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Failure::usage(format!("-D {what}: use 1 to 4294967295")))?;
                properties.connect.maximum_packet_size = Some(n);
                true
            }
            ["connect", "topic-alias-maximum", value] => {
                let n = value
                    .parse()
                    .map_err(|_| Failure::usage(format!("-D {what}: use 0 to 65535")))?;
                properties.connect.topic_alias_maximum = Some(n);
                true
            }
            ["connect", "request-problem-information", value] => {
                properties.connect.request_problem_information = Some(flag(&what, value)?);
                true
            }
            ["connect", "request-response-information", value] => {
                properties.connect.request_response_information = Some(flag(&what, value)?);
                true
            }
            ["connect", "authentication-method", value] => {
                string(&what, value)?;
                properties.connect.authentication_method = Some((*value).to_owned());
                true
            }
            ["connect", "authentication-data", value] => {
                string(&what, value)?;
                properties.connect.authentication_data = Some(Bytes::from((*value).to_owned()));
                true
            }
            ["connect", "user-property", key, value] => {
                string(&what, key)?;
                string(&what, value)?;
                properties
                    .connect
                    .user_properties
                    .push(((*key).to_owned(), (*value).to_owned()));
                true
            }
            ["subscribe", "user-property", key, value] if !publish_allowed => {
                properties
                    .subscribe
                    .push((string(&what, key)?, string(&what, value)?));
                true
            }
            ["unsubscribe", "user-property", key, value] if !publish_allowed => {
                properties
                    .unsubscribe
                    .user_properties
                    .push((string(&what, key)?, string(&what, value)?));
                true
            }
            ["disconnect", "user-property", key, value] => {
                properties
                    .disconnect
                    .user_properties
                    .push((string(&what, key)?, string(&what, value)?));
                true
            }
            ["disconnect", "session-expiry-interval", value] => {
                properties.disconnect.session_expiry_interval = Some(seconds(&what, value)?);
                true
            }
            _ => false,
        };
        if !known {
            return Err(Failure::usage(format!(
                "-D {what}: unsupported property (supported: {SUPPORTED_PROPERTIES})"
            )));
        }
    }
    if properties.connect.session_expiry.is_some() && args.session_expiry.is_some() {
        return Err(Failure::usage(
            "-x and -D connect session-expiry-interval both set the session expiry: use one",
        ));
    }
    if properties.connect.authentication_data.is_some()
        && properties.connect.authentication_method.is_none()
    {
        return Err(Failure::usage(
            "-D connect authentication-data needs -D connect authentication-method",
        ));
    }
    if !properties.will.is_empty() && args.will_topic.is_none() {
        return Err(Failure::usage("-D will ... needs --will-topic"));
    }
    Ok(properties)
}

/// The client id `-i` gives, or `-I` (the prefix and the process id, as in mosquitto).
fn chosen_id(args: &ConnectArgs) -> Option<String> {
    args.id.clone().or_else(|| {
        args.id_prefix
            .as_ref()
            .map(|prefix| format!("{prefix}{}", std::process::id()))
    })
}

/// `-D connect authentication-method` (and `authentication-data`): CONNECT carries them;
/// a broker that continues the exchange (AUTH) is answered with an error, as the data
/// given is all there is.
struct FixedAuthentication {
    method: String,
    data: Option<Bytes>,
}

impl Authenticator for FixedAuthentication {
    fn method(&self) -> &str {
        &self.method
    }

    fn start(&mut self) -> Result<Option<Bytes>, AuthError> {
        Ok(self.data.clone())
    }

    fn respond(&mut self, _: Option<&[u8]>) -> Result<Option<Bytes>, AuthError> {
        Err(AuthError::new(
            "the broker continued the authentication, and -D gives only the first step",
        ))
    }

    fn finish(&mut self, _: Option<&[u8]>) -> Result<(), AuthError> {
        Ok(())
    }
}

/// Checks the connection options and makes the client builder.
pub(crate) fn builder(
    args: &ConnectArgs,
    properties: Properties,
    id_prefix: &str,
    reconnect: bool,
) -> Result<ClientBuilder, Failure> {
    let Properties {
        will: will_properties,
        connect,
        ..
    } = properties;
    if args.id.is_some() && args.id_prefix.is_some() {
        return Err(Failure::usage("-i and -I cannot be used together"));
    }
    let id = chosen_id(args);
    if args.persistent && id.is_none() {
        return Err(Failure::usage(
            "-c (persistent session) needs a client id (-i): a random one would never find its session again",
        ));
    }
    if args.session_expiry.is_some() && !args.version.is_v5() {
        return Err(Failure::usage("-x (session expiry) needs -V 5"));
    }
    if args.session_expiry == Some(u32::MAX) && id.is_none() {
        return Err(Failure::usage(
            "-x -1 (a session that never expires) needs a client id (-i): a random one would never find its session again",
        ));
    }
    let target = args
        .target
        .as_ref()
        .ok_or_else(|| Failure::usage("no broker address"))?;
    if args.password.is_some() && args.username.is_none() && target.url.username().is_none() {
        return Err(Failure::usage("-P (password) needs -u (user name)"));
    }
    if target.url.username().is_some() && args.username.is_some() {
        return Err(Failure::usage(
            "-L gives a user name, and so does -u: give it in one place",
        ));
    }
    if target.url.password().is_some() && args.password.is_some() {
        return Err(Failure::usage(
            "-L gives a password, and so does -P: give it in one place",
        ));
    }
    if let Some(id) = &id {
        if id.len() > MAX_STRING {
            return Err(Failure::usage(format!(
                "-i: client id longer than {MAX_STRING} bytes"
            )));
        }
        // 3.1 needs 1 to 23 characters (3.1 §3.1); 3.1.1 allows an empty one with a clean
        // session only [MQTT-3.1.3-7] (the broker assigns one); 5.0 always.
        let refused = match args.version {
            ProtocolVersion::V3_1 => id.is_empty(),
            ProtocolVersion::V3_1_1 => id.is_empty() && args.persistent,
            _ => false,
        };
        if refused {
            return Err(Failure::usage(
                "-i: an empty client id needs a clean session under 3.1.1, and is not allowed under 3.1",
            ));
        }
    }
    let id = id.unwrap_or_else(|| format!("{id_prefix}-{:08x}", fastrand::u32(..)));
    let local = args.bind_address.as_deref().map(bind_address).transpose()?;
    let connector = match (&target.tls, local) {
        (tls, Some(local)) => Connector::for_url_from(
            &target.url,
            tls.as_ref().unwrap_or(&ClientTlsOptions::default()),
            local,
        ),
        (Some(tls), None) => Connector::for_url_with_tls(&target.url, tls),
        (None, None) => Connector::for_url(&target.url),
    }
    .map_err(|e| match e {
        ConnectorError::Tls(e) => Failure::usage(format!("TLS: {e}")),
        e => Failure::usage(format!("-L: {e}")),
    })?;
    let mut builder = ClientBuilder::with_connector(connector)
        .version(args.version)
        .client_id(id)
        .keep_alive(args.keepalive)
        .clean_start(!args.persistent)
        .reconnect(reconnect.then(ReconnectPolicy::default));
    if args.version.is_v5() {
        let expiry = args
            .session_expiry
            .or(connect.session_expiry)
            .unwrap_or(if args.persistent { u32::MAX } else { 0 });
        builder = builder.session_expiry(expiry);
    }
    let mut limits = Limits::default();
    limits.max_buffered_qos0 = QOS0_BUFFER;
    // Messages as large as MQTT allows, as mosquitto_sub takes them (midge-client's default
    // is 1 MiB); under 5.0 the broker learns the limit from CONNECT.
    limits.max_packet_size = connect.maximum_packet_size.unwrap_or(MAX_PACKET_SIZE);
    if let Some(n) = connect.receive_maximum {
        limits.receive_maximum = n;
    }
    if let Some(n) = connect.topic_alias_maximum {
        limits.topic_alias_maximum = n;
    }
    builder = builder.limits(limits);
    let username = args
        .username
        .as_ref()
        .or(target.url.username().map(str::to_owned).as_ref())
        .cloned();
    let password = args
        .password
        .clone()
        .or(target.url.password().map(str::to_owned));
    if let Some(username) = &username {
        builder = match &password {
            Some(password) => builder.credentials(username.clone(), Bytes::from(password.clone())),
            None => builder.username(username.clone()),
        };
    }
    for (key, value) in &connect.user_properties {
        builder = builder.connect_user_property(key.clone(), value.clone());
    }
    if let Some(request) = connect.request_problem_information {
        builder = builder.request_problem_information(request);
    }
    if let Some(request) = connect.request_response_information {
        builder = builder.request_response_information(request);
    }
    if let Some(method) = connect.authentication_method {
        builder = builder.authenticator(FixedAuthentication {
            method,
            data: connect.authentication_data,
        });
    }
    match &args.will_topic {
        Some(topic) => {
            midge_topic::TopicName::new(topic)
                .map_err(|e| Failure::usage(format!("invalid will topic {topic:?}: {e}")))?;
            builder = builder.will(Will {
                topic: ByteStr::from(topic.clone()),
                payload: Bytes::from(args.will_payload.clone().unwrap_or_default()),
                qos: args.will_qos.unwrap_or(QoS::AtMostOnce),
                retain: args.will_retain,
                properties: will_properties,
            });
        }
        None if args.will_payload.is_some() || args.will_qos.is_some() || args.will_retain => {
            return Err(Failure::usage(
                "--will-payload, --will-qos and --will-retain need --will-topic",
            ));
        }
        None => {}
    }
    Ok(builder)
}

/// `-A`: an address, or a name resolved to its first address.
fn bind_address(text: &str) -> Result<IpAddr, Failure> {
    if let Ok(ip) = text.parse() {
        return Ok(ip);
    }
    (text, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|addr| addr.ip())
        .ok_or_else(|| Failure::runtime(format!("-A: cannot resolve {text:?}")))
}

/// A reason code as people read it: `not authorized (0x87)`.
pub(crate) fn describe(code: ReasonCode) -> String {
    match code.name() {
        Some(name) => format!(
            "{} (0x{:02X})",
            name.replace('_', " ").to_lowercase(),
            code.0
        ),
        None => format!("reason code 0x{:02X}", code.0),
    }
}

/// Why a connection could not be made or was lost, as a failure with its exit code.
pub(crate) fn connection_failure(args: &ConnectArgs, reason: Option<CloseReason>) -> Failure {
    let at = args.at();
    match reason {
        Some(CloseReason::Io(std::io::ErrorKind::ConnectionRefused)) => Failure::runtime(format!(
            "cannot connect to {at}: connection refused (is a broker listening there?)"
        )),
        Some(CloseReason::Io(std::io::ErrorKind::UnexpectedEof)) => {
            Failure::runtime(format!("the broker at {at} closed the connection"))
        }
        Some(CloseReason::Io(kind)) => {
            Failure::runtime(format!("connection to {at} failed: {kind}"))
        }
        Some(CloseReason::ConnectTimeout) => {
            Failure::runtime(format!("cannot connect to {at}: timed out"))
        }
        Some(CloseReason::Refused(code)) => Failure {
            code: refusal_exit_code(args.version, code),
            message: format!(
                "the broker at {at} refused the connection: {}",
                describe(code)
            ),
        },
        Some(CloseReason::DisconnectedByBroker(ReasonCode::SESSION_TAKEN_OVER)) => {
            Failure::runtime(
                "the broker disconnected us: session taken over (0x8E): another client connected with the same client id",
            )
        }
        Some(CloseReason::DisconnectedByBroker(code)) => {
            Failure::runtime(format!("the broker disconnected us: {}", describe(code)))
        }
        Some(CloseReason::ProtocolViolation(code)) => {
            Failure::runtime(format!("the broker broke the protocol: {}", describe(code)))
        }
        Some(CloseReason::ResponseTimeout) => {
            Failure::runtime(format!("no answer from {at} in time (CONNACK or PINGRESP)"))
        }
        Some(CloseReason::Tls(failure)) => {
            let hint = match failure {
                TlsFailure::UnknownIssuer => {
                    " (give the CA that signed it with --cafile or --capath)"
                }
                TlsFailure::NameMismatch if args.transport.url.is_some() => {
                    " (is the host of the -L URL a name in its certificate?)"
                }
                TlsFailure::NameMismatch => " (is -h a name in its certificate?)",
                TlsFailure::AlertReceived(116) => " (give --cert and --key)",
                _ => "",
            };
            Failure::runtime(format!("TLS with {at} failed: {failure}{hint}"))
        }
        Some(CloseReason::WebSocket(failure)) => {
            Failure::runtime(format!("WebSocket to {at} failed: {failure}"))
        }
        Some(_) | None => Failure::runtime(format!("the connection to {at} closed")),
    }
}

/// The exit code of a refused connection, as mosquitto's: the CONNACK code as sent. Under
/// 3.x, midge-client reports the 3.x return code as its 5.0 equivalent: mapped back here.
fn refusal_exit_code(version: ProtocolVersion, code: ReasonCode) -> u8 {
    if version.is_v5() {
        // 128-255 by construction: only failure codes refuse a connection.
        return if code.0 >= 0x80 { code.0 } else { EXIT_FAILURE };
    }
    match code {
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => 1,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => 2,
        ReasonCode::SERVER_UNAVAILABLE => 3,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => 4,
        ReasonCode::NOT_AUTHORIZED => 5,
        _ => EXIT_FAILURE,
    }
}

/// Connects: starts the client and waits for its first CONNACK.
pub(crate) async fn connect(
    args: &ConnectArgs,
    builder: ClientBuilder,
) -> Result<(Client, broadcast::Receiver<ConnectionEvent>), Failure> {
    let (client, mut events) = start(args, builder).await?;
    connected(args, &mut events).await?;
    Ok((client, events))
}

/// Resolves the host (for a clear message), then starts the client; it connects in the
/// background.
pub(crate) async fn start(
    args: &ConnectArgs,
    builder: ClientBuilder,
) -> Result<(Client, broadcast::Receiver<ConnectionEvent>), Failure> {
    if let Some(url) = args.target.as_ref().map(|t| &t.url) {
        if url.scheme() != Scheme::Unix {
            if let Err(err) = tokio::net::lookup_host((url.host(), url.port())).await {
                return Err(Failure::runtime(format!(
                    "cannot resolve host {:?}: {err}",
                    url.host()
                )));
            }
        }
    }
    let client = builder.build().map_err(|e| match e {
        ConnectError::InvalidConfig(e) => Failure::usage(format!("invalid options: {e}")),
        other => Failure::runtime(other.to_string()),
    })?;
    // On this single-threaded runtime the driver task has not run yet, so no event is missed.
    let events = client.events();
    Ok((client, events))
}

/// Waits for the first CONNACK. The first failure ends it, even when the client would
/// reconnect.
pub(crate) async fn connected(
    args: &ConnectArgs,
    events: &mut broadcast::Receiver<ConnectionEvent>,
) -> Result<(), Failure> {
    loop {
        match events.recv().await {
            Ok(ConnectionEvent::Connected { session_present }) => {
                if args.debug {
                    eprintln!(
                        "midge {}: connected to {} (MQTT {}, session present: {})",
                        args.command,
                        args.at(),
                        version_name(args.version),
                        if session_present { "yes" } else { "no" }
                    );
                }
                return Ok(());
            }
            Ok(ConnectionEvent::Disconnected { reason }) => {
                return Err(connection_failure(args, Some(reason)))
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return Err(connection_failure(args, None)),
        }
    }
}

pub(crate) fn version_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        _ => "5.0",
    }
}

/// The last connection loss among the events received so far.
pub(crate) fn last_disconnect(
    events: &mut broadcast::Receiver<ConnectionEvent>,
    mut last: Option<CloseReason>,
) -> Option<CloseReason> {
    loop {
        match events.try_recv() {
            Ok(ConnectionEvent::Disconnected { reason }) => last = Some(reason),
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return last,
        }
    }
}

/// When `-W` runs out.
pub(crate) fn deadline(args: &ConnectArgs) -> Option<Instant> {
    args.timeout
        .map(|seconds| Instant::now() + Duration::from_secs(seconds))
}

/// Sleeps until the deadline, or forever without one.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The largest payload MQTT can carry: the maximum Remaining Length (§2.2.3); the topic and
/// header make the real limit a little smaller, which the client then reports.
pub(crate) const MAX_PAYLOAD: u64 = 268_435_455;

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;

    #[derive(Parser)]
    #[command(disable_help_flag = true)]
    struct Cli {
        #[command(flatten)]
        connect: ConnectArgs,
    }

    fn connect_args(argv: &[&str]) -> ConnectArgs {
        let mut args = Cli::try_parse_from(std::iter::once("midge").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"))
            .connect;
        args.resolve().unwrap_or_else(|e| panic!("{}", e.message));
        args
    }

    #[test]
    fn debug_never_shows_a_password() {
        for argv in [
            &["-u", "u", "-P", "hunter2"][..],
            &["-L", "mqtt://u:hunter2@b/t"],
            &["-L", "mqtts://u:hun%23ter2@b:8883"],
        ] {
            let args = connect_args(argv);
            let shown = format!("{args:?}");
            assert!(!shown.contains("ter2"), "{shown}");
        }
    }

    #[test]
    fn name_mismatch_hint_names_the_flag_that_gave_the_host() {
        let failure = |argv: &[&str]| {
            connection_failure(
                &connect_args(argv),
                Some(CloseReason::Tls(TlsFailure::NameMismatch)),
            )
            .message
        };
        let by_url = failure(&["-L", "mqtts://127.0.0.2:8883/t"]);
        assert!(
            by_url.contains("the -L URL") && !by_url.contains("-h"),
            "{by_url}"
        );
        let by_host = failure(&["-h", "127.0.0.2", "--cafile", "ca.pem"]);
        assert!(by_host.contains("is -h a name"), "{by_host}");
    }

    #[test]
    fn reason_codes_read_as_words() {
        assert_eq!(
            describe(ReasonCode::NOT_AUTHORIZED),
            "not authorized (0x87)"
        );
        assert_eq!(describe(ReasonCode(0xFE)), "reason code 0xFE");
    }

    #[test]
    fn versions_as_mosquitto_names_them() {
        for (s, v) in [
            ("5", ProtocolVersion::V5),
            ("mqttv5", ProtocolVersion::V5),
            ("311", ProtocolVersion::V3_1_1),
            ("mqttv311", ProtocolVersion::V3_1_1),
            ("31", ProtocolVersion::V3_1),
            ("mqttv31", ProtocolVersion::V3_1),
        ] {
            assert_eq!(parse_version(s), Ok(v));
        }
        assert!(parse_version("4").is_err());
    }

    #[test]
    fn id_prefix_is_followed_by_the_process_id() {
        let pid = std::process::id();
        assert_eq!(
            chosen_id(&connect_args(&["-I", "rr-"])),
            Some(format!("rr-{pid}"))
        );
        assert_eq!(chosen_id(&connect_args(&["-i", "x"])), Some("x".into()));
        assert_eq!(chosen_id(&connect_args(&[])), None);
    }

    #[test]
    fn config_file_lines_are_options() {
        let text = "# defaults\n\n-h broker.local\n  -p 1884  \n-m hello world\n-r\n\
                    -D connect user-property site lab\n--id=x\n--id=abc -P pw\n-rd\n";
        let args: Vec<String> = config_lines(text)
            .expect("valid")
            .into_iter()
            .flatten()
            .map(|a| a.into_string().expect("utf-8"))
            .collect();
        assert_eq!(
            args,
            [
                "-h",
                "broker.local",
                "-p",
                "1884",
                "-m",
                "hello world",
                "-r",
                "-D",
                "connect",
                "user-property",
                "site",
                "lab",
                "--id=x",
                // The value joined to its option is the rest of the line.
                "--id=abc -P pw",
                "-rd",
            ]
        );
        // A short option with its value joined, and more after it: refused, with the line.
        let (line, message) = config_lines("-r\n-ifoo --retain\n").expect_err("refused");
        assert_eq!(line, 2);
        assert!(message.contains("'-ifoo --retain'"), "{message}");
        let (line, _) = config_lines("# x\n\n-rt topic\n").expect_err("refused");
        assert_eq!(line, 3);
    }

    #[test]
    fn config_options_the_command_line_replaces_are_dropped() {
        let command = <crate::Cli as clap::CommandFactory>::command();
        let os = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
        let file = "-h b\n-v\n--port=1884\n-t x\n-L mqtt://c:1885/file/topic\n-q 1\n";
        let defaults = |name: &str, cli: &[&str]| -> Vec<OsString> {
            let argv = os(&[&["midge", name], cli].concat());
            file_defaults(&command, name, &argv, config_lines(file).expect("valid"))
        };
        // Nothing replaced.
        assert_eq!(
            defaults("pub", &["-m", "x"]),
            os(&[
                "-h",
                "b",
                "-v",
                "--port=1884",
                "-t",
                "x",
                "-L",
                "mqtt://c:1885/file/topic",
                "-q",
                "1"
            ])
        );
        // -t, grouped after a flag: the file's -t goes, and its URL keeps no topic.
        assert_eq!(
            defaults("pub", &["-m", "x", "-rt", "cli/topic"]),
            os(&[
                "-h",
                "b",
                "-v",
                "--port=1884",
                "--url",
                "mqtt://c:1885",
                "-q",
                "1"
            ])
        );
        assert_eq!(
            defaults("pub", &["-m", "x", "--topic=cli/topic"]),
            os(&[
                "-h",
                "b",
                "-v",
                "--port=1884",
                "--url",
                "mqtt://c:1885",
                "-q",
                "1"
            ])
        );
        // sub's topics add up.
        assert_eq!(defaults("sub", &["-t", "a"]).len(), 10);
        // -p grouped after -d: the file's -L goes.
        assert_eq!(
            defaults("sub", &["-dp", "1999"]),
            os(&["-h", "b", "-v", "--port=1884", "-t", "x", "-q", "1"])
        );
        // -L: every where-to-connect option of the file goes.
        assert_eq!(
            defaults("pub", &["-L", "mqtt://d/t", "-m", "x"]),
            os(&["-v", "-t", "x", "-q", "1"])
        );
    }

    #[test]
    fn expiry_minus_one_is_never() {
        assert_eq!(parse_expiry("-1"), Ok(u32::MAX));
        assert_eq!(parse_expiry("30"), Ok(30));
        assert!(parse_expiry("-2").is_err());
    }
}
