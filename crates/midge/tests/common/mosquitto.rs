//! A real mosquitto broker for the tests that compare with it, and mosquitto's clients.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use midge_testkit::peers::{installed, require};

use super::{closed_port, LIMIT};

pub fn mosquitto_path() -> Option<PathBuf> {
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

pub fn clients_installed() -> bool {
    require(
        "mosquitto_pub and mosquitto_sub (Debian package mosquitto-clients)",
        installed("mosquitto_sub", &["--help"]) && installed("mosquitto_pub", &["--help"]),
    )
}

/// A mosquitto broker on 127.0.0.1 and a free port, killed when dropped.
pub struct Mosquitto {
    pub addr: SocketAddr,
    dir: PathBuf,
    program: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts mosquitto, or returns `None` after a loud skip if it is not installed.
    pub fn start(name: &str) -> Option<Self> {
        Self::start_with(name, "allow_anonymous true\npersistence false\n")
    }

    /// Starts mosquitto with `settings` (lines of mosquitto.conf) after its listener, on a
    /// free port, in a directory of its own (its working directory), or returns `None` after
    /// a loud skip if it is not installed.
    pub fn start_with(name: &str, settings: &str) -> Option<Self> {
        let program = mosquitto_path();
        if !require("mosquitto (Debian package mosquitto)", program.is_some()) {
            return None;
        }
        let program = program?;
        let dir =
            std::env::temp_dir().join(format!("midge-mosquitto-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mosquitto dir");
        // Started as root, mosquitto runs as the user `mosquitto`, which must be able to
        // write its store here.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
        }
        let addr = closed_port();
        let config = format!(
            "listener {} 127.0.0.1\n{settings}log_dest stderr\nlog_type error\n",
            addr.port()
        );
        std::fs::write(dir.join("mosquitto.conf"), config).expect("mosquitto config");
        let mut mosquitto = Self {
            addr,
            dir,
            program,
            child: None,
        };
        mosquitto.run();
        Some(mosquitto)
    }

    /// The directory mosquitto runs in: its configuration, and its store when it has one.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn run(&mut self) {
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let deadline = Instant::now() + LIMIT;
        while TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}",
                self.addr
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops mosquitto with SIGTERM (it saves its store, when it has one) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Kills mosquitto (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts mosquitto again on the same port, with the same configuration and directory.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "mosquitto is running");
        self.run();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
