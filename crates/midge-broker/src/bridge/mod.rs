//! Bridges: connections from this broker to other brokers that forward messages both ways
//! (`[[bridge]]` in the configuration; see [`BridgeConfig`](crate::BridgeConfig)).
//!
//! A bridge is two midge-client clients: one connected to the remote broker, one connected
//! in-process to this broker as a trusted client (`$bridge/` and the bridge's name) whose
//! persistent session holds what waits to be forwarded. Each side acknowledges a QoS 1 or 2
//! message only once the other side has acknowledged its copy, so a message is never lost
//! between them; it may be sent twice after a reconnection (QoS 1), as MQTT allows.
//!
//! Loops are prevented with No Local on both sides (5.0 remotes), or with the bridge flag in
//! the 3.1.1 CONNECT (`try_private`), which asks the remote for the same.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use crate::config::BridgeConfig;

#[cfg(feature = "runtime")]
mod run;

#[cfg(feature = "runtime")]
pub(crate) use run::{start, wait_subscribed};

/// A bridge's state, shared by its tasks and the admin view.
#[derive(Debug)]
pub(crate) struct BridgeStatus {
    pub(crate) name: String,
    pub(crate) addresses: Vec<String>,
    pub(crate) connected: AtomicBool,
    /// Connections made to the remote.
    pub(crate) connections: AtomicU64,
    /// Messages forwarded to the remote, and from it.
    pub(crate) forwarded_out: AtomicU64,
    pub(crate) forwarded_in: AtomicU64,
    /// Messages the other side refused (a failure code in its acknowledgement): not forwarded.
    pub(crate) refused_out: AtomicU64,
    pub(crate) refused_in: AtomicU64,
    /// Why the last connection attempt failed or the last connection ended.
    pub(crate) last_error: Mutex<Option<String>>,
}

impl BridgeStatus {
    pub(crate) fn new(config: &BridgeConfig) -> Self {
        Self {
            name: config.name.clone(),
            addresses: config.address.clone(),
            connected: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            forwarded_out: AtomicU64::new(0),
            forwarded_in: AtomicU64::new(0),
            refused_out: AtomicU64::new(0),
            refused_in: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// A snapshot for the admin view.
    pub(crate) fn view(&self) -> BridgeView {
        BridgeView {
            name: self.name.clone(),
            addresses: self.addresses.clone(),
            connected: self.connected.load(Relaxed),
            connections: self.connections.load(Relaxed),
            forwarded_out: self.forwarded_out.load(Relaxed),
            forwarded_in: self.forwarded_in.load(Relaxed),
            refused_out: self.refused_out.load(Relaxed),
            refused_in: self.refused_in.load(Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    pub(crate) fn set_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }
}

/// One bridge as the admin view shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BridgeView {
    /// The bridge's name.
    pub name: String,
    /// The remote's addresses, in the order they are tried.
    pub addresses: Vec<String>,
    /// Whether the bridge is connected to the remote now.
    pub connected: bool,
    /// Connections made to the remote since the broker started.
    pub connections: u64,
    /// Messages forwarded to the remote (acknowledged by it, for QoS 1 and 2).
    pub forwarded_out: u64,
    /// Messages forwarded from the remote to this broker.
    pub forwarded_in: u64,
    /// Messages the remote refused (a failure reason code in its acknowledgement).
    pub refused_out: u64,
    /// Messages this broker refused.
    pub refused_in: u64,
    /// Why the last connection attempt failed or the last connection ended, if one did.
    pub last_error: Option<String>,
}
