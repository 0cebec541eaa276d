//! The broker's own authentication and authorization, from its configuration: who may connect
//! without credentials, the password file, the ACL file, and the limit on failed password
//! checks. [`FileAuth`] is a set of [`Hooks`], asked in front of a library user's own (see the
//! `(A, B)` implementation of [`Hooks`]), and reloaded from its files on SIGHUP
//! ([`BrokerHandle::reload`](crate::BrokerHandle::reload)).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use midge_auth::acl::{Access, AclClient, AclFile};
use midge_auth::passwd::PasswordFile;
use midge_auth::scram::{self, ScramServer};
use midge_auth::FileError;
use midge_codec::{ReasonCode, SubscriptionOptions};
use midge_proto::Message;

use crate::config::{AuthConfig, BrokerConfig};
use crate::hooks::{
    AuthExchange, AuthRequest, AuthStep, Authenticator, ClientInfo, ConnectRequest, Hooks,
    Verification,
};
use sha2::{Digest, Sha256};

/// Client addresses whose failed password checks are tracked at once. Past it, the address
/// tracked longest is forgotten to make room: the table never grows beyond it.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// The address that failures are counted against: an IPv4 address, or an IPv6 /64 (what one
/// client is given), so that one client cannot spread its guesses over 2^64 addresses.
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !u128::from(u64::MAX),
        )),
        v4 => v4,
    }
}

/// The broker's file-based authentication and authorization (the `[auth]` section and the
/// listeners' `allow_anonymous` and `password_file`).
///
/// - A client with a user name gives its password, checked against the password file of its
///   listener on the broker's verification threads ([`Hooks::verify`]), in constant time,
///   with the same refusal (0x86 Bad user name or password; 4 for 3.x) whether the user
///   exists or not. An address with too many failures in a window is refused at once (0x9F
///   Connection rate exceeded; 3 for 3.x) without a check.
/// - A client without a user name, or with one on a listener without a password file, is
///   anonymous: accepted where `allow_anonymous` says; when it is unset, only over loopback
///   and Unix sockets, and only where no password file is configured. Otherwise refused with
///   0x87 Not authorized (5 for 3.x).
/// - A user name the client's certificate or an enhanced authentication proved is accepted
///   as it is.
/// - The ACL file, when there is one, decides every publish, subscription and delivery.
///
/// `$SYS` publishes are left to the hooks beside it ([`Hooks::authorize_sys_publish`]).
pub struct FileAuth {
    auth: AuthConfig,
    /// Each listener's `allow_anonymous` and `password_file`, by index.
    listeners: Vec<ListenerAuth>,
    rules: Arc<ArcSwap<Rules>>,
    /// Bumped by every reload: an ACL answer remembered at one generation holds until the
    /// next ([`FileAuth::acl_generation`]).
    generation: std::sync::atomic::AtomicU64,
    reloading: Mutex<()>,
    failures: Arc<Mutex<Failures>>,
    /// SCRAM-SHA-256 over the password files' SCRAM entries.
    scram: Arc<Scram>,
}

impl std::fmt::Debug for FileAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileAuth")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
struct ListenerAuth {
    allow_anonymous: Option<bool>,
    password_file: Option<PathBuf>,
}

/// What the files said when last loaded.
#[derive(Default)]
struct Rules {
    /// Each listener's password file, by listener index.
    passwords: Vec<Option<Arc<Passwords>>>,
    acl: Option<AclFile>,
}

/// A password file, with what SCRAM answers for users it does not have.
struct Passwords {
    file: PasswordFile,
    /// Keys the made-up salts of unknown users: derived from the file, so that the same
    /// unknown user gets the same salt across restarts, and nobody without the file can
    /// compute it.
    mock_key: [u8; 32],
}

impl std::ops::Deref for Passwords {
    type Target = PasswordFile;

    fn deref(&self) -> &PasswordFile {
        &self.file
    }
}

/// What one listener lets in without credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Anonymous {
    Allowed,
    LocalOnly,
    Refused,
}

