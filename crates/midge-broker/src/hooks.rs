//! The extension points of the broker: authentication, authorization and events.
//!
//! # Why the hooks are synchronous
//!
//! [`Hooks::authorize_publish`] runs for every PUBLISH, on the connection's task, on the hot
//! path. A synchronous call costs a virtual call and nothing else; an `async fn` behind
//! `dyn` would box a future (an allocation) per message, and would let one slow hook stall the
//! connection in the middle of its protocol flow. So hooks are plain methods that must not
//! block for long. A hook that needs I/O (a database, an HTTP call) should keep a cache that a
//! task of its own refreshes, or, on the multi-thread runtime, wrap the rare slow call in
//! [`tokio::task::block_in_place`], which lets the runtime move other connections off the
//! blocked worker.
//!
//! Every method has a default that allows what a client may do on an open broker and ignores
//! every event, so an implementation overrides only what it needs. The one refusal by default is
//! a client's publish into `$SYS`, the broker's own statistics: see
//! [`Hooks::authorize_sys_publish`].

use std::net::SocketAddr;
use std::sync::Arc;

use midge_codec::{ByteStr, ProtocolVersion, ReasonCode, SubscriptionOptions};
use midge_proto::Message;

/// What a CONNECT asks for, passed to [`Hooks::authenticate`].
#[derive(Debug)]
#[non_exhaustive]
pub struct ConnectRequest<'a> {
    /// The client identifier in effect (the client's own, or the one assigned to it).
    pub client_id: &'a str,
    /// User Name, if sent.
    pub username: Option<&'a str>,
    /// Password, if sent.
    pub password: Option<&'a [u8]>,
    /// Protocol version of the CONNECT.
    pub version: ProtocolVersion,
    /// Address of the client.
    pub peer: SocketAddr,
    /// Whether the client asked for a clean start.
    pub clean_start: bool,
    /// The listener the client came through: its index in
    /// [`BrokerConfig::listeners`](crate::BrokerConfig::listeners).
    pub listener: usize,
    /// Whether the client is on this machine: it came over loopback or a Unix socket.
    pub local: bool,
    /// Whether [`ConnectRequest::username`] was proven already: it is the name of the client's
    /// TLS certificate (`use_identity_as_username`) or of an enhanced authentication exchange
    /// that succeeded, not a claim the CONNECT makes.
    pub username_verified: bool,
    /// When the CONNECT was read.
    pub now: std::time::Instant,
}

/// What an enhanced authentication method is asked with, at CONNECT and at
/// re-authentication.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuthRequest<'a> {
    /// The client identifier in effect.
    pub client_id: &'a str,
    /// The User Name of the CONNECT, if it had one: a claim, not the identity the method
    /// proves.
    pub username: Option<&'a str>,
    /// The listener the client came through, by index.
    pub listener: usize,
    /// Address of the client.
    pub peer: SocketAddr,
    /// When the packet was read.
    pub now: std::time::Instant,
}

/// One step of an enhanced authentication exchange (MQTT 5.0 §4.12), from
/// [`Authenticator::start`] or [`AuthExchange::next`].
#[non_exhaustive]
pub enum AuthStep {
    /// Send the client AUTH 0x18 Continue authentication with `data`, and give its answer to
    /// `exchange`.
    Continue {
        /// The Authentication Data to send.
        data: Option<bytes::Bytes>,
        /// What answers the client's next AUTH.
        exchange: Box<dyn AuthExchange>,
    },
    /// The client proved it is `username`: the user name every later hook and the ACL see.
    /// `data` goes to the client in CONNACK (or AUTH 0x00 Success, when re-authenticating).
    Success {
        /// The identity the method proved.
        username: String,
        /// The server's final Authentication Data.
        data: Option<bytes::Bytes>,
    },
    /// The client failed: refused with this code (CONNACK at connect, DISCONNECT when
    /// re-authenticating), for example [`ReasonCode::BAD_USER_NAME_OR_PASSWORD`] or
    /// [`ReasonCode::NOT_AUTHORIZED`].
    Failure(ReasonCode),
}

impl std::fmt::Debug for AuthStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Continue { .. } => f.write_str("Continue"),
            Self::Success { username, .. } => f
                .debug_struct("Success")
                .field("username", username)
                .finish_non_exhaustive(),
            Self::Failure(code) => f.debug_tuple("Failure").field(code).finish(),
        }
    }
}

