//! `midge passwd`, run as a process: -c/-b/-D/-U, the password prompt on stdin, --scram and
//! -H sha512-pbkdf2, and that what it writes is read back by `PasswordFile` (and, for
//! sha512-pbkdf2, by a real mosquitto broker when mosquitto is installed).
#![allow(missing_docs)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use midge_auth::passwd::PasswordFile;
use midge_testkit::peers::{installed, require};

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("midge-passwd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temporary directory");
        Self(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `midge passwd args` with `stdin` as its standard input (not a terminal).
fn passwd(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_midge"))
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("midge starts");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("writes stdin");
    drop(input);
    child.wait_with_output().expect("midge ends")
}

/// `passwd` that must succeed.
fn ok(args: &[&str]) {
    let out = passwd(args, b"");
    assert!(
        out.status.success(),
        "midge passwd {args:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read(path: &Path) -> PasswordFile {
    PasswordFile::read(path).expect("midge's file is read")
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[test]
fn create_add_replace_and_delete() {
    let dir = TempDir::new("batch");
    let path = dir.file("passwd");
    let file = s(&path);
    ok(&["-c", "-b", file, "alice", "secret"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    ok(&["-b", file, "bob", "p:w d"]);
    ok(&["-b", file, "carol", "-starts-with-a-dash"]);
    let passwords = read(&path);
    assert_eq!(
        passwords.usernames().collect::<Vec<_>>(),
        ["alice", "bob", "carol"]
    );
    assert_eq!(passwords.scheme_of("alice"), Some("argon2id"));
    assert!(passwords.verify("alice", b"secret"));
    assert!(!passwords.verify("alice", b"Secret"));
    assert!(passwords.verify("bob", b"p:w d"));
    assert!(passwords.verify("carol", b"-starts-with-a-dash"));

    // Replacing a password keeps the order.
    ok(&["-b", file, "alice", "new"]);
    let passwords = read(&path);
    assert_eq!(
        passwords.usernames().collect::<Vec<_>>(),
        ["alice", "bob", "carol"]
    );
    assert!(passwords.verify("alice", b"new"));
    assert!(!passwords.verify("alice", b"secret"));

    ok(&["-D", file, "bob"]);
    assert_eq!(
        read(&path).usernames().collect::<Vec<_>>(),
        ["alice", "carol"]
    );
    let out = passwd(&["-D", file, "bob"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Warning: User bob not found in password file.\n"
    );

    // -c overwrites.
    ok(&["-c", "-b", file, "dave", "d"]);
    assert_eq!(read(&path).usernames().collect::<Vec<_>>(), ["dave"]);
}

#[test]
fn comments_survive_an_update() {
    let dir = TempDir::new("comments");
    let path = dir.file("passwd");
    ok(&["-c", "-b", s(&path), "alice", "secret"]);
    let text = std::fs::read_to_string(&path).expect("file");
    std::fs::write(&path, format!("# the broker's users\n\n{text}")).expect("writes");
    ok(&["-b", s(&path), "bob", "pw"]);
    let text = std::fs::read_to_string(&path).expect("file");
    assert!(
        text.starts_with("# the broker's users\n\nalice:$argon2id$"),
        "{text}"
    );
    assert!(read(&path).verify("bob", b"pw"));
}

#[test]
fn update_hashes_a_plaintext_file() {
    let dir = TempDir::new("update");
    let path = dir.file("passwd");
    std::fs::write(
        &path,
        "# plain\nalice:secret\n  bob  : two words \ncarol:a:b\n",
    )
    .expect("plain file");
    ok(&["-U", "-H", "sha512-pbkdf2", "-I", "1000", s(&path)]);
    let text = std::fs::read_to_string(&path).expect("file");
    assert!(text.starts_with("# plain\nalice:$7$1000$"), "{text}");
    let passwords = read(&path);
    assert!(passwords.verify("alice", b"secret"));
    assert!(passwords.verify("bob", b"two words"));
    assert!(passwords.verify("carol", b"a:b"));
    // Running it again leaves the hashes alone.
    ok(&["-U", s(&path)]);
    assert_eq!(std::fs::read_to_string(&path).expect("file"), text);

    // A bad line: the file and the line are named, and nothing is written.
    std::fs::write(&path, "alice:secret\nno colon here\n").expect("plain file");
    let out = passwd(&["-U", s(&path)], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("Error: {}: line 2: ", path.display())),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("file"),
        "alice:secret\nno colon here\n"
    );
}

/// rpassword reads the terminal (/dev/tty) when there is one; `midge passwd` asks it only
/// when stdin is a terminal, and otherwise reads the two passwords as lines of stdin, as
/// `mosquitto_passwd` does. These runs have a pipe for stdin, so they take the second path
/// (the terminal path needs a pseudo-terminal, and is not tested here).
#[test]
fn prompts_read_stdin_twice() {
    let dir = TempDir::new("prompt");
    let path = dir.file("passwd");
    let file = s(&path);

    let out = passwd(&["-c", file, "alice"], b"hunter2\nhunter2\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "Password: \nReenter password: \n");
    assert!(read(&path).verify("alice", b"hunter2"));

    // CRLF endings and passwords that are not UTF-8.
    let out = passwd(&[file, "bob"], b"\xffpw\r\n\xffpw\r\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(read(&path).verify("bob", b"\xffpw"));

    let out = passwd(&[file, "carol"], b"one\ntwo\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).ends_with("Error: Passwords do not match.\n"),
        "{}",
        stderr(&out)
    );
    let out = passwd(&[file, "carol"], b"\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).ends_with("Error: Empty password.\n"),
        "{}",
        stderr(&out)
    );
    // No input at all is an empty password.
    let out = passwd(&[file, "carol"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(!read(&path).contains("carol"));
}

#[test]
fn scram_entries_work_for_plain_passwords_and_enhanced_authentication() {
    let dir = TempDir::new("scram");
    let path = dir.file("passwd");
    ok(&["-c", "-b", "--scram", s(&path), "sam", "pencil"]);
    ok(&[
        "-b",
        "--scram",
        "--iterations",
        "8192",
        s(&path),
        "sue",
        "pen",
    ]);
    let passwords = read(&path);
    assert_eq!(passwords.scheme_of("sam"), Some("SCRAM-SHA-256"));
    let creds = passwords
        .scram_credentials("sam")
        .expect("SCRAM credentials");
    assert_eq!(creds.iterations, 4096);
    assert!(creds.verify_password(b"pencil"));
    assert!(passwords.verify("sam", b"pencil"));
    assert!(!passwords.verify("sam", b"pen"));
    assert_eq!(
        passwords.scram_credentials("sue").map(|c| c.iterations),
        Some(8192)
    );
    assert!(passwords.verify("sue", b"pen"));

    let out = passwd(&["-b", "--scram", "-I", "100", s(&path), "weak", "pw"], b"");
    assert!(out.status.success());
    assert!(stderr(&out).contains("RFC 7677"), "{}", stderr(&out));
}

#[test]
fn argument_errors_exit_1_with_mosquitto_passwds_messages() {
    let dir = TempDir::new("errors");
    let path = dir.file("passwd");
    for (args, message) in [
        (
            &["-c", "-D", "f", "u"][..],
            "Error: -c and -D cannot be used together.\n",
        ),
        (
            &["-b", "-D", "f", "u"],
            "Error: -b and -D cannot be used together.\n",
        ),
        (
            &["-U"],
            "Error: -U argument given but password file missing.\n",
        ),
        (
            &["-b", "f", "u:x", "p"],
            "Error: user name must not contain the ':' character.\n",
        ),
        (&["-H", "md5", "f", "u"], "Error: Unknown hash type 'md5'\n"),
    ] {
        let out = passwd(args, b"");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out), message, "{args:?}");
    }
    // No arguments: the usage, exit 1.
    let out = passwd(&[], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: midge passwd"));
    // A missing file is named.
    let out = passwd(&["-b", s(&path), "u", "p"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "Error: Unable to open password file {}",
            path.display()
        )),
        "{}",
        stderr(&out)
    );
}

/// A mosquitto broker on 127.0.0.1 with a password file, killed when dropped.
struct Mosquitto {
    addr: SocketAddr,
    child: Child,
}

impl Mosquitto {
    fn start(dir: &TempDir, password_file: &Path) -> Option<Self> {
        let program = [
            "/usr/sbin/mosquitto",
            "/usr/local/sbin/mosquitto",
            "/usr/bin/mosquitto",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| installed("mosquitto", &["-h"]).then(|| PathBuf::from("mosquitto")));
        if !require("mosquitto (Debian package mosquitto)", program.is_some())
            || !require(
                "mosquitto_pub (Debian package mosquitto-clients)",
                installed("mosquitto_pub", &["--help"]),
            )
        {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = dir.file("mosquitto.conf");
        // `user root`: run as root, mosquitto would otherwise switch to the mosquitto user,
        // which cannot read a 0600 file of root's.
        std::fs::write(
            &config,
            format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous false\n\
                 password_file {}\npersistence false\nlog_dest stderr\n",
                password_file.display()
            ),
        )
        .expect("mosquitto config");
        let child = Command::new(program?)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let mosquitto = Self { addr, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(mosquitto)
    }

    /// Whether mosquitto accepts `user` with `password`.
    fn accepts(&self, user: &str, password: &str) -> bool {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .args(["-u", user, "-P", password, "-t", "t", "-m", "m", "-q", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mosquitto_pub runs")
            .success()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn mosquitto_accepts_what_midge_passwd_writes_with_sha512_pbkdf2() {
    let dir = TempDir::new("mosquitto");
    let path = dir.file("passwd");
    ok(&[
        "-c",
        "-b",
        "-H",
        "sha512-pbkdf2",
        "-I",
        "1000",
        s(&path),
        "alice",
        "secret",
    ]);
    ok(&["-b", "-H", "sha512-pbkdf2", s(&path), "bob", "p:w d"]);
    let Some(mosquitto) = Mosquitto::start(&dir, &path) else {
        return;
    };
    assert!(mosquitto.accepts("alice", "secret"));
    assert!(mosquitto.accepts("bob", "p:w d"));
    assert!(!mosquitto.accepts("alice", "wrong"));
    assert!(!mosquitto.accepts("carol", "secret"));
}
