//! Errors, and why a connection closed.

use std::fmt;
use std::io;

use midge_codec::{EncodeError, ReasonCode};
use midge_topic::TopicError;

/// Why a client operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// [`Client::try_publish`](crate::Client::try_publish): `max_queued_publishes` publishes
    /// are already held; or, for any operation, every packet identifier is taken by
    /// operations in flight. Nothing was queued.
    #[error("the publish queue is full")]
    QueueFull,
    /// The client is closed: [`Client::disconnect`](crate::Client::disconnect) was called,
    /// reconnection is off or gave up, or the broker refused us for good. Operations queued
    /// and not completed fail with this.
    #[error("the client is closed")]
    Closed,
    /// The client closed while a QoS 2 publish waited for PUBCOMP, after the broker had
    /// acknowledged receipt with PUBREC: the broker has the message, so do not publish it
    /// again (that would duplicate it). With a resumed session the release completes on the
    /// next connection; whether the broker forwards a message still unreleased depends on the
    /// broker.
    #[error("the client closed after the broker received the message (PUBREC), before PUBCOMP")]
    ReleasePending,
    /// The broker answered with a failure reason code (0x80 or above) in PUBACK, PUBREC,
    /// SUBACK or UNSUBACK; or the client did not send the request because the limits the
    /// broker announced in CONNACK rule it out, and this is the code the broker would have
    /// answered with (`QOS_NOT_SUPPORTED`, `RETAIN_NOT_SUPPORTED`, `PACKET_TOO_LARGE`,
    /// `WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED`, `SHARED_SUBSCRIPTIONS_NOT_SUPPORTED`,
    /// `SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED`).
    #[error("refused with reason code {0}")]
    Refused(ReasonCode),
    /// A topic name, topic filter or option given by the application cannot be sent. Nothing
    /// was queued.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// [`Client::request`](crate::Client::request): no response within the timeout.
    #[error("no response in time")]
    Timeout,
    /// [`Client::request`](crate::Client::request) needs MQTT 5.0.
    #[error("request/response needs MQTT 5.0")]
    NeedsV5,
    /// [`Client::reauthenticate`](crate::Client::reauthenticate): the client has no
    /// [`Authenticator`](crate::Authenticator).
    #[error("no authenticator is configured")]
    NoAuthenticator,
    /// [`Client::reauthenticate`](crate::Client::reauthenticate): no connection is up, or
    /// the connection ended before the broker answered. The next connection authenticates
    /// afresh.
    #[error("not connected")]
    NotConnected,
    /// [`Client::reauthenticate`](crate::Client::reauthenticate): the client's
    /// [`Authenticator`](crate::Authenticator) failed. Once the exchange had started, the
    /// connection was closed.
    #[error("authentication failed: {0}")]
    Authentication(#[source] crate::AuthError),
}

/// Why [`ClientBuilder::build`](crate::ClientBuilder::build) or
/// [`ClientBuilder::connect`](crate::ClientBuilder::connect) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The builder's settings cannot be encoded as a CONNECT: a 5.0-only setting (such as a
    /// will property) under 3.1.1, or a field longer than 65,535 bytes. Its
    /// [`kind`](InvalidInput::kind) is [`InputKind::Connect`].
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[source] InvalidInput),
    /// The connection ended before it was accepted, and the client did not try again:
    /// reconnection is off or gave up, or the failure is one that is not retried (see
    /// [`ReconnectPolicy`](crate::ReconnectPolicy)), such as an untrusted broker certificate.
    #[error("connection failed: {0}")]
    Failed(CloseReason),
}

/// Which input [`InvalidInput`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InputKind {
    /// The topic of a publish is not a valid topic name: empty, with a wildcard or U+0000,
    /// or longer than 65,535 bytes.
    TopicName,
    /// The 5.0 Response Topic of a publish is not a valid topic name, or
    /// [`Client::respond`](crate::Client::respond) was given a message without one.
    ResponseTopic,
    /// A subscribe or unsubscribe filter is not a valid topic filter.
    TopicFilter,
    /// A publish or subscribe option cannot be encoded: a property longer than 65,535 bytes,
    /// or a 5.0-only option or property under 3.1.1.
    Options,
    /// A [`ClientBuilder`](crate::ClientBuilder) setting cannot be encoded as a CONNECT.
    Connect,
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TopicName => "invalid topic name",
            Self::ResponseTopic => "invalid or missing response topic",
            Self::TopicFilter => "invalid topic filter",
            Self::Options => "an option cannot be encoded",
            Self::Connect => "the CONNECT cannot be encoded",
        })
    }
}

