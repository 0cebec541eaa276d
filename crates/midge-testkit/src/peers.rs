//! Detection of third-party test peers (mosquitto, paho-mqtt, MQTT.js), shared by the
//! interop tests of every crate.
//!
//! A missing peer skips its test with `SKIPPED: …` on stderr, unless `MIDGE_REQUIRE_PEERS=1`
//! (set by `.ci/run`), where it fails the test.

use std::io::Write;
use std::process::{Command, Stdio};

/// True if the peer is there. Otherwise skips loudly, or panics under `MIDGE_REQUIRE_PEERS=1`.
///
/// # Panics
///
/// When the peer is missing and `MIDGE_REQUIRE_PEERS=1`: that is the point.
pub fn require(peer: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var("MIDGE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
        panic!("{peer} is not installed, and MIDGE_REQUIRE_PEERS=1 requires it");
    }
    // Straight to stderr, past the test harness's capture, so that the skip shows.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {peer} not installed (MIDGE_REQUIRE_PEERS=1 makes this a failure)"
    );
    false
}

/// True if `program` can be started (whatever its exit status).
pub fn installed(program: &str, probe: &[&str]) -> bool {
    quiet(program, probe).status().is_ok()
}

/// True if `program args` runs and exits with success.
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    quiet(program, args).status().is_ok_and(|s| s.success())
}

fn quiet(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}
