#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod api;
mod metrics;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use midge_broker::HttpConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use midge_broker::Admin;

/// Why the HTTP endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// `[http] bind` is not set.
    #[error("[http] bind is not set: there is no address to serve HTTP on")]
    NoBind,
    /// The address could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `[http] token_file` could not be read.
    #[error("cannot read the API token file {}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `[http] token_file` holds nothing but whitespace.
    #[error("the API token file {} is empty", path.display())]
    EmptyTokenFile {
        /// The file.
        path: PathBuf,
    },
    /// `[http] token` is empty.
    #[error("[http] token is empty")]
    EmptyToken,
    /// Both `[http] token` and `token_file` are set.
    #[error("[http] token and token_file are both set: set one")]
    TwoTokens,
}

/// The limits that protect the HTTP endpoint from slow, large or too many requests. Not part
/// of the broker's configuration: [`serve`] uses [`HttpLimits::default`], and
/// [`serve_with_limits`] takes others (tests shorten the timeouts).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpLimits {
    /// How long a client may take to send a request's headers, and how long an idle
    /// keep-alive connection stays open; past it the connection is closed. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a request may take from its headers to its response, body included; past it
    /// the answer is 408 Request Timeout. Default 30 s.
    pub request_timeout: Duration,
    /// The most bytes a request's head (request line and headers) may take; a larger one is
    /// answered 431 Request Header Fields Too Large and its connection closed. Default 16 KiB,
    /// at least 8 KiB.
    pub max_header_bytes: usize,
    /// The most bytes of a request body; a larger one gets 413 Payload Too Large. Default
    /// 64 KiB.
    pub max_body_bytes: usize,
    /// The most HTTP connections open at once; more are closed as soon as they are accepted.
    /// Default 256.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            max_connections: 256,
        }
    }
}

/// Binds `config.bind` and serves the broker's metrics, health checks, admin API and
/// dashboard there, on a task of the current tokio runtime, with the default
/// [`HttpLimits`].
///
/// The API token is `config.token`, or read now from `config.token_file`.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn serve(admin: Admin, config: &HttpConfig) -> Result<HttpServer, HttpError> {
    serve_with_limits(admin, config, HttpLimits::default())
}

/// [`serve`] with other [`HttpLimits`].
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn serve_with_limits(
    admin: Admin,
    config: &HttpConfig,
    limits: HttpLimits,
) -> Result<HttpServer, HttpError> {
    let addr = config.bind.ok_or(HttpError::NoBind)?;
    let token = token(config)?;
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(listener)
        })
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let state = Arc::new(api::AppState {
        admin,
        token: token.as_deref().map(api::digest),
        allow_remote: config.api_allow_remote,
    });
    let router = api::router(state, limits.max_body_bytes);
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(server::accept_loop(listener, router, limits, stopped));
    Ok(HttpServer {
        local_addr,
        stop,
        task: Some(task),
    })
}

/// The token from `[http] token` or `token_file`, if either is set.
fn token(config: &HttpConfig) -> Result<Option<String>, HttpError> {
    match (&config.token, &config.token_file) {
        (Some(_), Some(_)) => Err(HttpError::TwoTokens),
        (Some(token), None) if token.expose().trim().is_empty() => Err(HttpError::EmptyToken),
        (Some(token), None) => Ok(Some(token.expose().trim().to_owned())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| HttpError::TokenFile {
                path: path.clone(),
                source,
            })?;
            match text.trim() {
                "" => Err(HttpError::EmptyTokenFile { path: path.clone() }),
                token => Ok(Some(token.to_owned())),
            }
        }
        (None, None) => Ok(None),
    }
}

/// The running HTTP endpoint, from [`serve`]. Dropping it stops the endpoint without waiting;
/// [`HttpServer::shutdown`] waits.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// The address it listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets the requests in progress finish (for at most 5
    /// seconds), closes every connection and waits until they are closed.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
