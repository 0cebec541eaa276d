//! Where `midge pub`, `midge sub` and `midge bench` connect, and how: mosquitto's `-L URL`,
//! `--unix`, and TLS flags (`--cafile`, `--capath`, `--cert`, `--key`, `--insecure`,
//! `--tls-version`, `--tls-alpn`, `--tls-use-os-certs`).

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;
use midge_client::tls::{ClientTlsOptions, Roots, TlsVersions};
use midge_client::{BrokerUrl, Scheme};

/// The transport flags `pub`, `sub` and `bench` share. `Debug` shows the `-L` URL without
/// its password.
#[derive(Clone, Default, Args)]
pub(crate) struct TransportArgs {
    /// The broker as a URL, as mosquitto's `-L` (see the help text).
    #[arg(
        short = 'L',
        long = "url",
        value_name = "URL",
        help = "Broker URL instead of -h and -p, as mosquitto's -L: \
                mqtt(s)://[user[:password]@]host[:port]/topic (the path is the topic, as -t, \
                taken literally), ws(s)://[user[:password]@]host[:port][/path] (the path is \
                the WebSocket path, default /mqtt; the topic comes from -t), or \
                unix:///path/to/socket. Default ports: mqtt 1883, mqtts 8883, ws 80, wss 443. \
                Write '/' as %2F and '@' as %40 in a user name or password. --cafile, --capath \
                or --tls-use-os-certs turn TLS on for an mqtt:// URL too, on its port \
                (default 1883), as in mosquitto"
    )]
    pub(crate) url: Option<String>,
    /// Connect through this Unix domain socket instead of TCP.
    #[arg(long, value_name = "PATH")]
    pub(crate) unix: Option<PathBuf>,
    /// CA certificates (PEM file) to verify the broker's certificate against; turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub(crate) cafile: Option<PathBuf>,
    /// Directory of CA certificates (PEM files) to verify the broker's certificate against;
    /// turns TLS on.
    #[arg(long, value_name = "DIR")]
    pub(crate) capath: Option<PathBuf>,
    /// Trust the operating system's CA certificates; turns TLS on.
    #[arg(long = "tls-use-os-certs")]
    pub(crate) tls_use_os_certs: bool,
    /// Client certificate (PEM chain) for brokers that ask for one; needs --key.
    #[arg(long, value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); needs --cert.
    #[arg(long, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// Do not check that the broker's certificate is issued for the host connected to (as
    /// mosquitto's --insecure): it must still be signed by a trusted CA and valid now. Any
    /// holder of a certificate from that CA can then pose as the broker.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Offer only this TLS version: tlsv1.2 or tlsv1.3 (default: both).
    #[arg(long = "tls-version", value_name = "VERSION", value_parser = parse_tls_version)]
    pub(crate) tls_version: Option<TlsVersions>,
    /// ALPN protocol to offer in the TLS handshake (e.g. mqtt).
    #[arg(long = "tls-alpn", value_name = "PROTOCOL")]
    pub(crate) tls_alpn: Option<String>,
    /// The format of --key: pem (the only one midge reads). `engine` is refused: midge's TLS
    /// (rustls) has no OpenSSL engines.
    #[arg(long, value_name = "FORMAT")]
    pub(crate) keyform: Option<String>,
    /// Refused (exit code 1): rustls picks the cipher suite itself, among the modern AEAD
    /// suites of TLS 1.2 and 1.3; OpenSSL cipher lists do not apply.
    #[arg(long, value_name = "LIST")]
    pub(crate) ciphers: Option<String>,
    /// Refused (exit code 1): midge's TLS (rustls) has no OpenSSL engines.
    #[arg(long = "tls-engine", value_name = "ENGINE")]
    pub(crate) tls_engine: Option<String>,
    /// Refused (exit code 1): midge's TLS (rustls) has no OpenSSL engines.
    #[arg(long = "tls-engine-kpass-sha1", value_name = "HASH")]
    pub(crate) tls_engine_kpass_sha1: Option<String>,
    /// Refused (exit code 1): midge's TLS (rustls) has no pre-shared keys (TLS-PSK).
    #[arg(long, value_name = "KEY")]
    pub(crate) psk: Option<String>,
    /// Refused (exit code 1): midge's TLS (rustls) has no pre-shared keys (TLS-PSK).
    #[arg(long = "psk-identity", value_name = "IDENTITY")]
    pub(crate) psk_identity: Option<String>,
    /// Refused (exit code 1): midge connects directly, not through a SOCKS5 proxy.
    #[arg(long, value_name = "URL")]
    pub(crate) proxy: Option<String>,
}

