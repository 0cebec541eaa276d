//! How the client opens the byte stream of each connection.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use crate::endpoint::{BrokerUrl, Scheme, UrlError};
#[cfg(feature = "tls")]
use midge_transport::tls::{rustls::pki_types::ServerName, tokio_rustls, ClientTlsOptions};
#[cfg(feature = "ws")]
use midge_transport::ws::WsError;

/// A byte stream the client runs MQTT over.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// One open connection's stream, whatever its transport.
pub(crate) type BoxedTransport = Box<dyn Transport>;

pub(crate) type Opening = Pin<Box<dyn Future<Output = io::Result<BoxedTransport>> + Send>>;

/// What the client tells a connector about the connection it is opening.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenParams {
    /// The largest packet the client accepts ([`Limits::max_packet_size`](crate::Limits)):
    /// bounds WebSocket messages.
    #[cfg_attr(
        not(feature = "ws"),
        expect(
            dead_code,
            reason = "only the WebSocket connector bounds its messages by it"
        )
    )]
    pub(crate) max_packet_size: u32,
    /// How long one connector's attempt may take
    /// ([`ClientBuilder::connect_timeout`](crate::ClientBuilder::connect_timeout)): a
    /// failover connector bounds each of its connectors' attempts by it.
    pub(crate) connect_timeout: std::time::Duration,
}

type OpenFn = dyn Fn(OpenParams) -> Opening + Send + Sync;

/// Opens the byte stream of each connection to the broker:
///
/// - [`Connector::tcp`]: TCP, what [`ClientBuilder::new`](crate::ClientBuilder::new) uses;
/// - [`Connector::url`] and [`Connector::url_with_tls`]: what a [`BrokerUrl`] names: TCP,
///   TLS, WebSocket (over TCP or TLS) or a Unix socket. TLS and WebSocket need the `tls` and
///   `ws` features, both on by default;
/// - [`Connector::from_fn`]: any stream that implements tokio's `AsyncRead + AsyncWrite`,
///   such as an in-memory pipe (`tokio::io::duplex`) in tests;
/// - [`Connector::failover`]: the first of several connectors that opens.
///
/// MQTT needs nothing else from the transport; the client does not know which one it runs on.
///
/// The client opens a stream for its first connection and for every reconnection. Each
/// attempt may take at most [`ClientBuilder::connect_timeout`](crate::ClientBuilder::connect_timeout);
/// an attempt that takes longer, or that the client gives up because it is closing, is
/// dropped (cancelled) where it stands. For a URL connector the attempt is the whole of it:
/// the TCP (or Unix socket) connection, the TLS handshake and the WebSocket upgrade.
///
/// `Debug` shows what the connector opens (for a URL, the URL without its password).
#[derive(Clone)]
pub struct Connector {
    open: Arc<OpenFn>,
    /// What `Debug` shows.
    name: Arc<str>,
    /// Attempts, each bounded by the connect timeout, that one opening makes at most: 1, or
    /// for a failover connector the sum of its connectors'.
    attempts: u32,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Connector").field(&self.name).finish()
    }
}