/// A topic name, topic filter or option the client cannot send. [`kind`](Self::kind) says
/// which; [`source`](std::error::Error::source), where there is one, says which rule it
/// breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct InvalidInput {
    kind: InputKind,
    #[source]
    rule: Option<Rule>,
}

impl InvalidInput {
    /// Which input is invalid.
    pub fn kind(&self) -> InputKind {
        self.kind
    }

    pub(crate) fn new(kind: InputKind) -> Self {
        Self { kind, rule: None }
    }

    pub(crate) fn topic(kind: InputKind, error: TopicError) -> Self {
        Self {
            kind,
            rule: Some(Rule::Topic(error)),
        }
    }

    pub(crate) fn encode(kind: InputKind, error: EncodeError) -> Self {
        Self {
            kind,
            rule: Some(Rule::Encode(error)),
        }
    }
}

/// The rule an [`InvalidInput`] breaks, as the lower layers report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum Rule {
    #[error(transparent)]
    Topic(TopicError),
    #[error(transparent)]
    Encode(EncodeError),
}

/// Why a connection closed, or could not be opened. Reported by
/// [`ConnectionEvent::Disconnected`](crate::ConnectionEvent::Disconnected) and
/// [`ConnectError::Failed`]. A connection the application closes itself
/// ([`Client::disconnect`](crate::Client::disconnect), or the last handle dropped) is not
/// reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The transport could not be opened, or failed: the connection was refused or reset,
    /// or the broker closed it without DISCONNECT ([`io::ErrorKind::UnexpectedEof`]).
    Io(io::ErrorKind),
    /// The transport did not open within
    /// [`ClientBuilder::connect_timeout`](crate::ClientBuilder::connect_timeout).
    ConnectTimeout,
    /// The broker refused the connection in CONNACK with this reason code (a 3.1.1 return
    /// code as its 5.0 equivalent).
    Refused(ReasonCode),
    /// The broker closed the connection with a DISCONNECT (5.0) carrying this reason code.
    DisconnectedByBroker(ReasonCode),
    /// The broker broke the protocol, so the client closed the connection, under 5.0 with a
    /// DISCONNECT carrying this reason code.
    ProtocolViolation(ReasonCode),
    /// No CONNACK, or no answer to a keepalive PINGREQ, within
    /// [`ClientBuilder::response_timeout`](crate::ClientBuilder::response_timeout).
    ResponseTimeout,
    /// TLS failed: the broker's certificate was not accepted, or the broker refused the
    /// handshake (or, under TLS 1.3, refused the client's certificate just after it).
    Tls(TlsFailure),
    /// The WebSocket upgrade was refused, or the WebSocket protocol broken.
    WebSocket(WebSocketFailure),
    /// Enhanced authentication failed on the client's side: the
    /// [`Authenticator`](crate::Authenticator) gave up (its error is logged), so the client
    /// closed the connection, under 5.0 with DISCONNECT 0x80. A refusal by the broker is
    /// [`CloseReason::Refused`] or [`CloseReason::DisconnectedByBroker`] instead.
    Authentication(AuthFailure),
}

/// Which step of enhanced authentication failed on the client's side
/// ([`CloseReason::Authentication`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The authenticator could not start the exchange
    /// ([`Authenticator::start`](crate::Authenticator::start)).
    Start,
    /// It could not answer the broker's challenge
    /// ([`Authenticator::respond`](crate::Authenticator::respond)), or its answer was too
    /// large to send.
    Challenge,
    /// The broker's final data did not check out
    /// ([`Authenticator::finish`](crate::Authenticator::finish)): the broker has not proved
    /// itself (for SCRAM, its signature is wrong: it does not know the password).
    Verification,
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Start => "the authenticator could not start",
            Self::Challenge => "the authenticator could not answer the broker's challenge",
            Self::Verification => "the broker's final authentication data did not verify",
        })
    }
}

