//! Broker URLs: `mqtt://`, `mqtts://`, `ws://`, `wss://` and `unix://`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// How a [`BrokerUrl`] reaches the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// `mqtt://`: MQTT over TCP, port 1883 by default.
    Mqtt,
    /// `mqtts://`: MQTT over TLS over TCP, port 8883 by default.
    Mqtts,
    /// `ws://`: MQTT over WebSocket over TCP, port 80 and path `/mqtt` by default.
    Ws,
    /// `wss://`: MQTT over WebSocket over TLS, port 443 and path `/mqtt` by default.
    Wss,
    /// `unix://`: MQTT over a Unix domain socket (`unix:///run/mqtt.sock`).
    Unix,
}

impl Scheme {
    /// The scheme as it is written in a URL: `mqtt`, `mqtts`, `ws`, `wss` or `unix`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::Mqtts => "mqtts",
            Self::Ws => "ws",
            Self::Wss => "wss",
            Self::Unix => "unix",
        }
    }

    /// The port used when the URL names none (`None` for `unix`).
    pub fn default_port(self) -> Option<u16> {
        match self {
            Self::Mqtt => Some(1883),
            Self::Mqtts => Some(8883),
            Self::Ws => Some(80),
            Self::Wss => Some(443),
            Self::Unix => None,
        }
    }

    /// Whether the connection runs over TLS (`mqtts`, `wss`).
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Mqtts | Self::Wss)
    }

    /// Whether the connection runs over WebSocket (`ws`, `wss`).
    pub fn is_websocket(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }

    fn parse(scheme: &str) -> Option<Self> {
        Some(match scheme {
            "mqtt" | "tcp" => Self::Mqtt,
            "mqtts" | "ssl" | "tls" => Self::Mqtts,
            "ws" => Self::Ws,
            "wss" => Self::Wss,
            "unix" => Self::Unix,
            _ => return None,
        })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a broker URL was refused. Messages never repeat a password from the URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The text is not a URL: no `scheme://`, a bad port number, a bad IPv6 address…
    #[error("invalid broker URL: {0}")]
    Syntax(String),
    /// The scheme is not one the client speaks.
    #[error("unsupported URL scheme {0:?}: use mqtt, mqtts, ws, wss or unix")]
    UnsupportedScheme(String),
    /// `mqtt`, `mqtts`, `ws` and `wss` URLs need a host.
    #[error("the {0} URL has no host")]
    MissingHost(Scheme),
    /// Port 0 cannot be connected to.
    #[error("port 0 is not a port a broker can listen on")]
    PortZero,
    /// The scheme needs a cargo feature of midge-client that this build lacks.
    #[error("{scheme}:// URLs need midge-client's `{feature}` feature, which this build lacks")]
    FeatureDisabled {
        /// The URL's scheme.
        scheme: Scheme,
        /// The missing feature: `tls` or `ws`.
        feature: &'static str,
    },
    /// A `unix` URL must name an absolute path and no host: `unix:///run/mqtt.sock`.
    #[error(
        "a unix URL names the socket by its absolute path and no host, as in unix:///run/mqtt.sock"
    )]
    UnixPath,
    /// Unix domain sockets exist only on Unix systems.
    #[error("unix:// URLs need a Unix system")]
    UnixUnsupported,
    /// `mqtt` and `mqtts` URLs take no path (or query): only WebSocket URLs send one.
    #[error("an {0} URL takes no path: the path of ws:// and wss:// URLs is the WebSocket path")]
    UnexpectedPath(Scheme),
    /// The part the URL gives is not allowed where it was given: a user name or password
    /// given to [`Connector::url`](crate::Connector::url), which opens streams and sends no
    /// CONNECT (give the URL to [`ClientBuilder::from_url`](crate::ClientBuilder::from_url),
    /// or the credentials to [`ClientBuilder::credentials`](crate::ClientBuilder::credentials)),
    /// or a password without a user name.
    #[error("{0}")]
    Credentials(&'static str),
}

