//! SCRAM-SHA-256 exchanges between `ScramClient` and `ScramServer`, and what each side does
//! with tampered, malformed or oversized messages.

use midge_auth::scram::{
    ScramClient, ScramError, ScramServer, ServerErrorValue, StoredCredentials, MAX_MESSAGE_LEN,
};

const MOCK_KEY: [u8; 32] = [0x5a; 32];
const SALT: &[u8] = b"0123456789abcdef";

// RFC 7677 §3.
const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &[u8] =
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_credentials() -> StoredCredentials {
    // W22ZaJ0SNY7soEsUEjb6gQ== in base64.
    let salt = [
        0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa,
        0x81,
    ];
    StoredCredentials::derive(b"pencil", &salt, 4096)
}

fn rfc_server() -> ScramServer {
    let creds = rfc_credentials();
    let (server, server_first) = ScramServer::start_with_nonce(
        RFC_CLIENT_FIRST,
        |name| (name == "user").then_some(creds),
        &MOCK_KEY,
        RFC_SERVER_NONCE,
    )
    .unwrap();
    assert_eq!(server_first, RFC_SERVER_FIRST);
    server
}

/// A client that has sent client-final for the RFC exchange.
fn rfc_client_awaiting_final() -> ScramClient {
    let mut client = ScramClient::with_nonce("user", b"pencil", RFC_CLIENT_NONCE).unwrap();
    client.client_first();
    assert_eq!(
        client.handle_server_first(RFC_SERVER_FIRST).unwrap(),
        RFC_CLIENT_FINAL
    );
    client
}

/// A user store holding one user.
fn store(user: &str, password: &[u8]) -> impl Fn(&str) -> Option<StoredCredentials> {
    let user = user.to_owned();
    let creds = StoredCredentials::derive(password, SALT, 4096);
    move |name| (name == user).then(|| creds.clone())
}

/// Runs a whole exchange; the error of the first step that fails.
fn exchange(
    username: &str,
    password: &[u8],
    lookup: impl FnOnce(&str) -> Option<StoredCredentials>,
) -> Result<(), ScramError> {
    let mut client = ScramClient::new(username, password)?;
    let (server, server_first) = ScramServer::start(&client.client_first(), lookup, &MOCK_KEY)?;
    let client_final = client.handle_server_first(&server_first)?;
    let server_final = server.finish(&client_final)?;
    client.handle_server_final(&server_final)?;
    assert!(client.is_done());
    Ok(())
}

/// The server-first for `client_first`, and the server.
fn start(client_first: &[u8]) -> Result<(ScramServer, Vec<u8>), ScramError> {
    ScramServer::start(client_first, store("user", b"pencil"), &MOCK_KEY)
}

fn replace(message: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(message).unwrap();
    assert!(text.contains(from), "{text} lacks {from}");
    text.replacen(from, to, 1).into_bytes()
}

#[test]
fn rfc7677_example_exchange() {
    let mut client = ScramClient::with_nonce("user", b"pencil", RFC_CLIENT_NONCE).unwrap();
    assert_eq!(client.client_first(), RFC_CLIENT_FIRST);
    assert_eq!(
        client.client_first(),
        RFC_CLIENT_FIRST,
        "stable when asked again"
    );
    let server = rfc_server();
    assert_eq!(server.username(), "user");
    assert_eq!(
        client.handle_server_first(RFC_SERVER_FIRST).unwrap(),
        RFC_CLIENT_FINAL
    );
    assert!(!client.is_done());
    assert_eq!(server.finish(RFC_CLIENT_FINAL).unwrap(), RFC_SERVER_FINAL);
    client.handle_server_final(RFC_SERVER_FINAL).unwrap();
    assert!(client.is_done());
}

#[test]
fn round_trips_with_random_nonces() {
    exchange("user", b"pencil", store("user", b"pencil")).unwrap();
    // Two clients never send the same nonce.
    let a = ScramClient::new("user", b"pencil").unwrap().client_first();
    let b = ScramClient::new("user", b"pencil").unwrap().client_first();
    assert_ne!(a, b);
}

