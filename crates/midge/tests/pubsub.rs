//! `midge pub` and `midge sub` end to end, against an in-process midge broker on
//! 127.0.0.1:0: what arrives (count, retained, lines, files, null messages, `-v`, QoS 1/2,
//! 5.0 user properties, wills, persistent sessions, 3.1) and the exit codes and messages of
//! every failure.
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use midge_broker::proto::Message;
use midge_broker::{ClientInfo, ConnectRequest, Hooks};
use midge_client::codec::ReasonCode;
use midge_client::{QoS, SubscribeOptions};

#[test]
fn sub_with_count_gets_qos_0_1_2_in_order_and_exits_0() {
    let addr = start_broker();
    for version in ["311", "5"] {
        let sub = subscriber(
            addr,
            &["-V", version, "-t", "t/#", "-q", "2", "-C", "3", "-v"],
            1,
        );
        for (qos, topic, message) in [
            ("1", "t/1", "one"),
            ("2", "t/2", "two"),
            ("0", "t/0", "zero"),
        ] {
            run(
                midge(
                    "pub",
                    addr,
                    &["-V", version, "-q", qos, "-t", topic, "-m", message],
                ),
                b"",
            )
            .ok();
        }
        let out = sub.finish().ok();
        assert_eq!(out.stdout(), "t/1 one\nt/2 two\nt/0 zero\n", "-V {version}");
    }
}

#[test]
fn retained_message_reaches_a_later_subscriber() {
    let addr = start_broker();
    run(
        midge("pub", addr, &["-t", "r/1", "-m", "kept", "-r", "-q", "1"]),
        b"",
    )
    .ok();
    let out = run(
        midge("sub", addr, &["-t", "r/#", "-C", "1", "-W", "10"]),
        b"",
    )
    .ok();
    assert_eq!(out.stdout(), "kept\n");
    // An empty retained message clears it [MQTT-3.3.1-10]: a new subscriber gets nothing.
    run(
        midge("pub", addr, &["-t", "r/1", "-n", "-r", "-q", "1"]),
        b"",
    )
    .ok();
    let out = run(midge("sub", addr, &["-t", "r/#", "-W", "1"]), b"");
    assert_eq!(out.code(), Some(27), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{:?}", out.stdout());
}

#[test]
fn each_stdin_line_is_a_message_and_empty_lines_are_empty_messages() {
    let addr = start_broker();
    let sub = subscriber(addr, &["-t", "l", "-C", "4", "-q", "1"], 1);
    run(
        midge("pub", addr, &["-t", "l", "-l", "-q", "1"]),
        b"one\n\nthree\r\nfour",
    )
    .ok();
    let out = sub.finish().ok();
    // As mosquitto_pub: only the newline is removed.
    assert_eq!(out.stdout(), "one\n\nthree\r\nfour\n");
}

#[test]
fn a_file_is_sent_byte_for_byte() {
    let addr = start_broker();
    let path = std::env::temp_dir().join(format!("midge-pub-file-{}", std::process::id()));
    let data: Vec<u8> = (0..=255u8)
        .chain(b"\nsecond line\n".iter().copied())
        .collect();
    std::fs::write(&path, &data).expect("write");
    let sub = subscriber(addr, &["-t", "f", "-C", "1", "-q", "2"], 1);
    let path_text = path.to_str().expect("utf-8 path");
    run(
        midge("pub", addr, &["-t", "f", "-f", path_text, "-q", "2"]),
        b"",
    )
    .ok();
    let out = sub.finish().ok();
    let _ = std::fs::remove_file(&path);
    let mut expected = data;
    expected.push(b'\n');
    assert_eq!(out.stdout, expected);
}

#[test]
fn stdin_whole_and_null_message_and_several_topics() {
    let addr = start_broker();
    let sub = subscriber(addr, &["-t", "n/#", "-C", "4", "-v"], 1);
    run(midge("pub", addr, &["-t", "n/null", "-n"]), b"").ok();
    run(midge("pub", addr, &["-t", "n/all", "-s"]), b"a\nb").ok();
    run(
        midge(
            "pub",
            addr,
            &["-t", "n/x", "-t", "n/y", "-m", "both", "-q", "1"],
        ),
        b"",
    )
    .ok();
    let out = sub.finish().ok();
    assert_eq!(
        out.stdout(),
        "n/null (null)\nn/all a\nb\nn/x both\nn/y both\n"
    );
}

#[test]
fn no_newline_with_capital_n() {
    let addr = start_broker();
    let sub = subscriber(addr, &["-t", "nn", "-C", "2", "-N"], 1);
    run(midge("pub", addr, &["-t", "nn", "-m", "a", "-q", "1"]), b"").ok();
    run(midge("pub", addr, &["-t", "nn", "-m", "b", "-q", "1"]), b"").ok();
    assert_eq!(sub.finish().ok().stdout(), "ab");
}

#[test]
fn overlapping_filters_print_each_message_once() {
    let addr = start_broker();
    let sub = subscriber(
        addr,
        &["-t", "o/#", "-t", "o/a", "-t", "o/+", "-C", "2", "-v"],
        3,
    );
    run(midge("pub", addr, &["-t", "o/a", "-m", "1"]), b"").ok();
    run(midge("pub", addr, &["-t", "o/b/c", "-m", "2"]), b"").ok();
    assert_eq!(sub.finish().ok().stdout(), "o/a 1\no/b/c 2\n");
}

#[test]
fn user_properties_reach_the_subscriber() {
    let addr = start_broker();
    run(
        midge(
            "pub",
            addr,
            &[
                "-V",
                "5",
                "-t",
                "u/1",
                "-m",
                "hi",
                "-q",
                "1",
                "-r",
                "-D",
                "publish",
                "user-property",
                "k",
                "v",
                "-D",
                "publish",
                "user-property",
                "k2",
                "v 2",
                "-D",
                "publish",
                "content-type",
                "text/plain",
            ],
        ),
        b"",
    )
    .ok();
    // midge sub shows them with -F %P, as mosquitto_sub does.
    let out = run(
        midge(
            "sub",
            addr,
            &[
                "-V",
                "5",
                "-t",
                "u/#",
                "-q",
                "1",
                "-C",
                "1",
                "-W",
                "10",
                "-F",
                "%t %p [%P] %C %q%r",
            ],
        ),
        b"",
    );
    assert_eq!(out.ok().stdout(), "u/1 hi [k:v k2:v 2] text/plain 11\n");
    // And so does the library.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = midge_client::Client::builder("127.0.0.1", addr.port())
            .connect()
            .await
            .expect("connects");
        let (_, mut messages) = client
            .subscribe("u/#", SubscribeOptions::with_qos(QoS::AtLeastOnce))
            .await
            .expect("subscribes");
        let message = tokio::time::timeout(LIMIT, messages.recv())
            .await
            .expect("in time")
            .expect("a message");
        let properties: Vec<(String, String)> = message
            .user_properties()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
            .collect();
        assert_eq!(
            properties,
            [("k".into(), "v".into()), ("k2".into(), "v 2".into())]
        );
        assert_eq!(
            message.content_type().map(|c| c.as_str().to_owned()),
            Some("text/plain".into())
        );
        client.disconnect(ReasonCode::SUCCESS).await;
    });
}

