//! SCRAM-SHA-256 as the client's enhanced authentication (feature `scram`).

use std::fmt;

use bytes::Bytes;
use midge_auth::scram::{ScramClient, ScramError};
use zeroize::Zeroizing;

use crate::auth::{AuthError, Authenticator};

/// SCRAM-SHA-256 (RFC 5802, RFC 7677) for MQTT 5.0 enhanced authentication, with the method
/// name `SCRAM-SHA-256`: the client proves that it knows the password without sending it,
/// and the broker proves in its CONNACK that it holds the user's credentials, which the
/// client checks before it uses the connection. Pass it to
/// [`ClientBuilder::authenticator`](crate::ClientBuilder::authenticator).
///
/// Every connection and every re-authentication runs a fresh exchange, with a new random
/// nonce. The PBKDF2 the broker asks for (at most 1,000,000 iterations; fewer than 4,096 are
/// refused) runs on the client's driver task when its challenge arrives.
///
/// The password is kept for the reconnections, and zeroed when this is dropped. `Debug`
/// shows the user name only.
///
/// ```no_run
/// use midge_client::{ClientBuilder, ScramAuthenticator};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let client = ClientBuilder::from_url("mqtts://broker.example.com")?
///     .authenticator(ScramAuthenticator::new("sensor-17", "correct horse")?)
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
pub struct ScramAuthenticator {
    username: String,
    password: Zeroizing<Vec<u8>>,
    /// The exchange that runs, from `start` to `finish`.
    exchange: Option<ScramClient>,
}

impl fmt::Debug for ScramAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramAuthenticator")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ScramAuthenticator {
    /// An authenticator for `username` with `password`. Fails when SASLprep refuses the user
    /// name, or it is too long, or the system has no randomness for a nonce.
    pub fn new(username: impl Into<String>, password: impl AsRef<[u8]>) -> Result<Self, AuthError> {
        let username = username.into();
        let password = Zeroizing::new(password.as_ref().to_vec());
        // An exchange checks the name; made here, a bad one fails before anything connects.
        ScramClient::new(&username, &password).map_err(scram_error)?;
        Ok(Self {
            username,
            password,
            exchange: None,
        })
    }

    fn exchange(&mut self) -> Result<&mut ScramClient, AuthError> {
        self.exchange
            .as_mut()
            .ok_or_else(|| AuthError::new("SCRAM: a step came before the exchange started"))
    }
}

impl Authenticator for ScramAuthenticator {
    fn method(&self) -> &str {
        midge_auth::scram::METHOD
    }

    /// A new exchange: client-first, for CONNECT or AUTH 0x19.
    fn start(&mut self) -> Result<Option<Bytes>, AuthError> {
        let mut exchange = ScramClient::new(&self.username, &self.password).map_err(scram_error)?;
        let client_first = exchange.client_first();
        self.exchange = Some(exchange);
        Ok(Some(Bytes::from(client_first)))
    }

    /// Server-first in, client-final out.
    fn respond(&mut self, data: Option<&[u8]>) -> Result<Option<Bytes>, AuthError> {
        let server_first =
            data.ok_or_else(|| AuthError::new("SCRAM: the broker's challenge has no data"))?;
        let client_final = self
            .exchange()?
            .handle_server_first(server_first)
            .map_err(scram_error)?;
        Ok(Some(Bytes::from(client_final)))
    }

    /// Server-final: the broker's signature, which proves that it holds the credentials.
    fn finish(&mut self, data: Option<&[u8]>) -> Result<(), AuthError> {
        let mut exchange = self
            .exchange
            .take()
            .ok_or_else(|| AuthError::new("SCRAM: a step came before the exchange started"))?;
        let server_final = data.ok_or_else(|| {
            AuthError::new("SCRAM: the broker sent no server-final, so it has not proved itself")
        })?;
        exchange
            .handle_server_final(server_final)
            .map_err(scram_error)
    }
}

/// The SCRAM failure as an [`AuthError`]: its message names what was wrong, never a secret.
fn scram_error(error: ScramError) -> AuthError {
    AuthError::new(error.to_string())
}
