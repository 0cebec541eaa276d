//! Listeners: a TCP or Unix socket each, with what comes before MQTT on its connections (a
//! PROXY header, a TLS handshake, a WebSocket upgrade), all in front of the same connection
//! code ([`crate::driver`]).
//!
//! Everything before MQTT counts against `limits.connect_timeout_ms`: the CONNECT must arrive
//! within that time of the connection's acceptance, however long the handshakes took. A
//! connection that fails a handshake is closed and counted (`transport_errors`); nothing it
//! sent reaches the core.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};

use crate::config::{BindAddr, ListenerConfig, ListenerProtocol};
use crate::core::Core;
use crate::driver::{self, now, Transport};

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Binding the socket failed.
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        /// The listener's `bind`.
        bind: String,
        /// The error.
        source: io::Error,
    },
    /// The listener's certificate or key could not be loaded.
    #[cfg(feature = "tls")]
    #[error("listener {bind}: {source}")]
    Tls {
        /// The listener's `bind`.
        bind: String,
        /// The error.
        source: midge_transport::tls::TlsError,
    },
    /// The listener needs a feature this build of the broker does not have.
    #[error("listener {bind}: this build of midge-broker has no {feature} support (the `{feature}` cargo feature)")]
    Unsupported {
        /// The listener's `bind`.
        bind: String,
        /// The cargo feature.
        feature: &'static str,
    },
}

/// A listener's open connections, and the broker's: every connection's task holds an
/// [`Admission`] until it ends, and the broker's shutdown waits until every one is dropped
/// (`done` is dropped with the last).
#[derive(Debug)]
pub(crate) struct Gate {
    open: AtomicUsize,
    max: Option<usize>,
    /// Never sent on: dropped with the gate, once the listener and its last connection are
    /// gone, which is what the shutdown waits for.
    _done: mpsc::Sender<()>,
}

impl Gate {
    pub(crate) fn new(max: Option<usize>, done: mpsc::Sender<()>) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
            _done: done,
        })
    }

    /// Admits one more connection, unless the listener has its most already.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admission> {
        let open = self.open.fetch_add(1, Relaxed);
        let admission = Admission(self.clone());
        match self.max {
            Some(max) if open >= max => None,
            _ => Some(admission),
        }
    }
}