#[test]
fn the_will_is_published_when_the_client_is_killed_not_when_it_ends_cleanly() {
    let addr = start_broker();
    for version in ["311", "5"] {
        let watcher = subscriber(
            addr,
            &[
                "-V", version, "-t", "will/#", "-C", "1", "-q", "1", "-F", "%t %p|%P",
            ],
            1,
        );
        let will = |topic: &'static str| {
            let mut args = vec![
                "-V",
                version,
                "--will-topic",
                topic,
                "--will-payload",
                "gone",
                "--will-qos",
                "1",
                "-t",
                "x",
            ];
            if version == "5" {
                args.extend(["-D", "will", "user-property", "why", "killed"]);
            }
            args
        };
        // A clean end: DISCONNECT, so no will [MQTT-3.1.2-10].
        let mut clean = midge("pub", addr, &will("will/clean"));
        clean.args(["-m", "bye"]);
        run(clean, b"").ok();
        // Killed while waiting for stdin lines: the broker publishes the will.
        let mut killed = midge("pub", addr, &will("will/killed"));
        killed.args(["-l", "-d"]);
        let mut publisher = Running::spawn(killed);
        publisher.wait_for("connected to", 1);
        publisher.child().kill().expect("kill");
        let out = watcher.finish().ok();
        let expected = if version == "5" {
            "will/killed gone|why:killed\n"
        } else {
            "will/killed gone|\n"
        };
        assert_eq!(out.stdout(), expected, "-V {version}");
    }
}

/// SIGTERM (and SIGINT) end `midge sub` and `midge pub` as mosquitto_sub ends: a DISCONNECT,
/// so the broker does not publish the will, and exit code 0.
#[test]
fn sigterm_and_sigint_end_pub_and_sub_with_a_disconnect_so_the_will_is_not_published() {
    let addr = start_broker();
    for version in ["311", "5"] {
        for (command, signal) in [
            ("sub", "-TERM"),
            ("pub", "-TERM"),
            ("sub", "-INT"),
            ("pub", "-INT"),
        ] {
            let watcher = subscriber(
                addr,
                &["-V", version, "-t", "gone/#", "-C", "1", "-q", "1", "-v"],
                1,
            );
            let will_topic = format!("gone/{command}");
            let mut args = vec![
                "-V",
                version,
                "-d",
                "--will-topic",
                &will_topic,
                "--will-payload",
                "will",
                "--will-qos",
                "1",
                "-t",
            ];
            let child = if command == "sub" {
                args.push("quiet/#");
                let mut child = Running::spawn(midge("sub", addr, &args));
                child.wait_for("subscribed to", 1);
                child
            } else {
                // Waiting for lines on stdin, connected.
                args.extend(["quiet/x", "-l"]);
                let mut child = Running::spawn(midge("pub", addr, &args));
                child.wait_for("connected to", 1);
                child
            };
            let out = child.signal(signal);
            assert_eq!(
                out.code(),
                Some(0),
                "midge {command} -V {version} after kill {signal}: {}",
                out.stderr
            );
            // A will would be published as the connection closed; give it time to arrive
            // before the marker, which must be the first message the watcher sees.
            std::thread::sleep(Duration::from_millis(300));
            run(
                midge(
                    "pub",
                    addr,
                    &["-V", version, "-q", "1", "-t", "gone/marker", "-m", "end"],
                ),
                b"",
            )
            .ok();
            assert_eq!(
                watcher.finish().ok().stdout(),
                "gone/marker end\n",
                "midge {command} -V {version} after kill {signal}: the will was published"
            );
        }
    }
}