/// Why TLS failed ([`CloseReason::Tls`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The broker's certificate does not chain to a CA the client trusts: give the CA that
    /// signed it (`Roots::File`, mosquitto's `--cafile`).
    UnknownIssuer,
    /// The broker's certificate has expired.
    CertificateExpired,
    /// The broker's certificate is not valid yet.
    CertificateNotValidYet,
    /// The broker's certificate is not valid for the host name (or address) connected to.
    NameMismatch,
    /// The broker's certificate is invalid otherwise: revoked, badly signed or encoded, or
    /// not meant for a server.
    BadCertificate,
    /// The broker ended the handshake with this TLS alert (RFC 8446 §6): 116
    /// `certificate_required` when it wants a client certificate and got none, 45
    /// `certificate_expired`, 48 `unknown_ca` or 42 `bad_certificate` when it refused the
    /// one it got, 40 `handshake_failure` or 70 `protocol_version` when the two sides share
    /// no version or cipher suite, 120 `no_application_protocol` for ALPN.
    AlertReceived(u8),
    /// Another TLS failure: the broker broke the protocol, or does not speak TLS.
    Handshake,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownIssuer => f.write_str(
                "the broker's certificate is not signed by a trusted CA (unknown issuer)",
            ),
            Self::CertificateExpired => f.write_str("the broker's certificate has expired"),
            Self::CertificateNotValidYet => {
                f.write_str("the broker's certificate is not valid yet")
            }
            Self::NameMismatch => {
                f.write_str("the broker's certificate is not valid for the host name connected to")
            }
            Self::BadCertificate => f.write_str("the broker's certificate is invalid"),
            Self::AlertReceived(code) => {
                write!(
                    f,
                    "the broker refused the TLS handshake with alert {}",
                    alert_name(*code)
                )?;
                match *code {
                    116 => f.write_str(": it requires a client certificate"),
                    42 | 44 | 45 | 46 | 48 => f.write_str(": it refused the client certificate"),
                    120 => f.write_str(": it speaks none of the ALPN protocols offered"),
                    _ => Ok(()),
                }
            }
            Self::Handshake => f.write_str("the TLS handshake failed"),
        }
    }
}

/// A TLS alert as RFC 8446 names it, with its number.
fn alert_name(code: u8) -> String {
    #[cfg(feature = "tls")]
    {
        use midge_transport::tls::rustls::AlertDescription;
        format!("{:?} ({code})", AlertDescription::from(code))
    }
    #[cfg(not(feature = "tls"))]
    {
        code.to_string()
    }
}

/// Why a WebSocket connection failed ([`CloseReason::WebSocket`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WebSocketFailure {
    /// The server refused the upgrade: it answered with an HTTP error status (404 when the
    /// URL's path is not its WebSocket path), or without the `mqtt` subprotocol, or not as
    /// a WebSocket server does.
    Refused,
    /// The WebSocket protocol was broken: a bad frame, a text frame where MQTT travels in
    /// binary ones [MQTT-6.0.0-1], or a message larger than the limit.
    Protocol,
}

impl fmt::Display for WebSocketFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused => f.write_str(
                "the server refused the WebSocket upgrade for MQTT (is the URL's path its WebSocket path?)",
            ),
            Self::Protocol => f.write_str("the WebSocket protocol was broken"),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(kind) => write!(f, "transport error: {kind}"),
            Self::ConnectTimeout => f.write_str("the transport did not open in time"),
            Self::Refused(code) => write!(f, "refused in CONNACK with reason code {code}"),
            Self::DisconnectedByBroker(code) => {
                write!(f, "disconnected by the broker with reason code {code}")
            }
            Self::ProtocolViolation(code) => {
                write!(f, "the broker broke the protocol (reason code {code})")
            }
            Self::ResponseTimeout => f.write_str("no CONNACK or PINGRESP in time"),
            Self::Tls(failure) => write!(f, "TLS: {failure}"),
            Self::WebSocket(failure) => write!(f, "WebSocket: {failure}"),
            Self::Authentication(failure) => write!(f, "enhanced authentication: {failure}"),
        }
    }
}

