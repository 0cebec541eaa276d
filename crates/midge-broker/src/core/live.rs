//! The limits that may change while the broker runs (a configuration reloaded on SIGHUP):
//! read where they are used, from atomics, instead of from the configuration the broker
//! started with.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

use crate::config::{BrokerConfig, LimitsConfig};

/// The live values of the limits that may change while the broker runs.
#[derive(Debug)]
pub(crate) struct LiveLimits {
    max_connections: AtomicUsize,
    max_sessions: AtomicUsize,
    backpressure_timeout_ms: AtomicU64,
    max_queued_bytes_total: AtomicUsize,
    max_retained_messages: AtomicUsize,
    max_retained_bytes: AtomicUsize,
    close_timeout_ms: AtomicU64,
}

impl LiveLimits {
    pub(crate) fn new(limits: &LimitsConfig) -> Self {
        Self {
            max_connections: AtomicUsize::new(limits.max_connections),
            max_sessions: AtomicUsize::new(limits.max_sessions),
            backpressure_timeout_ms: AtomicU64::new(limits.backpressure_timeout_ms),
            max_queued_bytes_total: AtomicUsize::new(limits.max_queued_bytes_total),
            max_retained_messages: AtomicUsize::new(limits.max_retained_messages),
            max_retained_bytes: AtomicUsize::new(limits.max_retained_bytes),
            close_timeout_ms: AtomicU64::new(limits.close_timeout_ms),
        }
    }

    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections.load(Relaxed)
    }

    pub(crate) fn max_sessions(&self) -> usize {
        self.max_sessions.load(Relaxed)
    }

    pub(crate) fn backpressure_timeout(&self) -> Duration {
        Duration::from_millis(self.backpressure_timeout_ms.load(Relaxed))
    }

    pub(crate) fn max_queued_bytes_total(&self) -> usize {
        self.max_queued_bytes_total.load(Relaxed)
    }

    pub(crate) fn max_retained_messages(&self) -> usize {
        self.max_retained_messages.load(Relaxed)
    }

    pub(crate) fn max_retained_bytes(&self) -> usize {
        self.max_retained_bytes.load(Relaxed)
    }

    pub(crate) fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.close_timeout_ms.load(Relaxed))
    }

    /// Takes `new`'s values; returns the keys whose value changed.
    pub(crate) fn apply(&self, new: &LimitsConfig) -> Vec<String> {
        let mut changed = Vec::new();
        let mut set_usize = |key: &str, cell: &AtomicUsize, value: usize| {
            if cell.swap(value, Relaxed) != value {
                changed.push(format!("limits.{key}"));
            }
        };
        set_usize(
            "max_connections",
            &self.max_connections,
            new.max_connections,
        );
        set_usize("max_sessions", &self.max_sessions, new.max_sessions);
        set_usize(
            "max_queued_bytes_total",
            &self.max_queued_bytes_total,
            new.max_queued_bytes_total,
        );
        set_usize(
            "max_retained_messages",
            &self.max_retained_messages,
            new.max_retained_messages,
        );
        set_usize(
            "max_retained_bytes",
            &self.max_retained_bytes,
            new.max_retained_bytes,
        );
        let mut set_u64 = |key: &str, cell: &AtomicU64, value: u64| {
            if cell.swap(value, Relaxed) != value {
                changed.push(format!("limits.{key}"));
            }
        };
        set_u64(
            "backpressure_timeout_ms",
            &self.backpressure_timeout_ms,
            new.backpressure_timeout_ms,
        );
        set_u64(
            "close_timeout_ms",
            &self.close_timeout_ms,
            new.close_timeout_ms,
        );
        changed
    }
}

/// What [`BrokerHandle::reload_config`](crate::BrokerHandle::reload_config) did with a
/// configuration read again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ConfigReload {
    /// Keys whose new values are in effect now.
    pub applied: Vec<String>,
    /// Keys that changed but take effect only when the broker restarts.
    pub needs_restart: Vec<String>,
}

/// The keys of `new` that differ from `old` and only a restart applies, by section (or by
/// key, in `[limits]`). Compared by their `Debug` forms, which every section has.
pub(crate) fn needs_restart(old: &BrokerConfig, new: &BrokerConfig) -> Vec<String> {
    let mut changed = Vec::new();
    let mut section = |name: &str, old: String, new: String| {
        if old != new {
            changed.push(name.to_owned());
        }
    };
    section(
        "listener",
        format!("{:?}", old.listeners),
        format!("{:?}", new.listeners),
    );
    section(
        "sessions",
        format!("{:?}", old.sessions),
        format!("{:?}", new.sessions),
    );
    section("mqtt", format!("{:?}", old.mqtt), format!("{:?}", new.mqtt));
    section(
        "shared_subscriptions",
        format!("{:?}", old.shared_subscriptions),
        format!("{:?}", new.shared_subscriptions),
    );
    section("sys", format!("{:?}", old.sys), format!("{:?}", new.sys));
    section(
        "persistence",
        format!("{:?}", old.persistence),
        format!("{:?}", new.persistence),
    );
    // The token's `Debug` is redacted: compare it itself.
    let token = |c: &BrokerConfig| c.http.token.as_ref().map(|t| t.expose().to_owned());
    section(
        "http",
        format!("{:?}{:?}", old.http, token(old)),
        format!("{:?}{:?}", new.http, token(new)),
    );
    // `[auth]`'s files reload on their own (their contents, not their paths).
    section("auth", format!("{:?}", old.auth), format!("{:?}", new.auth));
    // A bridge's password `Debug` is redacted: compare it itself.
    let passwords = |c: &BrokerConfig| {
        c.bridges
            .iter()
            .map(|b| b.password.as_ref().map(|p| p.expose().to_owned()))
            .collect::<Vec<_>>()
    };
    section(
        "bridge",
        format!("{:?}{:?}", old.bridges, passwords(old)),
        format!("{:?}{:?}", new.bridges, passwords(new)),
    );
    let (o, n) = (&old.limits, &new.limits);
    let mut limit = |key: &str, old: String, new: String| {
        if old != new {
            changed.push(format!("limits.{key}"));
        }
    };
    macro_rules! restart_limits {
        ($($field:ident),*) => {
            $(limit(stringify!($field), format!("{:?}", o.$field), format!("{:?}", n.$field));)*
        };
    }
    restart_limits!(
        connect_timeout_ms,
        max_packet_size,
        receive_maximum,
        max_inflight,
        max_subscriptions_per_client,
        max_topic_levels,
        max_keepalive,
        topic_alias_maximum,
        inbox_capacity
    );
    changed
}