#[test]
fn a_persistent_session_keeps_messages_while_the_subscriber_is_away() {
    let addr = start_broker();
    for version in ["311", "5"] {
        let id = format!("persistent-{version}");
        let topic = format!("p/{version}");
        let sub_args = ["-V", version, "-c", "-i", &id, "-q", "1", "-t", &topic];
        // Makes the session, then leaves on Ctrl-C: exit code 0, and the session stays.
        let out = subscriber(addr, &sub_args, 1).interrupt();
        assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
        run(
            midge(
                "pub",
                addr,
                &["-V", version, "-q", "1", "-t", &topic, "-m", "queued"],
            ),
            b"",
        )
        .ok();
        let mut second = midge("sub", addr, &sub_args);
        second.args(["-C", "1", "-W", "10"]);
        assert_eq!(run(second, b"").ok().stdout(), "queued\n", "-V {version}");
    }
}

#[test]
fn connect_properties_set_the_session_expiry() {
    let addr = start_broker();
    for (expiry, kept) in [("0", false), ("60", true)] {
        let id = format!("expiry-{expiry}");
        let sub_args = [
            "-V",
            "5",
            "-c",
            "-i",
            &id,
            "-q",
            "1",
            "-t",
            "e/x",
            "-D",
            "connect",
            "session-expiry-interval",
            expiry,
            "-D",
            "connect",
            "receive-maximum",
            "5",
        ];
        subscriber(addr, &sub_args, 1).interrupt().ok();
        run(
            midge("pub", addr, &["-q", "1", "-t", "e/x", "-m", "queued"]),
            b"",
        )
        .ok();
        let mut second = midge("sub", addr, &sub_args);
        second.args(["-C", "1", "-W", "2", "-d"]);
        let out = run(second, b"");
        if kept {
            assert_eq!(out.ok().stdout(), "queued\n");
        } else {
            // Expiry 0: the session ended with the connection [MQTT-3.1.2-23].
            assert_eq!(out.code(), Some(27), "{}", out.stderr);
            assert!(out.stderr.contains("session present: no"), "{}", out.stderr);
            assert!(out.stdout.is_empty());
        }
    }
}

#[test]
fn mqtt_3_1_works_both_ways() {
    let addr = start_broker();
    run(
        midge(
            "pub",
            addr,
            &["-V", "mqttv31", "-t", "v31", "-m", "old", "-r", "-q", "2"],
        ),
        b"",
    )
    .ok();
    let out = run(
        midge(
            "sub",
            addr,
            &["-V", "31", "-t", "v31", "-C", "1", "-W", "10"],
        ),
        b"",
    );
    assert_eq!(out.ok().stdout(), "old\n");
}

// ----------------------------------------------------------------------------- failures

/// Accepts alice/secret, and bob with no password at all (not an empty one); refuses
/// publishing and subscribing under `admin/`.
struct Guard;

impl Hooks for Guard {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        match (request.username, request.password) {
            (Some("alice"), Some(b"secret")) | (Some("bob"), None) => Ok(()),
            _ => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        }
    }

    fn authorize_publish(&self, _: &ClientInfo, message: &Message) -> Result<(), ReasonCode> {
        if message.topic.as_str().starts_with("admin/") {
            Err(ReasonCode::NOT_AUTHORIZED)
        } else {
            Ok(())
        }
    }

    fn authorize_subscribe(
        &self,
        _: &ClientInfo,
        filter: &str,
        _: &midge_client::codec::SubscriptionOptions,
    ) -> Result<(), ReasonCode> {
        if filter.starts_with("admin/") {
            Err(ReasonCode::NOT_AUTHORIZED)
        } else {
            Ok(())
        }
    }
}

fn assert_fails(out: &Finished, code: i32, text: &str) {
    assert_eq!(out.code(), Some(code), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains(text),
        "stderr {:?} lacks {text:?}",
        out.stderr
    );
    // One line, no panic, no backtrace.
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{:?}", out.stderr);
}

