//! `midge store info`, run as a process, on a store written by `DiskStore`, on a file that is
//! not a store and on a missing path; and `midge broker` refusing to start on a damaged store.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Instant;

use midge_broker::{Change, Journal, SessionRecord};
use midge_codec::{ByteStr, ProtocolVersion, QoS};
use midge_store::{DiskOptions, DiskStore};

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("midge-store-cli-{name}-{}", std::process::id()));
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

fn midge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(args)
        .output()
        .expect("midge runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn info_reports_a_store() {
    let dir = TempDir::new("info");
    let path = dir.file("broker.redb");
    {
        let store = DiskStore::open(&path, DiskOptions::default()).expect("opens");
        let now = Instant::now();
        let client = ByteStr::from("sensor-1");
        store.write(Change::Session(&SessionRecord::new(
            client.clone(),
            ProtocolVersion::V5,
            3600,
            now,
        )));
        for _ in 0..3 {
            let message = midge_broker::proto::Message::new("t", &b"x"[..], QoS::AtLeastOnce);
            let mut d =
                midge_broker::proto::session::Delivery::new(std::sync::Arc::new(message), now);
            d.tag = store.next_tag();
            store.write(Change::Enqueue {
                client_id: &client,
                delivery: &d,
            });
        }
    }
    let out = midge(&["store", "info", path.to_str().expect("UTF-8 path")]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().last().unwrap_or_default().to_owned())
    };
    assert_eq!(line("sessions ").as_deref(), Some("1"), "{stdout}");
    assert_eq!(line("messages").as_deref(), Some("3"), "{stdout}");
    assert_eq!(line("undecodable").as_deref(), Some("0"), "{stdout}");
}

#[test]
fn info_refuses_what_is_not_a_store() {
    let dir = TempDir::new("garbage");
    let path = dir.file("garbage.redb");
    std::fs::write(&path, vec![0xa5u8; 32 * 1024]).expect("writes");
    let out = midge(&["store", "info", path.to_str().expect("UTF-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not a readable midge store") && stderr.contains("garbage.redb"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn info_on_a_missing_path_fails() {
    let dir = TempDir::new("missing");
    let path = dir.file("missing.redb");
    let out = midge(&["store", "info", path.to_str().expect("UTF-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("missing.redb"));
    assert!(!path.exists(), "info creates nothing");
}

#[test]
fn the_broker_does_not_start_on_a_damaged_store() {
    let dir = TempDir::new("broker");
    let store = dir.file("garbage.redb");
    std::fs::write(&store, vec![0x5au8; 32 * 1024]).expect("writes");
    let config = dir.file("midge.toml");
    // A path relative to the configuration file.
    std::fs::write(
        &config,
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\n[persistence]\npath = \"garbage.redb\"\n",
    )
    .expect("writes");
    let out = midge(&["broker", "-c", config.to_str().expect("UTF-8 path")]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not a readable midge store")
            && stderr.contains(store.to_str().expect("UTF-8 path")),
        "{stderr}"
    );
}