impl FileAuth {
    /// Loads the files `config` names. A file that cannot be read, or has a malformed line, is
    /// an error naming the file and the line.
    pub fn new(config: &BrokerConfig) -> Result<Self, FileError> {
        let listeners = config
            .listeners
            .iter()
            .map(|l| ListenerAuth {
                allow_anonymous: l.allow_anonymous.or(config.auth.allow_anonymous),
                password_file: l
                    .password_file
                    .clone()
                    .or_else(|| config.auth.password_file.clone()),
            })
            .collect();
        let rules = Arc::new(ArcSwap::from_pointee(Rules::default()));
        let failures: Arc<Mutex<Failures>> = Arc::default();
        let auth = Self {
            scram: Arc::new(Scram {
                rules: rules.clone(),
                failures: failures.clone(),
                limit: Limit::of(&config.auth),
            }),
            auth: config.auth.clone(),
            listeners,
            rules,
            generation: std::sync::atomic::AtomicU64::new(0),
            reloading: Mutex::new(()),
            failures,
        };
        auth.rules.store(Arc::new(auth.load()?));
        Ok(auth)
    }

    /// Reads the password and ACL files again; on success the new rules apply from the next
    /// check on. A file that fails leaves every rule as it was, and the error names the file
    /// and the line.
    pub fn reload(&self) -> Result<(), FileError> {
        // One reload at a time, so that the files read last are the rules stored last.
        let _reloading = lock(&self.reloading);
        let rules = self.load()?;
        self.rules.store(Arc::new(rules));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The rules' generation: an ACL answer for a client and a topic stays the same as long
    /// as this does (the answer depends on nothing else), so a connection may remember it.
    pub(crate) fn acl_generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether `client` may have `access` to `topic` by the ACL file: `None` when there is
    /// none.
    pub(crate) fn acl_decision(
        &self,
        client: &ClientInfo,
        topic: &str,
        access: Access,
    ) -> Option<bool> {
        let rules = self.rules.load();
        let acl = rules.acl.as_ref()?;
        Some(acl.check(&acl_client(client, &rules), topic, access))
    }

    /// Whether any file is configured: something to reload.
    pub fn has_files(&self) -> bool {
        self.auth.acl_file.is_some() || self.listeners.iter().any(|l| l.password_file.is_some())
    }

    /// One line per listener, for the log at start: what it accepts, and how to change it.
    pub fn describe(&self, listener: usize) -> String {
        let rules = self.rules.load();
        let users = match rules.passwords.get(listener).and_then(Option::as_ref) {
            Some(file) => format!("{} users from the password file", file.len()),
            None => "no password file".to_owned(),
        };
        let anonymous = match self.anonymous(listener, &rules) {
            Anonymous::Allowed => "anonymous clients from anywhere",
            Anonymous::LocalOnly => {
                "anonymous clients over loopback and Unix sockets only (set allow_anonymous = true to accept them from the network)"
            }
            Anonymous::Refused => "no anonymous clients",
        };
        let acl = if rules.acl.is_some() {
            "topics limited by the ACL file"
        } else {
            "every topic"
        };
        format!("{users}; {anonymous}; {acl}")
    }

    fn load(&self) -> Result<Rules, FileError> {
        let mut loaded: HashMap<&Path, Arc<Passwords>> = HashMap::new();
        let mut passwords = Vec::with_capacity(self.listeners.len());
        for listener in &self.listeners {
            let file = match &listener.password_file {
                None => None,
                Some(path) => Some(match loaded.get(path.as_path()) {
                    Some(file) => file.clone(),
                    None => {
                        let file = PasswordFile::read(path)?;
                        let mock_key = mock_key(&file);
                        let file = Arc::new(Passwords { file, mock_key });
                        loaded.insert(path, file.clone());
                        file
                    }
                }),
            };
            passwords.push(file);
        }
        let acl = match &self.auth.acl_file {
            Some(path) => Some(AclFile::read(path)?),
            None => None,
        };
        Ok(Rules { passwords, acl })
    }

    fn anonymous(&self, listener: usize, rules: &Rules) -> Anonymous {
        let allow = self.listeners.get(listener).and_then(|l| l.allow_anonymous);
        let has_passwords = rules.passwords.get(listener).is_some_and(Option::is_some);
        match allow {
            Some(true) => Anonymous::Allowed,
            Some(false) => Anonymous::Refused,
            None if has_passwords => Anonymous::Refused,
            None => Anonymous::LocalOnly,
        }
    }

    /// Whether a password file applies to clients on `listener`: then every client it lets
    /// in with a user name gave that user's password.
    pub(crate) fn checks_passwords(&self, listener: usize) -> bool {
        self.rules
            .load()
            .passwords
            .get(listener)
            .is_some_and(Option::is_some)
    }

    /// The password file that applies to a client on `listener`.
    fn passwords(&self, listener: usize) -> Option<Arc<Passwords>> {
        self.rules.load().passwords.get(listener).cloned().flatten()
    }

    /// Whether the ACL, if there is one, lets `client` have `access` to `message`'s topic.
    /// Without one this is a pointer load: the topic is not even looked at.
    fn acl_allows(&self, client: &ClientInfo, message: &Message, access: Access) -> bool {
        let rules = self.rules.load();
        match &rules.acl {
            None => true,
            Some(acl) => acl.check(&acl_client(client, &rules), message.topic.as_str(), access),
        }
    }
}

/// The client as the ACL sees it: a user name counts only once it was proven; a claimed one
/// (on a listener with no password file) gets the anonymous rules, or a guest could claim to
/// be any user. A name its listener's password file proved counts while the file has it: a
/// user a reload removed is anonymous from then on.
fn acl_client<'a>(client: &'a ClientInfo, rules: &Rules) -> AclClient<'a> {
    let username = client
        .username
        .as_ref()
        .filter(|_| client.username_verified())
        .map(|u| u.as_str())
        .filter(|user| {
            !client.by_password_file
                || rules
                    .passwords
                    .get(client.listener())
                    .and_then(Option::as_ref)
                    .is_some_and(|file| file.contains(user))
        });
    AclClient {
        client_id: client.client_id.as_str(),
        username,
    }
}

