//! Enhanced authentication (MQTT 5.0 §4.12) through the [`Authenticator`] trait, against a
//! scripted broker on an in-memory network (see `common::script`), on tokio's paused clock:
//! the exchange before CONNACK, the checks that fail it and which failures are retried,
//! and re-authentication while messages flow.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::script::{Network, Peer};
use common::within;
use midge_client::codec::{Auth, ByteStr, ConnAck, Packet};
use midge_client::{
    AuthError, AuthFailure, Authenticator, ClientError, CloseReason, ConnectError, ConnectionEvent,
    InputKind, ProtocolVersion, PublishOptions, QoS, ReasonCode,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const METHOD: &str = "X-REVERSE";

/// What the test authenticator does at each step.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    start: bool,
    respond: bool,
    finish: bool,
}

/// A method for tests: CONNECT carries `hello-<n>` for the `n`th exchange, each challenge is
/// answered with its bytes reversed, and the broker proves itself with `ok-<n>`. Every call
/// is recorded.
#[derive(Clone, Default)]
struct Reverse {
    calls: Arc<Mutex<Vec<String>>>,
    faults: Arc<Mutex<Faults>>,
    exchanges: Arc<Mutex<u32>>,
}

impl Reverse {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn fail(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

fn text(data: Option<&[u8]>) -> String {
    String::from_utf8_lossy(data.unwrap_or(b"-")).into_owned()
}

impl Authenticator for Reverse {
    fn method(&self) -> &str {
        METHOD
    }

    fn start(&mut self) -> Result<Option<Bytes>, AuthError> {
        let mut exchanges = self.exchanges.lock().unwrap();
        *exchanges += 1;
        self.record(format!("start {exchanges}"));
        if self.faults.lock().unwrap().start {
            return Err(AuthError::new("no credentials"));
        }
        Ok(Some(Bytes::from(format!("hello-{exchanges}"))))
    }

    fn respond(&mut self, data: Option<&[u8]>) -> Result<Option<Bytes>, AuthError> {
        self.record(format!("respond {}", text(data)));
        if self.faults.lock().unwrap().respond {
            return Err(AuthError::new("a challenge it cannot answer"));
        }
        let mut answer = data.unwrap_or_default().to_vec();
        answer.reverse();
        Ok(Some(Bytes::from(answer)))
    }

    fn finish(&mut self, data: Option<&[u8]>) -> Result<(), AuthError> {
        self.record(format!("finish {}", text(data)));
        let expected = format!("ok-{}", self.exchanges.lock().unwrap());
        if self.faults.lock().unwrap().finish || data != Some(expected.as_bytes()) {
            return Err(AuthError::new("the server signature does not match"));
        }
        Ok(())
    }
}

fn auth(reason: ReasonCode, data: &str) -> Packet {
    let mut auth = Auth {
        reason_code: reason,
        ..Auth::default()
    };
    auth.properties.authentication_method = Some(ByteStr::from(METHOD));
    auth.properties.authentication_data = Some(Bytes::from(data.to_owned()));
    Packet::Auth(Box::new(auth))
}

fn challenge(data: &str) -> Packet {
    auth(ReasonCode::CONTINUE_AUTHENTICATION, data)
}

fn connack(data: &str) -> Packet {
    let mut connack = ConnAck::default();
    connack.properties.authentication_method = Some(ByteStr::from(METHOD));
    connack.properties.authentication_data = Some(Bytes::from(data.to_owned()));
    Packet::ConnAck(Box::new(connack))
}

/// The client's next AUTH: its reason code and data, after checking its method.
async fn recv_auth(peer: &mut Peer) -> (ReasonCode, String) {
    match peer.recv_packet().await {
        Packet::Auth(auth) => {
            assert_eq!(
                auth.properties
                    .authentication_method
                    .as_ref()
                    .map(|m| m.as_str()),
                Some(METHOD)
            );
            (
                auth.reason_code,
                text(auth.properties.authentication_data.as_deref()),
            )
        }
        other => panic!("expected AUTH, got {other:?}"),
    }
}

/// Receives CONNECT, checks its method and data, and runs one challenge round.
async fn challenge_round(peer: &mut Peer, exchange: u32) {
    let connect = peer.expect_connect().await;
    assert_eq!(
        connect
            .properties
            .authentication_method
            .as_ref()
            .map(|m| m.as_str()),
        Some(METHOD)
    );
    assert_eq!(
        text(connect.properties.authentication_data.as_deref()),
        format!("hello-{exchange}")
    );
    peer.send(challenge("abc")).await;
    assert_eq!(
        recv_auth(peer).await,
        (ReasonCode::CONTINUE_AUTHENTICATION, "cba".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn the_client_runs_the_exchange_and_uses_the_connection_once_the_broker_proved_itself() {
    let (mut network, builder) = Network::client(V5, "auth");
    let reverse = Reverse::default();
    let connecting = tokio::spawn(builder.authenticator(reverse.clone()).connect());
    let mut peer = network.accept().await;
    challenge_round(&mut peer, 1).await;
    peer.send(challenge("xyz")).await;
    assert_eq!(
        recv_auth(&mut peer).await,
        (ReasonCode::CONTINUE_AUTHENTICATION, "zyx".to_owned())
    );
    // CONNACK and a message in one write: the message waits for the check, then is handled
    // (acknowledged, as it is for no subscription).
    let mut bytes = bytes::BytesMut::new();
    connack("ok-1").encode(V5, &mut bytes).unwrap();
    common::script::publish("t", 7, "m")
        .encode(V5, &mut bytes)
        .unwrap();
    peer.send_raw(&bytes).await;
    let client = within("connected", connecting).await.unwrap().unwrap();
    assert_eq!(
        reverse.calls(),
        ["start 1", "respond abc", "respond xyz", "finish ok-1"]
    );
    match peer.recv_packet().await {
        Packet::PubAck(ack) => assert_eq!(ack.packet_id.get(), 7),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // The connection is used as any other.
    let published = client.publish("t", "m", PublishOptions::with_qos(QoS::AtMostOnce));
    within("published", published).await.unwrap();
    assert!(matches!(peer.recv_packet().await, Packet::Publish(_)));
}

#[tokio::test(start_paused = true)]
async fn a_broker_that_does_not_prove_itself_gets_nothing_and_the_client_gives_up() {
    let (mut network, builder) = Network::client(V5, "impostor");
    let reverse = Reverse::default();
    let client = builder.authenticator(reverse.clone()).build().unwrap();
    // A message queued before the connection is up never reaches an unchecked broker.
    let _queued = client
        .try_publish("secret/t", "m", PublishOptions::with_qos(QoS::AtLeastOnce))
        .unwrap();
    let mut peer = network.accept().await;
    challenge_round(&mut peer, 1).await;
    peer.send(connack("forged")).await;
    assert_eq!(
        peer.until_closed().await,
        [Packet::Disconnect(midge_client::codec::Disconnect {
            reason_code: ReasonCode::UNSPECIFIED_ERROR,
            ..Default::default()
        })]
    );
    within("closed", client.wait_connected()).await.unwrap_err();
    assert!(client.is_closed());
    // Before the first accepted connection, the failure is not retried.
    assert!(
        !network
            .connects_within(std::time::Duration::from_secs(60))
            .await
    );
    assert_eq!(network.attempts().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_of_the_authenticator_before_the_first_connection_is_permanent() {
    for (faults, failure) in [
        (
            Faults {
                start: true,
                ..Faults::default()
            },
            AuthFailure::Start,
        ),
        (
            Faults {
                respond: true,
                ..Faults::default()
            },
            AuthFailure::Challenge,
        ),
        (
            Faults {
                finish: true,
                ..Faults::default()
            },
            AuthFailure::Verification,
        ),
    ] {
        let (mut network, builder) = Network::client(V5, "fails");
        let reverse = Reverse::default();
        reverse.fail(faults);
        let connecting = tokio::spawn(builder.authenticator(reverse.clone()).connect());
        let mut peer = network.accept().await;
        let sent = if faults.start {
            // Nothing is sent: the exchange cannot start.
            peer.until_closed().await
        } else {
            let connect = peer.expect_connect().await;
            assert!(connect.properties.authentication_data.is_some());
            peer.send(challenge("abc")).await;
            if !faults.respond {
                let _ = recv_auth(&mut peer).await;
                peer.send(connack("ok-1")).await;
            }
            peer.until_closed().await
        };
        let outcome = within("connect fails", connecting).await.unwrap();
        assert_eq!(
            outcome.unwrap_err(),
            ConnectError::Failed(CloseReason::Authentication(failure))
        );
        let expected: &[Packet] = if faults.start {
            &[]
        } else {
            &[Packet::Disconnect(midge_client::codec::Disconnect {
                reason_code: ReasonCode::UNSPECIFIED_ERROR,
                ..Default::default()
            })]
        };
        assert_eq!(sent, expected, "{failure:?}");
        assert!(
            !network
                .connects_within(std::time::Duration::from_secs(60))
                .await
        );
    }
}

#[tokio::test(start_paused = true)]
async fn every_connection_runs_a_fresh_exchange_and_later_failures_are_retried() {
    let (mut network, builder) = Network::client(V5, "again");
    let reverse = Reverse::default();
    let client = builder.authenticator(reverse.clone()).build().unwrap();
    let mut events = client.events();
    let mut peer = network.accept().await;
    challenge_round(&mut peer, 1).await;
    peer.send(connack("ok-1")).await;
    within("connected", client.wait_connected()).await.unwrap();
    // The broker goes away; the next connection starts a new exchange.
    drop(peer);
    let mut peer = network.accept().await;
    challenge_round(&mut peer, 2).await;
    // Its proof is wrong: reported, and retried since a connection was accepted before.
    peer.send(connack("ok-1")).await;
    peer.expect_disconnect(ReasonCode::UNSPECIFIED_ERROR).await;
    let mut peer = network.accept().await;
    challenge_round(&mut peer, 3).await;
    peer.send(connack("ok-3")).await;
    within("connected", client.wait_connected()).await.unwrap();
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    assert!(
        seen.contains(&ConnectionEvent::Disconnected {
            reason: CloseReason::Authentication(AuthFailure::Verification)
        }),
        "{seen:?}"
    );
    assert_eq!(
        reverse
            .calls()
            .iter()
            .filter(|c| c.starts_with("start"))
            .count(),
        3
    );
}

#[tokio::test(start_paused = true)]
async fn the_client_re_authenticates_while_messages_flow() {
    let (mut network, builder) = Network::client(V5, "reauth");
    let reverse = Reverse::default();
    let client = builder.authenticator(reverse.clone()).build().unwrap();
    let mut peer = network.accept().await;
    peer.expect_connect().await;
    peer.send(connack("ok-1")).await;
    within("connected", client.wait_connected()).await.unwrap();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    assert_eq!(
        recv_auth(&mut peer).await,
        (ReasonCode::RE_AUTHENTICATE, "hello-2".to_owned())
    );
    // A second call joins the one that runs.
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    // Messages flow meanwhile.
    let published = client.publish("t", "m", PublishOptions::with_qos(QoS::AtMostOnce));
    within("published", published).await.unwrap();
    assert!(matches!(peer.recv_packet().await, Packet::Publish(_)));
    peer.send(challenge("abc")).await;
    assert_eq!(
        recv_auth(&mut peer).await,
        (ReasonCode::CONTINUE_AUTHENTICATION, "cba".to_owned())
    );
    peer.send(auth(ReasonCode::SUCCESS, "ok-2")).await;
    assert_eq!(within("first", first).await.unwrap(), Ok(()));
    assert_eq!(within("second", second).await.unwrap(), Ok(()));
    assert_eq!(
        reverse.calls(),
        [
            "start 1",
            "finish ok-1",
            "start 2",
            "respond abc",
            "finish ok-2"
        ]
    );
    assert!(client.is_connected());
}

#[tokio::test(start_paused = true)]
async fn a_failed_re_authentication_closes_the_connection_and_the_client_reconnects() {
    let (mut network, builder) = Network::client(V5, "reauth-fails");
    let reverse = Reverse::default();
    let client = builder.authenticator(reverse.clone()).build().unwrap();
    let mut peer = network.accept().await;
    peer.expect_connect().await;
    peer.send(connack("ok-1")).await;
    within("connected", client.wait_connected()).await.unwrap();
    // The broker refuses: DISCONNECT 0x87.
    let refused = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    let _ = recv_auth(&mut peer).await;
    peer.send(Packet::Disconnect(midge_client::codec::Disconnect {
        reason_code: ReasonCode::NOT_AUTHORIZED,
        ..Default::default()
    }))
    .await;
    assert_eq!(
        within("refused", refused).await.unwrap(),
        Err(ClientError::Refused(ReasonCode::NOT_AUTHORIZED))
    );
    // The client reconnects, with a fresh exchange.
    let mut peer = network.accept().await;
    let connect = peer.expect_connect().await;
    assert_eq!(
        text(connect.properties.authentication_data.as_deref()),
        "hello-3"
    );
    peer.send(connack("ok-3")).await;
    within("connected", client.wait_connected()).await.unwrap();
    // The broker's final data does not check out: the client closes the connection.
    let unproved = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    let _ = recv_auth(&mut peer).await;
    peer.send(auth(ReasonCode::SUCCESS, "forged")).await;
    peer.expect_disconnect(ReasonCode::UNSPECIFIED_ERROR).await;
    assert!(matches!(
        within("unproved", unproved).await.unwrap(),
        Err(ClientError::Authentication(_))
    ));
    assert!(
        network
            .connects_within(std::time::Duration::from_secs(5))
            .await
    );
}

#[tokio::test(start_paused = true)]
async fn re_authentication_needs_an_authenticator_and_a_connection() {
    let (mut network, builder) = Network::client(V5, "plain");
    let client = builder.build().unwrap();
    let mut peer = network.accept().await;
    let connect = peer.accept_connect(false).await;
    assert_eq!(connect.properties.authentication_method, None);
    within("connected", client.wait_connected()).await.unwrap();
    assert_eq!(
        client.reauthenticate().await,
        Err(ClientError::NoAuthenticator)
    );
    let (_network, builder) = Network::client(V5, "offline");
    let client = builder.authenticator(Reverse::default()).build().unwrap();
    assert_eq!(
        client.reauthenticate().await,
        Err(ClientError::NotConnected)
    );
    // An authenticator that cannot start leaves the connection as it was.
    let (mut network, builder) = Network::client(V5, "no-start");
    let reverse = Reverse::default();
    let client = builder.authenticator(reverse.clone()).build().unwrap();
    let mut peer = network.accept().await;
    peer.expect_connect().await;
    peer.send(connack("ok-1")).await;
    within("connected", client.wait_connected()).await.unwrap();
    reverse.fail(Faults {
        start: true,
        ..Faults::default()
    });
    assert!(matches!(
        client.reauthenticate().await,
        Err(ClientError::Authentication(e)) if e.message() == "no credentials"
    ));
    peer.expect_silence(std::time::Duration::from_secs(5)).await;
    assert!(client.is_connected());
}

#[tokio::test(start_paused = true)]
async fn enhanced_authentication_needs_mqtt_5() {
    let (_network, builder) = Network::client(ProtocolVersion::V3_1_1, "old");
    match builder.authenticator(Reverse::default()).build() {
        Err(ConnectError::InvalidConfig(e)) => assert_eq!(e.kind(), InputKind::Connect),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn the_builder_shows_the_method_only() {
    struct Secret;
    impl Authenticator for Secret {
        fn method(&self) -> &str {
            "SECRET-METHOD"
        }
        fn start(&mut self) -> Result<Option<Bytes>, AuthError> {
            Ok(None)
        }
        fn respond(&mut self, _: Option<&[u8]>) -> Result<Option<Bytes>, AuthError> {
            Ok(None)
        }
        fn finish(&mut self, _: Option<&[u8]>) -> Result<(), AuthError> {
            Ok(())
        }
    }
    let builder = midge_client::ClientBuilder::new("localhost", 1883)
        .credentials("user", "s3cret")
        .authenticator(Secret);
    let shown = format!("{builder:?}");
    assert!(shown.contains("SECRET-METHOD"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}
