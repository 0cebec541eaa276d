//! `midge pub`, `midge sub` and `midge bench` over TLS, WebSocket (plain and over TLS) and a
//! Unix socket, against a real mosquitto (Debian package `mosquitto`) started by the test on
//! free 127.0.0.1 ports, with certificates generated at test time
//! (`midge_testkit::certs::TestPki`). Skipped loudly when mosquitto or mosquitto-clients is
//! missing; a failure under `MIDGE_REQUIRE_PEERS=1`.
//!
//! Each mosquitto here has a plain listener beside the ones under test, for `mosquitto_sub`
//! to watch what arrived (and because mosquitto 2.0.11 refuses to start with only a
//! WebSocket listener).
#![allow(missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use midge_testkit::certs::TestPki;
use midge_testkit::peers::{installed, require};

fn mosquitto_path() -> Option<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .or_else(|| installed("mosquitto", &["-h"]).then(|| PathBuf::from("mosquitto")))
}

/// The listeners of one mosquitto: a plain one always, and the others on request.
#[derive(Default)]
struct Listeners {
    /// TLS, with `require_certificate` when `Some(true)`.
    tls: Option<bool>,
    /// The address the TLS listener binds (default 127.0.0.1).
    tls_address: Option<&'static str>,
    ws: bool,
    wss: bool,
    unix: bool,
}

/// A mosquitto broker on 127.0.0.1, killed when dropped.
struct Mosquitto {
    plain: SocketAddr,
    tls: u16,
    ws: u16,
    wss: u16,
    socket: PathBuf,
    dir: PathBuf,
    child: Child,
}

