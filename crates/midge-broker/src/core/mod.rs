//! The broker without its runtime: state, routing and every decision, with no clock, no
//! tasks and no I/O.
//!
//! [`Core`] is the state every connection shares: the session registry, the subscription
//! index, routing (which runs on the publishing connection's thread), shared subscriptions,
//! retained messages, wills, and offline sessions' expiry. [`Connection`] is one client
//! connection's broker side, over midge-proto's [`ServerConnection`]. Both take the time as an
//! argument and return their deadlines; neither waits. What must wait (a delivery for a full
//! inbox, a session another connection still holds) comes back as state that the driver acts
//! on when woken.
//!
//! The tokio driver in this crate (behind the `runtime` feature, on by default) is one way to
//! run them: a listener, one task per connection, and one task for the core's deadlines. A
//! simulation can run them on a virtual clock and network instead (midge-testkit does), and an
//! embedder can run them on its own runtime.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Instant;
//!
//! use bytes::BytesMut;
//! use midge_broker::core::{Connection, Core};
//! use midge_broker::{AllowAll, BrokerConfig, MemoryStore, Standalone};
//!
//! let now = Instant::now();
//! let core = Core::new(
//!     BrokerConfig::default(),
//!     Arc::new(AllowAll),
//!     Arc::new(MemoryStore::new()),
//!     Arc::new(Standalone),
//!     now,
//! )?;
//! let mut connection = Connection::new(&core, "127.0.0.1:50000".parse()?, now);
//! let mut input = BytesMut::new(); // bytes read from the client's transport
//! connection.handle_input(now, &mut input);
//! let mut output = BytesMut::new();
//! while connection.poll_transmit(now, &mut output) {}
//! // Write `output` to the transport; call `handle_timeout` at `poll_timeout`, and
//! // `handle_wakeup` when `poll_wakeup` is ready.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`ServerConnection`]: midge_proto::server::ServerConnection

pub(crate) mod connection;
mod handover;
pub(crate) mod inbox;
pub(crate) mod live;
pub(crate) mod state;
pub(crate) mod timers;
mod verify;

pub use connection::Connection;
pub use state::Core;
pub use verify::VerificationJob;

/// The client identifiers of bridges' local ends (`$bridge/` and the bridge's name), which
/// only the broker's own connections may take.
pub const BRIDGE_CLIENT_PREFIX: &str = "$bridge/";

/// Whether `client_id` is reserved for a bridge's local end.
pub(crate) fn is_bridge_client_id(client_id: &str) -> bool {
    client_id.starts_with(BRIDGE_CLIENT_PREFIX)
}