impl fmt::Debug for TransportArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportArgs")
            .field("url", &self.url.as_deref().map(shown_url))
            .field("unix", &self.unix)
            .field("cafile", &self.cafile)
            .field("capath", &self.capath)
            .field("tls_use_os_certs", &self.tls_use_os_certs)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("insecure", &self.insecure)
            .field("tls_version", &self.tls_version)
            .field("tls_alpn", &self.tls_alpn)
            .field("keyform", &self.keyform)
            .field("ciphers", &self.ciphers)
            .field("tls_engine", &self.tls_engine)
            .field(
                "tls_engine_kpass_sha1",
                &self.tls_engine_kpass_sha1.as_ref().map(|_| "(hidden)"),
            )
            .field("psk", &self.psk.as_ref().map(|_| "(hidden)"))
            .field("psk_identity", &self.psk_identity)
            .field("proxy", &self.proxy.as_deref().map(shown_url))
            .finish()
    }
}

/// A `-L` URL as it may be shown: without its password, or not at all if it does not parse.
fn shown_url(text: &str) -> String {
    match BrokerUrl::parse(text) {
        Ok(url) => url.to_string(),
        Err(_) => "(not a valid URL; not shown, as it may hold a password)".into(),
    }
}

fn parse_tls_version(s: &str) -> Result<TlsVersions, String> {
    match s {
        "tlsv1.2" => Ok(TlsVersions::Tls12),
        "tlsv1.3" => Ok(TlsVersions::Tls13),
        "tlsv1.1" | "tlsv1" => Err(format!("{s} is not supported: use tlsv1.2 or tlsv1.3")),
        _ => Err(format!("unknown TLS version {s:?}: use tlsv1.2 or tlsv1.3")),
    }
}

/// Where to connect, checked.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The broker, with user name and password if `-L` gave them.
    pub(crate) url: BrokerUrl,
    /// TLS settings, for `mqtts` and `wss`.
    pub(crate) tls: Option<ClientTlsOptions>,
    /// The topic an `mqtt(s)://host/topic` URL gave.
    pub(crate) topic: Option<String>,
}

impl Target {
    /// What messages call the broker: the URL without its password.
    pub(crate) fn display(&self) -> String {
        match self.url.scheme() {
            Scheme::Mqtt => format!("{}:{}", bracketed(self.url.host()), self.url.port()),
            Scheme::Unix => format!("{}", self.url.socket_path().unwrap_or_default().display()),
            // No user name either: it says nothing about where.
            scheme => format!(
                "{scheme}://{}:{}{}",
                bracketed(self.url.host()),
                self.url.port(),
                self.url.path()
            ),
        }
    }
}

