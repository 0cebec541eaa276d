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
    child: Child,
}

impl Mosquitto {
    /// Starts mosquitto, or returns `None` after a loud skip if it is not installed.
    pub fn start(name: &str) -> Option<Self> {
        let program = mosquitto_path();
        if !require("mosquitto (Debian package mosquitto)", program.is_some()) {
            return None;
        }
        let program = program?;
        let dir =
            std::env::temp_dir().join(format!("midge-mosquitto-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mosquitto dir");
        let addr = closed_port();
        let config = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest stderr\nlog_type error\n",
            addr.port()
        );
        let config_path = dir.join("mosquitto.conf");
        std::fs::write(&config_path, config).expect("mosquitto config");
        let child = Command::new(program)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let mosquitto = Self { addr, dir, child };
        let deadline = Instant::now() + LIMIT;
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {addr}"
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