impl Mosquitto {
    /// Starts mosquitto, or returns `None` after a loud skip if it (or mosquitto_sub) is not
    /// installed.
    fn start(name: &str, pki: &TestPki, listeners: Listeners) -> Option<Self> {
        let program = mosquitto_path();
        if !require("mosquitto (Debian package mosquitto)", program.is_some())
            || !require(
                "mosquitto_sub (Debian package mosquitto-clients)",
                installed("mosquitto_sub", &["--help"]),
            )
        {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("midge-cli-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mosquitto dir");
        // Started as root, mosquitto runs as its own user, which must create the socket here.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .expect("dir permissions");
        }
        let plain = closed_port();
        let (tls, ws, wss) = (
            closed_port().port(),
            closed_port().port(),
            closed_port().port(),
        );
        let socket = dir.join("mqtt.sock");
        let files = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        );
        let mut config = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             log_dest stderr\nlog_type error\nlistener {} 127.0.0.1\n",
            plain.port()
        );
        let tls_address = listeners.tls_address.unwrap_or("127.0.0.1");
        if let Some(require_certificate) = listeners.tls {
            config += &format!(
                "listener {tls} {tls_address}\n{files}require_certificate {require_certificate}\n"
            );
        }
        if listeners.ws {
            config += &format!("listener {ws} 127.0.0.1\nprotocol websockets\n");
        }
        if listeners.wss {
            config += &format!("listener {wss} 127.0.0.1\nprotocol websockets\n{files}");
        }
        if listeners.unix {
            config += &format!("listener 0 {}\n", socket.display());
        }
        let config_path = dir.join("mosquitto.conf");
        std::fs::write(&config_path, config).expect("mosquitto config");
        let child = Command::new(program?)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosquitto starts");
        let mosquitto = Self {
            plain,
            tls,
            ws,
            wss,
            socket,
            dir,
            child,
        };
        let deadline = Instant::now() + LIMIT;
        let ready = |port: u16| TcpStream::connect(("127.0.0.1", port)).is_ok();
        while !(ready(plain.port())
            && (listeners.tls.is_none() || TcpStream::connect((tls_address, tls)).is_ok())
            && (!listeners.ws || ready(ws))
            && (!listeners.wss || ready(wss))
            && (!listeners.unix || mosquitto.socket.exists()))
        {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start its listeners"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Some(mosquitto)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `mosquitto_sub -d` on the plain listener, ready once subscribed; `expect` waits for
/// a message.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(broker: &Mosquitto, topic: &str) -> Self {
        // mosquitto_sub's stdout is block-buffered on a pipe: line-buffer it.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-d", "-h", "127.0.0.1", "-p"])
            .arg(broker.plain.port().to_string())
            .args(["-t", topic, "-q", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let watcher = Self { child, lines };
        watcher.expect_line(|l| l.contains("SUBACK"), "mosquitto_sub's SUBACK");
        watcher
    }

    fn expect_line(&self, matches: impl Fn(&str) -> bool, what: &str) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return,
                Ok(_) => {}
                Err(_) => panic!("no {what} in time"),
            }
        }
    }

    fn expect(&self, payload: &str) {
        self.expect_line(|l| l == payload, &format!("message {payload:?}"));
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `midge <sub>` with exactly these arguments.
fn midge_cmd(sub: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command.arg(sub).args(args);
    command
}

/// `midge pub <args> -m <payload>`, to its end.
fn publish(args: &[&str], payload: &str) -> Finished {
    let mut command = midge_cmd("pub", args);
    command.args(["-m", payload, "-q", "1"]);
    run(command, b"")
}

#[test]
fn pub_and_sub_over_tls_with_a_ca_file() {
    let pki = TestPki::generate();
    let Some(broker) = Mosquitto::start(
        "ca",
        &pki,
        Listeners {
            tls: Some(false),
            ..Listeners::default()
        },
    ) else {
        return;
    };
    let port = broker.tls.to_string();
    let watcher = Watcher::start(&broker, "tls/#");
    // --cafile turns TLS on for -h/-p, as in mosquitto.
    let ca = path(&pki.ca);
    publish(
        &[
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            ca,
            "-t",
            "tls/a",
        ],
        "one",
    )
    .ok();
    watcher.expect("one");
    // The CA directory, each TLS version, ALPN.
    publish(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--capath",
            path(&pki.dir),
            "-t",
            "tls/a",
        ],
        "two",
    )
    .ok();
    watcher.expect("two");
    for version in ["tlsv1.2", "tlsv1.3"] {
        publish(
            &[
                "-p",
                &port,
                "--cafile",
                ca,
                "--tls-version",
                version,
                "--tls-alpn",
                "mqtt",
                "-t",
                "tls/a",
            ],
            version,
        )
        .ok();
        watcher.expect(version);
    }
    // -L: for mqtts:// the path is the topic.
    let url = format!("mqtts://localhost:{port}/tls/url");
    publish(&["-L", &url, "--cafile", ca], "by url").ok();
    watcher.expect("by url");
    // As in mosquitto, --cafile turns TLS on for an mqtt:// URL too, on the URL's port.
    let url = format!("mqtt://localhost:{port}/tls/url");
    publish(&["-L", &url, "--cafile", ca], "mqtt url and cafile").ok();
    watcher.expect("mqtt url and cafile");

    // midge sub over TLS gets what mosquitto_pub sends on the plain listener.
    let mut sub = Running::spawn(midge_cmd(
        "sub",
        &[
            "-d",
            "-L",
            &format!("mqtts://localhost:{port}/tls/for-sub"),
            "--cafile",
            ca,
            "-C",
            "1",
        ],
    ));
    sub.wait_for("subscribed to", 1);
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.plain.port().to_string(),
            "-t",
            "tls/for-sub",
            "-m",
            "to sub",
        ])
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success());
    let out = sub.finish().ok();
    assert_eq!(out.stdout(), "to sub\n");
}

#[test]
fn tls_failures_are_clear_and_exit_1() {
    let pki = TestPki::generate();
    let Some(broker) = Mosquitto::start(
        "fail",
        &pki,
        Listeners {
            tls: Some(true),
            ..Listeners::default()
        },
    ) else {
        return;
    };
    let port = broker.tls.to_string();
    let watcher = Watcher::start(&broker, "cert/#");
    let (ca, cert, key) = (path(&pki.ca), path(&pki.client_cert), path(&pki.client_key));
    // mosquitto requires a client certificate: with one, it works.
    publish(
        &[
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            ca,
            "--cert",
            cert,
            "--key",
            key,
            "-t",
            "cert/a",
        ],
        "with cert",
    )
    .ok();
    watcher.expect("with cert");

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--cafile", ca],
            "TLS with mqtts://localhost:PORT failed: the broker refused the TLS handshake with alert CertificateRequired (116): it requires a client certificate (give --cert and --key)",
        ),
        (
            vec!["--cafile", ca, "--cert", path(&pki.expired_cert), "--key", path(&pki.expired_key)],
            "TLS with mqtts://localhost:PORT failed: the broker refused the TLS handshake with alert CertificateExpired (45): it refused the client certificate",
        ),
        (
            vec!["--cafile", path(&pki.other_ca), "--cert", cert, "--key", key],
            "TLS with mqtts://localhost:PORT failed: the broker's certificate is not signed by a trusted CA (unknown issuer) (give the CA that signed it with --cafile or --capath)",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["-h", "localhost", "-p", &port, "-t", "cert/a"];
        args.extend(flags);
        let out = publish(&args, "refused");
        assert_eq!(out.code(), Some(1), "{args:?}: {}", out.stderr);
        assert_eq!(
            out.stderr.trim(),
            format!("midge pub: {}", expected.replace("PORT", &port)),
            "{args:?}"
        );
    }
    // --insecure skips only the name check, as mosquitto's: a certificate from a CA the
    // client does not trust is still refused.
    let out = publish(
        &[
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            path(&pki.other_ca),
            "--insecure",
            "--cert",
            cert,
            "--key",
            key,
            "-t",
            "cert/a",
        ],
        "insecure",
    );
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("unknown issuer"), "{}", out.stderr);
}

