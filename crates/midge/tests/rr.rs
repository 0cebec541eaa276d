//! `midge rr` end to end against an in-process midge broker on 127.0.0.1:0 and a midge-client
//! responder: the request carries Response Topic and Correlation Data, the response is printed
//! as `sub` prints (`-v`, `-F`, `-N`), responses to other requests and (with `-R`) retained
//! messages are skipped, and the exit codes (27 when no response comes in time).
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::*;

fn rr(addr: std::net::SocketAddr, args: &[&str]) -> Finished {
    run(midge("rr", addr, args), b"")
}

#[test]
fn the_response_is_printed_and_the_request_names_where_to_send_it() {
    let addr = start_broker();
    let requests = responder(addr, "svc/time", echo);
    let out = rr(
        addr,
        &["-t", "svc/time", "-e", "me/reply", "-m", "now?", "-W", "10"],
    )
    .ok();
    assert_eq!(out.stdout(), "re: now?\n");
    let request = requests.recv_timeout(LIMIT).expect("a request");
    assert_eq!(request.payload, b"now?");
    assert_eq!(request.response_topic.as_deref(), Some("me/reply"));
    let correlation = request.correlation.expect("correlation data");
    assert_eq!(correlation.len(), 16, "{correlation:?}");

    // -v, -F (the correlation data is the request's), -N; a file and stdin as the request.
    let out = rr(addr, &["-t", "svc/time", "-e", "me/reply", "-n", "-v"]).ok();
    assert_eq!(out.stdout(), "me/reply re: \n");
    requests.recv_timeout(LIMIT).expect("a request");
    let out = rr(
        addr,
        &[
            "-t",
            "svc/time",
            "-e",
            "me/reply",
            "-m",
            "x",
            "-F",
            "%t|%p|%D|%q",
            "-N",
            "-q",
            "1",
        ],
    )
    .ok();
    let request = requests.recv_timeout(LIMIT).expect("a request");
    let correlation = String::from_utf8(request.correlation.expect("correlation")).expect("hex");
    assert_eq!(out.stdout(), format!("me/reply|re: x|{correlation}|1"));
    let dir = std::env::temp_dir().join(format!("midge-rr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("request.bin");
    std::fs::write(&file, b"\x00bytes\xff").expect("file");
    let out = rr(
        addr,
        &[
            "-t",
            "svc/time",
            "-e",
            "me/reply",
            "-f",
            file.to_str().expect("utf-8"),
        ],
    )
    .ok();
    assert_eq!(out.stdout, b"re: \x00bytes\xff\n");
    let out = run(
        midge("rr", addr, &["-t", "svc/time", "-e", "me/reply", "-s"]),
        b"from stdin",
    )
    .ok();
    assert_eq!(out.stdout(), "re: from stdin\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn given_correlation_data_is_sent_and_printed_back() {
    let addr = start_broker();
    let requests = responder(addr, "svc/job", echo);
    let out = rr(
        addr,
        &[
            "-t",
            "svc/job",
            "-e",
            "me/job",
            "-m",
            "run",
            "-F",
            "%D %p",
            "-D",
            "publish",
            "correlation-data",
            "job-7",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
        ],
    )
    .ok();
    assert_eq!(out.stdout(), "job-7 re: run\n");
    let request = requests.recv_timeout(LIMIT).expect("a request");
    assert_eq!(request.correlation.as_deref(), Some(&b"job-7"[..]));
    // Two requests get different generated correlation data.
    rr(addr, &["-t", "svc/job", "-e", "me/job", "-m", "a"]).ok();
    rr(addr, &["-t", "svc/job", "-e", "me/job", "-m", "b"]).ok();
    let a = requests.recv_timeout(LIMIT).expect("a").correlation;
    let b = requests.recv_timeout(LIMIT).expect("b").correlation;
    assert!(a.is_some() && a != b, "{a:?} {b:?}");
}

#[test]
fn the_response_takes_every_format_code_of_sub() {
    let addr = start_broker();
    let _requests = responder(addr, "svc/fmt", echo);
    let out = rr(
        addr,
        &[
            "-t",
            "svc/fmt",
            "-e",
            "me/fmt",
            "-m",
            "hello",
            "-F",
            "%-8t|%05l|%m|%.2t",
        ],
    )
    .ok();
    assert_eq!(out.stdout(), "me/fmt  |00009|0|me\n");
    let out = rr(
        addr,
        &[
            "-t", "svc/fmt", "-e", "me/fmt", "-m", "hello", "-F", "%j", "--pretty",
        ],
    )
    .ok();
    let text = out.stdout();
    assert!(text.starts_with("{\n\t\"tst\""), "{text}");
    assert!(text.contains("\t\"topic\":\t\"me/fmt\""), "{text}");
}

#[test]
fn responses_to_other_requests_are_skipped_and_one_without_correlation_data_is_taken() {
    let addr = start_broker();
    // First an answer to someone else's request on the same topic, then ours.
    responder(addr, "svc/a", |request| {
        vec![
            (Some(b"not-yours".to_vec()), b"wrong".to_vec()),
            (request.correlation.clone(), b"right".to_vec()),
        ]
    });
    let out = rr(addr, &["-t", "svc/a", "-e", "me/a", "-m", "q", "-W", "10"]).ok();
    assert_eq!(out.stdout(), "right\n");
    // A responder that does not echo the correlation data (as a mosquitto_sub | mosquitto_pub
    // pipeline) is answered all the same.
    responder(addr, "svc/b", |_| vec![(None, b"plain".to_vec())]);
    let out = rr(addr, &["-t", "svc/b", "-e", "me/b", "-m", "q", "-W", "10"]).ok();
    assert_eq!(out.stdout(), "plain\n");
}

#[test]
fn a_retained_message_is_the_response_unless_r_skips_it() {
    let addr = start_broker();
    run(
        midge("pub", addr, &["-t", "me/r", "-m", "stale", "-r", "-q", "1"]),
        b"",
    )
    .ok();
    // No responder: the retained message answers at once, as with mosquitto_rr.
    let out = rr(addr, &["-t", "svc/r", "-e", "me/r", "-m", "q", "-W", "10"]).ok();
    assert_eq!(out.stdout(), "stale\n");
    // -R waits for a fresh one.
    responder(addr, "svc/r", echo);
    let out = rr(
        addr,
        &["-t", "svc/r", "-e", "me/r", "-m", "q", "-R", "-W", "10"],
    )
    .ok();
    assert_eq!(out.stdout(), "re: q\n");
}

#[test]
fn no_response_is_exit_27_at_w() {
    let addr = start_broker();
    let started = std::time::Instant::now();
    let out = rr(
        addr,
        &["-t", "svc/none", "-e", "me/none", "-m", "q", "-W", "1"],
    );
    assert_eq!(out.code(), Some(27), "stderr: {}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("midge rr: timed out after 1 s"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[test]
fn failures_have_the_exit_codes_of_pub_and_sub() {
    let out = rr(closed_port(), &["-t", "a", "-e", "b", "-m", "q"]);
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("connection refused"), "{}", out.stderr);
    let addr = start_broker();
    for (args, text) in [
        (&["-t", "a", "-e", "b"][..], "--message"),
        (&["-e", "b", "-m", "q"], "-t is required"),
        (&["-t", "a", "-m", "q"], "--response-topic"),
        (
            &["-t", "a", "-e", "b/#", "-m", "q"],
            "invalid response topic",
        ),
        (&["-t", "a/+", "-e", "b", "-m", "q"], "invalid topic"),
        (
            &[
                "-t",
                "a",
                "-e",
                "b",
                "-m",
                "q",
                "-D",
                "publish",
                "response-topic",
                "c",
            ],
            "rr sets the response topic from -e",
        ),
        (
            &["-t", "a", "-e", "b", "-m", "q", "-i", "x", "-I", "y"],
            "-i and -I cannot be used together",
        ),
    ] {
        let out = rr(addr, args);
        // 1 for a usage error, as mosquitto_rr.
        assert_eq!(out.code(), Some(1), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(text), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn under_3_1_1_the_first_message_on_the_response_topic_is_the_response() {
    let addr = start_broker();
    // A 3.1.1 request has no Response Topic: this responder answers on a topic it knows.
    let requests = responder(addr, "svc/v3", |_| Vec::new());
    let answering = std::thread::spawn(move || {
        let request = requests.recv_timeout(LIMIT).expect("a request");
        assert_eq!(request.response_topic, None);
        assert_eq!(request.correlation, None);
        run(
            midge("pub", addr, &["-t", "me/v3", "-m", "old school", "-q", "1"]),
            b"",
        )
        .ok();
    });
    let out = rr(
        addr,
        &[
            "-V", "311", "-t", "svc/v3", "-e", "me/v3", "-m", "q", "-W", "10", "-I", "rr-",
        ],
    )
    .ok();
    assert_eq!(out.stdout(), "old school\n");
    answering.join().expect("answered");
}

#[test]
fn help_shows_the_5_0_default_and_the_exit_codes() {
    let help = |sub: &str| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_midge"));
        command.args([sub, "--help"]);
        run(command, b"").ok().stdout()
    };
    let rr = help("rr");
    assert!(rr.contains("--response-topic"), "{rr}");
    assert!(rr.contains("[default: 5]"), "-V defaults to 5.0: {rr}");
    assert!(rr.contains("27 "), "{rr}");
    // pub and sub keep 3.1.1.
    let sub = help("sub");
    assert!(sub.contains("[default: 311]"), "{sub}");
}