#[test]
fn no_broker_is_exit_1_connection_refused() {
    let addr = closed_port();
    for sub in ["pub", "sub"] {
        let args: &[&str] = if sub == "pub" {
            &["-t", "a", "-m", "x"]
        } else {
            &["-t", "a"]
        };
        let out = run(midge(sub, addr, args), b"");
        assert_fails(&out, 1, "connection refused");
        assert!(
            out.stderr.starts_with(&format!("midge {sub}: ")),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn bad_credentials_exit_with_the_connack_reason_code() {
    let addr = start_broker_with(Guard);
    for version in ["31", "311", "5"] {
        for sub in ["pub", "sub"] {
            let mut args = vec!["-V", version, "-u", "alice", "-P", "wrong", "-t", "a"];
            if sub == "pub" {
                args.extend(["-m", "x"]);
            }
            let out = run(midge(sub, addr, &args), b"");
            // As mosquitto: the CONNACK code as sent, 3.x return code 4 or 5.0 0x86.
            assert_fails(
                &out,
                if version == "5" { 134 } else { 4 },
                "refused the connection: bad user name or password (0x86)",
            );
        }
        // Without credentials at all.
        let out = run(
            midge("pub", addr, &["-V", version, "-t", "a", "-m", "x"]),
            b"",
        );
        assert_fails(
            &out,
            if version == "5" { 134 } else { 4 },
            "bad user name or password",
        );
        // The right ones.
        run(
            midge(
                "pub",
                addr,
                &[
                    "-V", version, "-u", "alice", "-P", "secret", "-t", "a", "-m", "x",
                ],
            ),
            b"",
        )
        .ok();
        // -u without -P sends a user name and no password.
        run(
            midge(
                "pub",
                addr,
                &["-V", version, "-u", "bob", "-t", "a", "-m", "x"],
            ),
            b"",
        )
        .ok();
        let out = run(
            midge(
                "pub",
                addr,
                &["-V", version, "-u", "alice", "-t", "a", "-m", "x"],
            ),
            b"",
        );
        assert_fails(
            &out,
            if version == "5" { 134 } else { 4 },
            "bad user name or password",
        );
    }
}

#[test]
fn refused_publish_and_subscriptions_are_exit_1_with_the_reason() {
    let addr = start_broker_with(Guard);
    let login = ["-u", "alice", "-P", "secret", "-V", "5"];
    let mut publish = midge("pub", addr, &login);
    publish.args(["-t", "admin/x", "-m", "x", "-q", "1"]);
    assert_fails(
        &run(publish, b""),
        1,
        "refused the publish to \"admin/x\": not authorized (0x87)",
    );

    let mut subscribe = midge("sub", addr, &login);
    subscribe.args(["-t", "admin/#", "-W", "10"]);
    let out = run(subscribe, b"");
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("refused the subscription to \"admin/#\": not authorized"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("refused every subscription"),
        "{}",
        out.stderr
    );

    // One refused filter out of two: a warning, and the other one works.
    let mut sub_args = login.to_vec();
    sub_args.extend(["-t", "admin/#", "-t", "ok", "-C", "1"]);
    let mut sub = Running::spawn({
        let mut c = midge("sub", addr, &sub_args);
        c.arg("-d");
        c
    });
    sub.wait_for("subscribed to", 1);
    let mut publish = midge("pub", addr, &login);
    publish.args(["-t", "ok", "-m", "fine"]);
    run(publish, b"").ok();
    let out = sub.finish().ok();
    assert_eq!(out.stdout(), "fine\n");
    assert!(
        out.stderr
            .contains("refused the subscription to \"admin/#\""),
        "{}",
        out.stderr
    );
}

#[test]
fn sub_timeout_is_exit_27() {
    let addr = start_broker();
    let started = std::time::Instant::now();
    let out = run(midge("sub", addr, &["-t", "quiet", "-W", "1"]), b"");
    assert_fails(&out, 27, "timed out after 1 s");
    assert!(out.stdout.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn invalid_arguments_are_exit_2_before_connecting() {
    // Nothing listens: each of these must fail on its arguments, not on the connection.
    let addr = closed_port();
    let cases: &[(&str, &[&str], &str)] = &[
        ("pub", &["-t", "a/#", "-m", "x"], "invalid topic \"a/#\""),
        ("pub", &["-t", "", "-m", "x"], "invalid topic"),
        ("sub", &["-t", "a/#/b"], "invalid topic filter \"a/#/b\""),
        ("sub", &["-t", "a+"], "invalid topic filter"),
        (
            "pub",
            &[
                "-t",
                "a",
                "-m",
                "x",
                "-D",
                "publish",
                "user-property",
                "k",
                "v",
            ],
            "add -V 5",
        ),
        (
            "pub",
            &[
                "-V",
                "5",
                "-t",
                "a",
                "-m",
                "x",
                "-D",
                "publish",
                "topic-alias",
                "0",
            ],
            "use 1 to 65535",
        ),
        (
            "sub",
            &[
                "-V",
                "5",
                "-t",
                "a",
                "-D",
                "publish",
                "user-property",
                "k",
                "v",
            ],
            "unsupported property",
        ),
        (
            "pub",
            &["-t", "a", "-f", "/nonexistent/midge-file"],
            "cannot read /nonexistent/midge-file",
        ),
        (
            "pub",
            &["-t", "a", "-m", "x", "-c"],
            "-c (persistent session) needs a client id",
        ),
        (
            "sub",
            &["-t", "a", "--will-payload", "x"],
            "need --will-topic",
        ),
        (
            "sub",
            &["-t", "a", "--will-topic", "w/#"],
            "invalid will topic",
        ),
        ("pub", &["-t", "a", "-m", "x", "-P", "pw"], "needs -u"),
        ("pub", &["-t", "a", "-m", "x", "-x", "60"], "needs -V 5"),
        (
            "sub",
            &[
                "-V",
                "5",
                "-t",
                "a",
                "-D",
                "connect",
                "receive-maximum",
                "0",
            ],
            "use 1 to 65535",
        ),
        (
            "pub",
            &[
                "-V",
                "5",
                "-t",
                "a",
                "-m",
                "x",
                "-D",
                "subscribe",
                "user-property",
                "k",
                "v",
            ],
            "unsupported property",
        ),
        (
            "sub",
            &[
                "-V",
                "5",
                "-t",
                "a",
                "-x",
                "5",
                "-D",
                "connect",
                "session-expiry-interval",
                "5",
            ],
            "use one",
        ),
    ];
    for (sub, args, text) in cases {
        let out = run(midge(sub, addr, args), b"");
        assert_fails(&out, 1, text);
    }
    // Usage errors from the parser: also 1, as mosquitto's (clap's own code is 2).
    let cases: &[(&str, &[&str])] = &[
        ("pub", &["-t", "a"]),                       // no payload
        ("pub", &["-t", "a", "-m", "x", "-n"]),      // two payloads
        ("pub", &["-t", "a", "-m", "x", "-q", "3"]), // QoS 3
        ("sub", &["-t", "a", "-V", "4"]),            // unknown version
        ("sub", &[]),                                // no topic
        ("sub", &["-t", "a", "-F", "%i"]),           // unknown format specifier
    ];
    for (sub, args) in cases {
        let out = run(midge(sub, addr, args), b"");
        assert_eq!(out.code(), Some(1), "{sub} {args:?}: {}", out.stderr);
    }
}

#[test]
fn help_is_long_only_and_lists_the_exit_codes() {
    for sub in ["pub", "sub"] {
        let out = run(
            {
                let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_midge"));
                c.args([sub, "--help"]);
                c
            },
            b"",
        )
        .ok();
        let text = out.stdout();
        assert!(text.contains("-h, --host <HOST>"), "{text}");
        assert!(text.contains("Exit codes:"), "{text}");
        assert!(text.contains("27"), "{text}");
    }
}

#[test]
fn a_lost_connection_is_exit_1_for_pub() {
    // A "broker" that accepts TCP and closes at once: CONNECT gets no CONNACK.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let out = run(midge("pub", addr, &["-t", "a", "-m", "x"]), b"");
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.starts_with("midge pub: "), "{}", out.stderr);
}

/// `midge broker` as a child on `addr`, killed when dropped.
struct BrokerProcess(std::process::Child);

impl BrokerProcess {
    fn start(addr: std::net::SocketAddr) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_midge"))
            .args([
                "broker",
                "--bind",
                "127.0.0.1",
                "-p",
                &addr.port().to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("broker starts");
        let deadline = std::time::Instant::now() + LIMIT;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "broker did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child)
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sub_reconnects_and_subscribes_again_when_the_broker_comes_back() {
    let addr = closed_port();
    let broker = BrokerProcess::start(addr);
    let mut sub = subscriber(addr, &["-t", "back", "-C", "2", "-q", "1", "-W", "15"], 1);
    run(
        midge("pub", addr, &["-t", "back", "-m", "before", "-q", "1"]),
        b"",
    )
    .ok();
    drop(broker);
    sub.wait_for("reconnecting", 1);
    let _broker = BrokerProcess::start(addr);
    sub.wait_for("reconnected (session present: no)", 1);
    // The new broker has no session: the client subscribed again. Its SUBACK may still be on
    // the way, so publish until the subscriber has both messages.
    let out = loop {
        run(
            midge("pub", addr, &["-t", "back", "-m", "after", "-q", "1"]),
            b"",
        )
        .ok();
        if sub.child().try_wait().expect("waits").is_some() {
            break sub.finish();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.ok();
    assert_eq!(out.stdout(), "before\nafter\n");
    assert!(
        out.stderr.contains("the broker at 127.0.0.1:"),
        "{}",
        out.stderr
    );
}

#[test]
fn pub_exits_1_when_the_broker_goes_away_mid_stream() {
    let addr = closed_port();
    let broker = BrokerProcess::start(addr);
    let mut publisher = Running::spawn(midge("pub", addr, &["-t", "gone", "-l", "-q", "1", "-d"]));
    publisher.wait_for("connected to", 1);
    drop(broker);
    // It notices while it waits for stdin, which stays open.
    let out = publisher.finish_keeping_stdin();
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("midge pub: ") && last.contains("the broker at 127.0.0.1:"),
        "{}",
        out.stderr
    );
}

#[test]
fn pub_timeout_is_exit_27() {
    let addr = start_broker();
    // stdin stays open and empty: -W ends the run.
    let publisher = Running::spawn(midge("pub", addr, &["-t", "slow", "-l", "-W", "1"]));
    let out = publisher.finish_keeping_stdin();
    assert_eq!(out.code(), Some(27), "{}", out.stderr);
    assert!(
        out.stderr.contains("midge pub: timed out after 1 s"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_burst_of_lines_arrives_complete_and_in_order() {
    // A subscriber stalled by a busy machine for longer than the default backpressure timeout
    // (1 s) has later QoS 0 deliveries dropped, as documented; this test is about delivery
    // itself, so the broker waits as long as the subscriber's own timeout (-W, below the
    // harness's LIMIT). Every drop the broker counts fails it, with what arrived.
    let mut config = test_config();
    config.limits.backpressure_timeout_ms = 15_000;
    let broker = start_broker_counted(config);
    let addr = broker.addr;
    // QoS 0: more than midge-client's default buffer of 1,000 per stream, in one burst; the
    // publisher's DISCONNECT follows it at once, and on a busy machine the broker reads it
    // together with the burst's tail while the subscriber's inbox is full.
    // QoS 2: the publisher keeps many in flight (-l pipelines them).
    for (qos, n) in [("0", 5000), ("2", 1000)] {
        let count = n.to_string();
        // The subscriber's own timeout ends it before the harness's limit (LIMIT, 20 s), so
        // that a loss is reported with what did arrive.
        let sub = subscriber(
            addr,
            &["-t", "burst", "-q", qos, "-C", &count, "-W", "15"],
            1,
        );
        let lines: String = (0..n).map(|i| format!("{i}\n")).collect();
        run(
            midge("pub", addr, &["-t", "burst", "-l", "-q", qos]),
            lines.as_bytes(),
        )
        .ok();
        let out = sub.finish();
        let stdout = out.stdout();
        let received: std::collections::HashSet<&str> = stdout.lines().collect();
        let missing: Vec<usize> = (0..n)
            .filter(|i| !received.contains(i.to_string().as_str()))
            .collect();
        let report = format!(
            "QoS {qos}: {} of {n} lines, missing {} (first {:?}, last {:?}); broker: {:?}; \
             stderr: {}",
            stdout.lines().count(),
            missing.len(),
            missing.first(),
            missing.last(),
            broker.stats(),
            out.stderr
        );
        assert_eq!(out.code(), Some(0), "{report}");
        assert!(stdout == lines, "not in order: {report}");
        assert!(!out.stderr.contains("dropped"), "{report}");
        let stats = broker.stats();
        assert_eq!(
            stats.dropped_inbox_full + stats.dropped_congested + stats.dropped_queue_full,
            0,
            "{report}"
        );
    }
}

#[test]
fn sub_taken_over_by_the_same_client_id_exits_1_instead_of_fighting_back() {
    let addr = start_broker();
    let first = subscriber(addr, &["-V", "5", "-i", "twin", "-t", "q", "-W", "15"], 1);
    let second = subscriber(addr, &["-V", "5", "-i", "twin", "-t", "q", "-W", "15"], 1);
    let out = first.finish_keeping_stdin();
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("session taken over (0x8E)"),
        "{}",
        out.stderr
    );
    // The second one keeps its connection, and ends normally on Ctrl-C.
    let out = second.interrupt();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("reconnect"), "{}", out.stderr);
}

/// Retained `f/1`, `f/2` and `f/x/3` on a fresh broker.
fn retained_three() -> std::net::SocketAddr {
    let addr = start_broker();
    for (topic, payload) in [("f/1", "r1"), ("f/2", "r2"), ("f/x/3", "r3")] {
        run(
            midge("pub", addr, &["-t", topic, "-m", payload, "-r", "-q", "1"]),
            b"",
        )
        .ok();
    }
    addr
}

/// The lines of `text`, sorted: the broker sends retained messages in no set order.
fn sorted(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Runs `midge sub args` while a live (not retained) `f/live` message is published every
/// 100 ms, until it ends.
fn sub_fed(addr: std::net::SocketAddr, args: &[&str]) -> Finished {
    let mut command = midge("sub", addr, args);
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("spawns");
    let waiting = std::thread::spawn(move || wait(child, LIMIT));
    while !waiting.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        run(midge("pub", addr, &["-t", "f/live", "-m", "live"]), b"").ok();
    }
    waiting.join().expect("waits")
}

#[test]
fn sub_skips_stale_and_filtered_out_messages() {
    let addr = retained_three();
    // -R: the retained ones are not printed, nor counted.
    let out = sub_fed(addr, &["-t", "f/#", "-R", "-v", "-C", "1"]).ok();
    assert_eq!(out.stdout(), "f/live live\n");
    // -T: filtered out by topic, repeatable, with wildcards.
    let out = run(
        midge(
            "sub",
            addr,
            &["-t", "f/#", "-T", "f/1", "-T", "f/x/#", "-v", "-W", "1"],
        ),
        b"",
    );
    assert_eq!(out.code(), Some(27), "{}", out.stderr);
    assert_eq!(out.stdout(), "f/2 r2\n");
    let out = run(midge("sub", addr, &["-t", "f/#", "-T", "f/+#"]), b"");
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("invalid -T topic filter"),
        "{}",
        out.stderr
    );
}

#[test]
fn retained_only_exits_at_the_first_live_message() {
    let addr = retained_three();
    let out = sub_fed(addr, &["-t", "f/#", "--retained-only", "-v"]).ok();
    assert_eq!(sorted(&out.stdout()), "f/1 r1\nf/2 r2\nf/x/3 r3\n");
    let out = run(
        midge("sub", addr, &["-t", "f/#", "--retained-only", "-W", "1"]),
        b"",
    );
    assert_eq!(out.code(), Some(27), "only retained ones, so -W ends it");
}

#[test]
fn remove_retained_clears_all_but_the_filtered_out() {
    let addr = retained_three();
    let out = run(
        midge(
            "sub",
            addr,
            &[
                "-t",
                "f/#",
                "--remove-retained",
                "-T",
                "f/2",
                "-v",
                "-C",
                "2",
            ],
        ),
        b"",
    )
    .ok();
    assert_eq!(sorted(&out.stdout()), "f/1 r1\nf/x/3 r3\n");
    let out = run(midge("sub", addr, &["-t", "f/#", "-v", "-W", "1"]), b"");
    assert_eq!(out.stdout(), "f/2 r2\n");
}

#[test]
fn exit_once_subscribed_and_unsubscribe() {
    let addr = retained_three();
    let out = run(midge("sub", addr, &["-t", "f/#", "-E", "-v"]), b"").ok();
    assert_eq!(out.stdout(), "", "-E prints nothing");
    for version in ["311", "5"] {
        let id = format!("unsub-{version}");
        let session = ["-V", version, "-c", "-i", id.as_str(), "-q", "1"];
        let with = |extra: &[&str]| {
            let mut args = session.to_vec();
            args.extend(extra);
            midge("sub", addr, &args)
        };
        run(with(&["-t", "u/#", "-E"]), b"").ok();
        run(with(&["-t", "u/other", "-U", "u/#", "-E", "-d"]), b"").ok();
        run(
            midge("pub", addr, &["-q", "1", "-t", "u/1", "-m", "queued"]),
            b"",
        )
        .ok();
        // Still subscribed, it would get the queued message.
        let out = run(with(&["-t", "u/#", "-v", "-W", "1"]), b"");
        assert_eq!(out.code(), Some(27), "{}", out.stderr);
        assert_eq!(out.stdout(), "", "-V {version}");
    }
}

#[test]
fn repeat_publishes_the_message_again() {
    let addr = start_broker();
    let sub = subscriber(addr, &["-t", "rep", "-C", "4", "-v"], 1);
    run(
        midge(
            "pub",
            addr,
            &[
                "-t",
                "rep",
                "-m",
                "x",
                "--repeat",
                "3",
                "--repeat-delay",
                "0.05",
            ],
        ),
        b"",
    )
    .ok();
    run(midge("pub", addr, &["-t", "rep", "-n"]), b"").ok();
    assert_eq!(
        sub.finish().ok().stdout(),
        "rep x\nrep x\nrep x\nrep (null)\n"
    );
    for bad in [
        &["--repeat", "0"][..],
        &["--repeat-delay", "-1"],
        &["-M", "0"],
    ] {
        let mut args = vec!["-t", "rep", "-m", "x"];
        args.extend(bad);
        let out = run(midge("pub", addr, &args), b"");
        assert_eq!(out.code(), Some(1), "{bad:?}: {}", out.stderr);
    }
}

/// Records the client ids that connect.
struct Ids(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Hooks for Ids {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        self.0
            .lock()
            .expect("ids")
            .push(request.client_id.to_owned());
        Ok(())
    }
}

#[test]
fn id_prefix_bind_address_nodelay_and_quiet() {
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = start_broker_with(Ids(ids.clone()));
    run(
        midge(
            "pub",
            addr,
            &[
                "-t",
                "a",
                "-m",
                "x",
                "-I",
                "pre-",
                "-A",
                "127.0.0.1",
                "--nodelay",
            ],
        ),
        b"",
    )
    .ok();
    let seen = ids.lock().expect("ids").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let rest = seen[0].strip_prefix("pre-").expect("the prefix");
    assert!(rest.parse::<u32>().is_ok(), "a process id: {rest}");
    let out = run(
        midge("pub", addr, &["-t", "a", "-m", "x", "-I", "p", "-i", "x"]),
        b"",
    );
    assert_fails(&out, 1, "-i and -I");
    // -A with an address of another family than the broker's: nothing to connect to.
    let out = run(
        midge("pub", addr, &["-t", "a", "-m", "x", "-A", "::1"]),
        b"",
    );
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    // --quiet: the exit code, and nothing on stderr.
    let out = run(midge("sub", closed_port(), &["-t", "a", "--quiet"]), b"");
    assert_eq!(out.code(), Some(1));
    assert_eq!(out.stderr, "");
}

#[test]
fn every_documented_property_is_accepted() {
    let addr = start_broker();
    let d = |args: &[&str]| -> Vec<String> { args.iter().map(|a| (*a).to_owned()).collect() };
    let will = [
        "--will-topic",
        "w",
        "-D",
        "will",
        "content-type",
        "t",
        "-D",
        "will",
        "correlation-data",
        "c",
        "-D",
        "will",
        "message-expiry-interval",
        "9",
        "-D",
        "will",
        "payload-format-indicator",
        "1",
        "-D",
        "will",
        "response-topic",
        "r",
        "-D",
        "will",
        "user-property",
        "k",
        "v",
        "-D",
        "will",
        "will-delay-interval",
        "1",
    ];
    let connect = [
        "-D",
        "connect",
        "maximum-packet-size",
        "100000",
        "-D",
        "connect",
        "receive-maximum",
        "10",
        "-D",
        "connect",
        "request-problem-information",
        "1",
        "-D",
        "connect",
        "request-response-information",
        "0",
        "-D",
        "connect",
        "session-expiry-interval",
        "0",
        "-D",
        "connect",
        "topic-alias-maximum",
        "5",
        "-D",
        "connect",
        "user-property",
        "k",
        "v",
    ];
    let sub = subscriber(
        addr,
        &[
            "-V",
            "5",
            "-t",
            "props",
            "-C",
            "1",
            "-D",
            "subscribe",
            "subscription-identifier",
            "9",
            "-D",
            "subscribe",
            "user-property",
            "sk",
            "sv",
            "-U",
            "gone",
            "-D",
            "unsubscribe",
            "user-property",
            "uk",
            "uv",
            "-D",
            "disconnect",
            "user-property",
            "dk",
            "dv",
            "-D",
            "disconnect",
            "session-expiry-interval",
            "0",
            "-q",
            "1",
            "-F",
            "%S|%F|%C|%R|%D|%P|%m|%q",
        ],
        1,
    );
    let mut args = d(&[
        "-V",
        "5",
        "-t",
        "props",
        "-m",
        "x",
        "-q",
        "1",
        "-D",
        "disconnect",
        "user-property",
        "k",
        "v",
    ]);
    args.extend(d(&will));
    args.extend(d(&connect));
    args.extend(d(&[
        "-D",
        "publish",
        "payload-format-indicator",
        "1",
        "-D",
        "publish",
        "content-type",
        "ct",
        "-D",
        "publish",
        "response-topic",
        "re/sp",
        "-D",
        "publish",
        "correlation-data",
        "cd",
        "-D",
        "publish",
        "message-expiry-interval",
        "60",
        "-D",
        "publish",
        "topic-alias",
        "2",
        "-D",
        "publish",
        "user-property",
        "k",
        "v",
    ]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(midge("pub", addr, &args), b"").ok();
    assert_eq!(sub.finish().ok().stdout(), "9|1|ct|re/sp|cd|k:v|1|1\n");
    // The broker knows no such authentication method: refused, with its reason code.
    let out = run(
        midge(
            "pub",
            addr,
            &[
                "-V",
                "5",
                "-t",
                "a",
                "-m",
                "x",
                "-D",
                "connect",
                "authentication-method",
                "NOPE",
                "-D",
                "connect",
                "authentication-data",
                "x",
            ],
        ),
        b"",
    );
    assert!(out.code().is_some_and(|c| c >= 128), "{}", out.stderr);
}

/// `-D subscribe|unsubscribe|disconnect user-property` and `-D disconnect
/// session-expiry-interval` reach the wire: seen by a fake broker.
#[tokio::test]
async fn subscribe_unsubscribe_and_disconnect_carry_their_properties() {
    use midge_client::codec::{AckProperties, ByteStr, Packet, ProtocolVersion, SubAck, UnsubAck};
    use midge_testkit::raw::Peer;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sub = tokio::task::spawn_blocking(move || {
        let args = [
            "-V",
            "5",
            "-t",
            "s",
            "-U",
            "u",
            "-E",
            "-D",
            "subscribe",
            "user-property",
            "sk",
            "sv",
            "-D",
            "unsubscribe",
            "user-property",
            "uk",
            "uv",
            "-D",
            "disconnect",
            "user-property",
            "dk",
            "dv",
            "-D",
            "disconnect",
            "session-expiry-interval",
            "0",
        ];
        run(midge("sub", addr, &args), b"")
    });
    let (stream, _) = listener.accept().await.expect("accept");
    let mut peer = Peer::new(stream, ProtocolVersion::V5).with_wait(Duration::from_secs(10));
    let packet = peer.recv_packet().await;
    assert!(matches!(packet, Packet::Connect(_)), "{packet:?}");
    peer.send(Packet::ConnAck(Box::default())).await;
    let pair = |k: &'static str, v: &'static str| (ByteStr::from(k), ByteStr::from(v));
    let (mut subscribed, mut unsubscribed) = (None, None);
    while subscribed.is_none() || unsubscribed.is_none() {
        match peer.recv_packet().await {
            Packet::Subscribe(s) => {
                subscribed = Some(s.properties.user_properties);
                peer.send(Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    reason_codes: vec![ReasonCode::SUCCESS],
                    properties: AckProperties::default(),
                }))
                .await;
            }
            Packet::Unsubscribe(u) => {
                unsubscribed = Some(u.properties.user_properties);
                peer.send(Packet::UnsubAck(UnsubAck {
                    packet_id: u.packet_id,
                    reason_codes: vec![ReasonCode::SUCCESS],
                    properties: AckProperties::default(),
                }))
                .await;
            }
            other => panic!("expected SUBSCRIBE and UNSUBSCRIBE, got {other:?}"),
        }
    }
    assert_eq!(subscribed, Some(vec![pair("sk", "sv")]));
    assert_eq!(unsubscribed, Some(vec![pair("uk", "uv")]));
    match peer.recv_packet().await {
        Packet::Disconnect(d) => {
            assert_eq!(d.properties.user_properties, vec![pair("dk", "dv")]);
            assert_eq!(d.properties.session_expiry_interval, Some(0));
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    let out = sub.await.expect("joins");
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
}