/// The server certificate names localhost, 127.0.0.1 and ::1; mosquitto is reached as
/// 127.0.0.2 (loopback too, on Linux), a name the certificate lacks. `--insecure` skips that
/// check and nothing else, as mosquitto_pub's `--insecure` does.
#[test]
fn insecure_skips_only_the_host_name_check() {
    if std::net::TcpListener::bind("127.0.0.2:0").is_err() {
        eprintln!("SKIPPED: 127.0.0.2 is not a loopback address here");
        return;
    }
    let pki = TestPki::generate();
    let Some(broker) = Mosquitto::start(
        "insecure",
        &pki,
        Listeners {
            tls: Some(false),
            tls_address: Some("127.0.0.2"),
            ..Listeners::default()
        },
    ) else {
        return;
    };
    let port = broker.tls.to_string();
    let watcher = Watcher::start(&broker, "insecure/#");
    let ca = path(&pki.ca);
    let by_host = ["-h", "127.0.0.2", "-p", &port, "-t", "insecure/a"];
    let url = format!("mqtts://127.0.0.2:{port}/insecure/a");
    let by_url = ["-L", url.as_str()];

    // Without --insecure: the name does not match, and the hint names the flag that gave it.
    let out = publish(&[&by_host[..], &["--cafile", ca]].concat(), "checked");
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("not valid for the host name")
            && out.stderr.contains("(is -h a name in its certificate?)"),
        "{}",
        out.stderr
    );
    let out = publish(&[&by_url[..], &["--cafile", ca]].concat(), "checked");
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("the host of the -L URL") && !out.stderr.contains("-h"),
        "{}",
        out.stderr
    );
    // mosquitto_pub agrees, and with --insecure gets through.
    let mosquitto_pub = |insecure: bool| {
        let mut command = Command::new("mosquitto_pub");
        command.args([
            "-h",
            "127.0.0.2",
            "-p",
            &port,
            "--cafile",
            ca,
            "-t",
            "insecure/a",
        ]);
        command.args(["-m", if insecure { "mosquitto insecure" } else { "x" }]);
        if insecure {
            command.arg("--insecure");
        }
        command
            .stderr(Stdio::null())
            .status()
            .expect("mosquitto_pub runs")
    };
    assert!(!mosquitto_pub(false).success());
    assert!(mosquitto_pub(true).success());
    watcher.expect("mosquitto insecure");

    // With --insecure: accepted, by -h and by -L.
    publish(
        &[&by_host[..], &["--cafile", ca, "--insecure"]].concat(),
        "by -h",
    )
    .ok();
    watcher.expect("by -h");
    publish(
        &[&by_url[..], &["--cafile", ca, "--insecure"]].concat(),
        "by -L",
    )
    .ok();
    watcher.expect("by -L");
    // …but a CA that did not sign the certificate is still refused.
    let out = publish(
        &[
            &by_host[..],
            &["--cafile", path(&pki.other_ca), "--insecure"],
        ]
        .concat(),
        "other CA",
    );
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("unknown issuer"), "{}", out.stderr);
}

/// mosquitto 2.0 takes the topic of `-L mqtt://host/topic` literally: everything after the
/// first `/`, no percent-decoding, `..` kept. So does midge.
#[test]
fn url_topics_are_literal_as_in_mosquitto() {
    let pki = TestPki::generate();
    let Some(broker) = Mosquitto::start("topic", &pki, Listeners::default()) else {
        return;
    };
    let topic = "lit/a%2Fb/../c";
    let watcher = Watcher::start(&broker, topic);
    let url = format!("mqtt://127.0.0.1:{}/{topic}", broker.plain.port());
    let status = Command::new("mosquitto_pub")
        .args(["-L", &url, "-m", "from mosquitto_pub"])
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success());
    watcher.expect("from mosquitto_pub");
    publish(&["-L", &url], "from midge pub").ok();
    watcher.expect("from midge pub");
}

