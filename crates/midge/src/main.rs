#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bench;
mod config_file;
mod ctl;
mod decode;
mod logging;
mod manual;
mod mqtt;
mod passwd;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, CommandFactory, Parser, Subcommand};
use midge_broker::{BindAddr, Broker, BrokerConfig, LogFormat};
use midge_store::{DiskOptions, DiskStore};

/// jemalloc rather than the system allocator. The broker allocates a message on the thread
/// that routes it and frees it on the thread that writes it out; glibc's malloc returns such
/// a block to the arena of the thread that allocated it under that arena's lock, so routing
/// and writing contend on every delivery. With 10,000 subscribers on distinct filters this
/// cut the broker's CPU per delivery by about a third (docs/benchmarks.md). Its size classes
/// also set what an idle connection costs: the connection task's future is kept within the
/// 1 KiB class.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// midge: an MQTT 3.1/3.1.1/5.0 toolkit.
#[derive(Debug, Parser)]
#[command(name = "midge", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an MQTT broker (the default when no subcommand is given).
    #[command(after_help = config_file::BROKER_EXIT_CODES)]
    Broker(BrokerArgs),
    /// Publish messages, as mosquitto_pub does (-h is the host; --help for help).
    #[command(
        disable_help_flag = true,
        disable_version_flag = true,
        after_help = mqtt::EXIT_CODES_HELP
    )]
    Pub(Box<mqtt::publish::PubArgs>),
    /// Subscribe and print messages, as mosquitto_sub does (-h is the host; --help for help).
    #[command(
        disable_help_flag = true,
        disable_version_flag = true,
        after_help = mqtt::EXIT_CODES_HELP
    )]
    Sub(Box<mqtt::subscribe::SubArgs>),
    /// Send one request and print its response, as mosquitto_rr does (MQTT 5.0
    /// request/response; -h is the host; --help for help).
    #[command(
        disable_help_flag = true,
        disable_version_flag = true,
        after_help = mqtt::EXIT_CODES_HELP
    )]
    Rr(Box<mqtt::rr::RrArgs>),
    /// Measure a broker: connections, publishers, subscribers, end-to-end scenarios.
    Bench(Box<bench::BenchArgs>),
    /// Manage password files, as mosquitto_passwd does: -c creates, -D deletes a user, -U
    /// hashes a plain-text file.
    #[command(after_help = passwd::HELP)]
    Passwd(passwd::PasswdArgs),
    /// Inspect a broker's store, the file of `[persistence] path`.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Ask a running broker over its HTTP admin API (`[http]` in its configuration).
    #[command(after_help = ctl::HELP)]
    Ctl(ctl::CtlArgs),
    /// Decode MQTT packets from hex, raw bytes or a pcap/pcapng capture, for debugging.
    #[command(disable_version_flag = true, after_help = decode::HELP)]
    Decode(decode::DecodeArgs),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    Completions(manual::CompletionsArgs),
    /// Print midge's man page (roff), or a subcommand's; --out DIR writes them all.
    Man(manual::ManArgs),
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Print what a store holds: sessions, messages, retained messages, and records that do
    /// not decode. The file is read, not changed (a store left by a crash is repaired first).
    /// Exit code 0, or 1 with the reason on stderr for a store that is missing, damaged, in
    /// use by a running broker, or of a format this midge does not read.
    Info {
        /// The store's file.
        path: PathBuf,
    },
}

#[derive(Debug, Default, Args)]
struct BrokerArgs {
    /// Configuration file (TOML); see docs/broker-config.md. Without one, built-in defaults.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Port to listen on (overrides the port of the file's first listener).
    #[arg(short, long)]
    port: Option<u16>,
    /// IP address to listen on, such as 127.0.0.1 or :: (overrides the address of the file's
    /// first listener). Host names are not resolved.
    #[arg(long, value_name = "ADDR", value_parser = config_file::parse_ip)]
    bind: Option<IpAddr>,
    /// Verbose logging: -v debug, -vv trace (instead of `[log] level`). RUST_LOG, when set,
    /// takes precedence over both.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// How log lines are written: `text`, or `json` (one object per line). Overrides
    /// `[log] format`.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormatArg>,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(format: LogFormatArg) -> Self {
        match format {
            LogFormatArg::Text => Self::Text,
            LogFormatArg::Json => Self::Json,
        }
    }
}

