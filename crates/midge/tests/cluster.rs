//! `midge broker` with `[cluster]`, on the real binary: NATS unreachable at start stops the
//! broker with a clear error; a bad `[cluster]` key stops it as a configuration error; two
//! brokers on one real nats-server pass messages (`midge pub` on one, `midge sub` on the
//! other). nats-server missing: skipped loudly, a failure under `MIDGE_REQUIRE_PEERS=1`.
#![allow(missing_docs)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{midge, run, Running};

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A directory of its own for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("midge-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn broker(config: &Path) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command
        .arg("broker")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG");
    Running::spawn(command)
}

fn write_config(path: &Path, port: u16, cluster: &str) {
    std::fs::write(
        path,
        format!("[listener]\nbind = \"127.0.0.1:{port}\"\n[sys]\ninterval_secs = 0\n[cluster]\n{cluster}"),
    )
    .expect("write");
}

#[test]
fn nats_unreachable_at_start_stops_the_broker_with_a_clear_error() {
    let dir = TempDir::new("unreachable");
    let config = dir.path("midge.toml");
    let nats = free_port();
    write_config(
        &config,
        free_port(),
        &format!("nats = \"nats://127.0.0.1:{nats}\"\nnode_id = \"a\"\nconnect_timeout_ms = 500\n"),
    );
    let finished = broker(&config).finish();
    assert_eq!(finished.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished.stderr.contains(&format!(
            "cannot connect to NATS at nats://127.0.0.1:{nats}"
        )),
        "{}",
        finished.stderr
    );
}

#[test]
fn a_bad_cluster_key_stops_the_broker_with_a_message() {
    let dir = TempDir::new("bad-key");
    let config = dir.path("midge.toml");
    write_config(
        &config,
        free_port(),
        "nats = \"nats://127.0.0.1:4222\"\nnode_id = \"a.b\"\n",
    );
    let finished = broker(&config).finish();
    assert_eq!(finished.code(), Some(2), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("cluster: node_id \"a.b\""),
        "{}",
        finished.stderr
    );
}

/// nats-server with JetStream on a free port, killed on drop.
struct Nats(Child);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn two_brokers_on_one_nats_server_pass_messages() {
    let installed = midge_testkit::peers::installed("nats-server", &["--version"]);
    if !midge_testkit::peers::require("nats-server", installed) {
        return;
    }
    let dir = TempDir::new("two");
    let port = free_port();
    let nats = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.path("nats"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts");
    let _nats = Nats(nats);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for name in ["one", "two"] {
        let config = dir.path(&format!("{name}.toml"));
        let mqtt = free_port();
        write_config(
            &config,
            mqtt,
            &format!("nats = \"nats://127.0.0.1:{port}\"\nnode_id = \"{name}\"\n"),
        );
        let mut node = broker(&config);
        node.wait_for("joined the cluster", 1);
        node.wait_for("accepting", 1);
        nodes.push(node);
        addrs.push(SocketAddr::from(([127, 0, 0, 1], mqtt)));
    }
    let mut command = midge(
        "sub",
        addrs[1],
        &["-d", "-t", "across/#", "-C", "1", "-q", "1"],
    );
    command.env_remove("RUST_LOG");
    let mut sub = Running::spawn(command);
    sub.wait_for("subscribed to", 1);
    // The subscription reaches NATS shortly after the SUBACK: publish until it arrives.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sub.child().try_wait().expect("the subscriber").is_none() {
        assert!(Instant::now() < deadline, "nothing arrived on node two");
        run(
            midge(
                "pub",
                addrs[0],
                &["-t", "across/x", "-m", "from one", "-q", "1"],
            ),
            b"",
        )
        .ok();
        std::thread::sleep(Duration::from_millis(100));
    }
    let finished = sub.finish();
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    assert_eq!(finished.stdout(), "from one\n");
    for node in nodes {
        let finished = node.interrupt();
        assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    }
}
