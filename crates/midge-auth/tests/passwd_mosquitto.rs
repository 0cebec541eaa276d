//! Files written by the real `mosquitto_passwd` (Debian package mosquitto) are read as they
//! are, and their users verify. Skipped loudly when `mosquitto_passwd` is missing; a failure
//! under `MIDGE_REQUIRE_PEERS=1` (set by `.ci/run`).
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use midge_auth::passwd::{PasswordFile, Scheme};
use midge_testkit::peers::{installed, require};

/// `mosquitto_passwd`, or `None` after a loud skip.
fn mosquitto_passwd() -> Option<PathBuf> {
    let debian = Path::new("/usr/bin/mosquitto_passwd");
    let program = if debian.exists() {
        Some(debian.to_path_buf())
    } else {
        installed("mosquitto_passwd", &[]).then(|| PathBuf::from("mosquitto_passwd"))
    };
    if !require(
        "mosquitto_passwd (Debian package mosquitto)",
        program.is_some(),
    ) {
        return None;
    }
    program
}

/// Runs `mosquitto_passwd args`, which must succeed.
fn run(program: &Path, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_passwd runs");
    assert!(
        out.status.success(),
        "mosquitto_passwd {args:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "midge-passwd-mosquitto-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temporary directory");
        Self(path)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("UTF-8 path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn files_from_mosquitto_passwd_are_read_and_verify() {
    let Some(program) = mosquitto_passwd() else {
        return;
    };
    let dir = TempDir::new("batch");
    let file = dir.file("passwd");
    run(&program, &["-c", "-b", &file, "alice", "secret"]);
    run(&program, &["-b", &file, "bob", "p:w d"]);
    run(&program, &["-b", &file, "émile", "ünïcödé"]);
    run(
        &program,
        &["-H", "sha512", "-b", &file, "carol", "old-style"],
    );
    // Replacing a password keeps one entry.
    run(&program, &["-b", &file, "alice", "secret2"]);

    let passwords = PasswordFile::read(Path::new(&file)).expect("mosquitto's file is read");
    assert_eq!(
        passwords.usernames().collect::<Vec<_>>(),
        ["alice", "bob", "émile", "carol"]
    );
    assert!(passwords.verify("alice", b"secret2"));
    assert!(!passwords.verify("alice", b"secret"));
    assert!(passwords.verify("bob", b"p:w d"));
    assert!(!passwords.verify("bob", b"p"));
    assert!(passwords.verify("émile", "ünïcödé".as_bytes()));
    assert!(passwords.verify("carol", b"old-style"));
    assert!(!passwords.verify("carol", b"old-style "));
    assert!(!passwords.verify("dave", b"secret2"));
    assert_eq!(passwords.scheme_of("alice"), Some("sha512-pbkdf2"));
    assert_eq!(passwords.scheme_of("carol"), Some("sha512"));

    // What we write back is byte for byte what mosquitto wrote, and mosquitto_passwd edits
    // it further.
    let text = std::fs::read_to_string(&file).expect("file");
    assert_eq!(passwords.to_text(), text);
    let mut passwords = passwords;
    passwords
        .set_password("dave", b"ours", Scheme::Pbkdf2Sha512 { iterations: 1000 })
        .expect("hashes");
    passwords.write(Path::new(&file)).expect("writes");
    run(&program, &["-D", &file, "bob"]);
    let back = PasswordFile::read(Path::new(&file)).expect("read again");
    assert_eq!(
        back.usernames().collect::<Vec<_>>(),
        ["alice", "émile", "carol", "dave"]
    );
    assert!(back.verify("dave", b"ours"));
}

#[test]
fn plaintext_files_updated_by_mosquitto_passwd_are_read_and_verify() {
    let Some(program) = mosquitto_passwd() else {
        return;
    };
    let dir = TempDir::new("update");
    let file = dir.file("passwd");
    std::fs::write(&file, "alice:secret\n  bob  :  spaced  \ncarol:pw\n").expect("plain file");
    run(&program, &["-U", &file]);
    let passwords = PasswordFile::read(Path::new(&file)).expect("mosquitto's file is read");
    assert_eq!(passwords.len(), 3);
    assert!(passwords.verify("alice", b"secret"));
    // mosquitto trims blanks around names and passwords, as we read them.
    assert!(passwords.verify("bob", b"spaced"));
    assert!(passwords.verify("carol", b"pw"));
    assert!(!passwords.verify("carol", b"secret"));
}

#[test]
fn hand_made_sha512_entry_verifies() {
    // mosquitto's $6$ is SHA-512 over the password then the salt. Expected value computed
    // independently with Python's hashlib:
    //   base64(sha512(b"correct horse" + b"midge-salt12"))
    let salt = "bWlkZ2Utc2FsdDEy"; // base64("midge-salt12"), 12 bytes as mosquitto uses
    let hash =
        "xYmZzbZb8kL/lGH9qUgiHQXWSKwJdP0zniBEkU+JuucSUTzWM9q7tfMsWV4gGv8VBNiuA5g92DiJqmd7L/bhmg==";
    let passwords = PasswordFile::parse(&format!("hand:$6${salt}${hash}\n")).expect("parses");
    assert!(passwords.verify("hand", b"correct horse"));
    assert!(!passwords.verify("hand", b"correct horsE"));
    assert!(!passwords.verify("hand", b"midge-salt12correct horse"));
}
