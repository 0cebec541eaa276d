#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod admin;
pub mod auth;
#[cfg(feature = "runtime")]
pub mod bridge;
mod broker;
pub mod config;
pub mod core;
#[cfg(feature = "runtime")]
mod driver;
pub mod hooks;
#[cfg(feature = "runtime")]
mod listener;
mod random;
mod stats;
pub mod store;
#[cfg(feature = "runtime")]
mod sys;

pub use admin::{Admin, AdminError, Metrics};
pub use auth::FileAuth;
pub use bridge::BridgeView;
#[cfg(feature = "runtime")]
pub use broker::{Broker, BrokerBuilder, BrokerHandle, FileReloader, StartError};
pub use config::{
    AuthConfig, BindAddr, BridgeConfig, BridgeDirection, BridgeProtocol, BridgeTlsConfig,
    BridgeTopic, BrokerConfig, HttpConfig, ListenerConfig, ListenerProtocol, LogConfig, LogFormat,
    PersistenceConfig, Secret, SharedStrategy, SniConfig, SyncMode, TlsConfig,
};
pub use core::live::ConfigReload;
#[cfg(feature = "runtime")]
pub use driver::Transport;
pub use hooks::{
    AllowAll, AuthExchange, AuthRequest, AuthStep, Authenticator, ClientInfo, CloseReason,
    ConnectRequest, Hooks, Verification,
};
#[cfg(feature = "runtime")]
pub use listener::ListenError;
pub use stats::BrokerStats;
pub use store::{
    Change, Cluster, Journal, JournalError, MemoryJournal, MemoryStore, RestoredMessage,
    RestoredSession, Retained, SessionRecord, Standalone, Store,
};

/// The crates the broker is built on, re-exported for hooks and embedders.
pub use midge_codec as codec;
pub use midge_proto as proto;