impl Target {
    /// For `ws` and `wss`: the URL the WebSocket upgrade asks for (no user information).
    pub(crate) fn websocket_url(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.url.scheme(),
            bracketed(self.url.host()),
            self.url.port(),
            self.url.path()
        )
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Checks the flags and works out the target. `host` and `port` are -h and -p as given;
/// `default_host` is used when neither -h nor -L nor --unix is.
pub(crate) fn target(
    host: Option<&str>,
    port: Option<u16>,
    default_host: &str,
    t: &TransportArgs,
) -> Result<Target, String> {
    unsupported(t)?;
    let roots: Vec<(&str, Roots)> = [
        t.cafile.clone().map(|p| ("--cafile", Roots::File(p))),
        t.capath.clone().map(|p| ("--capath", Roots::Dir(p))),
        t.tls_use_os_certs
            .then_some(("--tls-use-os-certs", Roots::System)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if roots.len() > 1 {
        let names: Vec<&str> = roots.iter().map(|(name, _)| *name).collect();
        return Err(format!(
            "{} each say which CA certificates to trust: give one",
            names.join(" and ")
        ));
    }
    match (&t.cert, &t.key) {
        (Some(_), None) => return Err("--cert needs --key (the certificate's private key)".into()),
        (None, Some(_)) => return Err("--key needs --cert (the client certificate)".into()),
        _ => {}
    }
    if t.url.is_some() && (host.is_some() || port.is_some() || t.unix.is_some()) {
        return Err(
            "-L gives the broker's address: do not combine it with -h, -p or --unix".into(),
        );
    }
    if t.unix.is_some() && (host.is_some() || port.is_some()) {
        return Err("--unix connects through a socket: do not combine it with -h or -p".into());
    }
    let (url, topic) = match (&t.url, &t.unix) {
        (Some(text), _) => {
            let mut url = BrokerUrl::parse(text).map_err(|e| format!("-L: {e}"))?;
            let topic = match url.scheme() {
                Scheme::Mqtt | Scheme::Mqtts => url_topic(url.path()),
                _ => None,
            };
            // As mosquitto: a CA turns TLS on for an mqtt:// URL, on the URL's port.
            if url.scheme() == Scheme::Mqtt && !roots.is_empty() {
                url = url
                    .with_scheme(Scheme::Mqtts)
                    .map_err(|e| format!("-L: {e}"))?;
            }
            (url, topic)
        }
        (None, Some(path)) => (unix_url(path)?, None),
        (None, None) => {
            let tls = !roots.is_empty();
            let scheme = if tls { Scheme::Mqtts } else { Scheme::Mqtt };
            let host = host.unwrap_or(default_host);
            let port = port.unwrap_or(if tls { 8883 } else { 1883 });
            // -h is a host, not URL text: taken as it is, as mosquitto takes it.
            let url =
                BrokerUrl::from_parts(scheme, host, port).map_err(|e| format!("-h/-p: {e}"))?;
            (url, None)
        }
    };
    let tls_flags = [
        (t.cafile.is_some(), "--cafile"),
        (t.capath.is_some(), "--capath"),
        (t.tls_use_os_certs, "--tls-use-os-certs"),
        (t.cert.is_some(), "--cert"),
        (t.key.is_some(), "--key"),
        (t.insecure, "--insecure"),
        (t.tls_version.is_some(), "--tls-version"),
        (t.tls_alpn.is_some(), "--tls-alpn"),
        (t.keyform.is_some(), "--keyform"),
    ];
    let tls = if url.scheme().is_tls() {
        let mut options = ClientTlsOptions::new(
            roots
                .into_iter()
                .next()
                .map_or(Roots::System, |(_, roots)| roots),
        );
        options.identity = t.cert.clone().zip(t.key.clone());
        options.verify_hostname = !t.insecure;
        options.versions = t.tls_version.unwrap_or_default();
        if let Some(alpn) = &t.tls_alpn {
            if alpn.is_empty() || alpn.len() > 255 {
                return Err("--tls-alpn: a protocol name of 1 to 255 bytes".into());
            }
            options.alpn = vec![alpn.as_bytes().to_vec()];
        }
        Some(options)
    } else {
        if let Some((_, flag)) = tls_flags.iter().find(|(given, _)| *given) {
            return Err(match url.scheme() {
                Scheme::Mqtt if t.url.is_none() => format!(
                    "{flag} needs TLS: add --cafile, --capath or --tls-use-os-certs to turn it on"
                ),
                Scheme::Mqtt => format!(
                    "{flag} needs TLS: use an mqtts:// URL, or add --cafile, --capath or --tls-use-os-certs"
                ),
                Scheme::Ws => format!("{flag} needs TLS: use a wss:// URL"),
                _ => format!("{flag} needs TLS, which a Unix socket does not use"),
            });
        }
        None
    };
    Ok(Target { url, tls, topic })
}

/// Refuses the mosquitto flags midge accepts but cannot honour, each with the reason.
fn unsupported(t: &TransportArgs) -> Result<(), String> {
    const ENGINES: &str = "midge's TLS (rustls) has no OpenSSL engines: give the key as a PEM \
                           file with --key";
    const PSK: &str = "midge's TLS (rustls) has no pre-shared keys (TLS-PSK): use \
                       certificates (--cafile, and --cert with --key for a client certificate)";
    match t.keyform.as_deref() {
        None | Some("pem") => {}
        Some("engine") => return Err(format!("--keyform engine is not supported: {ENGINES}")),
        Some(other) => return Err(format!("--keyform {other:?}: use pem")),
    }
    let refused = [
        (t.tls_engine.is_some(), "--tls-engine", ENGINES),
        (
            t.tls_engine_kpass_sha1.is_some(),
            "--tls-engine-kpass-sha1",
            ENGINES,
        ),
        (t.psk.is_some(), "--psk", PSK),
        (t.psk_identity.is_some(), "--psk-identity", PSK),
        (
            t.ciphers.is_some(),
            "--ciphers",
            "rustls chooses among its own cipher suites (the AEAD suites of TLS 1.2 and 1.3, \
             with forward secrecy); OpenSSL cipher lists do not apply. --tls-version limits \
             the version",
        ),
        (
            t.proxy.is_some(),
            "--proxy",
            "midge connects to the broker directly, not through a SOCKS5 proxy",
        ),
    ];
    match refused.iter().find(|(given, _, _)| *given) {
        Some((_, flag, why)) => Err(format!("{flag} is not supported: {why}")),
        None => Ok(()),
    }
}

/// The topic of an `mqtt(s)://host/topic` URL: everything after the first `/`, exactly as
/// written (no percent-decoding, `.` and `..` kept), as mosquitto 2.0 reads it; none for an
/// empty path.
fn url_topic(path: &str) -> Option<String> {
    let topic = path.strip_prefix('/').unwrap_or(path);
    (!topic.is_empty()).then(|| topic.to_owned())
}

/// A `unix://` URL for `--unix PATH`, relative paths taken from the current directory.
fn unix_url(path: &Path) -> Result<BrokerUrl, String> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("--unix: cannot read the current directory: {e}"))?
            .join(path)
    };
    let text = absolute
        .to_str()
        .ok_or_else(|| format!("--unix {}: the path is not UTF-8", path.display()))?;
    let encoded = percent_encoding::utf8_percent_encode(text, PATH).to_string();
    BrokerUrl::parse(&format!("unix://{encoded}")).map_err(|e| format!("--unix: {e}"))
}