impl Connector {
    /// TCP to `host:port` (`host` a name or an address; a name is resolved on every
    /// attempt), with Nagle's algorithm off, since MQTT's small packets should go out at
    /// once.
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        let host: Arc<str> = host.into().into();
        let name = format!("tcp {host}:{port}").into();
        let open = move |_: OpenParams| -> Opening {
            let host = host.clone();
            Box::pin(async move {
                let stream = TcpStream::connect((&*host, port)).await?;
                // Only an optimisation: a stream that refuses it still works.
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream) as BoxedTransport)
            })
        };
        Self {
            open: Arc::new(open),
            name,
            attempts: 1,
        }
    }

    /// Opens connections to the broker at `url` (see [`BrokerUrl`] for the forms). `mqtts`
    /// and `wss` URLs trust the system's CA certificates (with the `tls` feature);
    /// [`Connector::url_with_tls`] takes other TLS settings.
    ///
    /// A user name or password in the URL is refused ([`UrlError::Credentials`]): a
    /// connector only opens the stream; [`ClientBuilder::from_url`](crate::ClientBuilder::from_url)
    /// takes them into the CONNECT.
    ///
    /// ```no_run
    /// use midge_client::{ClientBuilder, Connector};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let connector = Connector::url("ws://127.0.0.1:8080/mqtt")?;
    /// let client = ClientBuilder::with_connector(connector).connect().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn url(url: &str) -> Result<Self, ConnectorError> {
        let url = BrokerUrl::parse(url)?.without_mqtt_path()?;
        if url.username().is_some() {
            return Err(UrlError::Credentials(
                "a Connector takes no user name or password: give the URL to ClientBuilder::from_url, or the credentials to ClientBuilder::credentials",
            )
            .into());
        }
        Self::for_url(&url)
    }

    /// Opens connections to `url` with the TLS settings `tls` (for `mqtts` and `wss` URLs;
    /// unused for the others): the CA certificates to trust, a client certificate, ALPN,
    /// the TLS versions. Files are read once, here. Otherwise as [`Connector::url`].
    ///
    /// ```no_run
    /// use midge_client::tls::{ClientTlsOptions, Roots};
    /// use midge_client::{ClientBuilder, Connector};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tls = ClientTlsOptions::default();
    /// tls.roots = Roots::File("ca.pem".into());
    /// tls.identity = Some(("device.pem".into(), "device.key".into()));
    /// let connector = Connector::url_with_tls("mqtts://broker.example.com", &tls)?;
    /// let client = ClientBuilder::with_connector(connector).connect().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    pub fn url_with_tls(url: &str, tls: &ClientTlsOptions) -> Result<Self, ConnectorError> {
        let url = BrokerUrl::parse(url)?.without_mqtt_path()?;
        if url.username().is_some() {
            return Err(UrlError::Credentials(
                "a Connector takes no user name or password: give the URL to ClientBuilder::from_url_with_tls, or the credentials to ClientBuilder::credentials",
            )
            .into());
        }
        Self::for_url_with_tls(&url, tls)
    }

    /// [`Connector::url`] for a parsed URL. Its user name and password, if any, are left
    /// to the caller, and so is the path of an `mqtt` or `mqtts` URL.
    pub fn for_url(url: &BrokerUrl) -> Result<Self, ConnectorError> {
        #[cfg(feature = "tls")]
        {
            Self::for_url_with_tls(url, &ClientTlsOptions::default())
        }
        #[cfg(not(feature = "tls"))]
        {
            Self::build(url, None)
        }
    }

    /// [`Connector::for_url`] (with `tls` for `mqtts` and `wss` when the `tls` feature is
    /// on), with the local end of each TCP connection bound to `local` (on a port the system
    /// picks), to choose the interface the connections leave by. Only addresses of `local`'s
    /// family are tried.
    pub fn for_url_from(
        url: &BrokerUrl,
        #[cfg(feature = "tls")] tls: &ClientTlsOptions,
        local: IpAddr,
    ) -> Result<Self, ConnectorError> {
        Self::build(
            url,
            #[cfg(feature = "tls")]
            tls,
            Some(local),
        )
    }

    /// [`Connector::url_with_tls`] for a parsed URL. Its user name and password, if any,
    /// are left to the caller, and so is the path of an `mqtt` or `mqtts` URL.
    #[cfg(feature = "tls")]
    pub fn for_url_with_tls(
        url: &BrokerUrl,
        tls: &ClientTlsOptions,
    ) -> Result<Self, ConnectorError> {
        Self::build(url, tls, None)
    }

    fn build(
        url: &BrokerUrl,
        #[cfg(feature = "tls")] tls: &ClientTlsOptions,
        local: Option<IpAddr>,
    ) -> Result<Self, ConnectorError> {
        let scheme = url.scheme();
        if scheme.is_tls() && cfg!(not(feature = "tls")) {
            return Err(UrlError::FeatureDisabled {
                scheme,
                feature: "tls",
            }
            .into());
        }
        if scheme.is_websocket() && cfg!(not(feature = "ws")) {
            return Err(UrlError::FeatureDisabled {
                scheme,
                feature: "ws",
            }
            .into());
        }
        if scheme == Scheme::Unix && cfg!(not(unix)) {
            return Err(UrlError::UnixUnsupported.into());
        }
        #[cfg(feature = "tls")]
        let tls = match scheme.is_tls() {
            true => {
                let name = midge_transport::tls::server_name(url.host())?;
                Some((tokio_rustls::TlsConnector::from(tls.load()?), name))
            }
            false => None,
        };
        let target = Arc::new(Target {
            url: url.clone(),
            local,
            #[cfg(feature = "tls")]
            tls,
        });
        let open = move |params: OpenParams| -> Opening { Box::pin(target.clone().open(params)) };
        Ok(Self {
            open: Arc::new(open),
            name: url.to_string().into(),
            attempts: 1,
        })
    }

    /// A connector that calls `open` for each connection attempt and runs MQTT over the
    /// stream its future returns. `open` runs on the client's driver task, so it should only
    /// start the work, which its future does. An error fails the attempt with
    /// [`CloseReason::Io`](crate::CloseReason::Io) of its kind, and the client reconnects
    /// per its policy.
    ///
    /// ```no_run
    /// use midge_client::{ClientBuilder, Connector};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// // A Unix socket; a TLS or WebSocket stream is opened the same way.
    /// let connector = Connector::from_fn(|| tokio::net::UnixStream::connect("/run/mqtt.sock"));
    /// let client = ClientBuilder::with_connector(connector)
    ///     .client_id("local")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_fn<F, Fut, S>(open: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let open = move |_: OpenParams| -> Opening {
            let opening = open();
            Box::pin(async move { Ok(Box::new(opening.await?) as BoxedTransport) })
        };
        Self {
            open: Arc::new(open),
            name: "from_fn".into(),
            attempts: 1,
        }
    }

    /// A connector that tries `connectors` in order on every connection attempt, and uses
    /// the first that opens a stream: a primary broker and its fallbacks. Each reconnection
    /// starts again from the first, so the client goes back to the primary as soon as it is
    /// up when the connection to a fallback is lost.
    ///
    /// Each connector's attempt may take [`ClientBuilder::connect_timeout`] before the next
    /// is tried, so the whole attempt may take that times the number of connectors. When
    /// every connector fails, the attempt fails with the last one's error (an empty list
    /// fails every attempt with [`std::io::ErrorKind::NotFound`]), and the client reconnects
    /// per its [`ReconnectPolicy`](crate::ReconnectPolicy).
    ///
    /// Only opening the stream fails over: a broker that accepts it and then refuses the
    /// CONNECT, or never answers it, is not skipped for the next.
    ///
    /// ```no_run
    /// use midge_client::{ClientBuilder, Connector};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let connector = Connector::failover([
    ///     Connector::url("mqtt://primary.example.com")?,
    ///     Connector::url("mqtt://backup.example.com")?,
    /// ]);
    /// let client = ClientBuilder::with_connector(connector).connect().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`ClientBuilder::connect_timeout`]: crate::ClientBuilder::connect_timeout
    pub fn failover(connectors: impl IntoIterator<Item = Self>) -> Self {
        let members: Arc<[Self]> = connectors.into_iter().collect();
        let names: Vec<&str> = members.iter().map(|c| &*c.name).collect();
        let name = format!("failover [{}]", names.join(", ")).into();
        let attempts = members
            .iter()
            .fold(0u32, |sum, c| sum.saturating_add(c.attempts))
            .max(1);
        let open = move |params: OpenParams| -> Opening {
            let members = members.clone();
            Box::pin(async move {
                let mut last = None;
                for member in members.iter() {
                    let bound = params.connect_timeout.saturating_mul(member.attempts);
                    let error = match tokio::time::timeout(bound, member.open(params)).await {
                        Ok(Ok(stream)) => {
                            tracing::debug!(connector = ?member, "connected");
                            return Ok(stream);
                        }
                        Ok(Err(err)) => err,
                        Err(_) => io::Error::new(io::ErrorKind::TimedOut, "connect timeout"),
                    };
                    tracing::debug!(connector = ?member, %error, "cannot connect, trying the next");
                    last = Some(error);
                }
                Err(last.unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        "a failover connector without connectors",
                    )
                }))
            })
        };
        Self {
            open: Arc::new(open),
            name,
            attempts,
        }
    }

    /// Starts opening a stream.
    pub(crate) fn open(&self, params: OpenParams) -> Opening {
        (self.open)(params)
    }

    /// How long one opening may take, with `connect_timeout` for each attempt it makes.
    pub(crate) fn open_timeout(&self, connect_timeout: std::time::Duration) -> std::time::Duration {
        connect_timeout.saturating_mul(self.attempts)
    }
}

