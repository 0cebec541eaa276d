//! Arbitrary and mutated bytes at each step of a SCRAM exchange give errors, never panics,
//! and a changed message never authenticates.

use midge_auth::scram::{ScramClient, ScramServer, StoredCredentials};
use proptest::prelude::*;
use std::sync::OnceLock;

const MOCK_KEY: [u8; 32] = [0x33; 32];
const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

/// Derived once: PBKDF2 is slow in unoptimized test builds.
fn credentials() -> StoredCredentials {
    static CREDENTIALS: OnceLock<StoredCredentials> = OnceLock::new();
    CREDENTIALS
        .get_or_init(|| StoredCredentials::derive(b"pencil", b"0123456789abcdef", 4096))
        .clone()
}

fn lookup(name: &str) -> Option<StoredCredentials> {
    (name == "user").then(credentials)
}

/// The four messages of a successful exchange with fixed nonces.
fn transcript() -> [Vec<u8>; 4] {
    static TRANSCRIPT: OnceLock<[Vec<u8>; 4]> = OnceLock::new();
    TRANSCRIPT.get_or_init(run_exchange).clone()
}

fn run_exchange() -> [Vec<u8>; 4] {
    let mut client = ScramClient::with_nonce("user", b"pencil", CLIENT_NONCE).unwrap();
    let client_first = client.client_first();
    let (server, server_first) =
        ScramServer::start_with_nonce(&client_first, lookup, &MOCK_KEY, SERVER_NONCE).unwrap();
    let client_final = client.handle_server_first(&server_first).unwrap();
    let server_final = server.finish(&client_final).unwrap();
    client.handle_server_final(&server_final).unwrap();
    [client_first, server_first, client_final, server_final]
}

fn server_awaiting_final() -> ScramServer {
    let [client_first, ..] = transcript();
    ScramServer::start_with_nonce(&client_first, lookup, &MOCK_KEY, SERVER_NONCE)
        .unwrap()
        .0
}

fn client_awaiting_final() -> ScramClient {
    let [_, server_first, ..] = transcript();
    let mut client = ScramClient::with_nonce("user", b"pencil", CLIENT_NONCE).unwrap();
    client.handle_server_first(&server_first).unwrap();
    client
}

/// Bytes that look like SCRAM messages more often than uniform bytes do.
fn scramish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..128),
        "[nyp,=a-z0-9A-Z+/%$)]{0,80}".prop_map(String::into_bytes),
        // Small iteration counts keep the client's PBKDF2 cheap.
        ("[!-~]{0,30}", "[A-Za-z0-9+/=]{0,30}", "[0-9]{0,4}")
            .prop_map(|(r, s, i)| { format!("r={CLIENT_NONCE}{r},s={s},i={i}").into_bytes() }),
    ]
}

/// Replaces byte `at` (modulo the length) of `message` with `with`, if that changes it.
fn mutate(message: &[u8], at: usize, with: u8) -> Option<Vec<u8>> {
    let mut out = message.to_vec();
    let len = out.len();
    let byte = out.get_mut(at.checked_rem(len)?)?;
    if *byte == with {
        return None;
    }
    *byte = with;
    Some(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn server_start_never_panics(data in scramish()) {
        let _ = ScramServer::start(&data, lookup, &MOCK_KEY);
        let _ = ScramServer::start(&data, |_| None, &MOCK_KEY);
    }

    #[test]
    fn client_handle_server_first_never_panics(data in scramish()) {
        let mut client = ScramClient::with_nonce("user", b"pencil", CLIENT_NONCE).unwrap();
        let _ = client.handle_server_first(&data);
    }

    #[test]
    fn server_finish_never_panics(data in scramish()) {
        let _ = server_awaiting_final().finish(&data);
    }

    #[test]
    fn server_finish_refuses_any_changed_client_final(at in any::<usize>(), with in any::<u8>()) {
        let [_, _, client_final, _] = transcript();
        if let Some(changed) = mutate(&client_final, at, with) {
            prop_assert!(server_awaiting_final().finish(&changed).is_err());
        }
        let truncated = client_final.get(..at % client_final.len()).unwrap_or_default();
        prop_assert!(server_awaiting_final().finish(truncated).is_err());
    }

    #[test]
    fn server_start_takes_changed_client_first_without_panic(
        at in any::<usize>(),
        with in any::<u8>(),
    ) {
        let [client_first, ..] = transcript();
        if let Some(changed) = mutate(&client_first, at, with) {
            let _ = ScramServer::start(&changed, lookup, &MOCK_KEY);
        }
    }
}

proptest! {
    // Each case runs the client's PBKDF2 once.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn client_handle_server_final_never_panics(data in scramish()) {
        let _ = client_awaiting_final().handle_server_final(&data);
    }

    #[test]
    fn client_refuses_any_changed_server_final(at in any::<usize>(), with in any::<u8>()) {
        let [.., server_final] = transcript();
        if let Some(changed) = mutate(&server_final, at, with) {
            let mut client = client_awaiting_final();
            prop_assert!(client.handle_server_final(&changed).is_err());
            prop_assert!(!client.is_done());
        }
    }

    #[test]
    fn client_takes_changed_server_first_without_panic(at in any::<usize>(), with in any::<u8>()) {
        let [_, server_first, ..] = transcript();
        if let Some(changed) = mutate(&server_first, at, with) {
            let mut client = ScramClient::with_nonce("user", b"pencil", CLIENT_NONCE).unwrap();
            let _ = client.handle_server_first(&changed);
        }
    }
}