/// An MQTT 5.0 enhanced authentication method (a CONNECT with an Authentication Method, then
/// AUTH packets), offered by [`Hooks::authenticator`]. The broker has SCRAM-SHA-256 built in
/// for its password file ([`crate::FileAuth`]); other methods plug in here.
///
/// Like the other hooks, its steps run on the connection's thread and must be cheap.
pub trait Authenticator: Send + Sync {
    /// Starts an exchange with the Authentication Data of the CONNECT (or of AUTH 0x19
    /// Re-authenticate).
    fn start(&self, request: &AuthRequest<'_>, data: Option<&[u8]>) -> AuthStep;
}

/// The rest of one enhanced authentication exchange, after [`AuthStep::Continue`].
pub trait AuthExchange: Send {
    /// Answers the client's AUTH 0x18 with its Authentication Data.
    fn next(self: Box<Self>, data: Option<&[u8]>) -> AuthStep;
}

/// A check of a CONNECT's credentials too costly to run on the connection's thread (a
/// password hash), from [`Hooks::verify`]: the broker runs it on a bounded pool of threads of
/// its own, and the connection waits for its answer without holding up any other.
pub type Verification = Box<dyn FnOnce() -> Result<(), ReasonCode> + Send>;

/// A connected client, as the hooks see it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The client identifier in effect.
    pub client_id: ByteStr,
    /// User Name from CONNECT.
    pub username: Option<ByteStr>,
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Address of the client.
    pub peer: SocketAddr,
    /// The listener the client came through, by index; in what would be padding.
    pub(crate) listener: u16,
    /// The client is on this machine: loopback, or a Unix socket.
    pub(crate) local: bool,
    /// The user name was proven: by a password check, the client's certificate, or an
    /// enhanced authentication.
    pub(crate) verified: bool,
    /// The proof was the password file of the client's listener (a password, or SCRAM over
    /// its entries): the name stays proven only while that file has it.
    pub(crate) by_password_file: bool,
    /// The broker's own client (a bridge's local end): trusted, never asked about by hooks
    /// or the ACL file.
    pub(crate) internal: bool,
}

impl ClientInfo {
    /// The listener the client came through: its index in
    /// [`BrokerConfig::listeners`](crate::BrokerConfig::listeners).
    pub fn listener(&self) -> usize {
        usize::from(self.listener)
    }

    /// Whether [`ClientInfo::username`] was proven: by the password file of the client's
    /// listener, the client's TLS certificate (`use_identity_as_username`), an enhanced
    /// authentication, or hooks that check passwords ([`Hooks::proves_usernames`]). A user
    /// name nothing checked is only a claim; the ACL file treats such a client as anonymous.
    pub fn username_verified(&self) -> bool {
        self.verified && self.username.is_some()
    }
}

/// Why a client's connection ended, for [`Hooks::on_disconnected`]: midge-proto's, as the
/// connection's state machine saw it.
pub use midge_proto::server::ServerCloseReason as CloseReason;

