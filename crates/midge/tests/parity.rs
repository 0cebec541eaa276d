//! Parity of `midge pub` and `midge sub` with mosquitto_pub and mosquitto_sub: the same
//! command lines run through both, against the same broker (a real mosquitto started on a
//! free 127.0.0.1 port; the midge broker for refused logins), and their stdout must be the
//! same byte for byte, their exit codes equal, and their stderr alike in shape (both
//! empty, or both not). What depends on the clock (%I, %U, %j's timestamp, @-codes, the
//! message expiry counting down) is compared with its digits masked.
//!
//! Skipped loudly when mosquitto or mosquitto-clients is missing; a failure under
//! `MIDGE_REQUIRE_PEERS=1`.
#![allow(missing_docs)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::mosquitto::*;
use common::*;
use midge_broker::{ConnectRequest, Hooks};
use midge_client::codec::ReasonCode;

/// Which implementation runs a command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Mosquitto,
    Midge,
}

const SIDES: [Side; 2] = [Side::Mosquitto, Side::Midge];

/// `mosquitto_<tool>` or `midge <tool>`, with `-h 127.0.0.1 -p <port>` and `args`.
fn command(side: Side, tool: &str, addr: SocketAddr, args: &[&str]) -> Command {
    let mut command = match side {
        Side::Mosquitto => Command::new(format!("mosquitto_{tool}")),
        Side::Midge => {
            let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
            command.arg(tool);
            command
        }
    };
    command
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args);
    command
}

/// mosquitto_pub with `args`, which must succeed: fixtures and live messages.
fn publish(addr: SocketAddr, args: &[&str]) {
    let out = run(command(Side::Mosquitto, "pub", addr, args), b"");
    assert_eq!(
        out.code(),
        Some(0),
        "mosquitto_pub {args:?}: {}",
        out.stderr
    );
}

/// Runs `command` while publishing `args` with mosquitto_pub every 100 ms, until it ends.
fn run_fed(mut command: Command, addr: SocketAddr, args: &[&str]) -> Finished {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("spawns");
    let waiting = thread::spawn(move || wait(child, LIMIT));
    while !waiting.is_finished() {
        thread::sleep(Duration::from_millis(100));
        publish(addr, args);
    }
    waiting.join().expect("waits")
}

/// Each ASCII digit as `0`: output that depends on the clock, in its shape.
fn digits_masked(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|b| if b.is_ascii_digit() { b'0' } else { *b })
        .collect()
}

/// Asserts the two runs agree: exit code, stdout (through `mask`), and stderr's shape.
fn assert_same(what: &str, mosquitto: &Finished, midge: &Finished, mask: fn(&[u8]) -> Vec<u8>) {
    assert_eq!(
        mosquitto.code(),
        midge.code(),
        "{what}: exit codes differ; mosquitto stderr {:?}, midge stderr {:?}",
        mosquitto.stderr,
        midge.stderr
    );
    assert_eq!(
        String::from_utf8_lossy(&mask(&mosquitto.stdout)),
        String::from_utf8_lossy(&mask(&midge.stdout)),
        "{what}: stdout differs; mosquitto stderr {:?}, midge stderr {:?}",
        mosquitto.stderr,
        midge.stderr
    );
    assert_eq!(
        mosquitto.stderr.trim().is_empty(),
        midge.stderr.trim().is_empty(),
        "{what}: stderr differs in shape: mosquitto {:?}, midge {:?}",
        mosquitto.stderr,
        midge.stderr
    );
}

/// Runs `tool args` through both, expecting a usage error: exit code 1 from both, and a
/// message on stderr (mosquitto prints its help on stdout too, midge does not).
fn same_usage_error(tool: &str, addr: SocketAddr, args: &[&str]) {
    let mosquitto = run(command(Side::Mosquitto, tool, addr, args), b"");
    let midge = run(command(Side::Midge, tool, addr, args), b"");
    assert_same(&format!("{tool} {args:?}"), &mosquitto, &midge, |_| {
        Vec::new()
    });
    assert_eq!(midge.code(), Some(1), "{tool} {args:?}: {}", midge.stderr);
    assert!(!midge.stderr.is_empty(), "{tool} {args:?}");
}