/// A parsed broker URL: `scheme://[user[:password]@]host[:port][/path]`, or
/// `unix:///path/to/socket`.
///
/// | scheme | transport | default port | path |
/// |---|---|---|---|
/// | `mqtt` (also `tcp`) | TCP | 1883 | none |
/// | `mqtts` (also `ssl`, `tls`) | TLS over TCP | 8883 | none |
/// | `ws` | WebSocket over TCP | 80 | the WebSocket path, default `/mqtt` |
/// | `wss` | WebSocket over TLS | 443 | the WebSocket path, default `/mqtt` |
/// | `unix` | Unix domain socket | — | the socket's absolute path |
///
/// IPv6 addresses go in brackets: `mqtt://[::1]:1883` (a zone, as in `fe80::1%eth0`, cannot
/// be written in a URL: use [`BrokerUrl::from_parts`]). Host names are percent-decoded and
/// international ones mapped to ASCII (IDNA), for every scheme: `mqtt://bücher.example` has
/// the host `xn--bcher-kva.example`.
///
/// User name and password are percent-decoded (`%40` for `@`, `%3A` for `:`, `%2F` for `/`).
/// The user information ends at the last `@` before the first `/`, so `#` and `?` may appear
/// in it as they are; an `@` after the first `/` is refused, as it would mean that a password
/// went on past a `/` (write that `/` as `%2F`).
///
/// The path of an `mqtt` or `mqtts` URL is kept exactly as written: no percent-decoding, no
/// removal of `.` and `..` segments, and `#` and `?` are part of it (`mqtt://host/a/../b#`
/// has the path `/a/../b#`), because `midge pub -L` reads the topic from it, as mosquitto
/// does; [`Connector::url`](crate::Connector::url) and
/// [`ClientBuilder::from_url`](crate::ClientBuilder::from_url) refuse such a path. The path
/// of a `ws` or `wss` URL is normalised by the URL parser, as a browser would.
///
/// `Debug` and `Display` never show the password.
///
/// ```
/// use midge_client::{BrokerUrl, Scheme};
///
/// let url: BrokerUrl = "wss://user:secret@[::1]/ws".parse()?;
/// assert_eq!(url.scheme(), Scheme::Wss);
/// assert_eq!(url.host(), "::1");
/// assert_eq!(url.port(), 443);
/// assert_eq!(url.path(), "/ws");
/// assert_eq!(url.password(), Some("secret"));
/// assert_eq!(url.to_string(), "wss://user@[::1]:443/ws");
/// # Ok::<(), midge_client::UrlError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    scheme: Scheme,
    /// Host name or address, IPv6 without brackets; empty for `unix`.
    host: String,
    /// 0 for `unix`.
    port: u16,
    /// Percent-encoded as in the URL, with the query; the socket path for `unix`.
    path: String,
    username: Option<String>,
    password: Option<String>,
}