#[test]
fn bad_tls_arguments_exit_2() {
    let pki = TestPki::generate();
    let port = closed_port().port().to_string();
    let missing = pki.path("missing.pem");
    for (args, expected) in [
        (vec!["--cert", path(&pki.client_cert)], "--cert needs --key"),
        (
            vec!["--cafile", path(&pki.ca), "--capath", path(&pki.dir)],
            "--cafile and --capath each say",
        ),
        (vec!["--insecure"], "--insecure needs TLS"),
        (
            vec!["-L", "mqtt://localhost/t", "--insecure"],
            "--insecure needs TLS: use an mqtts:// URL, or add --cafile",
        ),
        (
            vec!["-L", "mqtt://localhost/t", "-h", "localhost"],
            "-L gives the broker's address",
        ),
        (
            vec!["-L", "gopher://localhost/t"],
            "-L: unsupported URL scheme",
        ),
        (vec!["-L", "mqtt://[::1/t"], "-L: invalid broker URL"),
        (vec!["--cafile", path(&missing)], "TLS: cannot read"),
        (
            vec!["--tls-version", "tlsv1.1", "--cafile", path(&pki.ca)],
            "tlsv1.1 is not supported",
        ),
        (vec!["-L", "ws://localhost/mqtt"], "-t is required"),
        (
            vec!["-L", "mqtt://u:pw@localhost/t", "-u", "v"],
            "-L gives a user name, and so does -u",
        ),
        (
            vec!["-L", "mqtt://u:pw@localhost/t", "-P", "x"],
            "-L gives a password, and so does -P",
        ),
    ] {
        let mut all = vec!["-p", &port, "-t", "a", "-m", "x"];
        if args.contains(&"-L") {
            all = vec!["-m", "x"];
            if !expected.starts_with("-t") {
                all.extend(["-t", "a"]);
            }
        }
        all.extend(&args);
        let out = run(midge_cmd("pub", &all), b"");
        assert_eq!(out.code(), Some(1), "{all:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{all:?}: {}", out.stderr);
    }
}

#[test]
fn pub_and_sub_over_websocket_wss_and_a_unix_socket() {
    let pki = TestPki::generate();
    let Some(broker) = Mosquitto::start(
        "ws",
        &pki,
        Listeners {
            ws: true,
            wss: true,
            unix: true,
            ..Listeners::default()
        },
    ) else {
        return;
    };
    let watcher = Watcher::start(&broker, "ws/#");
    let ca = path(&pki.ca);
    // For ws:// the path is the WebSocket path; the topic comes from -t.
    let ws = format!("ws://127.0.0.1:{}/mqtt", broker.ws);
    publish(&["-L", &ws, "-t", "ws/a"], "over ws").ok();
    watcher.expect("over ws");
    publish(
        &[
            "-L",
            &format!("ws://localhost:{}", broker.ws),
            "-t",
            "ws/a",
            "-V",
            "5",
        ],
        "default path",
    )
    .ok();
    watcher.expect("default path");
    let wss = format!("wss://localhost:{}/mqtt", broker.wss);
    publish(&["-L", &wss, "--cafile", ca, "-t", "ws/a"], "over wss").ok();
    watcher.expect("over wss");
    publish(&["--unix", path(&broker.socket), "-t", "ws/a"], "over unix").ok();
    watcher.expect("over unix");
    let unix = format!("unix://{}", broker.socket.display());
    publish(&["-L", &unix, "-t", "ws/a"], "over unix url").ok();
    watcher.expect("over unix url");

    // midge sub over wss.
    let mut sub = Running::spawn(midge_cmd(
        "sub",
        &["-d", "-L", &wss, "--cafile", ca, "-t", "ws/sub", "-C", "1"],
    ));
    sub.wait_for("subscribed to", 1);
    publish(&["-L", &ws, "-t", "ws/sub"], "ws to wss").ok();
    assert_eq!(sub.finish().ok().stdout(), "ws to wss\n");
}