fn main() -> ExitCode {
    let cli = mqtt::parse_args::<Cli>();
    match cli.command {
        Some(Command::Broker(args)) => broker(args),
        Some(Command::Pub(args)) => mqtt::publish::main(*args),
        Some(Command::Sub(args)) => mqtt::subscribe::main(*args),
        Some(Command::Bench(args)) => bench::main(*args),
        Some(Command::Passwd(args)) => passwd::main(args),
        Some(Command::Store(command)) => store(command),
        Some(Command::Ctl(args)) => ctl::main(args),
        Some(Command::Decode(args)) => decode::main(args),
        Some(Command::Rr(args)) => mqtt::rr::main(*args),
        Some(Command::Completions(args)) => manual::completions(&args, Cli::command()),
        Some(Command::Man(args)) => manual::man(&args, Cli::command()),
        None => broker(BrokerArgs::default()),
    }
}

fn store(command: StoreCommand) -> ExitCode {
    match command {
        StoreCommand::Info { path } => match midge_store::info(&path) {
            Ok(info) => {
                println!("store {}", path.display());
                print!("{info}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("midge store info: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Opens the store of `[persistence] path`, if one is set.
fn open_store(config: &BrokerConfig) -> Result<Option<DiskStore>, String> {
    let Some(path) = &config.persistence.path else {
        return Ok(None);
    };
    let options = DiskOptions::from_config(&config.persistence);
    let store = DiskStore::open(path, options.clone()).map_err(|e| e.to_string())?;
    let held = store.opened();
    tracing::info!(
        path = %path.display(),
        sync = ?options.sync,
        sync_interval_ms = options.sync_interval.as_millis() as u64,
        max_disk_bytes = ?options.max_disk_bytes,
        sessions = held.sessions,
        will_only_sessions = held.will_only_sessions,
        messages = held.messages,
        retained = held.retained,
        undecodable = held.undecodable,
        "persistence: store opened"
    );
    Ok(Some(store))
}

fn load_config(args: &BrokerArgs) -> Result<BrokerConfig, String> {
    let (mut config, file) = match &args.config {
        Some(path) => {
            let (config, file) = config_file::ConfigFile::load(path)?;
            (config, Some(file))
        }
        None => (BrokerConfig::default(), None),
    };
    if args.bind.is_some() || args.port.is_some() {
        let first = config
            .listeners
            .first_mut()
            .ok_or("at least one [[listener]] is needed")?;
        let BindAddr::Tcp(bind) = first.bind else {
            return Err(format!(
                "-p and --bind set the first listener's address, but it is {}",
                first.bind
            ));
        };
        first.bind = BindAddr::Tcp(SocketAddr::new(
            args.bind.unwrap_or(bind.ip()),
            args.port.unwrap_or(bind.port()),
        ));
    }
    config.validate().map_err(|e| match &file {
        Some(file) => file.invalid(&e),
        None => e.to_string(),
    })?;
    logging::config_filter(config.log.level.as_deref()).map_err(|e| match &file {
        Some(file) => file.invalid_key(Some("log.level"), &e),
        None => e,
    })?;
    Ok(config)
}

fn broker(args: BrokerArgs) -> ExitCode {
    // The configuration first, since it says how to log: what is wrong with it goes to
    // stderr as it is.
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("midge broker: {err}");
            return ExitCode::from(config_file::EXIT_USAGE);
        }
    };
    let format = args.log_format.map_or(config.log.format, LogFormat::from);
    let logging = logging::init(args.verbose, &config.log, format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Before the broker starts, so that a signal while it starts is not fatal (their
        // default action ends the process).
        let stop = stop_signal();
        tokio::pin!(stop);
        #[cfg(unix)]
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        // Once the signals are ours (a reload asked for while a large store opens must not end
        // the process): opening reads and checks the whole file, on this thread, which is
        // none of the runtime's workers.
        let store = match open_store(&config) {
            Ok(store) => store,
            Err(err) => {
                tracing::error!("{err}");
                return ExitCode::FAILURE;
            }
        };
        // Stopped while the store opened (Ctrl-C, `docker stop`): stop before serving anyone.
        tokio::select! {
            biased;
            () = &mut stop => {
                tracing::info!("stopped while the store opened");
                return ExitCode::SUCCESS;
            }
            () = std::future::ready(()) => {}
        }
        // `[cluster]`: NATS first; a node never starts without its cluster.
        let node = match &config.cluster {
            None => None,
            Some(cluster) => tokio::select! {
                biased;
                () = &mut stop => return ExitCode::SUCCESS,
                node = midge_cluster::Node::connect(cluster) => match node {
                    Ok(node) => Some(node),
                    Err(err) => {
                        tracing::error!("{err}");
                        return ExitCode::FAILURE;
                    }
                },
            },
        };
        let http_config = config.http.clone();
        #[cfg(unix)]
        let mut reloading = Reloading {
            hangups: match hangups {
                Ok(hangups) => Some(hangups),
                Err(_) => {
                    tracing::warn!(
                        "cannot listen for SIGHUP: the configuration will not be reloaded"
                    );
                    None
                }
            },
            args,
            logging,
            log: config.log.clone(),
        };
        #[cfg(not(unix))]
        let _ = (args, logging);
        let mut builder = Broker::builder().config(config);
        let store = store.map(Arc::new);
        if let Some(store) = &store {
            builder = builder.store(store.clone());
        }
        if let Some(node) = &node {
            builder = builder.cluster(node.cluster());
        }
        let broker = match builder.start().await {
            Ok(broker) => broker,
            Err(err) => {
                tracing::error!("{err}");
                return ExitCode::FAILURE;
            }
        };
        let cluster = node.map(|node| node.attach(&broker));
        let http = match start_http(&http_config, &broker) {
            Ok(http) => http,
            Err(err) => {
                tracing::error!("{err}");
                broker.shutdown().await;
                return ExitCode::FAILURE;
            }
        };
        #[cfg(unix)]
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = reloading.hangup() => reloading.reload(&broker),
            }
        }
        #[cfg(not(unix))]
        stop.await;
        tracing::info!("shutting down");
        broker.shutdown().await;
        if let Some(cluster) = cluster {
            cluster.shutdown().await;
        }
        if let Some(http) = http {
            http.shutdown().await;
        }
        // With `sync = "interval"` the last changes wait for the next commit: make them now.
        if let Some(store) = &store {
            if let Err(err) = store.flush() {
                tracing::error!(%err, "the store did not take the last changes");
                return ExitCode::FAILURE;
            }
        }
        ExitCode::SUCCESS
    })
}

/// Starts the HTTP endpoint (metrics, health checks, admin API, dashboard) if `[http] bind`
/// is set. Its `/ready` says "not ready" while the broker stops, so it stops after the broker.
fn start_http(
    config: &midge_broker::HttpConfig,
    broker: &midge_broker::BrokerHandle,
) -> Result<Option<midge_http::HttpServer>, String> {
    if config.bind.is_none() {
        if config.token.is_some() || config.token_file.is_some() {
            tracing::warn!(
                "[http] token or token_file is set but [http] bind is not: there is no HTTP \
                 endpoint, and no admin API (set bind to serve it)"
            );
        }
        return Ok(None);
    }
    let server = midge_http::serve(broker.admin(), config).map_err(|e| e.to_string())?;
    tracing::info!(
        address = %server.local_addr(),
        "HTTP endpoint listening (/metrics, /health, /ready, /api/v1, dashboard at /)"
    );
    Ok(Some(server))
}

/// The target of the reload's log lines (`[log] level = "warn,midge::reload=info"` shows
/// them alone).
#[cfg(unix)]
const RELOAD: &str = "midge::reload";

/// What a SIGHUP reloads the configuration with.
#[cfg(unix)]
struct Reloading {
    hangups: Option<tokio::signal::unix::Signal>,
    /// The command line: the same file, and the same `-p` and `--bind`.
    args: BrokerArgs,
    logging: logging::Logging,
    /// `[log]` as the file had it at the last (re)load.
    log: midge_broker::LogConfig,
}

#[cfg(unix)]
impl Reloading {
    /// The next SIGHUP (never, if there is no listening for them).
    async fn hangup(&mut self) {
        if let Some(hangups) = &mut self.hangups {
            if hangups.recv().await.is_some() {
                return;
            }
            self.hangups = None;
        }
        std::future::pending().await
    }

    /// Reads the configuration file again (with the same command-line overrides) and, if it
    /// is valid, applies what may change while the broker runs: `[log] level`, the files
    /// (TLS certificates, password and ACL files) and the limits the broker takes live. An
    /// invalid file changes nothing. Logs what was applied, and what changed but waits for a
    /// restart.
    fn reload(&mut self, broker: &midge_broker::BrokerHandle) {
        let Some(path) = &self.args.config else {
            tracing::info!(target: RELOAD, "SIGHUP: reloading TLS certificates and password and ACL files (no configuration file)");
            let _ = broker.file_reloader().reload();
            return;
        };
        tracing::info!(target: RELOAD, path = %path.display(), "SIGHUP: reloading the configuration");
        let new = match load_config(&self.args) {
            Ok(new) => new,
            Err(err) => {
                tracing::error!(target: RELOAD, "{err}; keeping the configuration in use");
                return;
            }
        };
        // The broker's part first: if it refuses the configuration, nothing has changed.
        let reload = match broker.reload_config(&new) {
            Ok(reload) => reload,
            Err(err) => {
                tracing::error!(target: RELOAD, "{err}; keeping the configuration in use");
                return;
            }
        };
        let mut applied: Vec<String> = Vec::new();
        let mut needs_restart: Vec<String> = Vec::new();
        if new.log.level != self.log.level {
            match self.logging.fixed_by() {
                Some(by) => tracing::info!(
                    target: RELOAD,
                    "log.level changed, but {by} sets the level: it stays as {by} set it"
                ),
                None => match self.logging.set_level(new.log.level.as_deref()) {
                    Ok(()) => applied.push("log.level".into()),
                    Err(err) => {
                        tracing::error!(target: RELOAD, "{err}; keeping the log level in use")
                    }
                },
            }
        }
        if new.log.format != self.log.format && self.args.log_format.is_none() {
            needs_restart.push("log.format".into());
        }
        // Errors are logged by the broker, naming the file and the line; each file that
        // loads is applied.
        let files = broker.file_reloader().reload();
        let not_log = |key: &String| !key.starts_with("log.");
        applied.extend(reload.applied.into_iter().filter(not_log));
        needs_restart.extend(reload.needs_restart.into_iter().filter(not_log));
        let files = match files {
            Ok(()) => "reloaded",
            Err(_) => "reloaded with errors (see above)",
        };
        tracing::info!(
            target: RELOAD,
            applied = %if applied.is_empty() { "none".to_owned() } else { applied.join(", ") },
            files,
            "configuration reloaded"
        );
        if !needs_restart.is_empty() {
            tracing::warn!(
                target: RELOAD,
                keys = %needs_restart.join(", "),
                "configuration changes that take effect only after a restart"
            );
        }
        self.log.level = new.log.level;
        // `format` stays as the logger was built: a change waits for a restart, and is named
        // again at each reload until then.
    }
}

/// What waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM. On Unix both are listened for from
/// this call on, not from the first poll: a signal while the broker starts stops it
/// gracefully instead of ending the process (the default action). Must be called within the
/// runtime.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (Ok(mut interrupt), Err(_)) => {
                    interrupt.recv().await;
                }
                (Err(_), _) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "midge",
            "broker",
            "-p",
            "1884",
            "--bind",
            "127.0.0.1",
            "-vv",
        ])
        .expect("parses");
        let Some(Command::Broker(args)) = cli.command else {
            panic!("broker subcommand");
        };
        assert_eq!(args.port, Some(1884));
        assert_eq!(args.verbose, 2);
        let cli = Cli::try_parse_from(["midge", "store", "info", "broker.redb"]).expect("parses");
        assert!(matches!(
            cli.command,
            Some(Command::Store(StoreCommand::Info { .. }))
        ));
        let config = load_config(&args).expect("valid");
        assert_eq!(
            config.listeners[0].bind,
            BindAddr::Tcp("127.0.0.1:1884".parse().expect("addr"))
        );
    }

    #[test]
    fn defaults_listen_on_1883() {
        let config = load_config(&BrokerArgs::default()).expect("valid");
        assert_eq!(
            config.listeners[0].bind,
            BindAddr::Tcp("0.0.0.0:1883".parse().expect("addr"))
        );
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../midge.example.toml");
        let config: BrokerConfig = toml::from_str(text).expect("parses");
        config.validate().expect("valid");
    }
}