impl BrokerUrl {
    /// Parses a broker URL; see the [type docs](Self).
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let text = text.trim();
        let scheme_name = text
            .split_once("://")
            .map(|(scheme, _)| scheme)
            .or_else(|| text.split_once(':').map(|(scheme, _)| scheme))
            .ok_or_else(|| {
                UrlError::Syntax("no scheme: write mqtt://host, mqtts://host, ws://host/path, wss://host/path or unix:///path".into())
            })?;
        let lower = scheme_name.to_ascii_lowercase();
        let scheme =
            Scheme::parse(&lower).ok_or_else(|| UrlError::UnsupportedScheme(lower.clone()))?;
        if scheme == Scheme::Unix {
            return Self::parse_unix(text);
        }
        let rest = text
            .get(scheme_name.len()..)
            .and_then(|rest| rest.strip_prefix("://"))
            .ok_or_else(|| UrlError::Syntax(format!("write {scheme}://host")))?;
        // The authority (user information, host, port) ends at the first `/`; a `/` in a user
        // name or password is written `%2F`. An `@` after that `/` would say that the user
        // information went on past it (as mosquitto reads `-L`): refused, so that no part of
        // a password is ever taken for a host, a port or a path, which are shown.
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if path.contains('@') {
            return Err(UrlError::Syntax(
                "'@' after the host: write '@' as %40 and '/' as %2F in a user name or password"
                    .into(),
            ));
        }
        // `#` and `?` in the user information are part of it, not the start of a fragment or
        // query. In mqtt and mqtts URLs they have no other meaning anywhere.
        let escape_up_to = match scheme {
            Scheme::Mqtt | Scheme::Mqtts => authority.len(),
            _ => authority.rfind('@').unwrap_or(0),
        };
        let (userinfo, host_port) = authority.split_at(escape_up_to);
        let authority = format!(
            "{}{host_port}",
            userinfo.replace('#', "%23").replace('?', "%3F")
        );
        if scheme.is_websocket() {
            let url = url::Url::parse(&format!("{lower}://{authority}{path}"))
                .map_err(|e| UrlError::Syntax(e.to_string()))?;
            return Self::from_url(scheme, &url, None);
        }
        // The path of an mqtt or mqtts URL is kept as written (`midge pub -L` reads the topic
        // from it, literally, as mosquitto does): only the authority goes to the URL parser.
        let url = url::Url::parse(&format!("{lower}://{authority}"))
            .map_err(|e| UrlError::Syntax(e.to_string()))?;
        Self::from_url(scheme, &url, Some(path))
    }

    /// The parts of a parsed `mqtt`, `mqtts`, `ws` or `wss` URL; `literal_path` is the path
    /// of an `mqtt` or `mqtts` URL, which the URL parser did not see.
    fn from_url(
        scheme: Scheme,
        url: &url::Url,
        literal_path: Option<&str>,
    ) -> Result<Self, UrlError> {
        let (username, password) = credentials(url)?;
        let host = match url.host() {
            Some(url::Host::Ipv6(addr)) => addr.to_string(),
            Some(url::Host::Ipv4(addr)) => addr.to_string(),
            // `mqtt` and `mqtts` are not schemes the URL parser knows, so it leaves their
            // host as written: decode it and map international names to ASCII (IDNA) as it
            // does for `ws` and `wss`.
            Some(url::Host::Domain(name)) if !name.is_empty() && literal_path.is_some() => {
                match url::Host::parse(name).map_err(|e| UrlError::Syntax(e.to_string()))? {
                    url::Host::Domain(name) => name,
                    url::Host::Ipv4(addr) => addr.to_string(),
                    url::Host::Ipv6(addr) => addr.to_string(),
                }
            }
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            _ => return Err(UrlError::MissingHost(scheme)),
        };
        if host.is_empty() {
            return Err(UrlError::MissingHost(scheme));
        }
        // `ws` and `wss` are special schemes to the URL parser: their default port is not
        // stored, so `port()` is `None` for an explicit `:80` too.
        let port = url.port().or(scheme.default_port()).unwrap_or_default();
        if port == 0 {
            return Err(UrlError::PortZero);
        }
        let path = match literal_path {
            Some(path) => path.to_owned(),
            None => {
                if url.fragment().is_some() {
                    return Err(UrlError::Syntax("a WebSocket URL has no #fragment".into()));
                }
                let mut path = url.path().to_owned();
                if let Some(query) = url.query() {
                    path.push('?');
                    path.push_str(query);
                }
                if path.is_empty() || path == "/" {
                    "/mqtt".clone_into(&mut path);
                }
                path
            }
        };
        Ok(Self {
            scheme,
            host,
            port,
            path,
            username,
            password,
        })
    }

    fn parse_unix(text: &str) -> Result<Self, UrlError> {
        let url = url::Url::parse(text).map_err(|e| UrlError::Syntax(e.to_string()))?;
        let (username, _) = credentials(&url)?;
        if url.host_str().is_some_and(|h| !h.is_empty())
            || url.port().is_some()
            || username.is_some()
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.path().starts_with('/')
            || url.path() == "/"
        {
            return Err(UrlError::UnixPath);
        }
        let path = percent_encoding::percent_decode_str(url.path())
            .decode_utf8()
            .map_err(|_| UrlError::Syntax("the socket path is not UTF-8".into()))?;
        Ok(Self {
            scheme: Scheme::Unix,
            host: String::new(),
            port: 0,
            path: path.into_owned(),
            username: None,
            password: None,
        })
    }

    /// A URL made of its parts, none of them parsed from URL text: `host` is taken as it is
    /// (a name, an IPv4 address or an IPv6 address, with or without brackets, with a zone
    /// such as `fe80::1%eth0` if the system's resolver takes it), as mosquitto's `-h` takes
    /// it. `ws` and `wss` URLs get the WebSocket path `/mqtt`. No user name or password.
    ///
    /// Refused: an empty host ([`UrlError::MissingHost`]), port 0 ([`UrlError::PortZero`])
    /// and [`Scheme::Unix`] ([`UrlError::UnixPath`]: give `unix:///path` to
    /// [`BrokerUrl::parse`]).
    ///
    /// ```
    /// use midge_client::{BrokerUrl, Scheme};
    ///
    /// let url = BrokerUrl::from_parts(Scheme::Mqtt, "fe80::1%eth0", 1883)?;
    /// assert_eq!(url.host(), "fe80::1%eth0");
    /// let url = BrokerUrl::from_parts(Scheme::Mqtt, "alice@broker", 1883)?;
    /// assert_eq!((url.host(), url.username()), ("alice@broker", None));
    /// # Ok::<(), midge_client::UrlError>(())
    /// ```
    pub fn from_parts(scheme: Scheme, host: &str, port: u16) -> Result<Self, UrlError> {
        if scheme == Scheme::Unix {
            return Err(UrlError::UnixPath);
        }
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(UrlError::MissingHost(scheme));
        }
        if port == 0 {
            return Err(UrlError::PortZero);
        }
        Ok(Self {
            scheme,
            host: host.to_owned(),
            port,
            path: if scheme.is_websocket() { "/mqtt" } else { "" }.to_owned(),
            username: None,
            password: None,
        })
    }

    /// The same broker over another transport: host, port, user name and password stay.
    /// Between `mqtt`/`mqtts` and `ws`/`wss` the path does not carry over (it means a topic
    /// in one and the WebSocket path in the other) and becomes the default: none, or
    /// `/mqtt`. `mosquitto_pub -L mqtt://host/topic --cafile ca.pem` runs TLS on port 1883,
    /// which is this with [`Scheme::Mqtts`].
    ///
    /// A `unix` URL has no host, and is refused either way ([`UrlError::UnixPath`]).
    pub fn with_scheme(mut self, scheme: Scheme) -> Result<Self, UrlError> {
        if scheme == Scheme::Unix || self.scheme == Scheme::Unix {
            return Err(UrlError::UnixPath);
        }
        if scheme.is_websocket() != self.scheme.is_websocket() {
            self.path = if scheme.is_websocket() { "/mqtt" } else { "" }.to_owned();
        }
        self.scheme = scheme;
        Ok(self)
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host name or address (an IPv6 address without brackets); empty for `unix`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port: the URL's, or the scheme's default; 0 for `unix`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path: for `ws` and `wss` the WebSocket path, percent-encoded and with its query
    /// (`/mqtt` if the URL gives none); for `mqtt` and `mqtts` whatever follows the host,
    /// exactly as written (`#`, `?`, `%` and `..` included), or `""`; for `unix` the
    /// socket's path, decoded.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// For `unix` URLs, the socket's path.
    pub fn socket_path(&self) -> Option<PathBuf> {
        (self.scheme == Scheme::Unix).then(|| PathBuf::from(&self.path))
    }

    /// The user name, percent-decoded.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password, percent-decoded.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The URL itself, unless it is an `mqtt` or `mqtts` URL with a path beyond a lone `/`,
    /// which has no meaning to a connection: refused with [`UrlError::UnexpectedPath`].
    pub(crate) fn without_mqtt_path(self) -> Result<Self, UrlError> {
        match self.scheme {
            Scheme::Mqtt | Scheme::Mqtts if !self.path.is_empty() && self.path != "/" => {
                Err(UrlError::UnexpectedPath(self.scheme))
            }
            _ => Ok(self),
        }
    }

    /// The URL the WebSocket handshake asks for: scheme, host, port and path, no user
    /// information.
    #[cfg(any(feature = "ws", test))]
    pub(crate) fn websocket_url(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.scheme,
            bracketed(&self.host),
            self.port,
            self.path
        )
    }
}

