//! [`ScramAuthenticator`] against a scripted broker that runs the server side of
//! SCRAM-SHA-256 with `midge-auth`, on an in-memory network and tokio's paused clock: the
//! exchange that succeeds, a wrong password, a broker that cannot prove itself, and
//! re-authentication.
#![cfg(feature = "scram")]

mod common;

use bytes::Bytes;
use common::script::{Network, Peer};
use common::within;
use midge_auth::scram::{ScramServer, StoredCredentials, METHOD};
use midge_client::codec::{Auth, ByteStr, ConnAck, Packet};
use midge_client::{
    AuthFailure, Authenticator, ClientError, CloseReason, ConnectError, ProtocolVersion,
    ReasonCode, ScramAuthenticator,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const MOCK_KEY: [u8; 32] = [7; 32];

fn credentials(password: &str) -> StoredCredentials {
    StoredCredentials::derive(password.as_bytes(), b"a fixed salt", 4096)
}

fn method() -> Option<ByteStr> {
    Some(ByteStr::from(METHOD))
}

/// The Authentication Data of `packet`, a CONNECT or an AUTH with the SCRAM method.
fn data_of(packet: &Packet) -> Vec<u8> {
    let (method_sent, data) = match packet {
        Packet::Connect(c) => (
            &c.properties.authentication_method,
            &c.properties.authentication_data,
        ),
        Packet::Auth(a) => (
            &a.properties.authentication_method,
            &a.properties.authentication_data,
        ),
        other => panic!("expected CONNECT or AUTH, got {other:?}"),
    };
    assert_eq!(*method_sent, method());
    data.as_ref().expect("authentication data").to_vec()
}

fn auth(reason: ReasonCode, data: Vec<u8>) -> Packet {
    let mut auth = Auth {
        reason_code: reason,
        ..Auth::default()
    };
    auth.properties.authentication_method = method();
    auth.properties.authentication_data = Some(Bytes::from(data));
    Packet::Auth(Box::new(auth))
}

/// Plays the broker's side of one exchange, starting from the client's first packet (CONNECT
/// or AUTH 0x19), for a user with `stored` credentials. Returns server-final if the client's
/// proof holds, `None` if not.
async fn serve(peer: &mut Peer, first: Packet, stored: StoredCredentials) -> Option<Vec<u8>> {
    let (server, server_first) =
        ScramServer::start(&data_of(&first), |_| Some(stored), &MOCK_KEY).expect("client-first");
    peer.send(auth(ReasonCode::CONTINUE_AUTHENTICATION, server_first))
        .await;
    let client_final = peer.recv_packet().await;
    server.finish(&data_of(&client_final)).ok()
}

fn success(server_final: Vec<u8>) -> Packet {
    let mut connack = ConnAck::default();
    connack.properties.authentication_method = method();
    connack.properties.authentication_data = Some(Bytes::from(server_final));
    Packet::ConnAck(Box::new(connack))
}

#[tokio::test(start_paused = true)]
async fn the_client_and_the_broker_prove_themselves_to_each_other() {
    let (mut network, builder) = Network::client(V5, "scram");
    let scram = ScramAuthenticator::new("alice", "correct horse").unwrap();
    let connecting = tokio::spawn(builder.authenticator(scram).connect());
    let mut peer = network.accept().await;
    let connect = peer.recv_packet().await;
    let server_final = serve(&mut peer, connect, credentials("correct horse"))
        .await
        .expect("the proof holds");
    peer.send(success(server_final)).await;
    let client = within("connected", connecting).await.unwrap().unwrap();
    // Re-authentication: a fresh exchange on the open connection.
    let reauth = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    let first = peer.recv_packet().await;
    assert!(
        matches!(&first, Packet::Auth(a) if a.reason_code == ReasonCode::RE_AUTHENTICATE),
        "{first:?}"
    );
    let server_final = serve(&mut peer, first, credentials("correct horse"))
        .await
        .expect("the proof holds");
    peer.send(auth(ReasonCode::SUCCESS, server_final)).await;
    assert_eq!(within("reauthenticated", reauth).await.unwrap(), Ok(()));
    assert!(client.is_connected());
}

#[tokio::test(start_paused = true)]
async fn a_wrong_password_is_refused_by_the_broker_for_good() {
    let (mut network, builder) = Network::client(V5, "scram-wrong");
    let scram = ScramAuthenticator::new("alice", "wrong").unwrap();
    let connecting = tokio::spawn(builder.authenticator(scram).connect());
    let mut peer = network.accept().await;
    let connect = peer.recv_packet().await;
    assert_eq!(
        serve(&mut peer, connect, credentials("correct horse")).await,
        None
    );
    peer.send(Packet::ConnAck(Box::new(ConnAck {
        reason_code: ReasonCode::NOT_AUTHORIZED,
        ..ConnAck::default()
    })))
    .await;
    assert_eq!(
        within("refused", connecting).await.unwrap().unwrap_err(),
        ConnectError::Failed(CloseReason::Refused(ReasonCode::NOT_AUTHORIZED))
    );
}

#[tokio::test(start_paused = true)]
async fn a_broker_without_the_credentials_cannot_prove_itself() {
    // The broker accepts whatever the client sends, with a signature made from other
    // credentials, or with none: the client closes the connection and gives up.
    for forged in [true, false] {
        let (mut network, builder) = Network::client(V5, "scram-impostor");
        let scram = ScramAuthenticator::new("alice", "correct horse").unwrap();
        let connecting = tokio::spawn(builder.authenticator(scram).connect());
        let mut peer = network.accept().await;
        let connect = peer.recv_packet().await;
        let (server, server_first) = ScramServer::start(
            &data_of(&connect),
            |_| Some(credentials("guess")),
            &MOCK_KEY,
        )
        .unwrap();
        peer.send(auth(ReasonCode::CONTINUE_AUTHENTICATION, server_first))
            .await;
        let _client_final = peer.recv_packet().await;
        drop(server);
        let mut connack = ConnAck::default();
        connack.properties.authentication_method = method();
        if forged {
            connack.properties.authentication_data = Some(Bytes::from_static(
                b"v=q1Gc5ZHOBMjHvK2Vc2fT3YjQe6QXrmLgXPn7C0ObGAE=",
            ));
        }
        peer.send(Packet::ConnAck(Box::new(connack))).await;
        peer.expect_disconnect(ReasonCode::UNSPECIFIED_ERROR).await;
        assert_eq!(
            within("fails", connecting).await.unwrap().unwrap_err(),
            ConnectError::Failed(CloseReason::Authentication(AuthFailure::Verification))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_broker_that_accepts_without_a_challenge_has_not_proved_itself() {
    let (mut network, builder) = Network::client(V5, "scram-skip");
    let scram = ScramAuthenticator::new("alice", "correct horse").unwrap();
    let connecting = tokio::spawn(builder.authenticator(scram).connect());
    let mut peer = network.accept().await;
    let _ = peer.recv_packet().await;
    peer.send(success(b"v=AAAA".to_vec())).await;
    peer.expect_disconnect(ReasonCode::UNSPECIFIED_ERROR).await;
    assert_eq!(
        within("fails", connecting).await.unwrap().unwrap_err(),
        ConnectError::Failed(CloseReason::Authentication(AuthFailure::Verification))
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_re_authentication_is_reported() {
    let (mut network, builder) = Network::client(V5, "scram-reauth");
    let scram = ScramAuthenticator::new("alice", "correct horse").unwrap();
    let client = builder.authenticator(scram).build().unwrap();
    let mut peer = network.accept().await;
    let connect = peer.recv_packet().await;
    let server_final = serve(&mut peer, connect, credentials("correct horse"))
        .await
        .unwrap();
    peer.send(success(server_final)).await;
    within("connected", client.wait_connected()).await.unwrap();
    let reauth = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    // The password changed on the broker meanwhile: the proof fails.
    let first = peer.recv_packet().await;
    assert_eq!(
        serve(&mut peer, first, credentials("new password")).await,
        None
    );
    peer.send(Packet::Disconnect(midge_client::codec::Disconnect {
        reason_code: ReasonCode::NOT_AUTHORIZED,
        ..Default::default()
    }))
    .await;
    assert_eq!(
        within("refused", reauth).await.unwrap(),
        Err(ClientError::Refused(ReasonCode::NOT_AUTHORIZED))
    );
}

#[test]
fn the_authenticator_checks_its_user_name_and_hides_its_password() {
    assert!(ScramAuthenticator::new("", "pw").is_err());
    let scram = ScramAuthenticator::new("alice", "s3cret-pw").unwrap();
    assert_eq!(scram.method(), "SCRAM-SHA-256");
    let shown = format!("{scram:?}");
    assert!(
        shown.contains("alice") && !shown.contains("s3cret"),
        "{shown}"
    );
    // Steps out of order are errors, not panics.
    let mut scram = scram;
    assert!(scram.respond(Some(b"r=x,s=eA==,i=4096")).is_err());
    assert!(scram.finish(Some(b"v=AAAA")).is_err());
    assert!(scram.start().unwrap().is_some());
    assert!(scram.respond(None).is_err());
}

/// The midge broker with a password file that holds `alice`'s SCRAM-SHA-256 credentials.
async fn scram_broker(dir: &std::path::Path) -> midge_broker::BrokerHandle {
    use midge_auth::passwd::{PasswordFile, Scheme};
    let path = dir.join("passwords");
    let mut file = PasswordFile::new();
    file.set_password(
        "alice",
        b"correct horse",
        Scheme::Scram { iterations: 4096 },
    )
    .unwrap();
    file.write(&path).unwrap();
    let mut config = common::broker_config();
    config.auth.password_file = Some(path);
    midge_broker::Broker::builder()
        .config(config)
        .bind("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("broker starts")
}

#[tokio::test]
async fn the_midge_broker_and_the_client_authenticate_each_other_with_scram() {
    let dir = std::env::temp_dir().join(format!("midge-client-scram-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broker = scram_broker(&dir).await;
    let addr = broker.local_addr();
    let scram = ScramAuthenticator::new("alice", "correct horse").unwrap();
    let client = within(
        "connected",
        common::builder(addr, "scram-e2e")
            .authenticator(scram)
            .connect(),
    )
    .await
    .unwrap();
    let (_, mut messages) = client
        .subscribe("e2e/#", midge_client::SubscribeOptions::default())
        .await
        .unwrap();
    within("reauthenticated", client.reauthenticate())
        .await
        .unwrap();
    client
        .publish("e2e/t", "m", midge_client::PublishOptions::default())
        .await
        .unwrap();
    let message = within("message", messages.recv()).await.unwrap();
    assert_eq!(message.topic(), "e2e/t");
    // A wrong password is refused, for good.
    let scram = ScramAuthenticator::new("alice", "wrong").unwrap();
    let outcome = within(
        "refused",
        common::builder(addr, "scram-wrong")
            .authenticator(scram)
            .connect(),
    )
    .await;
    assert!(
        matches!(
            outcome,
            Err(ConnectError::Failed(CloseReason::Refused(
                ReasonCode::NOT_AUTHORIZED | ReasonCode::BAD_USER_NAME_OR_PASSWORD
            )))
        ),
        "{:?}",
        outcome.map(|_| ())
    );
    client.disconnect(ReasonCode::SUCCESS).await;
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