#[test]
fn round_trip_escapes_user_names() {
    let mut seen = None;
    let creds = StoredCredentials::derive(b"pencil", SALT, 4096);
    let mut client = ScramClient::new("a=b,c", b"pencil").unwrap();
    let client_first = client.client_first();
    assert!(
        client_first.starts_with(b"n,,n=a=3Db=2Cc,r="),
        "{}",
        String::from_utf8_lossy(&client_first)
    );
    let (server, server_first) = ScramServer::start(
        &client_first,
        |name| {
            seen = Some(name.to_owned());
            Some(creds)
        },
        &MOCK_KEY,
    )
    .unwrap();
    assert_eq!(seen.as_deref(), Some("a=b,c"));
    assert_eq!(server.username(), "a=b,c");
    let client_final = client.handle_server_first(&server_first).unwrap();
    client
        .handle_server_final(&server.finish(&client_final).unwrap())
        .unwrap();
}

#[test]
fn user_names_and_passwords_go_through_saslprep() {
    // U+2168 ROMAN NUMERAL NINE becomes "IX" under NFKC; the soft hyphen vanishes.
    let client = ScramClient::new("\u{2168}", b"x").unwrap();
    assert_eq!(client.username(), "IX");
    exchange(
        "\u{2168}",
        "pen\u{AD}cil".as_bytes(),
        store("IX", b"pencil"),
    )
    .unwrap();
    // The server prepares the name it receives as well.
    let (server, _) = ScramServer::start(
        "n,,n=\u{2168},r=abc".as_bytes(),
        store("IX", b"pencil"),
        &MOCK_KEY,
    )
    .unwrap();
    assert_eq!(server.username(), "IX");
}

#[test]
fn binary_passwords_are_used_as_bytes() {
    exchange("user", b"\xff\x00\xfe", store("user", b"\xff\x00\xfe")).unwrap();
    assert_eq!(
        exchange("user", b"\xff\x00\xfd", store("user", b"\xff\x00\xfe")),
        Err(ScramError::InvalidProof)
    );
}

