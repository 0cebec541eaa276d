//! Users removed from a password file by a reload, against user names proven otherwise.

mod common;

use bytes::Bytes;
use common::{Peer, V5};
use midge_auth::passwd::{PasswordFile, Scheme};
use midge_broker::{Broker, BrokerConfig, ConnectRequest, Hooks};
use midge_codec::{Connect, QoS, ReasonCode};

fn password_file(path: &std::path::Path, users: &[(&str, &str)]) {
    let mut file = PasswordFile::new();
    for (user, password) in users {
        file.set_password(user, password.as_bytes(), Scheme::SCRAM_DEFAULT)
            .expect("set password");
    }
    file.write(path).expect("write password file");
}

/// Proves alice on listener 1 by a token (say, an SSO); listener 0 is the password file's.
struct Token;

impl Hooks for Token {
    fn authenticate(&self, req: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        if req.listener != 1 {
            return Ok(());
        }
        match (req.username, req.password) {
            (Some("alice"), Some(b"token")) => Ok(()),
            _ => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        }
    }

    fn proves_usernames(&self) -> bool {
        true
    }
}

/// alice moves from the password file to the token listener: once a reload removes her from
/// the password file, the name `alice` is anonymous to the ACL for every later connection,
/// however it was proven (token hooks here; a client certificate alike), until a restart.
#[tokio::test]
async fn rev2_a_user_removed_from_the_password_file_is_anonymous_however_proven() {
    let dir = std::env::temp_dir().join(format!("midge-rev2-removed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (passwd, acl) = (dir.join("passwd"), dir.join("acl"));
    password_file(&passwd, &[("alice", "a"), ("bob", "b")]);
    std::fs::write(&acl, "user alice\ntopic readwrite home/#\n").expect("acl");
    let text = format!(
        "[auth]\nacl_file = {acl:?}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\npassword_file = {passwd:?}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nallow_anonymous = true\n\
         [sys]\ninterval_secs = 0\n"
    );
    let config: BrokerConfig = toml::from_str(&text).expect("config");
    let broker = Broker::builder()
        .config(config)
        .hooks(Token)
        .start()
        .await
        .expect("broker starts");
    let token_listener = broker.listener_addr(1).expect("listener 1");
    let mut connect = Connect::new(V5, "alice-token".to_owned());
    connect.username = Some("alice".to_owned().into());
    connect.password = Some(Bytes::from_static(b"token"));
    let (mut before, ack) = Peer::connect_with(token_listener, connect.clone()).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        before
            .subscribe("home/#", QoS::AtLeastOnce)
            .await
            .reason_codes,
        vec![ReasonCode(1)],
        "alice proven by the hooks has her ACL rights"
    );
    before.disconnect().await;
    password_file(&passwd, &[("bob", "b")]);
    broker.reload().expect("reload");
    let (mut after, ack) = Peer::connect_with(token_listener, connect).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        after.subscribe("home/#", QoS::AtLeastOnce).await.reason_codes,
        vec![ReasonCode(1)],
        "alice, proven by the token hooks after she left the password file, is anonymous to the ACL"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