/// Why [`Connector::url`] (or [`ClientBuilder::from_url`](crate::ClientBuilder::from_url))
/// could not make a connector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The URL is not one the client can connect to.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The TLS settings could not be loaded: a certificate or key file that cannot be read
    /// or holds none, a key that does not match its certificate.
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] midge_transport::tls::TlsError),
}

/// Where a URL connector connects, and with what.
struct Target {
    url: BrokerUrl,
    /// The local address TCP connections are bound to, if any.
    local: Option<IpAddr>,
    /// For `mqtts` and `wss`.
    #[cfg(feature = "tls")]
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Target {
    async fn open(self: Arc<Self>, params: OpenParams) -> io::Result<BoxedTransport> {
        let url = &self.url;
        #[cfg(not(feature = "ws"))]
        let _ = params;
        if let Some(path) = url.socket_path() {
            #[cfg(unix)]
            return Ok(Box::new(tokio::net::UnixStream::connect(path).await?));
            #[cfg(not(unix))]
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{}: no Unix sockets here", path.display()),
            ));
        }
        let tcp = match self.local {
            None => TcpStream::connect((url.host(), url.port())).await?,
            Some(local) => connect_from(local, url.host(), url.port()).await?,
        };
        // Only an optimisation: a stream that refuses it still works.
        let _ = tcp.set_nodelay(true);
        match url.scheme() {
            #[cfg(feature = "tls")]
            Scheme::Mqtts => Ok(Box::new(self.handshake(tcp).await?)),
            #[cfg(feature = "ws")]
            Scheme::Ws => Ok(Box::new(websocket(tcp, url, params).await?)),
            #[cfg(all(feature = "tls", feature = "ws"))]
            Scheme::Wss => {
                let tls = self.handshake(tcp).await?;
                Ok(Box::new(websocket(tls, url, params).await?))
            }
            Scheme::Mqtt => Ok(Box::new(tcp)),
            // Refused when the connector was made.
            other => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{other}:// is not supported by this build"),
            )),
        }
    }

    #[cfg(feature = "tls")]
    async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let (connector, name) = self
            .tls
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no TLS configuration"))?;
        connector.connect(name.clone(), tcp).await
    }
}