/// Runs `tool args` (with `stdin`) through both and asserts they agree; returns midge's run.
fn same(tool: &str, addr: SocketAddr, args: &[&str], stdin: &[u8]) -> Finished {
    same_masked(tool, addr, args, stdin, <[u8]>::to_vec)
}

fn same_masked(
    tool: &str,
    addr: SocketAddr,
    args: &[&str],
    stdin: &[u8],
    mask: fn(&[u8]) -> Vec<u8>,
) -> Finished {
    let mosquitto = run(command(Side::Mosquitto, tool, addr, args), stdin);
    let midge = run(command(Side::Midge, tool, addr, args), stdin);
    assert_same(&format!("{tool} {args:?}"), &mosquitto, &midge, mask);
    midge
}

/// Retained messages under `p/`, published by mosquitto_pub with every 5.0 property.
fn retained_fixtures(addr: SocketAddr) {
    publish(
        addr,
        &[
            "-V",
            "5",
            "-q",
            "1",
            "-r",
            "-t",
            "p/a",
            "-m",
            "alpha",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "response-topic",
            "re/sp",
            "-D",
            "publish",
            "correlation-data",
            "c0rr",
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
            "message-expiry-interval",
            "500000",
        ],
    );
    publish(
        addr,
        &[
            "-r",
            "-t",
            "p/b",
            "-m",
            r#"{"n": [1, 2.5, {"x": null}], "s": "q\"t", "e": {}, "a": []}"#,
        ],
    );
    publish(addr, &["-r", "-t", "p/c", "-m", "tab\there \\ \"quoted\""]);
}