#[test]
fn invalid_user_names_are_refused_by_the_client() {
    for bad in ["", "\u{AD}", "bell\u{7}", "\u{E000}private"] {
        assert!(
            matches!(
                ScramClient::new(bad, b"pencil"),
                Err(ScramError::InvalidUsername(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        ScramClient::new(&"u".repeat(MAX_MESSAGE_LEN), b"pencil").unwrap_err(),
        ScramError::InvalidUsername("too long")
    );
    assert_eq!(
        ScramClient::with_nonce("user", b"pencil", "has,comma").unwrap_err(),
        ScramError::Malformed("nonce")
    );
}

#[test]
fn wrong_password_fails_with_invalid_proof() {
    assert_eq!(
        exchange("user", b"pencil!", store("user", b"pencil")),
        Err(ScramError::InvalidProof)
    );
}

#[test]
fn unknown_user_fails_exactly_like_a_wrong_password() {
    assert_eq!(
        exchange("nobody", b"pencil", store("user", b"pencil")),
        Err(ScramError::InvalidProof)
    );
    assert_eq!(
        exchange("nobody", b"pencil", |_| None),
        Err(ScramError::InvalidProof)
    );
}

/// The salt and iteration count of a server-first message (everything after the nonce).
fn salt_and_iterations(server_first: &[u8]) -> String {
    let text = std::str::from_utf8(server_first).unwrap();
    let (_nonce, rest) = text.split_once(',').unwrap();
    rest.to_owned()
}

fn unknown_server_first(user: &str, key: &[u8; 32]) -> Vec<u8> {
    let client_first = format!("n,,n={user},r=clientnonce");
    ScramServer::start_with_nonce(client_first.as_bytes(), |_| None, key, "servernonce")
        .unwrap()
        .1
}

#[test]
fn unknown_users_get_stable_made_up_salts() {
    let first = unknown_server_first("nobody", &MOCK_KEY);
    assert_eq!(first, unknown_server_first("nobody", &MOCK_KEY));
    let text = String::from_utf8(first.clone()).unwrap();
    // Shaped like a real user's: 16 bytes of salt, the default iteration count.
    assert!(
        text.starts_with("r=clientnonceservernonce,s=") && text.ends_with("==,i=4096"),
        "{text}"
    );
    assert_eq!(
        text.len(),
        "r=clientnonceservernonce,s=".len() + 24 + ",i=4096".len()
    );
    assert_ne!(first, unknown_server_first("somebody", &MOCK_KEY));
    assert_ne!(first, unknown_server_first("nobody", &[1; 32]));

    // With random nonces, only the nonce changes between attempts.
    let (_, a) = ScramServer::start(b"n,,n=nobody,r=abc", |_| None, &MOCK_KEY).unwrap();
    let (_, b) = ScramServer::start(b"n,,n=nobody,r=abc", |_| None, &MOCK_KEY).unwrap();
    assert_ne!(a, b);
    assert_eq!(salt_and_iterations(&a), salt_and_iterations(&b));
}

#[test]
fn server_refuses_channel_binding_authzid_and_mandatory_extensions() {
    let cases: [(&[u8], ScramError); 5] = [
        (
            b"p=tls-unique,,n=user,r=abc",
            ScramError::ChannelBindingNotSupported,
        ),
        (
            b"p=tls-server-end-point,,n=user,r=abc",
            ScramError::ChannelBindingNotSupported,
        ),
        (b"n,a=admin,n=user,r=abc", ScramError::AuthzidNotSupported),
        (b"n,,m=ext,n=user,r=abc", ScramError::ExtensionNotSupported),
        (b"n,,n=user,r=abc,m=ext", ScramError::ExtensionNotSupported),
    ];
    for (client_first, error) in cases {
        assert_eq!(
            start(client_first).unwrap_err(),
            error,
            "{}",
            String::from_utf8_lossy(client_first)
        );
    }
}

#[test]
fn server_ignores_optional_extensions() {
    let (server, _) = start(b"n,,n=user,r=abc,x=future").unwrap();
    assert_eq!(server.username(), "user");
}

#[test]
fn server_refuses_malformed_client_first() {
    let cases: [&[u8]; 18] = [
        b"",
        b"n",
        b"n,",
        b"n,,",
        b"x,,n=user,r=abc",
        b"n,x,n=user,r=abc",
        b"n,,r=abc",
        b"n,,n=user",
        b"n,,r=abc,n=user",
        b"n,,n=,r=abc",
        b"n,,n=user,r=",
        b"n,,n=user,r=a b",
        b"n,,n=user,,r=abc",
        b"n,,n=user,r=abc,",
        b"n,,n=user,r=abc,x",
        b"n,,n=user,r=abc,1=x",
        b"n,,n=us\xffer,r=abc",
        b"n,,N=user,r=abc",
    ];
    for client_first in cases {
        assert!(
            matches!(start(client_first), Err(ScramError::Malformed(_))),
            "{}: {:?}",
            String::from_utf8_lossy(client_first),
            start(client_first).map(|_| ())
        );
    }
    let long_nonce = format!("n,,n=user,r={}", "a".repeat(257));
    assert!(matches!(
        start(long_nonce.as_bytes()),
        Err(ScramError::Malformed(_))
    ));
}

#[test]
fn server_refuses_bad_user_names() {
    for client_first in [
        "n,,n=us=er,r=abc",
        "n,,n=us=2cer,r=abc",
        "n,,n=\u{7},r=abc",
        "n,,n=\u{AD},r=abc",
    ] {
        assert!(
            matches!(
                start(client_first.as_bytes()),
                Err(ScramError::InvalidUsername(_))
            ),
            "{client_first}"
        );
    }
}

#[test]
fn oversized_messages_are_refused_at_every_step() {
    let huge = {
        let mut m = b"n,,n=user,r=abc,x=".to_vec();
        m.resize(MAX_MESSAGE_LEN + 1, b'a');
        m
    };
    assert_eq!(start(&huge).unwrap_err(), ScramError::TooLong);
    let mut at_limit = huge.clone();
    at_limit.pop();
    assert!(start(&at_limit).is_ok(), "exactly the limit is read");

    let mut client = ScramClient::with_nonce("user", b"pencil", RFC_CLIENT_NONCE).unwrap();
    assert_eq!(
        client.handle_server_first(&huge).unwrap_err(),
        ScramError::TooLong
    );
    assert_eq!(rfc_server().finish(&huge).unwrap_err(), ScramError::TooLong);
    let mut client = rfc_client_awaiting_final();
    assert_eq!(
        client.handle_server_final(&huge).unwrap_err(),
        ScramError::TooLong
    );
    let mut client = ScramClient::new("user", b"pencil").unwrap();
    assert_eq!(
        client
            .handle_server_first(&vec![b'r'; 1 << 20])
            .unwrap_err(),
        ScramError::TooLong
    );
}

fn client_first_error(server_first: &[u8]) -> ScramError {
    let mut client = ScramClient::with_nonce("user", b"pencil", RFC_CLIENT_NONCE).unwrap();
    client.handle_server_first(server_first).unwrap_err()
}

#[test]
fn client_checks_the_server_nonce() {
    // A nonce that does not start with the client's.
    assert_eq!(
        client_first_error(&replace(RFC_SERVER_FIRST, "r=rOpr", "r=XOpr")),
        ScramError::NonceMismatch
    );
    // The client's nonce alone, with no server part.
    assert_eq!(
        client_first_error(&replace(RFC_SERVER_FIRST, RFC_SERVER_NONCE, "")),
        ScramError::NonceMismatch
    );
    // A server part that is not printable ASCII.
    assert!(matches!(
        client_first_error(&replace(RFC_SERVER_FIRST, "%hvY", "% hvY")),
        ScramError::Malformed(_)
    ));
}

#[test]
fn client_checks_iteration_counts() {
    assert_eq!(
        client_first_error(&replace(RFC_SERVER_FIRST, "i=4096", "i=4095")),
        ScramError::IterationsTooLow(4095)
    );
    assert_eq!(
        client_first_error(&replace(RFC_SERVER_FIRST, "i=4096", "i=1")),
        ScramError::IterationsTooLow(1)
    );
    assert_eq!(
        client_first_error(&replace(RFC_SERVER_FIRST, "i=4096", "i=1000001")),
        ScramError::IterationsTooHigh(1_000_001)
    );
    assert_eq!(
        client_first_error(&replace(
            RFC_SERVER_FIRST,
            "i=4096",
            "i=18446744073709551616"
        )),
        ScramError::IterationsTooHigh(u32::MAX)
    );
    assert!(matches!(
        client_first_error(&replace(RFC_SERVER_FIRST, "i=4096", "i=4k")),
        ScramError::Malformed(_)
    ));
}

#[test]
fn client_refuses_malformed_server_first() {
    let cases = [
        ("s=W22ZaJ0SNY7soEsUEjb6gQ==", "s=W22ZaJ0SNY7soEsUEjb6gQ"), // unpadded
        ("s=W22ZaJ0SNY7soEsUEjb6gQ==", "s=!!!!"),
        ("s=W22ZaJ0SNY7soEsUEjb6gQ==,", ""), // no salt
        (",i=4096", ""),                     // no iteration count
        ("r=", "x=1,r="),                    // wrong order
        ("i=4096", "i="),
        ("i=4096", "i=4096,"),
        ("i=4096", "i=4096,bad"),
    ];
    for (from, to) in cases {
        let server_first = replace(RFC_SERVER_FIRST, from, to);
        assert!(
            matches!(client_first_error(&server_first), ScramError::Malformed(_)),
            "{}: {:?}",
            String::from_utf8_lossy(&server_first),
            client_first_error(&server_first)
        );
    }
    assert!(matches!(
        client_first_error(b"r=rOprNGfwEbeRWgbNEkqOxyz,s=,i=4096"),
        ScramError::Malformed(_)
    ));
    assert!(matches!(
        client_first_error(b"\xff"),
        ScramError::Malformed(_)
    ));
    assert_eq!(
        client_first_error(&[b"m=ext,".as_slice(), RFC_SERVER_FIRST].concat()),
        ScramError::ExtensionNotSupported
    );
    assert_eq!(
        client_first_error(&[RFC_SERVER_FIRST, b",m=ext".as_slice()].concat()),
        ScramError::ExtensionNotSupported
    );
    assert_eq!(
        client_first_error(b"e=unknown-user"),
        ScramError::ServerRejected(ServerErrorValue::UnknownUser)
    );
}

#[test]
fn client_accepts_optional_extensions_in_server_first() {
    // The extension is part of the AuthMessage, so the RFC's proof no longer applies: check
    // only that the client answers.
    let mut client = ScramClient::with_nonce("user", b"pencil", RFC_CLIENT_NONCE).unwrap();
    let server_first = [RFC_SERVER_FIRST, b",x=later".as_slice()].concat();
    let client_final = client.handle_server_first(&server_first).unwrap();
    assert_ne!(client_final, RFC_CLIENT_FINAL);
}

#[test]
fn server_checks_client_final() {
    let cases: [(&str, &str, ScramError); 5] = [
        // A changed nonce.
        ("hNlF$k0,p=", "hNlF$k1,p=", ScramError::NonceMismatch),
        // One proof bit flipped.
        ("p=dHzb", "p=dHzc", ScramError::InvalidProof),
        // Channel binding data that claims "y,," although client-first sent "n,,".
        ("c=biws", "c=eSws", ScramError::ChannelBindingMismatch),
        // Channel binding data with a channel binding name.
        (
            "c=biws",
            "c=cD10bHMtdW5pcXVlLCw=",
            ScramError::ChannelBindingMismatch,
        ),
        // The nonce must follow the channel binding at once.
        (
            "r=",
            "x=1,r=",
            ScramError::Malformed("client-final: nonce (r=) expected"),
        ),
    ];
    for (from, to, error) in cases {
        let client_final = replace(RFC_CLIENT_FINAL, from, to);
        assert_eq!(
            rfc_server().finish(&client_final).unwrap_err(),
            error,
            "{}",
            String::from_utf8_lossy(&client_final)
        );
    }
    // An extension before the proof is part of the AuthMessage: the RFC's proof fails.
    let with_extension = replace(RFC_CLIENT_FINAL, ",p=", ",x=1,p=");
    assert_eq!(
        rfc_server().finish(&with_extension).unwrap_err(),
        ScramError::InvalidProof
    );
    let with_mandatory = replace(RFC_CLIENT_FINAL, ",p=", ",m=1,p=");
    assert_eq!(
        rfc_server().finish(&with_mandatory).unwrap_err(),
        ScramError::ExtensionNotSupported
    );
}

#[test]
fn server_refuses_malformed_client_final() {
    let cases: [&[u8]; 11] = [
        b"",
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        b"c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"c=b!ws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        // A proof that is not base64, and ones of the wrong length.
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=AAAA",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,",
    ];
    for client_final in cases {
        let result = rfc_server().finish(client_final);
        assert!(
            matches!(result, Err(ScramError::Malformed(_))),
            "{}: {result:?}",
            String::from_utf8_lossy(client_final)
        );
    }
}

#[test]
fn y_flag_is_accepted_and_bound_into_client_final() {
    // A client that supports channel binding but believes the server does not sends "y".
    let creds = rfc_credentials();
    let (server, server_first) = ScramServer::start_with_nonce(
        b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        |_| Some(creds.clone()),
        &MOCK_KEY,
        RFC_SERVER_NONCE,
    )
    .unwrap();
    assert_eq!(server_first, RFC_SERVER_FIRST);
    // Our client always sends "n,,": its client-final (c=biws) does not match "y,,".
    assert_eq!(
        server.finish(RFC_CLIENT_FINAL).unwrap_err(),
        ScramError::ChannelBindingMismatch
    );
}

#[test]
fn client_checks_server_final() {
    let cases: [(&[u8], ScramError); 7] = [
        (
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5=",
            ScramError::Malformed("server-final: verifier is not 32 bytes of base64"),
        ),
        (
            b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            ScramError::ServerSignatureMismatch,
        ),
        (
            b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ScramError::ServerSignatureMismatch,
        ),
        (
            b"e=invalid-proof",
            ScramError::ServerRejected(ServerErrorValue::InvalidProof),
        ),
        (
            b"e=something-new",
            ScramError::ServerRejected(ServerErrorValue::Unrecognized),
        ),
        (
            b"x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            ScramError::Malformed("server-final: verifier (v=) or error (e=) expected"),
        ),
        (
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,m=1",
            ScramError::ExtensionNotSupported,
        ),
    ];
    for (server_final, error) in cases {
        let mut client = rfc_client_awaiting_final();
        assert_eq!(
            client.handle_server_final(server_final).unwrap_err(),
            error,
            "{}",
            String::from_utf8_lossy(server_final)
        );
        assert!(!client.is_done());
    }
    let mut client = rfc_client_awaiting_final();
    client
        .handle_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,x=later")
        .unwrap();
    assert!(client.is_done());
}

#[test]
fn client_steps_must_come_in_order() {
    let mut client = ScramClient::with_nonce("user", b"pencil", RFC_CLIENT_NONCE).unwrap();
    assert_eq!(
        client.handle_server_final(RFC_SERVER_FINAL).unwrap_err(),
        ScramError::OutOfOrder
    );
    client.handle_server_first(RFC_SERVER_FIRST).unwrap();
    assert_eq!(
        client.handle_server_first(RFC_SERVER_FIRST).unwrap_err(),
        ScramError::OutOfOrder
    );
    client.handle_server_final(RFC_SERVER_FINAL).unwrap();
    assert_eq!(
        client.handle_server_final(RFC_SERVER_FINAL).unwrap_err(),
        ScramError::OutOfOrder
    );

    // After a failed step the exchange is over, even with the right message next.
    let mut client = ScramClient::with_nonce("user", b"pencil", RFC_CLIENT_NONCE).unwrap();
    client.handle_server_first(b"garbage").unwrap_err();
    assert_eq!(
        client.handle_server_first(RFC_SERVER_FIRST).unwrap_err(),
        ScramError::OutOfOrder
    );
    let mut client = rfc_client_awaiting_final();
    client.handle_server_final(b"v=AAAA").unwrap_err();
    assert_eq!(
        client.handle_server_final(RFC_SERVER_FINAL).unwrap_err(),
        ScramError::OutOfOrder
    );
}

#[test]
fn debug_output_holds_no_secrets() {
    let mut client = ScramClient::with_nonce("user", b"hunter2-secret", RFC_CLIENT_NONCE).unwrap();
    let shown = format!("{client:?}");
    assert!(shown.contains("user"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("104"), "password bytes as numbers: {shown}");

    let mut rfc = rfc_client_awaiting_final();
    let shown = format!("{rfc:?}");
    assert!(!shown.contains("6rriTRBi"), "{shown}");
    assert!(
        !shown.contains("234"),
        "signature bytes as numbers: {shown}"
    );
    rfc.handle_server_final(RFC_SERVER_FINAL).unwrap();

    let creds = rfc_credentials();
    let server = rfc_server();
    let shown = format!("{server:?} {creds:?}");
    assert!(shown.contains("user"), "{shown}");
    for key in [creds.stored_key, creds.server_key] {
        assert!(!shown.contains(&format!("{}", key[0])), "{shown}");
    }
    client.handle_server_first(RFC_SERVER_FIRST).unwrap();
    assert!(!format!("{client:?}").contains("hunter2"));
}

#[test]
fn errors_name_no_secrets() {
    let error = exchange("user", b"hunter2", store("user", b"pencil")).unwrap_err();
    let text = error.to_string();
    assert_eq!(text, "SCRAM authentication failed: invalid proof");
    assert_eq!(error.server_final(), b"e=invalid-proof");
}