/// Authentication, authorization and event hooks. All methods have permissive defaults, except
/// [`Hooks::authorize_sys_publish`], which keeps clients out of `$SYS`.
///
/// Implementations are shared by every connection task (`Send + Sync`) and must not block for
/// long; see the [module docs](self) for why they are synchronous.
///
/// ```
/// use midge_broker::{ClientInfo, ConnectRequest, Hooks};
/// use midge_codec::ReasonCode;
/// use midge_proto::Message;
///
/// struct OnlyAlice;
///
/// impl Hooks for OnlyAlice {
///     fn authenticate(&self, req: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
///         match (req.username, req.password) {
///             (Some("alice"), Some(b"secret")) => Ok(()),
///             _ => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
///         }
///     }
///
///     fn authorize_publish(&self, _client: &ClientInfo, message: &Message) -> Result<(), ReasonCode> {
///         if message.topic.as_str().starts_with("admin/") {
///             Err(ReasonCode::NOT_AUTHORIZED)
///         } else {
///             Ok(())
///         }
///     }
/// }
/// ```
pub trait Hooks: Send + Sync + 'static {
    /// Decides on a CONNECT. `Err(code)` refuses it with that CONNACK reason code (mapped to
    /// the nearest 3.x return code for 3.x clients), for example
    /// [`ReasonCode::BAD_USER_NAME_OR_PASSWORD`] or [`ReasonCode::NOT_AUTHORIZED`].
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        let _ = request;
        Ok(())
    }

    /// Whether a client these hooks let in has proven the user name it gave: true for hooks
    /// whose [`Hooks::authenticate`] or [`Hooks::verify`] checks a password (or another
    /// secret) for that user name. The broker's ACL file takes a user name at its word only
    /// when something proved it: the broker's password file, the client's TLS certificate,
    /// an enhanced authentication, or hooks that say so here; any other client gets the
    /// ACL's anonymous rules. The default is false.
    fn proves_usernames(&self) -> bool {
        false
    }

    /// A costly check of the CONNECT's credentials, asked once [`Hooks::authenticate`] allowed
    /// it: `Some` runs the returned check on the broker's pool of verification threads (so
    /// that a storm of CONNECTs with passwords to hash never stalls routing), and its answer
    /// decides as `authenticate`'s would. The default has none.
    fn verify(&self, request: &ConnectRequest<'_>) -> Option<Verification> {
        let _ = request;
        None
    }

    /// The enhanced authentication method named `method` (the Authentication Method of a 5.0
    /// CONNECT), if these hooks offer it. A client naming a method no hook offers is refused
    /// with 0x8C Bad authentication method [MQTT-4.12.0-1]. Once the method proved who the
    /// client is, [`Hooks::authenticate`] is asked as for any CONNECT, with that user name
    /// and [`ConnectRequest::username_verified`] set. The default offers none.
    fn authenticator(&self, method: &str) -> Option<Arc<dyn Authenticator>> {
        let _ = method;
        None
    }

    /// Decides whether `client` may publish `message`. A refused QoS 1 or 2 message is
    /// acknowledged with the code (5.0) and not routed; a refused will is dropped.
    ///
    /// For a topic in `$SYS`, [`Hooks::authorize_sys_publish`] decides first, and this is
    /// asked only if it allowed the message.
    fn authorize_publish(&self, client: &ClientInfo, message: &Message) -> Result<(), ReasonCode> {
        let _ = (client, message);
        Ok(())
    }

    /// Decides whether `client` may publish `message`, whose topic is `$SYS` or starts with
    /// `$SYS/`: the topics where the broker publishes its statistics, which a client could
    /// otherwise overwrite (retained) or spoof. The default refuses with
    /// [`ReasonCode::NOT_AUTHORIZED`]; override it to let some clients in, for example a
    /// bridge that relays another broker's `$SYS` topics.
    ///
    /// A refused message is neither routed nor retained, and is counted
    /// ([`BrokerStats::dropped_sys_publish`](crate::BrokerStats::dropped_sys_publish)). A 5.0
    /// client's QoS 1 or 2 message is acknowledged with the code; a 3.x client's is
    /// acknowledged as usual, since 3.x cannot refuse a PUBLISH [MQTT-3.3.5-2]. A refused will
    /// is dropped. What the broker publishes itself (its `$SYS` topics,
    /// [`BrokerHandle::publish`](crate::BrokerHandle::publish)) is not asked about.
    fn authorize_sys_publish(
        &self,
        client: &ClientInfo,
        message: &Message,
    ) -> Result<(), ReasonCode> {
        let _ = (client, message);
        Err(ReasonCode::NOT_AUTHORIZED)
    }

    /// Decides whether `client` may subscribe to `filter` (possibly `$share/{name}/…`). The
    /// code of a refusal goes into SUBACK (3.x: 0x80).
    fn authorize_subscribe(
        &self,
        client: &ClientInfo,
        filter: &str,
        options: &SubscriptionOptions,
    ) -> Result<(), ReasonCode> {
        let _ = (client, filter, options);
        Ok(())
    }

    /// Decides whether `client` may receive `message`, routed to it by one of its
    /// subscriptions. Asked as the message is delivered, so that a subscription to a wildcard
    /// brings only what its client may read, and again for retained messages sent on
    /// SUBSCRIBE and for the queued messages of a session that resumes. A refused message is
    /// skipped for this client and counted. The default allows everything.
    fn authorize_read(&self, client: &ClientInfo, message: &Message) -> bool {
        let _ = (client, message);
        true
    }

    /// A client was accepted; `session_present` tells whether it resumed a session.
    fn on_connected(&self, client: &ClientInfo, session_present: bool) {
        let _ = (client, session_present);
    }

    /// A client's connection ended.
    fn on_disconnected(&self, client: &ClientInfo, reason: CloseReason) {
        let _ = (client, reason);
    }

    /// A message was routed: published by `client` (`None` for wills after their client left,
    /// `$SYS` and messages injected through the handle). `matched` is the number of sessions
    /// it went to.
    fn on_message_published(&self, client: Option<&ClientInfo>, message: &Message, matched: usize) {
        let _ = (client, message, matched);
    }

    /// A new session was created for `client_id`.
    fn on_session_created(&self, client_id: &str) {
        let _ = client_id;
    }

    /// The session of `client_id` ended: it expired, was cleaned by a clean start, or ended
    /// with its connection (Session Expiry Interval 0).
    fn on_session_expired(&self, client_id: &str) {
        let _ = client_id;
    }
}