impl Hooks for FileAuth {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        if request.username_verified {
            return Ok(());
        }
        let rules = self.rules.load();
        let passwords = rules
            .passwords
            .get(request.listener)
            .and_then(Option::as_ref);
        match (request.username, passwords) {
            (Some(_), Some(_)) => self
                .scram
                .limit
                .check(&self.failures, request.peer, request.now),
            // 5.0 allows a password without a user name [MQTT-3.1.2-22 is 3.1.1's rule
            // against it]; with a password file it names nobody, so it cannot be right.
            (None, Some(_)) if request.password.is_some() => {
                Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
            }
            // No credentials, or a user name that nothing checks: an anonymous client.
            _ => match self.anonymous(request.listener, &rules) {
                Anonymous::Allowed => Ok(()),
                Anonymous::LocalOnly if request.local => Ok(()),
                Anonymous::LocalOnly | Anonymous::Refused => Err(ReasonCode::NOT_AUTHORIZED),
            },
        }
    }

    fn verify(&self, request: &ConnectRequest<'_>) -> Option<Verification> {
        if request.username_verified {
            return None;
        }
        let username = request.username?.to_owned();
        let file = self.passwords(request.listener)?;
        // No password is a wrong password: checked like one, so that it takes as long.
        let password = request.password.unwrap_or_default().to_vec();
        let limit = self.scram.limit;
        let failures = self.failures.clone();
        let peer = request.peer;
        let now = request.now;
        Some(Box::new(move || {
            // Checks run in the order their CONNECTs came: asked again as it begins, the limit
            // counts the failures of the checks before it. A storm of wrong passwords sent at
            // once gets no more hashed than a paced one (the limit, plus one per verification
            // thread), while clients with the right password, however many at once, all pass.
            limit.check(&failures, peer, now)?;
            if file.verify(&username, &password) {
                Ok(())
            } else {
                limit.record(&failures, peer, now);
                Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
            }
        }))
    }

    fn authenticator(&self, method: &str) -> Option<Arc<dyn Authenticator>> {
        let offered =
            method == scram::METHOD && self.rules.load().passwords.iter().any(Option::is_some);
        offered.then(|| self.scram.clone() as Arc<dyn Authenticator>)
    }

    fn authorize_publish(&self, client: &ClientInfo, message: &Message) -> Result<(), ReasonCode> {
        if self.acl_allows(client, message, Access::Write) {
            Ok(())
        } else {
            Err(ReasonCode::NOT_AUTHORIZED)
        }
    }

    fn authorize_sys_publish(
        &self,
        _client: &ClientInfo,
        _message: &Message,
    ) -> Result<(), ReasonCode> {
        Ok(())
    }

    fn authorize_subscribe(
        &self,
        client: &ClientInfo,
        filter: &str,
        _options: &SubscriptionOptions,
    ) -> Result<(), ReasonCode> {
        let rules = self.rules.load();
        let allowed = match &rules.acl {
            None => true,
            Some(acl) => acl.check_subscribe(&acl_client(client, &rules), filter),
        };
        if allowed {
            Ok(())
        } else {
            Err(ReasonCode::NOT_AUTHORIZED)
        }
    }

    fn authorize_read(&self, client: &ClientInfo, message: &Message) -> bool {
        self.acl_allows(client, message, Access::Read)
    }
}