/// The WebSocket upgrade; a refusal is an `io::Error` that carries the [`WsError`].
#[cfg(feature = "ws")]
async fn websocket<S>(
    stream: S,
    url: &BrokerUrl,
    params: OpenParams,
) -> io::Result<midge_transport::ws::WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use midge_transport::ws::tokio_tungstenite::tungstenite;
    let max_message = websocket_message_limit(params.max_packet_size);
    match midge_transport::ws::connect(stream, &url.websocket_url(), max_message).await {
        Ok(stream) => Ok(stream),
        // A failure of the stream below (TLS included) stays what it was.
        Err(WsError::Protocol(tungstenite::Error::Io(err))) => Err(err),
        Err(err) => Err(io::Error::other(err)),
    }
}

/// The largest packet MQTT can encode, its fixed header included: a Remaining Length of
/// 268,435,455 (§2.2.3) after one byte of type and flags and four of length.
#[cfg(any(feature = "ws", test))]
const MQTT_MAX_PACKET: usize = 1 + 4 + 268_435_455;

/// The smallest WebSocket message limit: a broker may gather several small packets into one
/// message (midge's broker sends messages of up to 64 KiB, others may send more).
#[cfg(any(feature = "ws", test))]
const MIN_WEBSOCKET_MESSAGE: usize = 1024 * 1024;

/// The largest WebSocket message accepted from the broker, for a client that accepts packets
/// of up to `max_packet_size` bytes (0: any size MQTT allows).
///
/// MQTT ignores WebSocket message boundaries [MQTT-6.0.0-2], so a message may hold one
/// packet, several, or a piece of one; the whole message is held in memory before any of it
/// is read. The limit is what the client has agreed to hold for one packet anyway: the
/// packet limit, and never less than 1 MiB so that brokers that gather small packets into
/// larger messages are served. With no packet limit, the largest packet MQTT can encode.
/// A message beyond the limit closes the connection with a
/// [`WebSocketFailure::Protocol`](crate::WebSocketFailure::Protocol).
#[cfg(any(feature = "ws", test))]
pub(crate) fn websocket_message_limit(max_packet_size: u32) -> usize {
    match max_packet_size {
        0 => MQTT_MAX_PACKET,
        limit => usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .clamp(MIN_WEBSOCKET_MESSAGE, MQTT_MAX_PACKET),
    }
}

/// TCP to `host:port` from `local` (any port): each address of `host` of `local`'s family in
/// turn, until one connects.
async fn connect_from(local: IpAddr, host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        if addr.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(local, 0))?;
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{host} has no address of the family of {local}"),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_messages_are_bounded_by_the_packet_limit() {
        // No packet limit: any packet MQTT can encode fits in one message.
        assert_eq!(websocket_message_limit(0), 268_435_460);
        assert_eq!(websocket_message_limit(16 * 1024 * 1024), 16 * 1024 * 1024);
        // Small packet limits still take messages that gather several packets.
        assert_eq!(websocket_message_limit(1024), 1024 * 1024);
        // A limit above what MQTT can encode is no limit.
        assert_eq!(websocket_message_limit(u32::MAX), 268_435_460);
    }
}
