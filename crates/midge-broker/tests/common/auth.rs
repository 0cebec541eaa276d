//! What the authentication tests share: password files, configurations from TOML, a broker
//! started on one, and CONNECTs with credentials.

use std::path::Path;

use bytes::Bytes;
use midge_auth::passwd::{PasswordFile, Scheme};
use midge_broker::{Broker, BrokerConfig, BrokerHandle};
use midge_codec::{Connect, ProtocolVersion};

/// Writes a password file at `path` with `users` (name, password) in `scheme`.
pub fn password_file(path: &Path, users: &[(&str, &str)], scheme: Scheme) {
    let mut file = PasswordFile::new();
    for (user, password) in users {
        file.set_password(user, password.as_bytes(), scheme)
            .expect("set password");
    }
    file.write(path).expect("write password file");
}

/// A configuration from TOML text, without `$SYS` and with a short close timeout.
pub fn config(text: &str) -> BrokerConfig {
    let mut config: BrokerConfig = toml::from_str(&format!("{text}\n[sys]\ninterval_secs = 0\n"))
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    config.limits.close_timeout_ms = 500;
    config
}

/// A broker on `config`, its listeners where the configuration says.
pub async fn start(config: BrokerConfig) -> BrokerHandle {
    Broker::builder()
        .config(config)
        .start()
        .await
        .expect("broker starts")
}

/// A CONNECT of `version` from `id`, with the user name and password given.
pub fn connect(
    version: ProtocolVersion,
    id: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> Connect {
    let mut c = Connect::new(version, id.to_owned());
    c.username = user.map(|u| u.to_owned().into());
    c.password = password.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    c
}
