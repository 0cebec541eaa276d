//! Helpers for the CLI tests: an in-process broker (or any server) on 127.0.0.1:0, the built
//! binary run with a bounded wait, a `midge sub` child that is ready once it reports
//! its subscriptions, and peer detection with loud skips.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code, unreachable_pub)]

pub mod mosquitto;

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use midge_broker::{Broker, BrokerConfig, BrokerStats, Hooks};

/// The longest any child process may run before the test kills it and fails.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Runs `serve` on a runtime of its own in a background thread, for the rest of the test
/// process, and returns the address it sends once it listens.
pub fn serve_in_background<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(mpsc::Sender<SocketAddr>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(serve(tx));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("server address")
}

/// No `$SYS`: it would publish messages of its own.
pub fn test_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.sys.interval_secs = 0;
    config
}

/// Starts a broker with `config` and `hooks` on 127.0.0.1:0 in a background runtime; it lives
/// until the test process ends.
pub fn start_broker_configured(config: BrokerConfig, hooks: impl Hooks) -> SocketAddr {
    serve_in_background(move |addr| async move {
        let broker = Broker::builder()
            .config(config)
            .hooks(hooks)
            .bind("127.0.0.1:0".parse().expect("addr"))
            .start()
            .await
            .expect("broker starts");
        addr.send(broker.local_addr()).expect("send addr");
        std::future::pending::<()>().await;
    })
}

/// A broker started by [`start_broker_counted`]: its address, and its counters on request.
pub struct CountedBroker {
    pub addr: SocketAddr,
    ask: tokio::sync::mpsc::UnboundedSender<mpsc::Sender<BrokerStats>>,
}

impl CountedBroker {
    /// The broker's counters now.
    pub fn stats(&self) -> BrokerStats {
        let (tx, rx) = mpsc::channel();
        self.ask.send(tx).expect("broker runs");
        rx.recv_timeout(Duration::from_secs(10))
            .expect("broker answers")
    }
}

/// As [`start_broker_configured`] with [`midge_broker::AllowAll`], keeping the broker's
/// handle so that a test can read its counters (what it dropped, and why).
pub fn start_broker_counted(config: BrokerConfig) -> CountedBroker {
    let (ask, mut asked) = tokio::sync::mpsc::unbounded_channel::<mpsc::Sender<BrokerStats>>();
    let addr = serve_in_background(move |addr| async move {
        let broker = Broker::builder()
            .config(config)
            .hooks(midge_broker::AllowAll)
            .bind("127.0.0.1:0".parse().expect("addr"))
            .start()
            .await
            .expect("broker starts");
        addr.send(broker.local_addr()).expect("send addr");
        while let Some(reply) = asked.recv().await {
            let _ = reply.send(broker.stats());
        }
        std::future::pending::<()>().await;
    });
    CountedBroker { addr, ask }
}

/// Starts a broker with [`test_config`] and `hooks`, as [`start_broker_configured`].
pub fn start_broker_with(hooks: impl Hooks) -> SocketAddr {
    start_broker_configured(test_config(), hooks)
}

pub fn start_broker() -> SocketAddr {
    start_broker_with(midge_broker::AllowAll)
}

/// What a finished child left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts exit code 0, showing stderr otherwise.
    pub fn ok(self) -> Self {
        assert_eq!(self.code(), Some(0), "stderr: {}", self.stderr);
        self
    }
}

/// `midge <args>` with `-h 127.0.0.1 -p <port>` after the subcommand.
pub fn midge(sub: &str, addr: SocketAddr, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command
        .arg(sub)
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args);
    command
}

/// Runs a command to its end with `stdin` as input, killing it after [`LIMIT`].
pub fn run(mut command: Command, stdin: &[u8]) -> Finished {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawns");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let finished = wait(child, LIMIT);
    let _ = writer.join();
    finished
}