/// How many failed checks an address may have in a window.
#[derive(Clone, Copy, Debug)]
struct Limit {
    max_failures: u32,
    window: Duration,
}

impl Limit {
    fn of(auth: &AuthConfig) -> Self {
        Self {
            max_failures: auth.max_failed_attempts,
            window: Duration::from_secs(auth.failed_attempts_window_secs),
        }
    }

    /// Refuses a client whose address is past the limit.
    fn check(
        self,
        failures: &Mutex<Failures>,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), ReasonCode> {
        if self.max_failures > 0
            && lock(failures).blocked(peer.ip(), now, self.max_failures, self.window)
        {
            tracing::debug!(%peer, "too many failed authentications from this address, refusing CONNECT");
            return Err(ReasonCode::CONNECTION_RATE_EXCEEDED);
        }
        Ok(())
    }

    fn record(self, failures: &Mutex<Failures>, peer: SocketAddr, now: Instant) {
        if self.max_failures > 0 {
            lock(failures).record(peer.ip(), now, self.window);
        }
    }
}

/// SCRAM-SHA-256 (MQTT 5.0 enhanced authentication) against the SCRAM entries of the
/// listener's password file (`midge passwd --scram`). A user without one, or unknown, fails
/// as a wrong password does, after an exchange that looks the same.
struct Scram {
    rules: Arc<ArcSwap<Rules>>,
    failures: Arc<Mutex<Failures>>,
    limit: Limit,
}

impl Authenticator for Scram {
    fn start(&self, request: &AuthRequest<'_>, data: Option<&[u8]>) -> AuthStep {
        if let Err(code) = self.limit.check(&self.failures, request.peer, request.now) {
            return AuthStep::Failure(code);
        }
        let rules = self.rules.load();
        let Some(passwords) = rules.passwords.get(request.listener).cloned().flatten() else {
            return AuthStep::Failure(ReasonCode::BAD_AUTHENTICATION_METHOD);
        };
        let lookup = |user: &str| passwords.scram_credentials(user).cloned();
        match ScramServer::start(data.unwrap_or_default(), lookup, &passwords.mock_key) {
            Ok((server, first)) => AuthStep::Continue {
                data: Some(first.into()),
                exchange: Box::new(ScramExchange {
                    server,
                    failures: self.failures.clone(),
                    limit: self.limit,
                    peer: request.peer,
                    now: request.now,
                }),
            },
            Err(err) => {
                tracing::debug!(peer = %request.peer, %err, "SCRAM client-first refused");
                self.limit.record(&self.failures, request.peer, request.now);
                AuthStep::Failure(ReasonCode::NOT_AUTHORIZED)
            }
        }
    }
}

struct ScramExchange {
    server: ScramServer,
    failures: Arc<Mutex<Failures>>,
    limit: Limit,
    peer: SocketAddr,
    now: Instant,
}

