//! The `midge broker` binary with password and ACL files: a file from Debian's
//! `mosquitto_passwd` as it is, SIGHUP re-reading both files while clients stay connected, and
//! a malformed file stopping the broker at start. Clients are mosquitto_pub and mosquitto_sub.
#![allow(missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use midge_testkit::peers;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("midge-broker-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the process when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The broker on `config`, with its log lines.
fn start(config: &Path) -> (Killed, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(["broker", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Killed(child), lines)
}

trait TakeOutput {
    /// The exit status and stderr of a process that has exited.
    fn wait_with_output_taken(&mut self) -> std::process::Output;
}

impl TakeOutput for Child {
    fn wait_with_output_taken(&mut self) -> std::process::Output {
        let status = self.wait().expect("exited");
        let mut stderr = Vec::new();
        if let Some(mut pipe) = self.stderr.take() {
            std::io::Read::read_to_end(&mut pipe, &mut stderr).expect("read stderr");
        }
        std::process::Output {
            status,
            stdout: Vec::new(),
            stderr,
        }
    }
}

/// Waits for a log line with every one of `parts`.
fn wait_for_line(lines: &mpsc::Receiver<String>, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no log line with {parts:?}"));
        if parts.iter().all(|p| line.contains(p)) {
            return line;
        }
    }
}

fn mosquitto_passwd(args: &[&str], file: &Path, rest: &[&str]) {
    let status = Command::new("mosquitto_passwd")
        .args(args)
        .arg(file)
        .args(rest)
        .status()
        .expect("mosquitto_passwd runs");
    assert!(status.success());
}

/// mosquitto_pub of one QoS 1 message as `user`, at 3.1.1 or 5.0: whether it succeeded.
fn publish(port: u16, v5: bool, user: &str, password: &str, topic: &str) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-V", if v5 { "mqttv5" } else { "mqttv311" }])
        .args(["-u", user, "-P", password, "-t", topic, "-m", topic])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_pub runs")
        .success()
}

fn hang_up(broker: &Killed) {
    let status = Command::new("kill")
        .args(["-HUP", &broker.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn sighup_rereads_a_mosquitto_password_file_and_the_acl_while_clients_stay() {
    if !peers::require(
        "mosquitto_passwd",
        peers::installed("mosquitto_passwd", &["-h"])
            && peers::installed("mosquitto_pub", &["--help"]),
    ) {
        return;
    }
    let dir = TempDir::new("sighup");
    let passwd = dir.0.join("passwd");
    let acl = dir.0.join("acl");
    // Debian's mosquitto_passwd writes $7$ entries; the broker reads them as they are.
    mosquitto_passwd(&["-c", "-b"], &passwd, &["alice", "first"]);
    mosquitto_passwd(&["-b"], &passwd, &["watcher", "eyes"]);
    std::fs::write(
        &acl,
        "user alice\ntopic write sensors/#\nuser watcher\ntopic read sensors/#\n",
    )
    .expect("write");
    let port = free_port();
    let config = dir.0.join("midge.toml");
    std::fs::write(
        &config,
        format!("[[listener]]\nbind = \"127.0.0.1:{port}\"\n[auth]\npassword_file = \"passwd\"\nacl_file = \"acl\"\n[sys]\ninterval_secs = 0\n"),
    )
    .expect("write");
    let (broker, lines) = start(&config);
    wait_for_line(
        &lines,
        &["accepting", "2 users", "no anonymous clients", "ACL"],
    );
    wait_for_line(&lines, &["listening"]);

    // A watcher that stays connected through the reloads, at 3.1.1.
    let watcher = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            "mqttv311",
            "-q",
            "1",
        ])
        .args([
            "-u", "watcher", "-P", "eyes", "-t", "#", "-v", "-W", "30", "-C", "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub runs");
    let watcher = Killed(watcher);
    std::thread::sleep(Duration::from_millis(500));
    assert!(publish(port, true, "alice", "first", "sensors/1"));
    assert!(
        !publish(port, true, "alice", "wrong", "sensors/x"),
        "a wrong password"
    );
    assert!(
        !publish(port, false, "alice", "wrong", "sensors/x"),
        "a wrong password, 3.1.1"
    );

    // New password, and alice may now write only to `other/#`; the watcher may read it.
    mosquitto_passwd(&["-b"], &passwd, &["alice", "second"]);
    std::fs::write(
        &acl,
        "user alice\ntopic write other/#\nuser watcher\ntopic read sensors/#\ntopic read other/#\n",
    )
    .expect("write");
    hang_up(&broker);
    wait_for_line(&lines, &["password and ACL files reloaded"]);
    assert!(
        !publish(port, false, "alice", "first", "other/1"),
        "the old password"
    );
    // At 3.1.1 a refused PUBLISH is acknowledged and dropped: the watcher never sees it.
    assert!(publish(port, false, "alice", "second", "sensors/2"));
    assert!(publish(port, false, "alice", "second", "other/2"));

    // A broken ACL: the reload fails, the log names the file and the line, the rules stay.
    std::fs::write(&acl, "user alice\ntopic scribble other/#\n").expect("write");
    hang_up(&broker);
    let line = wait_for_line(&lines, &["keeping the password and ACL rules"]);
    assert!(line.contains("acl") && line.contains("line 2"), "{line}");
    assert!(publish(port, true, "alice", "second", "other/3"));

    let output = watcher_output(watcher);
    assert_eq!(output, "sensors/1 sensors/1\nother/2 other/2\n");
}

/// What the watcher printed, once it got its two messages (or timed out).
fn watcher_output(mut watcher: Killed) -> String {
    let status = watcher.0.wait().expect("mosquitto_sub ends");
    let mut out = String::new();
    if let Some(mut stdout) = watcher.0.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out).expect("read");
    }
    assert!(
        status.success(),
        "mosquitto_sub: {status:?}, printed {out:?}"
    );
    out
}

#[test]
fn a_malformed_password_or_acl_file_stops_the_broker_with_the_file_and_line() {
    let dir = TempDir::new("malformed");
    let port = free_port();
    for (key, name, text, line) in [
        ("password_file", "passwd", "alice:$7$101$abc\n", "line 1"),
        (
            "acl_file",
            "acl",
            "user alice\ntopic readwrite a/#\nfrobnicate a/#\n",
            "line 3",
        ),
    ] {
        let file = dir.0.join(name);
        std::fs::write(&file, text).expect("write");
        let config = dir.0.join("midge.toml");
        std::fs::write(
            &config,
            format!("[[listener]]\nbind = \"127.0.0.1:{port}\"\n[auth]\n{key} = \"{name}\"\n"),
        )
        .expect("write");
        let child = Command::new(env!("CARGO_BIN_EXE_midge"))
            .args(["broker", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs");
        let mut broker = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while broker.0.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "{key}: the broker started");
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = broker.0.wait_with_output_taken();
        assert!(!output.status.success(), "{key}: the broker started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&file.display().to_string()) && stderr.contains(line),
            "{key}: {stderr}"
        );
    }
}

#[test]
fn the_default_broker_says_it_lets_in_local_clients_only() {
    let dir = TempDir::new("default");
    let port = free_port();
    let config = dir.0.join("midge.toml");
    std::fs::write(
        &config,
        format!("[[listener]]\nbind = \"127.0.0.1:{port}\"\n"),
    )
    .expect("write");
    let (_broker, lines) = start(&config);
    let line = wait_for_line(&lines, &["accepting"]);
    assert!(
        line.contains("loopback and Unix sockets only") && line.contains("allow_anonymous = true"),
        "{line}"
    );
}