#[test]
fn sub_prints_what_mosquitto_sub_prints() {
    if !clients_installed() {
        return;
    }
    let Some(mosquitto) = Mosquitto::start("sub") else {
        return;
    };
    let addr = mosquitto.addr;
    retained_fixtures(addr);

    // Payload only, -v, -N, -C.
    same("sub", addr, &["-t", "p/#", "-C", "3"], b"").ok();
    same("sub", addr, &["-t", "p/#", "-C", "3", "-v"], b"").ok();
    same("sub", addr, &["-t", "p/#", "-C", "3", "-N"], b"").ok();
    same("sub", addr, &["-t", "p/#", "-C", "2", "-v", "-N"], b"").ok();
    // Several filters: a message matching two is printed once.
    same(
        "sub",
        addr,
        &["-t", "p/#", "-t", "p/a", "-C", "3", "-v"],
        b"",
    )
    .ok();

    // -F: every code that does not depend on the clock, with flags, width and precision.
    let exact = concat!(
        "%t|%p|%l|%q|%r|%m|%P|%C|%R|%D|%F|%A|%S|%x|%X|%%|@@|\\t\\\\\\a\\e\\v\\r\\0|",
        "[%10t][%-10t][%.2t][%5.1t][%05l][%-5l][%3m][%03m][%-3m][%8C][%.2C][%-8.3R]",
        "[%05S][%-5S][%3F][%03F][%05A][%.0t][%10.t][%5q][%5r][%5P][%5D]",
        "[%005l][%00l]"
    );
    for version in ["311", "5"] {
        let args = [
            "-t", "p/#", "-C", "3", "-q", "1", "-V", version, "-F", exact,
        ];
        same("sub", addr, &args, b"").ok();
    }
    // With a subscription identifier for %S.
    same(
        "sub",
        addr,
        &[
            "-t",
            "p/#",
            "-C",
            "3",
            "-V",
            "5",
            "-D",
            "subscribe",
            "subscription-identifier",
            "42",
            "-F",
            "%t %S [%5S] [%-4S]",
        ],
        b"",
    )
    .ok();
    // The clock's codes, and JSON (whose timestamp is the clock's), in shape.
    let timed = "%I|%.4I|%13I|%U|%E|%6E|@Y-@m-@dT@H:@M:@S.@N@z|@s|@c|@j|@%|@Q|@Z";
    for format in [timed, "%j", "%J", "a%Jb"] {
        for version in ["311", "5"] {
            let args = [
                "-t", "p/#", "-C", "3", "-q", "1", "-V", version, "-F", format,
            ];
            same_masked("sub", addr, &args, b"", digits_masked).ok();
            let args = [
                "-t", "p/#", "-C", "3", "-V", version, "-F", format, "--pretty",
            ];
            same_masked("sub", addr, &args, b"", digits_masked).ok();
        }
    }
    let five_props = [
        "-t",
        "p/#",
        "-C",
        "3",
        "-V",
        "5",
        "-D",
        "subscribe",
        "subscription-identifier",
        "7",
        "-F",
        "%j",
    ];
    same_masked("sub", addr, &five_props, b"", digits_masked).ok();

    // -D for SUBSCRIBE, UNSUBSCRIBE and DISCONNECT: taken by both.
    same(
        "sub",
        addr,
        &[
            "-t",
            "p/#",
            "-U",
            "x/#",
            "-C",
            "1",
            "-v",
            "-V",
            "5",
            "-D",
            "subscribe",
            "user-property",
            "a",
            "b",
            "-D",
            "unsubscribe",
            "user-property",
            "c",
            "d",
            "-D",
            "disconnect",
            "user-property",
            "e",
            "f",
        ],
        b"",
    )
    .ok();
    // -T: filtered out, and not counted.
    same(
        "sub",
        addr,
        &["-t", "p/#", "-T", "p/b", "-C", "2", "-v"],
        b"",
    )
    .ok();
    same(
        "sub",
        addr,
        &["-t", "p/#", "-T", "p/+", "-T", "x", "-W", "1", "-v"],
        b"",
    );
    // -E: exits once subscribed, printing nothing.
    same("sub", addr, &["-t", "p/#", "-E", "-v"], b"").ok();
    // -W: exit 27 with nothing to print.
    let out = same("sub", addr, &["-t", "none/#", "-W", "1"], b"");
    assert_eq!(out.code(), Some(27));
    // -R and --retained-only need a message that is not retained: fed while they run.
    for args in [
        &["-t", "p/#", "-R", "-v", "-C", "1"][..],
        &["-t", "p/#", "--retained-only", "-v"],
        &["-t", "p/#", "--retained-only", "-T", "p/a", "-F", "%t %r"],
    ] {
        let live = ["-t", "p/live", "-m", "live"];
        let mosquitto = run_fed(command(Side::Mosquitto, "sub", addr, args), addr, &live);
        let midge = run_fed(command(Side::Midge, "sub", addr, args), addr, &live);
        assert_same(&format!("sub {args:?}"), &mosquitto, &midge, <[u8]>::to_vec);
        assert_eq!(midge.code(), Some(0), "{}", midge.stderr);
        assert!(!midge.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn remove_retained_and_unsubscribe_do_what_mosquitto_sub_does() {
    if !clients_installed() {
        return;
    }
    let Some(mosquitto) = Mosquitto::start("remove") else {
        return;
    };
    let addr = mosquitto.addr;
    let mut left = Vec::new();
    let mut printed = Vec::new();
    for side in SIDES {
        for (topic, payload) in [("r/1", "one"), ("r/2", "two"), ("r/keep", "keep")] {
            publish(addr, &["-r", "-t", topic, "-m", payload]);
        }
        // With -C, mosquitto_sub 2.0 does not exit after --remove-retained: -W ends it.
        let args = [
            "-t",
            "r/#",
            "--remove-retained",
            "-T",
            "r/keep",
            "-v",
            "-W",
            "1",
        ];
        printed.push(run(command(side, "sub", addr, &args), b""));
        // What is left, seen by mosquitto_sub for both.
        let observer = ["-t", "r/#", "-v", "-W", "1"];
        left.push(run(command(Side::Mosquitto, "sub", addr, &observer), b""));
        publish(addr, &["-r", "-t", "r/keep", "-n"]);
    }
    assert_same(
        "--remove-retained",
        &printed[0],
        &printed[1],
        <[u8]>::to_vec,
    );
    assert_eq!(
        printed[1].stdout(),
        "r/1 one\nr/2 two\nr/1 (null)\nr/2 (null)\n"
    );
    assert_same(
        "after --remove-retained",
        &left[0],
        &left[1],
        <[u8]>::to_vec,
    );
    assert_eq!(left[1].stdout(), "r/keep keep\n");

    // -U: a persistent session's subscription is gone, so a queued message never comes.
    let mut after = Vec::new();
    for side in SIDES {
        let id = format!("parity-u-{side:?}");
        let session = ["-c", "-i", id.as_str(), "-q", "1"];
        let mut args = session.to_vec();
        args.extend(["-t", "u/#", "-E"]);
        run(command(side, "sub", addr, &args), b"").ok();
        // Without -U the message would be queued and printed below: the control.
        let mut args = session.to_vec();
        args.extend(["-t", "u/other", "-U", "u/#", "-E"]);
        run(command(side, "sub", addr, &args), b"").ok();
        publish(addr, &["-q", "1", "-t", "u/1", "-m", "queued"]);
        let mut args = session.to_vec();
        args.extend(["-t", "u/other", "-v", "-W", "1"]);
        after.push(run(command(side, "sub", addr, &args), b""));
    }
    assert_same("-U", &after[0], &after[1], <[u8]>::to_vec);
    assert_eq!(after[1].code(), Some(27));
    assert_eq!(after[1].stdout(), "");
    // The control: a session that keeps its subscription gets the message.
    let session = ["-c", "-i", "parity-u-control", "-q", "1"];
    let mut args = session.to_vec();
    args.extend(["-t", "u/#", "-E"]);
    run(command(Side::Midge, "sub", addr, &args), b"").ok();
    publish(addr, &["-q", "1", "-t", "u/1", "-m", "queued"]);
    let mut args = session.to_vec();
    args.extend(["-t", "u/#", "-v", "-C", "1"]);
    let control = run(command(Side::Midge, "sub", addr, &args), b"").ok();
    assert_eq!(control.stdout(), "u/1 queued\n");
}

#[test]
fn pub_sends_what_mosquitto_pub_sends() {
    if !clients_installed() {
        return;
    }
    let Some(mosquitto) = Mosquitto::start("pub") else {
        return;
    };
    let addr = mosquitto.addr;
    let dir = std::env::temp_dir().join(format!("midge-parity-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("payload");
    std::fs::write(&file, b"from a file\nwith two lines\n").expect("write");
    let file = file.to_str().expect("utf-8 path").to_owned();
    let props = [
        "-V",
        "5",
        "-D",
        "publish",
        "payload-format-indicator",
        "1",
        "-D",
        "publish",
        "content-type",
        "text/plain",
        "-D",
        "publish",
        "response-topic",
        "re/sp",
        "-D",
        "publish",
        "correlation-data",
        "id-1",
        "-D",
        "publish",
        "user-property",
        "k",
        "v",
    ];
    // Each case: arguments, stdin, how many messages the observer expects.
    let cases: Vec<(Vec<&str>, &[u8], &str)> = vec![
        (vec!["-m", "hello"], &b""[..], "1"),
        (vec!["-n"], &b""[..], "1"),
        (vec!["-f", file.as_str()], &b""[..], "1"),
        (vec!["-s"], &b"all\nof it\n"[..], "1"),
        (vec!["-l"], &b"one\ntwo\n\nthree"[..], "4"),
        (vec!["-l"], &b"crlf\r\nline\n"[..], "2"),
        (vec!["-m", "again", "--repeat", "3"], &b""[..], "3"),
        (
            vec!["-m", "slowly", "--repeat", "2", "--repeat-delay", "0.2"],
            &b""[..],
            "2",
        ),
        (
            props
                .iter()
                .copied()
                .chain(["-m", "with properties"])
                .collect(),
            &b""[..],
            "1",
        ),
    ];
    for (args, stdin, count) in cases {
        let mut seen = Vec::new();
        for side in SIDES {
            // A persistent session of mosquitto_sub queues what is published while it is away.
            let id = format!("parity-obs-{side:?}");
            let observer = ["-c", "-i", id.as_str(), "-q", "1", "-t", "o/#", "-V", "5"];
            let mut subscribe = observer.to_vec();
            subscribe.push("-E");
            run(command(Side::Mosquitto, "sub", addr, &subscribe), b"").ok();
            let mut publishing = vec!["-t", "o/t", "-q", "1"];
            publishing.extend(&args);
            let out = run(command(side, "pub", addr, &publishing), stdin);
            seen.push(out);
            let mut receive = observer.to_vec();
            receive.extend(["-C", count, "-W", "5", "-F", "%t|%p|%l|%F|%C|%R|%D|%P"]);
            seen.push(run(command(Side::Mosquitto, "sub", addr, &receive), b""));
        }
        assert_same(&format!("pub {args:?}"), &seen[0], &seen[2], <[u8]>::to_vec);
        assert_same(
            &format!("what pub {args:?} sent"),
            &seen[1],
            &seen[3],
            <[u8]>::to_vec,
        );
        assert_eq!(seen[3].code(), Some(0), "pub {args:?}: {}", seen[3].stderr);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Accepts alice/secret only.
struct Login;

impl Hooks for Login {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        match (request.username, request.password) {
            (Some("alice"), Some(b"secret")) => Ok(()),
            (Some("alice"), _) => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            _ => Err(ReasonCode::NOT_AUTHORIZED),
        }
    }
}

#[test]
fn refusals_and_usage_errors_exit_as_mosquitto_exits() {
    if !clients_installed() {
        return;
    }
    // Refused logins, through the midge broker.
    let addr = start_broker_with(Login);
    for version in ["31", "311", "5"] {
        for login in [&["-u", "alice", "-P", "wrong"][..], &[]] {
            let mut args = vec!["-V", version, "-t", "a"];
            args.extend(login);
            let out = same("sub", addr, &args, b"");
            assert_ne!(out.code(), Some(0));
            args.extend(["-m", "x"]);
            let out = same("pub", addr, &args, b"");
            assert_ne!(out.code(), Some(0));
        }
    }
    // Unreachable.
    let closed = closed_port();
    let out = same("sub", closed, &["-t", "a"], b"");
    assert_eq!(out.code(), Some(1));
    same("pub", closed, &["-t", "a", "-m", "x"], b"");

    // Usage errors: exit 1 before any connection.
    for args in [
        &["-t", "a", "-q", "3"][..],
        &["-t", "a", "--bogus"],
        &["-t", "a#"],
        &["-t", "a", "-T", "a#b"],
        &["-t", "a", "-F", "%z"],
        &["-t", "a", "-F", "50%"],
        &["-t", "a", "-F", "\\q"],
        &["-t", "a", "-C", "0"],
        &["-t", "a", "-W", "0"],
        &["-t", "a", "-V", "4"],
        &["-t", "a", "-i", "x", "-I", "y"],
        &["-t", "a", "-V", "5", "-D", "connect", "bogus", "1"],
        &["-U", "a"],
        &["-t", "a", "-V", "5", "-x", "-1"],
    ] {
        same_usage_error("sub", closed, args);
    }
    for args in [
        &["-t", "a"][..],
        &["-t", "a", "-m", "x", "--repeat", "0"],
        &["-t", "a", "-m", "x", "--repeat-delay", "-1"],
        &["-t", "a", "-m", "x", "-M", "0"],
        &["-t", "a+", "-m", "x"],
        &["-t", "a", "-m", "x", "-q", "3"],
        &["-t", "a", "-m", "x", "-V", "5", "-x", "-1"],
        // Nothing on stdin.
        &["-t", "a", "-s"],
    ] {
        same_usage_error("pub", closed, args);
    }
}

/// Runs `tool args` through both with XDG_CONFIG_HOME (or HOME, when `home` is true) set to
/// `dir`, and asserts they agree.
fn same_configured(
    tool: &str,
    addr: SocketAddr,
    dir: &std::path::Path,
    home: bool,
    args: &[&str],
) -> Finished {
    let runs: Vec<Finished> = SIDES
        .iter()
        .map(|side| {
            let mut command = command(*side, tool, addr, args);
            if home {
                command.env_remove("XDG_CONFIG_HOME").env("HOME", dir);
            } else {
                command.env("XDG_CONFIG_HOME", dir);
            }
            run(command, b"")
        })
        .collect();
    assert_same(
        &format!("{tool} {args:?} with {}", dir.display()),
        &runs[0],
        &runs[1],
        <[u8]>::to_vec,
    );
    runs.into_iter().nth(1).expect("midge's run")
}

/// Writes `text` as both tools' config file for `tool` in `dir`.
fn config_files(dir: &std::path::Path, tool: &str, text: &str) {
    std::fs::create_dir_all(dir).expect("dir");
    for prefix in ["mosquitto", "midge"] {
        std::fs::write(dir.join(format!("{prefix}_{tool}")), text).expect("config file");
    }
}

#[test]
fn config_files_give_defaults_as_mosquittos_do() {
    if !clients_installed() {
        return;
    }
    let Some(mosquitto) = Mosquitto::start("config") else {
        return;
    };
    let addr = mosquitto.addr;
    retained_fixtures(addr);
    let base = std::env::temp_dir().join(format!("midge-parity-config-{}", std::process::id()));
    let xdg = base.join("xdg");

    // Defaults from the file; the command line overrides -C and adds a topic to the file's.
    config_files(&xdg, "sub", "# defaults\n\n-v\n-C 5\n-t p/a\n");
    let out = same_configured("sub", addr, &xdg, false, &["-t", "p/c", "-C", "2"]).ok();
    assert_eq!(out.stdout().lines().count(), 2, "{}", out.stdout());
    assert!(out.stdout().starts_with("p/a alpha\n"), "{}", out.stdout());

    // A value with spaces is the rest of its line.
    config_files(&xdg, "pub", "-t cfg/t\n-m from a config file\n-r\n");
    for side in SIDES {
        let mut publisher = command(side, "pub", addr, &[]);
        publisher.env("XDG_CONFIG_HOME", &xdg);
        assert_eq!(run(publisher, b"").code(), Some(0), "{side:?}");
        let read = run(
            command(Side::Mosquitto, "sub", addr, &["-t", "cfg/t", "-C", "1"]),
            b"",
        )
        .ok();
        assert_eq!(read.stdout(), "from a config file\n", "{side:?}");
        publish(addr, &["-r", "-t", "cfg/t", "-n"]);
    }

    // pub's -t on the command line replaces the file's.
    config_files(&xdg, "pub", "-t cfg/default\n-m from a config file\n-r\n");
    for side in SIDES {
        let mut publisher = command(side, "pub", addr, &["-t", "cfg/given"]);
        publisher.env("XDG_CONFIG_HOME", &xdg);
        assert_eq!(run(publisher, b"").code(), Some(0), "{side:?}");
        let read = run(
            command(
                Side::Mosquitto,
                "sub",
                addr,
                &["-t", "cfg/#", "-C", "1", "-v"],
            ),
            b"",
        )
        .ok();
        assert_eq!(read.stdout(), "cfg/given from a config file\n", "{side:?}");
        publish(addr, &["-r", "-t", "cfg/given", "-n"]);
    }
    // A payload in the file and another on the command line: refused.
    let out = same_configured("pub", addr, &xdg, false, &["-m", "twice"]);
    assert_eq!(out.code(), Some(1));

    // The file says where to connect, and so does the command line: the command line's -L
    // is used (the file's -h and -p name a closed port on loopback).
    let closed = closed_port();
    config_files(
        &xdg,
        "sub",
        &format!("-h 127.0.0.2\n-p {}\n-C 1\n", closed.port()),
    );
    let url = format!("mqtt://127.0.0.1:{}/p/a", addr.port());
    for side in SIDES {
        let mut subscriber = match side {
            Side::Mosquitto => Command::new("mosquitto_sub"),
            Side::Midge => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
                command.arg("sub");
                command
            }
        };
        subscriber.args(["-L", &url]).env("XDG_CONFIG_HOME", &xdg);
        let out = run(subscriber, b"").ok();
        assert_eq!(out.stdout(), "alpha\n", "{side:?}");
    }

    // Without XDG_CONFIG_HOME: ~/.config.
    config_files(&base.join("home/.config"), "sub", "-t p/b\n-C 1\n-N\n");
    same_configured("sub", addr, &base.join("home"), true, &[]).ok();

    // A bad option in the file is a usage error.
    config_files(&xdg, "sub", "-t p/a\n-q 3\n");
    let out = same_configured("sub", addr, &xdg, false, &["-C", "1"]);
    assert_eq!(out.code(), Some(1));
}

/// The mosquitto flags midge takes but cannot honour: exit code 1 and the reason, before any
/// connection is tried (the port is closed: a connection attempt would say so instead).
#[test]
fn tls_flags_midge_cannot_honour_are_refused_with_exit_1() {
    let closed = closed_port();
    for tool in ["pub", "sub", "rr"] {
        for (flags, refused) in [
            (&["--cafile", "ca.pem", "--psk", "00ff"][..], "--psk"),
            (&["--psk-identity", "me"], "--psk-identity"),
            (&["--cafile", "ca.pem", "--ciphers", "HIGH"], "--ciphers"),
            (&["--tls-engine", "pkcs11"], "--tls-engine"),
            (
                &["--tls-engine-kpass-sha1", "ab"],
                "--tls-engine-kpass-sha1",
            ),
            (&["--keyform", "engine"], "--keyform engine"),
            (&["--proxy", "socks5h://127.0.0.1:1080"], "--proxy"),
        ] {
            let mut args = vec!["-t", "a", "-m", "x"];
            if tool == "sub" {
                args.truncate(2);
            }
            if tool == "rr" {
                args.extend(["-e", "b"]);
            }
            args.extend(flags);
            let out = run(command(Side::Midge, tool, closed, &args), b"");
            assert_eq!(out.code(), Some(1), "{tool} {args:?}: {}", out.stderr);
            assert!(
                out.stderr
                    .starts_with(&format!("midge {tool}: {refused} is not supported: ")),
                "{tool} {args:?}: {}",
                out.stderr
            );
        }
    }
}

/// An option given twice takes its last value, as in mosquitto's clients (and as a config
/// file's defaults need); a second payload option is refused, as there.
#[test]
fn repeated_options_take_their_last_value() {
    if !clients_installed() {
        return;
    }
    let Some(mosquitto) = Mosquitto::start("repeated") else {
        return;
    };
    let addr = mosquitto.addr;
    retained_fixtures(addr);
    same(
        "sub",
        addr,
        &[
            "-t", "p/a", "-C", "5", "-C", "1", "-q", "2", "-q", "1", "-v", "-v",
        ],
        b"",
    )
    .ok();
    same(
        "sub",
        addr,
        &[
            "-t", "p/c", "-C", "1", "-i", "one", "-i", "two", "-k", "5", "-k", "30",
        ],
        b"",
    )
    .ok();
    same(
        "pub",
        addr,
        &[
            "-t", "r/1", "-m", "x", "-q", "2", "-q", "1", "-V", "5", "-V", "311",
        ],
        b"",
    )
    .ok();
    for args in [
        &["-t", "a", "-m", "x", "-m", "y"][..],
        &["-t", "a", "-n", "-n"],
        &["-t", "a", "-m", "x", "-n"],
    ] {
        same_usage_error("pub", addr, args);
    }
}

/// The command line's -t, -h, -p and -L replace the config file's, however they are written
/// (grouped short flags too), and a file's -L topic is not published to when the command
/// line gives -t. A line with an option's value joined to it and more after it is refused,
/// naming the file and the line.
#[test]
fn config_file_options_the_command_line_gives_are_replaced() {
    let addr = start_broker();
    let port = addr.port().to_string();
    let closed = closed_port().port();
    let xdg = std::env::temp_dir().join(format!("midge-config-cli-{}", std::process::id()));
    std::fs::create_dir_all(&xdg).expect("dir");
    let file = xdg.join("midge_pub");
    let sub = subscriber(addr, &["-t", "#", "-v", "-C", "4"], 1);
    let publish = |text: &str, args: &[&str]| {
        std::fs::write(&file, text).expect("config file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
        command.arg("pub").args(args).env("XDG_CONFIG_HOME", &xdg);
        run(command, b"")
    };
    // -t grouped after -r.
    publish(
        "-t file/topic\n",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-rt",
            "cli/topic",
            "-m",
            "one",
        ],
    )
    .ok();
    // The file's -L says where to connect, not where to publish.
    publish(
        &format!("-L mqtt://127.0.0.1:{port}/file/topic\n"),
        &["-t", "cli/topic", "-m", "two"],
    )
    .ok();
    // -p grouped after -d: the file's -L (a closed port) is dropped.
    publish(
        &format!("-L mqtt://127.0.0.1:{closed}/file/topic\n"),
        &[
            "-h",
            "127.0.0.1",
            "-dp",
            &port,
            "-t",
            "cli/topic",
            "-m",
            "three",
        ],
    )
    .ok();
    publish("-t end\n", &["-h", "127.0.0.1", "-p", &port, "-m", "four"]).ok();
    let out = sub.finish();
    assert_eq!(
        out.stdout(),
        "cli/topic one\ncli/topic two\ncli/topic three\nend four\n"
    );
    // A value joined to its short option, and another option after it on the line.
    let refused = publish(
        "-q 1\n-ifoo --retain\n",
        &["-h", "127.0.0.1", "-p", &port, "-t", "x", "-m", "x"],
    );
    assert_eq!(refused.code(), Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("midge_pub line 2:"),
        "{}",
        refused.stderr
    );
    let _ = std::fs::remove_dir_all(&xdg);
}