impl AuthExchange for ScramExchange {
    fn next(self: Box<Self>, data: Option<&[u8]>) -> AuthStep {
        let username = self.server.username().to_owned();
        match self.server.finish(data.unwrap_or_default()) {
            Ok(last) => AuthStep::Success {
                username,
                data: Some(last.into()),
            },
            Err(err) => {
                tracing::debug!(peer = %self.peer, %err, "SCRAM authentication failed");
                self.limit.record(&self.failures, self.peer, self.now);
                AuthStep::Failure(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The key of the made-up SCRAM salts of users a password file does not have: a hash of its
/// first entry, which only the file's readers know. It changes only when that entry does, so
/// adding or removing other users leaves unknown users' salts as they were, as a real user's
/// stays: comparing salts across a change tells nothing.
fn mock_key(file: &PasswordFile) -> [u8; 32] {
    let text = file.to_text();
    let first = text
        .lines()
        .find(|line| line.contains(':') && !line.trim_start().starts_with('#'))
        .unwrap_or_default();
    Sha256::digest(first.as_bytes()).into()
}

/// Failed password checks by client address, within a window each, and the checks each
/// address has under way.
#[derive(Debug, Default)]
struct Failures {
    by_address: HashMap<IpAddr, Window>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

impl Failures {
    /// Whether `peer` is at the limit: its failures in the window, and its checks under way.
    fn blocked(&mut self, peer: IpAddr, now: Instant, limit: u32, window: Duration) -> bool {
        let peer = counted_as(peer);
        let Some(w) = self.by_address.get_mut(&peer) else {
            return false;
        };
        if now.saturating_duration_since(w.started) >= window {
            w.started = now;
            w.failures = 0;
        }
        let blocked = w.failures >= limit;
        if w.failures == 0 {
            self.by_address.remove(&peer);
        }
        blocked
    }

    /// The entry of `peer` (as [`counted_as`] groups it), made if there is room. A full table
    /// first drops the entries with nothing in their window and nothing under way, then the
    /// one whose window began first: an address that fills the table pushes its own entries
    /// out, not every other address's limit.
    fn entry(&mut self, peer: IpAddr, now: Instant, window: Duration) -> Option<&mut Window> {
        let peer = counted_as(peer);
        if !self.by_address.contains_key(&peer) && self.by_address.len() >= MAX_TRACKED_ADDRESSES {
            self.by_address
                .retain(|_, w| now.saturating_duration_since(w.started) < window);
            if self.by_address.len() >= MAX_TRACKED_ADDRESSES {
                // The eighth whose windows began first goes at once, so that the next new
                // addresses find room without another walk of the table.
                let mut started: Vec<(Instant, IpAddr)> = self
                    .by_address
                    .iter()
                    .map(|(ip, w)| (w.started, *ip))
                    .collect();
                let cut = MAX_TRACKED_ADDRESSES / 8;
                started.select_nth_unstable(cut);
                for (_, ip) in started.get(..cut).unwrap_or_default() {
                    self.by_address.remove(ip);
                }
            }
        }
        let w = self.by_address.entry(peer).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(w.started) >= window {
            w.started = now;
            w.failures = 0;
        }
        Some(w)
    }

    fn record(&mut self, peer: IpAddr, now: Instant, window: Duration) {
        if let Some(w) = self.entry(peer, now, window) {
            w.failures = w.failures.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod review_tests {
    use super::*;

    /// The failed-attempt limit is per address, and the table of addresses holds at most
    /// `MAX_TRACKED_ADDRESSES`. Addresses with a failure in the window are never evicted; once
    /// the table is full, a new address is "not tracked": it is never blocked, whatever it
    /// does. 65,536 failures from one IPv6 /64 (one client has 2^64 addresses) lift the
    /// limit for every other address for the rest of the window.
    #[test]
    fn review_a_full_failures_table_lifts_the_limit_for_every_new_address() {
        let mut failures = Failures::default();
        let now = Instant::now();
        let window = Duration::from_secs(60);
        for i in 0..MAX_TRACKED_ADDRESSES as u128 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | i));
            failures.record(ip, now, window);
        }
        let attacker: IpAddr = "198.51.100.1".parse().expect("ip");
        for _ in 0..1_000 {
            failures.record(attacker, now, window);
        }
        assert!(
            failures.blocked(attacker, now, 10, window),
            "1,000 failures from one address, and it is not blocked"
        );
    }
}