/// What the state machine's refusal of a publish means to the application.
pub(crate) fn publish_refused(error: midge_proto::client::PublishError) -> ClientError {
    use midge_proto::client::PublishError as E;
    match error {
        E::QueueFull | E::PacketIdsExhausted => ClientError::QueueFull,
        // The topic itself was checked before it was queued: this is the Response Topic.
        E::InvalidTopic => InvalidInput::new(InputKind::ResponseTopic).into(),
        E::QoSNotSupported => ClientError::Refused(ReasonCode::QOS_NOT_SUPPORTED),
        E::RetainNotSupported => ClientError::Refused(ReasonCode::RETAIN_NOT_SUPPORTED),
        E::PacketTooLarge => ClientError::Refused(ReasonCode::PACKET_TOO_LARGE),
        E::Encode(error) => InvalidInput::encode(InputKind::Options, error).into(),
        // A refusal added to midge-proto after this mapping: the message as given.
        _ => InvalidInput::new(InputKind::Options).into(),
    }
}

/// What the state machine's refusal of a subscribe or unsubscribe request means to the
/// application.
pub(crate) fn request_refused(error: midge_proto::client::RequestError) -> ClientError {
    use midge_proto::client::RequestError as E;
    match error {
        E::PacketIdsExhausted => ClientError::QueueFull,
        E::InvalidFilter(error) => InvalidInput::topic(InputKind::TopicFilter, error).into(),
        E::NoFilters => InvalidInput::new(InputKind::TopicFilter).into(),
        E::WildcardsNotSupported => {
            ClientError::Refused(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED)
        }
        E::SharedNotSupported => {
            ClientError::Refused(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
        }
        E::SubscriptionIdsNotSupported => {
            ClientError::Refused(ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED)
        }
        E::PacketTooLarge => ClientError::Refused(ReasonCode::PACKET_TOO_LARGE),
        E::Encode(error) => InvalidInput::encode(InputKind::Options, error).into(),
        // A refusal added to midge-proto after this mapping: the request as given.
        _ => InvalidInput::new(InputKind::Options).into(),
    }
}

/// Why a connection closed, from the state machine's reason; `None` when the client closed
/// it itself.
pub(crate) fn close_reason(reason: midge_proto::client::CloseReason) -> Option<CloseReason> {
    use midge_proto::client::CloseReason as R;
    match reason {
        R::Refused(code) => Some(CloseReason::Refused(code)),
        R::DisconnectedByServer(code) => Some(CloseReason::DisconnectedByBroker(code)),
        R::ProtocolViolation(code) => Some(CloseReason::ProtocolViolation(code)),
        R::ResponseTimeout => Some(CloseReason::ResponseTimeout),
        // The driver reports transport failures itself; the state machine hears of a lost
        // transport only when the client closes while CONNECT is unanswered.
        R::ConnectionLost | R::DisconnectedByClient => None,
        _ => Some(CloseReason::Io(io::ErrorKind::Other)),
    }
}

/// Why a transport failed, from its error: a TLS or WebSocket failure where the error
/// (or one it wraps) is one, else its [`io::ErrorKind`].
pub(crate) fn transport_failure(err: &io::Error) -> CloseReason {
    let mut next: Option<&(dyn std::error::Error + 'static)> = err
        .get_ref()
        .map(|e| e as &(dyn std::error::Error + 'static));
    // Bounded: error chains are short, and a cycle must not hang the driver.
    for _ in 0..16 {
        let Some(current) = next else { break };
        if let Some(reason) = known_failure(current) {
            return reason;
        }
        // `io::Error::source` skips the error it wraps; look at that one itself.
        next = match current.downcast_ref::<io::Error>() {
            Some(inner) => inner
                .get_ref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    CloseReason::Io(err.kind())
}

#[allow(clippy::missing_const_for_fn, unused_variables)]
fn known_failure(error: &(dyn std::error::Error + 'static)) -> Option<CloseReason> {
    #[cfg(feature = "tls")]
    if let Some(error) = error.downcast_ref::<midge_transport::tls::rustls::Error>() {
        return Some(CloseReason::Tls(tls_failure(error)));
    }
    #[cfg(feature = "ws")]
    {
        use midge_transport::ws::tokio_tungstenite::tungstenite;
        if let Some(error) = error.downcast_ref::<midge_transport::ws::WsError>() {
            return match error {
                midge_transport::ws::WsError::Protocol(inner) => websocket_failure(inner),
                _ => Some(CloseReason::WebSocket(WebSocketFailure::Refused)),
            };
        }
        if let Some(error) = error.downcast_ref::<tungstenite::Error>() {
            return websocket_failure(error);
        }
    }
    None
}

#[cfg(feature = "tls")]
fn tls_failure(error: &midge_transport::tls::rustls::Error) -> TlsFailure {
    use midge_transport::tls::rustls::{CertificateError as C, Error as E};
    match error {
        E::InvalidCertificate(C::UnknownIssuer) => TlsFailure::UnknownIssuer,
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            TlsFailure::CertificateExpired
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            TlsFailure::CertificateNotValidYet
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            TlsFailure::NameMismatch
        }
        E::InvalidCertificate(_) => TlsFailure::BadCertificate,
        E::AlertReceived(alert) => TlsFailure::AlertReceived(u8::from(*alert)),
        _ => TlsFailure::Handshake,
    }
}

/// `None` for a failure of the stream below, which the caller looks into further.
#[cfg(feature = "ws")]
fn websocket_failure(
    error: &midge_transport::ws::tokio_tungstenite::tungstenite::Error,
) -> Option<CloseReason> {
    use midge_transport::ws::tokio_tungstenite::tungstenite::Error as E;
    Some(CloseReason::WebSocket(match error {
        E::Io(_) | E::Tls(_) => return None,
        E::Http(_) | E::HttpFormat(_) | E::Url(_) => WebSocketFailure::Refused,
        _ => WebSocketFailure::Protocol,
    }))
}

#[cfg(all(test, feature = "tls", feature = "ws"))]
mod tests {
    use super::*;
    use midge_transport::tls::rustls::{self, AlertDescription, CertificateError};
    use midge_transport::ws::tokio_tungstenite::tungstenite;

    fn io(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn rustls_errors_are_found_in_the_io_error() {
        for (error, failure) in [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                TlsFailure::UnknownIssuer,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                TlsFailure::CertificateExpired,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                TlsFailure::NameMismatch,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::BadSignature),
                TlsFailure::BadCertificate,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                TlsFailure::AlertReceived(116),
            ),
            (rustls::Error::DecryptError, TlsFailure::Handshake),
        ] {
            assert_eq!(transport_failure(&io(error)), CloseReason::Tls(failure));
        }
    }

    #[test]
    fn a_tls_error_under_a_websocket_is_a_tls_failure() {
        // What a wss:// stream reports: tungstenite's I/O error around tokio-rustls' one.
        let inner = io(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let ws = io(tungstenite::Error::Io(inner));
        assert_eq!(
            transport_failure(&ws),
            CloseReason::Tls(TlsFailure::UnknownIssuer)
        );
        let refused = io::Error::other(midge_transport::ws::WsError::Refused("HTTP 404".into()));
        assert_eq!(
            transport_failure(&refused),
            CloseReason::WebSocket(WebSocketFailure::Refused)
        );
        let broken = io(tungstenite::Error::AttackAttempt);
        assert_eq!(
            transport_failure(&broken),
            CloseReason::WebSocket(WebSocketFailure::Protocol)
        );
    }

    #[test]
    fn other_errors_keep_their_kind() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            transport_failure(&refused),
            CloseReason::Io(io::ErrorKind::ConnectionRefused)
        );
        assert_eq!(
            transport_failure(&io::Error::other("something")),
            CloseReason::Io(io::ErrorKind::Other)
        );
    }

    #[test]
    fn failures_read_as_sentences() {
        assert_eq!(
            CloseReason::Tls(TlsFailure::AlertReceived(116)).to_string(),
            "TLS: the broker refused the TLS handshake with alert CertificateRequired (116): it requires a client certificate"
        );
        assert_eq!(
            CloseReason::Tls(TlsFailure::NameMismatch).to_string(),
            "TLS: the broker's certificate is not valid for the host name connected to"
        );
    }
}