/// Two sets of hooks asked in turn: a client must pass both (the first refusal wins, and a
/// verification runs the first's, then the second's), and both hear every event. This is how
/// the broker puts its own file-based rules ([`crate::FileAuth`]) in front of a library
/// user's.
impl<A: Hooks, B: Hooks> Hooks for (A, B) {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        self.0.authenticate(request)?;
        self.1.authenticate(request)
    }

    fn authenticator(&self, method: &str) -> Option<Arc<dyn Authenticator>> {
        self.0
            .authenticator(method)
            .or_else(|| self.1.authenticator(method))
    }

    fn proves_usernames(&self) -> bool {
        self.0.proves_usernames() || self.1.proves_usernames()
    }

    fn verify(&self, request: &ConnectRequest<'_>) -> Option<Verification> {
        match (self.0.verify(request), self.1.verify(request)) {
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => Some(one),
            (Some(first), Some(second)) => Some(Box::new(move || {
                first()?;
                second()
            })),
        }
    }

    fn authorize_publish(&self, client: &ClientInfo, message: &Message) -> Result<(), ReasonCode> {
        self.0.authorize_publish(client, message)?;
        self.1.authorize_publish(client, message)
    }

    fn authorize_sys_publish(
        &self,
        client: &ClientInfo,
        message: &Message,
    ) -> Result<(), ReasonCode> {
        self.0.authorize_sys_publish(client, message)?;
        self.1.authorize_sys_publish(client, message)
    }

    fn authorize_subscribe(
        &self,
        client: &ClientInfo,
        filter: &str,
        options: &SubscriptionOptions,
    ) -> Result<(), ReasonCode> {
        self.0.authorize_subscribe(client, filter, options)?;
        self.1.authorize_subscribe(client, filter, options)
    }

    fn authorize_read(&self, client: &ClientInfo, message: &Message) -> bool {
        self.0.authorize_read(client, message) && self.1.authorize_read(client, message)
    }

    fn on_connected(&self, client: &ClientInfo, session_present: bool) {
        self.0.on_connected(client, session_present);
        self.1.on_connected(client, session_present);
    }

    fn on_disconnected(&self, client: &ClientInfo, reason: CloseReason) {
        self.0.on_disconnected(client, reason);
        self.1.on_disconnected(client, reason);
    }

    fn on_message_published(&self, client: Option<&ClientInfo>, message: &Message, matched: usize) {
        self.0.on_message_published(client, message, matched);
        self.1.on_message_published(client, message, matched);
    }

    fn on_session_created(&self, client_id: &str) {
        self.0.on_session_created(client_id);
        self.1.on_session_created(client_id);
    }

    fn on_session_expired(&self, client_id: &str) {
        self.0.on_session_expired(client_id);
        self.1.on_session_expired(client_id);
    }
}

/// Shared hooks are hooks.
impl<T: Hooks + ?Sized> Hooks for Arc<T> {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        (**self).authenticate(request)
    }

    fn verify(&self, request: &ConnectRequest<'_>) -> Option<Verification> {
        (**self).verify(request)
    }

    fn proves_usernames(&self) -> bool {
        (**self).proves_usernames()
    }

    fn authenticator(&self, method: &str) -> Option<Arc<dyn Authenticator>> {
        (**self).authenticator(method)
    }

    fn authorize_publish(&self, client: &ClientInfo, message: &Message) -> Result<(), ReasonCode> {
        (**self).authorize_publish(client, message)
    }

    fn authorize_sys_publish(
        &self,
        client: &ClientInfo,
        message: &Message,
    ) -> Result<(), ReasonCode> {
        (**self).authorize_sys_publish(client, message)
    }

    fn authorize_subscribe(
        &self,
        client: &ClientInfo,
        filter: &str,
        options: &SubscriptionOptions,
    ) -> Result<(), ReasonCode> {
        (**self).authorize_subscribe(client, filter, options)
    }

    fn authorize_read(&self, client: &ClientInfo, message: &Message) -> bool {
        (**self).authorize_read(client, message)
    }

    fn on_connected(&self, client: &ClientInfo, session_present: bool) {
        (**self).on_connected(client, session_present);
    }

    fn on_disconnected(&self, client: &ClientInfo, reason: CloseReason) {
        (**self).on_disconnected(client, reason);
    }

    fn on_message_published(&self, client: Option<&ClientInfo>, message: &Message, matched: usize) {
        (**self).on_message_published(client, message, matched);
    }

    fn on_session_created(&self, client_id: &str) {
        (**self).on_session_created(client_id);
    }

    fn on_session_expired(&self, client_id: &str) {
        (**self).on_session_expired(client_id);
    }
}

/// Hooks that allow everything a client may do by default and ignore every event: every
/// method keeps its default, so clients may publish anywhere but into `$SYS`
/// ([`Hooks::authorize_sys_publish`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Hooks for AllowAll {}