/// The user name and password of a URL, percent-decoded.
fn credentials(url: &url::Url) -> Result<(Option<String>, Option<String>), UrlError> {
    let decode = |s: &str| -> Result<String, UrlError> {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| UrlError::Syntax("user name or password is not UTF-8".into()))
    };
    let username = match url.username() {
        "" => None,
        user => Some(decode(user)?),
    };
    let password = url.password().map(decode).transpose()?;
    if password.is_some() && username.is_none() {
        return Err(UrlError::Credentials(
            "the URL has a password but no user name: write user:password@host",
        ));
    }
    Ok((username, password))
}

fn bracketed(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

impl FromStr for BrokerUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        Self::parse(s)
    }
}

/// The URL without its password: `scheme://[user@]host:port[path]`, `unix://path`.
impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scheme == Scheme::Unix {
            return write!(f, "unix://{}", self.path);
        }
        write!(f, "{}://", self.scheme)?;
        if let Some(user) = &self.username {
            let user = percent_encoding::utf8_percent_encode(user, USERINFO);
            write!(f, "{user}@")?;
        }
        write!(f, "{}:{}{}", bracketed(&self.host), self.port, self.path)
    }
}

/// Shows the URL as `Display` does, without the password.
impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BrokerUrl").field(&self.to_string()).finish()
    }
}