/// What is percent-encoded in a socket path put into a URL.
const PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'#')
    .add(b'?')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut TransportArgs)) -> TransportArgs {
        let mut t = TransportArgs::default();
        f(&mut t);
        t
    }

    fn ok(host: Option<&str>, port: Option<u16>, t: &TransportArgs) -> Target {
        target(host, port, "localhost", t).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(host: Option<&str>, port: Option<u16>, t: &TransportArgs) -> String {
        target(host, port, "localhost", t).expect_err("refused")
    }

    #[test]
    fn host_and_port_as_before() {
        let t = ok(None, None, &TransportArgs::default());
        assert_eq!(t.url.to_string(), "mqtt://localhost:1883");
        assert!(t.tls.is_none());
        assert_eq!(t.display(), "localhost:1883");
        let t = ok(Some("::1"), Some(1884), &TransportArgs::default());
        assert_eq!((t.url.host(), t.url.port()), ("::1", 1884));
        assert_eq!(t.display(), "[::1]:1884");
    }

    #[test]
    fn cafile_capath_and_os_certs_turn_tls_on_with_port_8883() {
        let t = ok(Some("b"), None, &args(|a| a.cafile = Some("ca.pem".into())));
        assert_eq!(t.url.to_string(), "mqtts://b:8883");
        assert_eq!(
            t.tls.as_ref().map(|o| o.roots.clone()),
            Some(Roots::File("ca.pem".into()))
        );
        let t = ok(
            None,
            Some(9000),
            &args(|a| a.capath = Some("/etc/ssl/certs".into())),
        );
        assert_eq!(t.url.to_string(), "mqtts://localhost:9000");
        assert_eq!(
            t.tls.map(|o| o.roots),
            Some(Roots::Dir("/etc/ssl/certs".into()))
        );
        let t = ok(None, None, &args(|a| a.tls_use_os_certs = true));
        assert_eq!(t.tls.map(|o| o.roots), Some(Roots::System));
    }

    #[test]
    fn tls_settings_reach_the_options() {
        let t = ok(
            None,
            None,
            &args(|a| {
                a.cafile = Some("ca.pem".into());
                a.cert = Some("c.pem".into());
                a.key = Some("c.key".into());
                a.insecure = true;
                a.tls_version = Some(TlsVersions::Tls13);
                a.tls_alpn = Some("mqtt".into());
            }),
        );
        let tls = t.tls.expect("tls");
        assert_eq!(tls.identity, Some(("c.pem".into(), "c.key".into())));
        // mosquitto's --insecure: the name is not checked, the CA still is.
        assert!(!tls.verify_hostname);
        assert!(!tls.insecure_skip_verify_for_testing);
        assert_eq!(tls.versions, TlsVersions::Tls13);
        assert_eq!(tls.alpn, vec![b"mqtt".to_vec()]);
    }

    #[test]
    fn flags_midge_cannot_honour_are_refused_with_the_reason() {
        let tls = |f: fn(&mut TransportArgs)| {
            args(|a| {
                a.cafile = Some("ca.pem".into());
                f(a);
            })
        };
        for (t, flag) in [
            (tls(|a| a.psk = Some("00ff".into())), "--psk"),
            (
                tls(|a| a.psk_identity = Some("me".into())),
                "--psk-identity",
            ),
            (tls(|a| a.ciphers = Some("HIGH".into())), "--ciphers"),
            (
                tls(|a| a.tls_engine = Some("pkcs11".into())),
                "--tls-engine",
            ),
            (
                tls(|a| a.tls_engine_kpass_sha1 = Some("ab".into())),
                "--tls-engine-kpass-sha1",
            ),
            (
                tls(|a| a.keyform = Some("engine".into())),
                "--keyform engine",
            ),
            (
                args(|a| a.proxy = Some("socks5h://p:1080".into())),
                "--proxy",
            ),
        ] {
            let message = err(None, None, &t);
            assert!(
                message.starts_with(&format!("{flag} is not supported: ")),
                "{message}"
            );
        }
        // --keyform pem is what midge reads anyway; it needs TLS, as --key does.
        assert!(ok(None, None, &tls(|a| a.keyform = Some("pem".into())))
            .tls
            .is_some());
        assert!(err(None, None, &args(|a| a.keyform = Some("pem".into()))).contains("needs TLS"));
        assert!(err(None, None, &tls(|a| a.keyform = Some("der".into()))).contains("use pem"));
        let shown = format!("{:?}", tls(|a| a.psk = Some("5ec7e7".into())));
        assert!(!shown.contains("5ec7e7"), "{shown}");
    }

    #[test]
    fn urls_as_mosquitto_reads_them() {
        let t = ok(
            None,
            None,
            &args(|a| a.url = Some("mqtt://u:pw@b:1884/a/b".into())),
        );
        assert_eq!((t.url.host(), t.url.port()), ("b", 1884));
        assert_eq!(
            (t.url.username(), t.url.password()),
            (Some("u"), Some("pw"))
        );
        assert_eq!(t.topic.as_deref(), Some("a/b"));
        assert_eq!(t.display(), "b:1884");
        let t = ok(
            None,
            None,
            &args(|a| a.url = Some("mqtts://b/sensors/#".into())),
        );
        assert_eq!(t.topic.as_deref(), Some("sensors/#"));
        assert_eq!(t.tls.map(|o| o.roots), Some(Roots::System));
        let t = ok(
            None,
            None,
            &args(|a| a.url = Some("mqtt://b/a%20b/+".into())),
        );
        assert_eq!(t.topic.as_deref(), Some("a%20b/+"));
        let t = ok(None, None, &args(|a| a.url = Some("mqtt://b".into())));
        assert_eq!(t.topic, None);
        // The path of a WebSocket URL is the WebSocket path, not a topic.
        let t = ok(
            None,
            None,
            &args(|a| {
                a.url = Some("wss://u:pw@b:8884/ws".into());
                a.cafile = Some("ca.pem".into());
            }),
        );
        assert_eq!((t.url.path(), t.topic), ("/ws", None));
        assert_eq!(t.tls.map(|o| o.roots), Some(Roots::File("ca.pem".into())));
        assert_eq!(
            ok(
                None,
                None,
                &args(|a| a.url = Some("wss://u:pw@b/ws".into()))
            )
            .display(),
            "wss://b:443/ws"
        );
        let t = ok(
            None,
            None,
            &args(|a| a.url = Some("unix:///run/m.sock".into())),
        );
        assert_eq!(t.display(), "/run/m.sock");
    }

    #[test]
    fn unix_sockets_by_flag() {
        let t = ok(
            None,
            None,
            &args(|a| a.unix = Some("/tmp/my dir/m.sock".into())),
        );
        assert_eq!(t.url.socket_path(), Some("/tmp/my dir/m.sock".into()));
        let t = ok(None, None, &args(|a| a.unix = Some("m.sock".into())));
        assert!(t
            .url
            .socket_path()
            .is_some_and(|p| p.is_absolute() && p.ends_with("m.sock")));
    }

    #[test]
    fn bad_combinations_say_what_is_wrong() {
        let cases: Vec<(Option<&str>, Option<u16>, TransportArgs, &str)> = vec![
            (
                None,
                None,
                args(|a| a.cert = Some("c".into())),
                "--cert needs --key",
            ),
            (
                None,
                None,
                args(|a| a.key = Some("k".into())),
                "--key needs --cert",
            ),
            (
                None,
                None,
                args(|a| {
                    a.cafile = Some("a".into());
                    a.capath = Some("b".into());
                }),
                "--cafile and --capath each say which CA certificates to trust",
            ),
            (
                None,
                None,
                args(|a| {
                    a.cert = Some("c".into());
                    a.key = Some("k".into());
                }),
                "--cert needs TLS: add --cafile, --capath or --tls-use-os-certs",
            ),
            (
                None,
                None,
                args(|a| a.insecure = true),
                "--insecure needs TLS",
            ),
            (
                None,
                None,
                args(|a| a.tls_alpn = Some("mqtt".into())),
                "--tls-alpn needs TLS",
            ),
            (
                None,
                None,
                args(|a| {
                    a.url = Some("mqtt://b".into());
                    a.insecure = true;
                }),
                "--insecure needs TLS: use an mqtts:// URL, or add --cafile",
            ),
            (
                None,
                None,
                args(|a| {
                    a.url = Some("ws://b".into());
                    a.insecure = true;
                }),
                "--insecure needs TLS: use a wss:// URL",
            ),
            (
                Some("b"),
                None,
                args(|a| a.url = Some("mqtt://b".into())),
                "-L gives the broker's address",
            ),
            (
                None,
                Some(1),
                args(|a| a.url = Some("mqtt://b".into())),
                "-L gives the broker's address",
            ),
            (
                Some("b"),
                None,
                args(|a| a.unix = Some("/s".into())),
                "--unix connects through a socket",
            ),
            (
                None,
                None,
                args(|a| a.url = Some("http://b".into())),
                "-L: unsupported URL scheme \"http\"",
            ),
            (
                None,
                None,
                args(|a| a.url = Some("mqtt://b:99999".into())),
                "-L: invalid broker URL",
            ),
            (
                None,
                None,
                args(|a| a.url = Some("mqtt://u:secret@".into())),
                "-L: invalid broker URL: empty host",
            ),
        ];
        for (host, port, t, expected) in cases {
            let message = err(host, port, &t);
            assert!(
                message.starts_with(expected),
                "{message:?} should start with {expected:?}"
            );
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn host_is_taken_as_it_is_not_as_url_text() {
        for (host, port) in [
            ("a/b", 9999),
            ("broker#x", 9999),
            ("broker?x", 9999),
            ("alice@broker", 9999),
            ("alice:pw@broker", 9999),
            ("fe80::1%eth0", 1883),
        ] {
            let t = ok(Some(host), Some(port), &TransportArgs::default());
            assert_eq!(
                (
                    t.url.host(),
                    t.url.port(),
                    t.url.username(),
                    t.url.password()
                ),
                (host, port, None, None),
                "-h {host}"
            );
            assert_eq!(t.topic, None);
        }
        let t = ok(Some("[::1]"), None, &TransportArgs::default());
        assert_eq!(t.url.host(), "::1");
        let t = ok(
            Some("fe80::1%eth0"),
            None,
            &args(|a| a.cafile = Some("ca.pem".into())),
        );
        assert_eq!(
            (t.url.scheme(), t.url.host(), t.url.port()),
            (Scheme::Mqtts, "fe80::1%eth0", 8883)
        );
        assert!(err(Some(""), None, &TransportArgs::default()).starts_with("-h/-p: "));
    }

    #[test]
    fn url_topics_are_taken_literally_as_mosquitto_does() {
        for (url, topic) in [
            ("mqtt://h/a/../b", "a/../b"),
            ("mqtt://h/a/./b", "a/./b"),
            ("mqtt://h/sensors/%2e%2e/x", "sensors/%2e%2e/x"),
            // mosquitto_sub -L 'mqtt://host/a%2Fb' subscribes to `a%2Fb`.
            ("mqtt://h/a%2Fb", "a%2Fb"),
            ("mqtt://h/%zz/#", "%zz/#"),
            ("mqtts://h:1/a?b#", "a?b#"),
            ("mqtt://h/.", "."),
            ("mqtt://u:p%2Fw@h/t", "t"),
        ] {
            let t = ok(None, None, &args(|a| a.url = Some(url.into())));
            assert_eq!(t.topic.as_deref(), Some(topic), "{url}");
        }
    }

    #[test]
    fn a_ca_turns_tls_on_for_an_mqtt_url_as_in_mosquitto() {
        let t = ok(
            None,
            None,
            &args(|a| {
                a.url = Some("mqtt://u:pw@b/t".into());
                a.cafile = Some("ca.pem".into());
                a.insecure = true;
            }),
        );
        assert_eq!(
            (t.url.scheme(), t.url.host(), t.url.port()),
            (Scheme::Mqtts, "b", 1883)
        );
        assert_eq!(
            (t.url.username(), t.url.password()),
            (Some("u"), Some("pw"))
        );
        assert_eq!(t.topic.as_deref(), Some("t"));
        let tls = t.tls.expect("tls");
        assert_eq!(tls.roots, Roots::File("ca.pem".into()));
        assert!(!tls.verify_hostname);
        let t = ok(
            None,
            None,
            &args(|a| {
                a.url = Some("mqtt://b:8884".into());
                a.tls_use_os_certs = true;
            }),
        );
        assert_eq!((t.url.scheme(), t.url.port()), (Scheme::Mqtts, 8884));
    }

    #[test]
    fn debug_never_shows_a_password() {
        for url in [
            "mqtt://u:hunter2@b/t",
            "mqtt://u:hunter2@b:99999/t",
            "wss://u:hunter2@b/ws",
            "mqtt://u:hun#ter2@b",
            "mqtt://u:hunter2/x@b",
        ] {
            let t = args(|a| a.url = Some(url.into()));
            let shown = format!("{t:?}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("ter2"),
                "{shown}"
            );
            if let Ok(target) = target(None, None, "localhost", &t) {
                let shown = format!("{target:?} {}", target.display());
                assert!(!shown.contains("ter2"), "{shown}");
            }
        }
    }

    #[test]
    fn tls_versions_as_mosquitto_names_them() {
        assert_eq!(parse_tls_version("tlsv1.2"), Ok(TlsVersions::Tls12));
        assert_eq!(parse_tls_version("tlsv1.3"), Ok(TlsVersions::Tls13));
        assert!(parse_tls_version("tlsv1.1")
            .unwrap_err()
            .contains("not supported"));
        assert!(parse_tls_version("1.3").is_err());
    }
}
