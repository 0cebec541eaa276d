//! How the client opens the byte stream of each connection.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream the client runs MQTT over.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// One open connection's stream, whatever its transport.
pub(crate) type BoxedTransport = Box<dyn Transport>;

type Opening = Pin<Box<dyn Future<Output = io::Result<BoxedTransport>> + Send>>;

/// Opens the byte stream of each connection to the broker: TCP
/// ([`Connector::tcp`], what [`ClientBuilder::new`](crate::ClientBuilder::new) uses), or any
/// stream that implements tokio's `AsyncRead + AsyncWrite` ([`Connector::from_fn`]): TLS, a
/// WebSocket adapted to a byte stream, a Unix socket, or an in-memory pipe
/// (`tokio::io::duplex`) in tests. MQTT needs nothing else from the transport; the client
/// does not know which one it runs on.
///
/// The client opens a stream for its first connection and for every reconnection. Each
/// attempt may take at most [`ClientBuilder::connect_timeout`](crate::ClientBuilder::connect_timeout);
/// an attempt that takes longer, or that the client gives up because it is closing, is
/// dropped (cancelled) where it stands.
#[derive(Clone)]
pub struct Connector {
    open: Arc<dyn Fn() -> Opening + Send + Sync>,
    /// What `Debug` shows.
    name: Arc<str>,
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
        let open = move || -> Opening {
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
        }
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
        let open = move || -> Opening {
            let opening = open();
            Box::pin(async move { Ok(Box::new(opening.await?) as BoxedTransport) })
        };
        Self {
            open: Arc::new(open),
            name: "from_fn".into(),
        }
    }

    /// Starts opening a stream.
    pub(crate) fn open(&self) -> Opening {
        (self.open)()
    }
}
