//! The `midge broker` binary with TLS listeners from a configuration file: certificate paths
//! relative to the file, and SIGHUP reloading them while connections stay up. Clients are
//! mosquitto_pub and mosquitto_sub.
#![allow(missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use midge_testkit::certs::TestPki;
use midge_testkit::peers;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Kills the broker when the test ends, however it ends.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// mosquitto_pub of one QoS 1 message over TLS trusting `ca`: whether it succeeded.
fn publish(port: u16, ca: &Path, topic: &str, message: &str) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", message, "--cafile"])
        .arg(ca)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_pub runs")
        .success()
}

fn hang_up(broker: &Broker) {
    let status = Command::new("kill")
        .args(["-HUP", &broker.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn sighup_reloads_certificates_and_open_connections_stay() {
    if !peers::require(
        "mosquitto_pub",
        peers::installed("mosquitto_pub", &["--help"]),
    ) {
        return;
    }
    let before = TestPki::generate();
    let after = TestPki::generate();
    // The configuration names its certificate relative to its own directory.
    let dir = before.path("conf");
    std::fs::create_dir_all(dir.join("certs")).expect("dir");
    let live_cert = dir.join("certs/live.pem");
    let live_key = dir.join("certs/live.key");
    std::fs::copy(&before.server_cert, &live_cert).expect("copy");
    std::fs::copy(&before.server_key, &live_key).expect("copy");
    let port = free_port();
    let config = dir.join("midge.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:{port}\"\n[listener.tls]\ncert = \"certs/live.pem\"\nkey = \"certs/live.key\"\n[sys]\ninterval_secs = 0\n"
        ),
    )
    .expect("write");
    // Started from another directory: the paths are the file's, not the working directory's.
    let mut child = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(["broker", "--config"])
        .arg(&config)
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let stderr = child.stderr.take().expect("stderr");
    let broker = Broker(child);
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    wait_for_port(port);

    // A subscriber connected before any reload.
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            "reload/#",
            "-v",
        ])
        .args(["-C", "3", "-W", "30", "--cafile"])
        .arg(&before.ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub runs");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        publish(port, &before.ca, "reload/1", "before"),
        "the first certificate"
    );

    // A broken file: the reload fails, the log names the file, the old certificate stays.
    std::fs::write(&live_cert, "garbage").expect("write");
    hang_up(&broker);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the failed reload is logged");
        if line.contains("live.pem") && line.contains("keeping") {
            break;
        }
    }
    assert!(
        publish(port, &before.ca, "reload/x", "still old"),
        "the old certificate stays"
    );

    // The new certificate: new handshakes get it; the subscriber's connection goes on.
    std::fs::copy(&after.server_cert, &live_cert).expect("copy");
    std::fs::copy(&after.server_key, &live_key).expect("copy");
    hang_up(&broker);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !publish(port, &after.ca, "reload/2", "after") {
        assert!(
            Instant::now() < deadline,
            "the new certificate is never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !publish(port, &before.ca, "reload/y", "refused"),
        "the old CA no longer fits"
    );

    let status = sub.wait().expect("mosquitto_sub ends");
    let mut got = String::new();
    sub.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut got)
        .expect("read");
    assert!(status.success(), "mosquitto_sub: {status:?} {got:?}");
    // One message before each reload and one after both: it stayed connected throughout.
    assert_eq!(
        got, "reload/1 before\nreload/x still old\nreload/2 after\n",
        "{got:?}"
    );
}