/// What is percent-encoded in a user name when the URL is shown again.
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'@')
    .add(b':')
    .add(b'/')
    .add(b'#')
    .add(b'?')
    .add(b'%');

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> BrokerUrl {
        BrokerUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn default_ports_per_scheme() {
        for (url, scheme, port) in [
            ("mqtt://broker", Scheme::Mqtt, 1883),
            ("mqtts://broker", Scheme::Mqtts, 8883),
            ("ws://broker", Scheme::Ws, 80),
            ("wss://broker", Scheme::Wss, 443),
            ("tcp://broker", Scheme::Mqtt, 1883),
            ("ssl://broker", Scheme::Mqtts, 8883),
            ("MQTT://broker", Scheme::Mqtt, 1883),
        ] {
            let u = parse(url);
            assert_eq!(
                (u.scheme(), u.host(), u.port()),
                (scheme, "broker", port),
                "{url}"
            );
        }
    }

    #[test]
    fn explicit_ports_win() {
        assert_eq!(parse("mqtt://b:1884").port(), 1884);
        assert_eq!(parse("mqtts://b:443").port(), 443);
        assert_eq!(parse("ws://b:80/x").port(), 80);
        assert_eq!(parse("ws://b:9001").port(), 9001);
        assert_eq!(parse("wss://b:8884").port(), 8884);
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets() {
        let u = parse("mqtt://[::1]:1884");
        assert_eq!((u.host(), u.port()), ("::1", 1884));
        let u = parse("wss://[fe80::1]/mqtt");
        assert_eq!((u.host(), u.port()), ("fe80::1", 443));
        assert_eq!(u.websocket_url(), "wss://[fe80::1]:443/mqtt");
        assert_eq!(parse("mqtts://[::1]").to_string(), "mqtts://[::1]:8883");
        assert_eq!(parse("mqtt://127.0.0.1").host(), "127.0.0.1");
    }

    #[test]
    fn websocket_paths_default_to_mqtt() {
        assert_eq!(parse("ws://b").path(), "/mqtt");
        assert_eq!(parse("ws://b/").path(), "/mqtt");
        assert_eq!(parse("wss://b/ws").path(), "/ws");
        assert_eq!(parse("ws://b:8080/a/b?token=x").path(), "/a/b?token=x");
        assert_eq!(
            parse("ws://b:8080/a?t=1").websocket_url(),
            "ws://b:8080/a?t=1"
        );
    }

    #[test]
    fn mqtt_paths_keep_hash_and_question_mark() {
        assert_eq!(parse("mqtt://b").path(), "");
        assert_eq!(parse("mqtt://b/a/b").path(), "/a/b");
        assert_eq!(parse("mqtt://b:1884/a/#").path(), "/a/#");
        assert_eq!(parse("mqtts://b/a?b").path(), "/a?b");
        assert_eq!(
            parse("mqtt://b/a").without_mqtt_path(),
            Err(UrlError::UnexpectedPath(Scheme::Mqtt))
        );
        assert!(parse("mqtt://b/").without_mqtt_path().is_ok());
        assert!(parse("ws://b/a").without_mqtt_path().is_ok());
    }

    #[test]
    fn credentials_are_decoded_and_never_shown() {
        let u = parse("mqtts://us%40er:p%3Ass@b");
        assert_eq!(u.username(), Some("us@er"));
        assert_eq!(u.password(), Some("p:ss"));
        let shown = format!("{u} {u:?}");
        assert!(
            !shown.contains("p:ss") && !shown.contains("p%3Ass"),
            "{shown}"
        );
        assert_eq!(u.to_string(), "mqtts://us%40er@b:8883");
        let u = parse("mqtt://alice@b");
        assert_eq!((u.username(), u.password()), (Some("alice"), None));
        assert_eq!(
            BrokerUrl::parse("mqtt://:secret@b"),
            Err(UrlError::Credentials(
                "the URL has a password but no user name: write user:password@host"
            ))
        );
    }

    #[test]
    fn mqtt_paths_are_kept_literally() {
        for (url, path) in [
            ("mqtt://h/a/../b", "/a/../b"),
            ("mqtt://h/a/./b", "/a/./b"),
            ("mqtt://h/sensors/%2e%2e/x", "/sensors/%2e%2e/x"),
            ("mqtt://h/.", "/."),
            ("mqtt://h/a%2Fb", "/a%2Fb"),
            ("mqtt://h/%zz/é/#", "/%zz/é/#"),
            ("mqtt://h:1884/a b", "/a b"),
        ] {
            assert_eq!(parse(url).path(), path, "{url}");
        }
        // WebSocket paths are URL paths, normalised as a browser would.
        assert_eq!(parse("ws://h/a/../b").path(), "/b");
    }

    #[test]
    fn hash_and_question_mark_in_a_password_stay_in_it() {
        for (url, host, port, password) in [
            ("mqtt://user:1234#x@broker", "broker", 1883, "1234#x"),
            ("mqtts://user:12?34@broker:8884", "broker", 8884, "12?34"),
            ("mqtt://user:1#2?3@broker/a/#", "broker", 1883, "1#2?3"),
            ("wss://user:1#2?3@broker/ws?x=1", "broker", 443, "1#2?3"),
            ("ws://user:p#w@[::1]:9001", "::1", 9001, "p#w"),
        ] {
            let u = parse(url);
            assert_eq!(
                (u.host(), u.port(), u.username(), u.password()),
                (host, port, Some("user"), Some(password)),
                "{url}"
            );
            let shown = format!("{u} {u:?}");
            assert!(!shown.contains(password), "{shown}");
        }
        // After the host, the query of a WebSocket URL keeps its meaning.
        assert_eq!(parse("wss://user:1#2?3@broker/ws?x=1").path(), "/ws?x=1");
    }

    #[test]
    fn an_at_sign_after_the_first_slash_is_refused() {
        // A password with an unescaped `/`: read as URL text, `1234` would be the port and
        // `/secret@b` the path, both shown.
        for url in [
            "mqtt://u:1234/secret@b",
            "ws://u:1234/secret@b/mqtt",
            "mqtt://b/a@b",
        ] {
            let err = BrokerUrl::parse(url).expect_err(url);
            assert!(matches!(err, UrlError::Syntax(_)), "{url}: {err:?}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        assert_eq!(parse("mqtt://u:12%2F34@b/t").password(), Some("12/34"));
    }

    #[test]
    fn hosts_are_decoded_and_mapped_to_ascii_for_every_scheme() {
        for url in [
            "mqtt://bücher.example",
            "mqtts://bücher.example",
            "ws://bücher.example",
            "wss://BÜCHER.example",
            "mqtt://b%C3%BCcher.example",
        ] {
            assert_eq!(parse(url).host(), "xn--bcher-kva.example", "{url}");
        }
        assert_eq!(parse("mqtt://br%6Fker").host(), "broker");
        assert_eq!(parse("MQTT://Broker.Example").host(), "broker.example");
        assert_eq!(parse("mqtt://127.0.0.1:1").host(), "127.0.0.1");
        for bad in ["mqtt://a%20b", "mqtt://a%2Fb", "mqtt://[fe80::1%25eth0]"] {
            assert!(
                matches!(BrokerUrl::parse(bad), Err(UrlError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn parts_are_taken_as_they_are() {
        for host in [
            "a/b",
            "broker#x",
            "broker?x",
            "alice@broker",
            "alice:pw@broker",
            "fe80::1%eth0",
        ] {
            let u = BrokerUrl::from_parts(Scheme::Mqtt, host, 9999).unwrap();
            assert_eq!(
                (u.host(), u.port(), u.username(), u.password(), u.path()),
                (host, 9999, None, None, ""),
                "{host}"
            );
        }
        let u = BrokerUrl::from_parts(Scheme::Wss, "[::1]", 8884).unwrap();
        assert_eq!((u.host(), u.path()), ("::1", "/mqtt"));
        assert_eq!(u.websocket_url(), "wss://[::1]:8884/mqtt");
        assert_eq!(
            BrokerUrl::from_parts(Scheme::Mqtt, "", 1883),
            Err(UrlError::MissingHost(Scheme::Mqtt))
        );
        assert_eq!(
            BrokerUrl::from_parts(Scheme::Mqtt, "b", 0),
            Err(UrlError::PortZero)
        );
        assert_eq!(
            BrokerUrl::from_parts(Scheme::Unix, "b", 1),
            Err(UrlError::UnixPath)
        );
    }

    #[test]
    fn another_scheme_keeps_the_broker_and_credentials() {
        let u = parse("mqtt://u:pw@b/t").with_scheme(Scheme::Mqtts).unwrap();
        assert_eq!(
            (u.scheme(), u.host(), u.port(), u.path()),
            (Scheme::Mqtts, "b", 1883, "/t")
        );
        assert_eq!((u.username(), u.password()), (Some("u"), Some("pw")));
        let u = parse("mqtt://b/t").with_scheme(Scheme::Wss).unwrap();
        assert_eq!(u.path(), "/mqtt");
        let u = parse("ws://b/ws").with_scheme(Scheme::Mqtt).unwrap();
        assert_eq!(u.path(), "");
        assert_eq!(
            parse("unix:///s").with_scheme(Scheme::Mqtt),
            Err(UrlError::UnixPath)
        );
    }

    #[test]
    fn unix_urls_name_a_path() {
        let u = parse("unix:///run/mqtt.sock");
        assert_eq!(u.scheme(), Scheme::Unix);
        assert_eq!(u.socket_path(), Some(PathBuf::from("/run/mqtt.sock")));
        assert_eq!(u.to_string(), "unix:///run/mqtt.sock");
        assert_eq!(
            parse("unix:/tmp/a%20b").socket_path(),
            Some("/tmp/a b".into())
        );
        for bad in [
            "unix://host/run/mqtt.sock",
            "unix:///",
            "unix://",
            "unix:relative",
            "unix:///a?b",
        ] {
            assert_eq!(BrokerUrl::parse(bad), Err(UrlError::UnixPath), "{bad}");
        }
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        assert_eq!(
            BrokerUrl::parse("http://b"),
            Err(UrlError::UnsupportedScheme("http".into()))
        );
        assert!(matches!(
            BrokerUrl::parse("b:1883"),
            Err(UrlError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("broker"),
            Err(UrlError::Syntax(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://b:99999"),
            Err(UrlError::Syntax(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://b:x"),
            Err(UrlError::Syntax(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://[::1"),
            Err(UrlError::Syntax(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://[zz::1]"),
            Err(UrlError::Syntax(_))
        ));
        assert_eq!(BrokerUrl::parse("mqtt://b:0"), Err(UrlError::PortZero));
        assert_eq!(
            BrokerUrl::parse("mqtt://"),
            Err(UrlError::MissingHost(Scheme::Mqtt))
        );
        assert!(BrokerUrl::parse("ws://").is_err());
        assert!(matches!(
            BrokerUrl::parse("ws://b/x#y"),
            Err(UrlError::Syntax(_))
        ));
        let err = BrokerUrl::parse("mqtt://u:hunter2@b:99999").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
