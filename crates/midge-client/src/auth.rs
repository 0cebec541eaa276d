//! MQTT 5.0 enhanced authentication (§4.12): the [`Authenticator`] a client runs its
//! exchanges with.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

/// A method of MQTT 5.0 enhanced authentication, such as SCRAM-SHA-256, set with
/// [`ClientBuilder::authenticator`](crate::ClientBuilder::authenticator).
///
/// The client names [`method`](Self::method) in every CONNECT and runs one exchange per
/// connection: [`start`](Self::start) gives the data for CONNECT, [`respond`](Self::respond)
/// answers each challenge of the broker (AUTH 0x18), and [`finish`](Self::finish) checks the
/// broker's final data in its CONNACK. Nothing else of the connection happens before `finish`
/// has accepted it: no message goes to, or comes from, a broker that has not proved itself.
/// [`Client::reauthenticate`](crate::Client::reauthenticate) runs the same steps once
/// connected (AUTH 0x19), ending with the broker's AUTH 0x00.
///
/// An error at any step closes the connection (with DISCONNECT 0x80 Unspecified error) and is
/// reported as [`CloseReason::Authentication`](crate::CloseReason::Authentication); before
/// the first accepted connection it ends the client instead of being retried. The methods are
/// called on the client's driver task, so they should not block for long.
pub trait Authenticator: Send + 'static {
    /// The Authentication Method: its name, such as `SCRAM-SHA-256`, which the broker must
    /// know.
    fn method(&self) -> &str;

    /// Starts a fresh exchange and returns the Authentication Data for CONNECT (or for the
    /// AUTH 0x19 of a re-authentication). Called for every connection attempt and every
    /// re-authentication: whatever an earlier exchange left is to be forgotten.
    fn start(&mut self) -> Result<Option<Bytes>, AuthError>;

    /// Answers the broker's challenge, the Authentication Data of its AUTH 0x18 Continue
    /// authentication, with the data for the client's AUTH 0x18.
    fn respond(&mut self, data: Option<&[u8]>) -> Result<Option<Bytes>, AuthError>;

    /// Checks the broker's final Authentication Data: its CONNACK's, or that of the AUTH
    /// 0x00 that ends a re-authentication. An error closes the connection.
    fn finish(&mut self, data: Option<&[u8]>) -> Result<(), AuthError>;
}

/// Why an [`Authenticator`] could not go on. Its message is logged, and returned by
/// [`Client::reauthenticate`](crate::Client::reauthenticate): it must hold no secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    message: String,
}

impl AuthError {
    /// An error that says `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// An authenticator shared by the clones of a builder and, once built, by its client's
/// driver. `Debug` shows its method only.
#[derive(Clone)]
pub(crate) struct SharedAuthenticator {
    method: String,
    inner: Arc<Mutex<Box<dyn Authenticator>>>,
}

impl SharedAuthenticator {
    pub(crate) fn new(authenticator: impl Authenticator) -> Self {
        Self {
            method: authenticator.method().to_owned(),
            inner: Arc::new(Mutex::new(Box::new(authenticator))),
        }
    }

    /// The method, as it was when the authenticator was set.
    pub(crate) fn method(&self) -> &str {
        &self.method
    }

    /// The authenticator, to call one step. A step that panicked leaves it as it was: the
    /// next exchange starts afresh anyway.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Box<dyn Authenticator>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for SharedAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}