/// Waits for `child` (stdout and stderr piped) for at most `limit`; kills it and panics
/// after that.
pub fn wait(mut child: Child, limit: Duration) -> Finished {
    let mut stdout = child.stdout.take().expect("stdout piped");
    let stderr = child.stderr.take();
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = String::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_string(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Finished {
        status,
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
    }
}

/// A running child whose stderr is read line by line, so that the test can wait for what it
/// reports. Killed when dropped.
pub struct Running {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Spawns `command` (adds nothing: pass `-d` for progress lines) with stdin piped.
    pub fn spawn(mut command: Command) -> Self {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawns");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until `n` lines of stderr contain `text`; panics after [`LIMIT`].
    pub fn wait_for(&mut self, text: &str, n: usize) {
        let deadline = Instant::now() + LIMIT;
        while self.seen.iter().filter(|l| l.contains(text)).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no {n} × {text:?} on stderr; saw {:?}", self.seen),
            }
        }
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    /// Waits for the end (at most [`LIMIT`]); stderr holds the lines seen after the ones
    /// already waited for.
    pub fn finish(mut self) -> Finished {
        if let Some(child) = self.child.as_mut() {
            drop(child.stdin.take());
        }
        self.finish_keeping_stdin()
    }

    /// Sends SIGINT (Ctrl-C) and waits for the end.
    pub fn interrupt(self) -> Finished {
        self.signal("-INT")
    }

    /// Sends SIGTERM (`kill`, `docker stop`, systemd) and waits for the end.
    pub fn terminate(self) -> Finished {
        self.signal("-TERM")
    }

    /// Sends `signal` (`kill`'s option: `-INT`, `-TERM`) and waits for the end.
    pub fn signal(mut self, signal: &str) -> Finished {
        let pid = self.child().id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.finish_keeping_stdin()
    }

    /// As [`Running::finish`], with stdin left open: the child must end on its own.
    pub fn finish_keeping_stdin(mut self) -> Finished {
        let child = self.child.take().expect("running");
        let mut finished = wait(child, LIMIT);
        let mut all = self.seen.join("\n");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
            all.push('\n');
            all.push_str(&line);
        }
        finished.stderr = all;
        finished
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `midge sub -d <args>`, returned once it has made `filters` subscriptions.
pub fn subscriber(addr: SocketAddr, args: &[&str], filters: usize) -> Running {
    let mut command = midge("sub", addr, &["-d"]);
    command.args(args);
    let mut sub = Running::spawn(command);
    sub.wait_for("subscribed to", filters);
    sub
}

/// A port nothing listens on (bound, read, released).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// What a request reaching [`responder`] carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub payload: Vec<u8>,
    pub response_topic: Option<String>,
    pub correlation: Option<Vec<u8>>,
}

/// One message [`responder`] sends back: its Correlation Data (none: not set) and payload.
pub type Reply = (Option<Vec<u8>>, Vec<u8>);

/// An MQTT 5.0 responder (midge-client) on `addr`, in a background thread for the rest of the
/// test process: subscribed to `request_topic` when this returns, it answers each request
/// with the replies `answer` makes, published (QoS 1) to the request's Response Topic, and
/// sends each request it got on the returned channel.
pub fn responder(
    addr: SocketAddr,
    request_topic: &str,
    answer: impl Fn(&Request) -> Vec<Reply> + Send + 'static,
) -> mpsc::Receiver<Request> {
    use midge_client::{Client, ProtocolVersion, PublishOptions, QoS, SubscribeOptions};
    let (ready_tx, ready) = mpsc::channel();
    let (requests_tx, requests) = mpsc::channel();
    let topic = request_topic.to_owned();
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let client = Client::builder(addr.ip().to_string(), addr.port())
                .version(ProtocolVersion::V5)
                .connect()
                .await
                .expect("the responder connects");
            let (_, mut messages) = client
                .subscribe(topic, SubscribeOptions::with_qos(QoS::AtLeastOnce))
                .await
                .expect("the responder subscribes");
            ready_tx.send(()).expect("ready");
            while let Some(message) = messages.recv().await {
                let request = Request {
                    payload: message.payload().to_vec(),
                    response_topic: message.response_topic().map(|t| t.as_str().to_owned()),
                    correlation: message.correlation_data().map(|c| c.to_vec()),
                };
                if let Some(to) = &request.response_topic {
                    for (correlation, payload) in answer(&request) {
                        let mut options = PublishOptions::with_qos(QoS::AtLeastOnce);
                        if let Some(correlation) = correlation {
                            options = options.correlation_data(correlation);
                        }
                        client
                            .publish(to.clone(), payload, options)
                            .await
                            .expect("the responder answers");
                    }
                }
                if requests_tx.send(request).is_err() {
                    break;
                }
            }
        });
    });
    ready
        .recv_timeout(LIMIT)
        .expect("the responder is subscribed");
    requests
}

/// The usual answer: `re: ` and the request's payload, with its Correlation Data.
pub fn echo(request: &Request) -> Vec<Reply> {
    let mut payload = b"re: ".to_vec();
    payload.extend_from_slice(&request.payload);
    vec![(request.correlation.clone(), payload)]
}