/// `midge bench <args> --json --quiet --threads 1`, and `-d 10s` unless `args` has a `-d`.
fn bench(args: &[&str]) -> Output {
    let duration: &[&str] = if args.contains(&"-d") {
        &[]
    } else {
        &["-d", "10s"]
    };
    Command::new(env!("CARGO_BIN_EXE_midge"))
        .arg("bench")
        .args(args)
        .args(duration)
        .args(["--json", "--quiet", "--threads", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("midge runs")
}

fn bench_ok(args: &[&str]) -> serde_json::Value {
    let out = bench(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}\nstderr: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// Every bench scenario over every transport, each bounded: a few connections, a few
/// hundred messages.
#[test]
fn bench_drives_every_scenario_over_tls_ws_wss_and_unix() {
    let pki = TestPki::generate();
    let Some(broker) = Mosquitto::start(
        "bench",
        &pki,
        Listeners {
            tls: Some(false),
            ws: true,
            wss: true,
            unix: true,
            ..Listeners::default()
        },
    ) else {
        return;
    };
    let ca = path(&pki.ca);
    let mqtts = format!("mqtts://localhost:{}", broker.tls);
    let ws = format!("ws://127.0.0.1:{}/mqtt", broker.ws);
    let wss = format!("wss://localhost:{}/mqtt", broker.wss);
    let unix = format!("unix://{}", broker.socket.display());
    let plain = format!("mqtt://127.0.0.1:{}", broker.plain.port());
    let transports: Vec<(&str, Vec<&str>)> = vec![
        ("tcp", vec!["-L", &plain]),
        ("tls", vec!["-L", &mqtts, "--cafile", ca]),
        ("ws", vec!["-L", &ws]),
        ("wss", vec!["-L", &wss, "--cafile", ca]),
        ("unix", vec!["-L", &unix]),
    ];
    for (name, flags) in &transports {
        let with = |scenario: &[&str]| -> Vec<String> {
            scenario
                .iter()
                .chain(flags.iter())
                .map(|s| (*s).to_owned())
                .collect()
        };
        let run = |scenario: &[&str]| {
            let args = with(scenario);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bench_ok(&args)
        };
        // Held past a Keep Alive of 1 s: only the bench's PINGREQs keep them open.
        let v = run(&[
            "conn", "-c", "5", "--settle", "0s", "-k", "1", "--hold", "1200ms",
        ]);
        assert_eq!(v["connections"], 5, "{name}: {v:#}");
        assert_eq!(v["latency"]["samples"], 5, "{name}: {v:#}");
        assert_eq!(v["closed_by_broker"], 0, "{name}: {v:#}");
        let v = run(&[
            "fanin",
            "-c",
            "2",
            "-n",
            "200",
            "-q",
            "1",
            "--prefix",
            &format!("b/{name}/in"),
        ]);
        assert_eq!(v["delivered"], 400, "{name}: {v:#}");
        assert_eq!(v["lost"], 0, "{name}: {v:#}");
        let v = run(&[
            "fanout",
            "-c",
            "3",
            "-n",
            "100",
            "-q",
            "2",
            "--prefix",
            &format!("b/{name}/out"),
        ]);
        assert_eq!(v["delivered"], 300, "{name}: {v:#}");
        let v = run(&[
            "latency",
            "-n",
            "50",
            "-R",
            "500",
            "--prefix",
            &format!("b/{name}/lat"),
        ]);
        assert_eq!(v["delivered"], 50, "{name}: {v:#}");
        let v = run(&[
            "filters",
            "-c",
            "3",
            "--publishers",
            "2",
            "-n",
            "50",
            "--prefix",
            &format!("b/{name}/f"),
        ]);
        assert_eq!(v["lost"], 0, "{name}: {v:#}");
        let v = run(&[
            "pub",
            "-c",
            "2",
            "-n",
            "100",
            "-q",
            "1",
            "-t",
            &format!("b/{name}/pub/%i"),
        ]);
        assert_eq!(v["acked"], 200, "{name}: {v:#}");
        // Nothing is published: the subscribers connect, subscribe and wait out -d.
        let v = run(&[
            "sub",
            "-c",
            "2",
            "-t",
            &format!("b/{name}/sub"),
            "-d",
            "500ms",
        ]);
        assert_eq!(
            (v["subscribers"].as_u64(), v["errors"].as_u64()),
            (Some(2), Some(0)),
            "{name}: {v:#}"
        );
    }
    // A wrong CA fails the setup with the reason.
    let out = bench(&[
        "conn",
        "-c",
        "1",
        "-L",
        &mqtts,
        "--cafile",
        path(&pki.other_ca),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
}