/// One connection's place in its listener; see [`Gate`].
#[derive(Debug)]
pub(crate) struct Admission(Arc<Gate>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// A bound listener, not yet accepting.
pub(crate) struct Bound {
    config: ListenerConfig,
    socket: Socket,
    stack: Arc<Stack>,
}

enum Socket {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

/// What comes before MQTT on a listener's connections.
struct Stack {
    name: String,
    /// The listener's index in the configuration.
    index: usize,
    proxy: bool,
    #[cfg(feature = "tls")]
    tls: Option<Arc<midge_transport::tls::ReloadableAcceptor>>,
    #[cfg(feature = "tls")]
    identity_as_username: bool,
    #[cfg(feature = "ws")]
    ws: Option<midge_transport::ws::AcceptOptions>,
}

impl Stack {
    /// Where a client at `peer` (after any PROXY header) came from. A Unix socket's client
    /// is on this machine, unless a PROXY header named another address for it.
    fn origin(&self, peer: SocketAddr, certificate_username: Option<String>) -> driver::Origin {
        #[cfg(unix)]
        let local = peer == UNIX_PEER;
        #[cfg(not(unix))]
        let local = false;
        driver::Origin {
            listener: self.index,
            local,
            certificate_username,
            internal: false,
        }
    }

    fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    fn is_ws(&self) -> bool {
        #[cfg(feature = "ws")]
        return self.ws.is_some();
        #[cfg(not(feature = "ws"))]
        false
    }
}

impl Bound {
    /// Binds the listener's socket and loads its certificates. `max_packet_size` bounds
    /// WebSocket messages.
    pub(crate) fn bind(
        config: &ListenerConfig,
        index: usize,
        max_packet_size: u32,
    ) -> Result<Self, ListenError> {
        let bind = config.bind.to_string();
        let bind_error = |source| ListenError::Bind {
            bind: bind.clone(),
            source,
        };
        #[cfg(feature = "tls")]
        let tls = match &config.tls {
            Some(tls) => {
                let mut files =
                    midge_transport::tls::ServerTlsFiles::new(tls.cert.clone(), tls.key.clone());
                files.client_ca = tls.client_ca.clone();
                files.require_client_cert = tls.require_client_cert;
                files.sni = tls
                    .sni
                    .iter()
                    .map(|sni| {
                        midge_transport::tls::SniCertificate::new(
                            sni.server_name.clone(),
                            sni.cert.clone(),
                            sni.key.clone(),
                        )
                    })
                    .collect();
                // Browsers offer `h2` and `http/1.1` on a wss connection; MQTT clients that
                // use ALPN offer `mqtt`.
                let default_alpn = match config.protocol {
                    ListenerProtocol::Mqtt => "mqtt",
                    ListenerProtocol::Ws => "http/1.1",
                };
                let alpn: Vec<&[u8]> = match &tls.alpn {
                    Some(list) => list.iter().map(|p| p.as_bytes()).collect(),
                    None => vec![default_alpn.as_bytes()],
                };
                let acceptor = midge_transport::tls::ReloadableAcceptor::new(files, &alpn)
                    .map_err(|source| ListenError::Tls {
                        bind: bind.clone(),
                        source,
                    })?;
                Some(Arc::new(acceptor))
            }
            None => None,
        };
        #[cfg(not(feature = "tls"))]
        if config.tls.is_some() {
            return Err(ListenError::Unsupported {
                bind,
                feature: "tls",
            });
        }
        #[cfg(feature = "ws")]
        let ws = match config.protocol {
            ListenerProtocol::Ws => {
                let mut options = midge_transport::ws::AcceptOptions::default();
                options.path = config.path.clone();
                options.allowed_origins = config.allowed_origins.clone();
                options.max_message_size = max_packet_size as usize;
                Some(options)
            }
            ListenerProtocol::Mqtt => None,
        };
        #[cfg(not(feature = "ws"))]
        if config.protocol == ListenerProtocol::Ws {
            return Err(ListenError::Unsupported {
                bind,
                feature: "ws",
            });
        }
        let _ = max_packet_size;
        let socket = match &config.bind {
            BindAddr::Tcp(addr) => Socket::Tcp(listen(*addr, config.backlog).map_err(bind_error)?),
            #[cfg(unix)]
            BindAddr::Unix(path) => {
                Socket::Unix(listen_unix(path).map_err(bind_error)?, path.clone())
            }
            #[cfg(not(unix))]
            BindAddr::Unix(_) => {
                return Err(bind_error(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "Unix sockets are not available on this system",
                )))
            }
        };
        // Logs name the address really bound (the real port when port 0 was asked for).
        let mut config = config.clone();
        if let Socket::Tcp(listener) = &socket {
            if let Ok(local) = listener.local_addr() {
                config.bind = BindAddr::Tcp(local);
            }
        }
        let name = config.describe();
        Ok(Self {
            socket,
            stack: Arc::new(Stack {
                name,
                index,
                proxy: config.proxy_protocol,
                #[cfg(feature = "tls")]
                identity_as_username: config
                    .tls
                    .as_ref()
                    .is_some_and(|tls| tls.use_identity_as_username),
                #[cfg(feature = "tls")]
                tls,
                #[cfg(feature = "ws")]
                ws,
            }),
            config,
        })
    }

    /// The TCP address it is bound to (with the real port when bound to port 0).
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match &self.socket {
            Socket::Tcp(listener) => listener.local_addr().ok(),
            #[cfg(unix)]
            Socket::Unix(..) => None,
        }
    }

    /// What reloads this listener's certificates, if it has TLS.
    pub(crate) fn reloader(&self) -> Option<Reloader> {
        #[cfg(feature = "tls")]
        return self.stack.tls.clone().map(|acceptor| Reloader {
            name: self.stack.name.clone(),
            acceptor,
        });
        #[cfg(not(feature = "tls"))]
        None
    }

    /// Accepts connections until `shutdown`, each on a task of its own.
    pub(crate) async fn serve(
        self,
        core: Arc<Core>,
        mut shutdown: watch::Receiver<bool>,
        done: mpsc::Sender<()>,
    ) {
        let gate = Gate::new(self.config.max_connections, done);
        let stack = self.stack;
        tracing::info!(listener = %stack.name, "midge broker listening");
        match self.socket {
            Socket::Tcp(listener) => loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = shutdown.changed() => break,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        // Only an optimisation: a socket that refuses it still works.
                        let _ = stream.set_nodelay(true);
                        admit(&core, &gate, &stack, &shutdown, stream, peer);
                    }
                    Err(err) => accept_failed(err).await,
                }
            },
            #[cfg(unix)]
            Socket::Unix(listener, path) => {
                loop {
                    let accepted = tokio::select! {
                        accepted = listener.accept() => accepted,
                        _ = shutdown.changed() => break,
                    };
                    match accepted {
                        // A Unix socket's peer has no IP address: the unspecified one stands
                        // for it, unless a PROXY header names one.
                        Ok((stream, _)) => {
                            admit(&core, &gate, &stack, &shutdown, stream, UNIX_PEER);
                        }
                        Err(err) => accept_failed(err).await,
                    }
                }
                // Only our own socket: not a file something else put there since.
                drop(listener);
                if is_stale_socket(&path) {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

/// What hooks and logs see as the address of a client on a Unix socket.
#[cfg(unix)]
const UNIX_PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Out of file descriptors and the like: back off briefly, keep serving.
async fn accept_failed(err: io::Error) {
    tracing::warn!(%err, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Reloads one listener's certificates.
pub(crate) struct Reloader {
    name: String,
    #[cfg(feature = "tls")]
    acceptor: Arc<midge_transport::tls::ReloadableAcceptor>,
}

impl Reloader {
    /// Reads the files again; on error the listener keeps the certificates it has, and the
    /// error says why.
    pub(crate) fn reload(&self) -> Result<(), String> {
        #[cfg(feature = "tls")]
        return self
            .acceptor
            .reload()
            .map_err(|err| format!("listener {}: {err}", self.name));
        #[cfg(not(feature = "tls"))]
        Ok(())
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// Takes in an accepted connection: refused at once past the limits, run directly when
/// nothing comes before MQTT, or after its handshakes otherwise.
fn admit<S>(
    core: &Arc<Core>,
    gate: &Arc<Gate>,
    stack: &Arc<Stack>,
    shutdown: &watch::Receiver<bool>,
    stream: S,
    peer: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static + IntoPlain,
{
    let accepted_at = now();
    let counters = &core.counters;
    let max = core.live.max_connections();
    let open = counters.connections.load(Relaxed) + counters.handshaking.load(Relaxed);
    let admission = match gate.admit() {
        // Far over the limit: not even a CONNACK. (Up to twice the limit, the CONNECT is
        // refused with 0x89, Server busy, which the client understands.)
        Some(admission) if open < max.saturating_mul(2).max(16) => admission,
        _ => {
            counters.connections_total.fetch_add(1, Relaxed);
            counters.rejected_connections.fetch_add(1, Relaxed);
            return;
        }
    };
    if !stack.proxy && !stack.is_tls() && !stack.is_ws() {
        match stream.into_plain() {
            Ok(tcp) => {
                let origin = stack.origin(peer, None);
                return driver::spawn(core, tcp, peer, accepted_at, origin, admission);
            }
            Err(stream) => {
                return driver::spawn(
                    core,
                    Box::new(stream) as Box<dyn Transport>,
                    peer,
                    accepted_at,
                    stack.origin(peer, None),
                    admission,
                )
            }
        }
    }
    let core = core.clone();
    let stack = stack.clone();
    let mut shutdown = shutdown.clone();
    let handshaking = Handshaking::new(&core);
    tokio::spawn(async move {
        let deadline = accepted_at + Duration::from_millis(core.config.limits.connect_timeout_ms);
        let handshakes = tokio::time::timeout_at(deadline.into(), prepare(&stack, stream, peer));
        let prepared = tokio::select! {
            prepared = handshakes => prepared,
            // The broker stops: a connection still in its handshakes is dropped, so that
            // the shutdown does not wait for it.
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        };
        drop(handshaking);
        let failure = match prepared {
            Ok(Ok(Prepared::Plain(tcp, peer))) => {
                let origin = stack.origin(peer, None);
                return driver::spawn(&core, tcp, peer, accepted_at, origin, admission);
            }
            Ok(Ok(Prepared::Boxed(transport, peer, identity))) => {
                let origin = stack.origin(peer, identity);
                return driver::spawn(&core, transport, peer, accepted_at, origin, admission);
            }
            Ok(Err(failure)) => failure,
            Err(_) => HandshakeError::Timeout,
        };
        core.counters.connections_total.fetch_add(1, Relaxed);
        core.counters.transport_errors.fetch_add(1, Relaxed);
        tracing::debug!(listener = %stack.name, %peer, error = %failure, "connection closed before MQTT");
    });
}

/// A connection in its handshakes, counted in `handshaking` while it lives: whatever ends the
/// handshake task (success, failure, shutdown, a panic) ends the count.
struct Handshaking(Arc<Core>);

impl Handshaking {
    fn new(core: &Arc<Core>) -> Self {
        core.counters.handshaking.fetch_add(1, Relaxed);
        Self(core.clone())
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.counters.handshaking.fetch_sub(1, Relaxed);
    }
}

/// A stream that may be a TCP socket, which runs unboxed (the common case, kept small).
pub(crate) trait IntoPlain: Sized {
    fn into_plain(self) -> Result<tokio::net::TcpStream, Self>;
}

impl IntoPlain for tokio::net::TcpStream {
    fn into_plain(self) -> Result<tokio::net::TcpStream, Self> {
        Ok(self)
    }
}

#[cfg(unix)]
impl IntoPlain for tokio::net::UnixStream {
    fn into_plain(self) -> Result<tokio::net::TcpStream, Self> {
        Err(self)
    }
}

/// A connection ready for MQTT.
enum Prepared {
    /// A TCP socket after its PROXY header.
    Plain(tokio::net::TcpStream, SocketAddr),
    /// Anything else, with the client's address and, with `use_identity_as_username`, its
    /// certificate's Common Name.
    Boxed(Box<dyn Transport>, SocketAddr, Option<String>),
}

/// Why a connection closed before MQTT.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("{0}")]
    Proxy(#[from] midge_transport::proxy::ProxyError),
    #[cfg(feature = "tls")]
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[cfg(feature = "ws")]
    #[error("{0}")]
    Ws(#[from] midge_transport::ws::WsError),
    #[cfg(feature = "tls")]
    #[error("the client certificate has no Common Name to use as the user name")]
    NoCommonName,
    #[error("no CONNECT within connect_timeout_ms: the handshakes took too long")]
    Timeout,
}

/// Reads the PROXY header, completes the TLS handshake and the WebSocket upgrade, as the
/// listener has them.
async fn prepare<S>(
    stack: &Stack,
    mut stream: S,
    mut peer: SocketAddr,
) -> Result<Prepared, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static + IntoPlain,
{
    if stack.proxy {
        let header = midge_transport::proxy::read_header(&mut stream).await?;
        if let Some(source) = header.source {
            peer = source;
        }
        if !stack.is_tls() && !stack.is_ws() {
            return Ok(match stream.into_plain() {
                Ok(tcp) => Prepared::Plain(tcp, peer),
                Err(stream) => Prepared::Boxed(Box::new(stream), peer, None),
            });
        }
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = &stack.tls {
        let stream = tls
            .acceptor()
            .accept(stream)
            .await
            .map_err(HandshakeError::Tls)?;
        let identity = if stack.identity_as_username {
            let name = midge_transport::tls::peer_common_name(stream.get_ref().1)
                .ok_or(HandshakeError::NoCommonName)?;
            Some(name)
        } else {
            None
        };
        return Ok(Prepared::Boxed(
            upgrade(stack, stream).await?,
            peer,
            identity,
        ));
    }
    Ok(Prepared::Boxed(upgrade(stack, stream).await?, peer, None))
}

/// The WebSocket upgrade, on a WebSocket listener.
async fn upgrade<S: Transport>(
    stack: &Stack,
    stream: S,
) -> Result<Box<dyn Transport>, HandshakeError> {
    #[cfg(feature = "ws")]
    if let Some(options) = &stack.ws {
        return Ok(Box::new(
            midge_transport::ws::accept(stream, options).await?,
        ));
    }
    let _ = stack;
    Ok(Box::new(stream))
}

/// A listener on `addr` whose kernel queue of connections not yet accepted holds `backlog`
/// (tokio's and std's `bind` fix it at 128, which a burst of connecting clients overflows).
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As tokio's `bind` does: a restarted broker binds again at once while its previous
    // connections linger in TIME_WAIT. Not on Windows, where it would let another socket take
    // the port.
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A Unix socket listener at `path`. A socket file left by a broker that did not stop cleanly
/// (a socket nobody listens on) is replaced; anything else at the path, a socket a running
/// process listens on or a file that is not a socket, is an error and left alone.
#[cfg(unix)]
fn listen_unix(path: &std::path::Path) -> io::Result<tokio::net::UnixListener> {
    match tokio::net::UnixListener::bind(path) {
        Err(err) if err.kind() == io::ErrorKind::AddrInUse && is_stale_socket(path) => {
            std::fs::remove_file(path)?;
            tokio::net::UnixListener::bind(path)
        }
        other => other,
    }
}

/// Whether `path` is a socket that refuses connections: nobody listens on it.
#[cfg(unix)]
fn is_stale_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket
        && matches!(
            std::os::unix::net::UnixStream::connect(path),
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused
        )
}
