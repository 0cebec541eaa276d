#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod client;
mod connector;
mod driver;
mod endpoint;
mod error;
mod message;
mod options;
#[cfg(feature = "scram")]
mod scram;

pub use auth::{AuthError, Authenticator};
pub use client::{Client, ClientBuilder, ConnectionEvent, PublishHandle, Subscription};
pub use connector::{Connector, ConnectorError};
pub use endpoint::{BrokerUrl, Scheme, UrlError};
pub use error::{
    AuthFailure, ClientError, CloseReason, ConnectError, InputKind, InvalidInput, TlsFailure,
    WebSocketFailure,
};
pub use message::{Ack, Message};
pub use options::{Limits, PublishOptions, ReconnectPolicy, SubscribeOptions};
#[cfg(feature = "scram")]
pub use scram::ScramAuthenticator;

/// The packet types and values the API uses (`QoS`, `ReasonCode`, `Will`, properties), from
/// `midge-codec`.
pub use midge_codec as codec;
pub use midge_codec::{ProtocolVersion, QoS, ReasonCode};

/// TLS settings for `mqtts://` and `wss://` connections (feature `tls`), from
/// [`midge-transport`](https://docs.rs/midge-transport): see [`Connector::url_with_tls`] and
/// [`ClientBuilder::from_url_with_tls`].
#[cfg(feature = "tls")]
pub mod tls {
    pub use midge_transport::tls::{rustls, ClientTlsOptions, Roots, TlsError, TlsVersions};
}
