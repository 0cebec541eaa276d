//! `midge ctl`: a client of the broker's HTTP admin API (`[http]` in the broker's
//! configuration; the API is under `/api/v1`, behind a bearer token).
//!
//! Human output is aligned tables, as `docker ps` prints them; `--json` prints the server's
//! JSON instead (for listings that span several pages, one object with every item). Exit
//! codes: 0 success; 1 the API answered with an error (its message is printed) or the broker
//! could not be reached; 2 invalid arguments, or a token file that cannot be read.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};

/// Exit code: the API answered with an error, or could not be reached.
const EXIT_API: u8 = 1;
/// Exit code: invalid arguments (the code clap uses too).
const EXIT_USAGE: u8 = 2;

/// The environment variable that holds the API token when `--token-file` is not given.
const TOKEN_ENV: &str = "MIDGE_TOKEN";

/// Items asked for per page when a listing follows `next` to its end (the API's maximum).
const PAGE: usize = 1000;

/// What `midge ctl --help` adds after the options.
pub(crate) const HELP: &str = "\
The token: --token-file PATH (the file of the broker's [http] token_file will do), or the
environment variable MIDGE_TOKEN. There is no --token option: other users of this machine
can read a process's arguments.

Exit codes: 0 success; 1 the API answered with an error (its message is printed) or the
broker could not be reached; 2 invalid arguments, or a token file that cannot be read.";

/// `midge ctl` and its commands.
#[derive(Debug, Args)]
pub(crate) struct CtlArgs {
    /// The broker's HTTP endpoint, as its `[http] bind` sets it.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A file holding the API token (surrounding whitespace ignored). Without it, the
    /// environment variable MIDGE_TOKEN.
    #[arg(long, global = true, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Print the server's JSON rather than tables.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a request after this many seconds.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECONDS")]
    timeout: u64,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// The broker: version, uptime, listeners and its counters.
    Stats,
    /// Connected clients, ordered by client id: all of them, or one page with --limit.
    Clients(Paging),
    /// One connected client, with its subscriptions.
    Client {
        /// The client identifier.
        id: String,
    },
    /// Disconnects a client (MQTT 5.0: DISCONNECT with Administrative action). Its session
    /// stays as its Clean Start and expiry say.
    Kick {
        /// The client identifier.
        id: String,
    },
    /// Retained messages, ordered by topic: all of them, or one page with --limit.
    Retained {
        /// Only topics matching this MQTT filter (such as sensors/#).
        #[arg(long)]
        filter: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Deletes the retained message of a topic.
    DeleteRetained {
        /// The topic name (no wildcards).
        topic: String,
    },
    /// Subscriptions, ordered by filter and client id: all of them, or one page with --limit.
    Subscriptions {
        /// Only subscriptions whose filter is exactly this one.
        #[arg(long)]
        filter: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// The bridges to other brokers: connected or not, what they forwarded, the last error.
    Bridges,
}

/// Paging of a listing.
#[derive(Debug, Args)]
struct Paging {
    /// One page of at most this many (1 to 1000), rather than all of them.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: Option<u16>,
    /// Start after this one (the `next` of the page before); with --limit, one page.
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
}

/// Why a command failed.
#[derive(Debug)]
enum Failure {
    /// The arguments, or the token file.
    Usage(String),
    /// The API answered with an error status.
    Api { status: u16, message: String },
    /// No answer: nothing listens there, a name that does not resolve, a timeout.
    Unreachable(String),
    /// Anything else on the way (a malformed answer).
    Other(String),
}

/// Runs `midge ctl`.
pub(crate) fn main(args: CtlArgs) -> ExitCode {
    let api = match Api::new(&args) {
        Ok(api) => api,
        Err(failure) => return report(failure, &args.url, false),
    };
    let mut out = String::new();
    let result = execute(&api, &args, &mut out);
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(failure, &api.base, api.token.is_some()),
    }
}

/// Prints why a command failed and returns its exit code.
fn report(failure: Failure, url: &str, had_token: bool) -> ExitCode {
    match failure {
        Failure::Usage(message) => {
            eprintln!("midge ctl: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Failure::Api { status, message } => {
            let hint = if status == 401 && !had_token {
                format!(" (no token was sent: give --token-file PATH or set {TOKEN_ENV})")
            } else {
                String::new()
            };
            eprintln!("midge ctl: {message} (HTTP {status}){hint}");
            ExitCode::from(EXIT_API)
        }
        Failure::Unreachable(why) => {
            eprintln!(
                "midge ctl: cannot reach the broker's HTTP API at {url}: {why} (is the broker running, with [http] bind at this address? --url sets it)"
            );
            ExitCode::from(EXIT_API)
        }
        Failure::Other(message) => {
            eprintln!("midge ctl: {message}");
            ExitCode::from(EXIT_API)
        }
    }
}

fn execute(api: &Api, args: &CtlArgs, out: &mut String) -> Result<(), Failure> {
    match &args.command {
        CtlCommand::Stats => {
            let body = api.get("/api/v1/broker", &[])?;
            if args.json {
                return raw(out, &body);
            }
            out.push_str(&stats_text(&parse(&body)?, now_unix()));
        }
        CtlCommand::Clients(paging) => {
            let listing = Listing::new("/api/v1/clients", "clients", paging, args.json);
            let now = now_unix();
            listing.show(api, &[], out, |clients| clients_table(clients, now))?;
        }
        CtlCommand::Client { id } => {
            let body = api.get(&format!("/api/v1/clients/{}", segment(id)), &[])?;
            if args.json {
                return raw(out, &body);
            }
            out.push_str(&client_text(&parse(&body)?, now_unix()));
        }
        CtlCommand::Kick { id } => {
            // The id in the query: a path segment `.` or `..` would not survive a proxy.
            api.call(Method::Post, "/api/v1/kick", &[("client_id", id)])?;
            if !args.json {
                let _ = writeln!(out, "kicked {}", clean(id));
            }
        }
        CtlCommand::Retained { filter, paging } => {
            let query = filter
                .iter()
                .map(|f| ("filter", f.as_str()))
                .collect::<Vec<_>>();
            Listing::new("/api/v1/retained", "topics", paging, args.json).show(
                api,
                &query,
                out,
                retained_table,
            )?;
        }
        CtlCommand::DeleteRetained { topic } => {
            api.call(Method::Delete, "/api/v1/retained", &[("topic", topic)])?;
            if !args.json {
                let _ = writeln!(out, "deleted the retained message of {}", clean(topic));
            }
        }
        CtlCommand::Subscriptions { filter, paging } => {
            let query = filter
                .iter()
                .map(|f| ("filter", f.as_str()))
                .collect::<Vec<_>>();
            Listing::new("/api/v1/subscriptions", "subscriptions", paging, args.json).show(
                api,
                &query,
                out,
                subscriptions_table,
            )?;
        }
        CtlCommand::Bridges => {
            let body = api.get("/api/v1/bridges", &[])?;
            if args.json {
                return raw(out, &body);
            }
            let value = parse(&body)?;
            let bridges = value["bridges"].as_array().map_or(&[][..], Vec::as_slice);
            out.push_str(&bridges_table(bridges).render());
        }
    }
    Ok(())
}

/// Appends the server's JSON as it came, ending with a newline.
fn raw(out: &mut String, body: &str) -> Result<(), Failure> {
    out.push_str(body.trim_end());
    out.push('\n');
    Ok(())
}

fn parse(body: &str) -> Result<Value, Failure> {
    serde_json::from_str(body)
        .map_err(|e| Failure::Other(format!("the API answered what is not JSON: {e}")))
}

/// A listing of the admin API: where it is, the key of its items, and how to page and print it.
struct Listing<'a> {
    path: &'a str,
    key: &'a str,
    paging: &'a Paging,
    json: bool,
}

impl<'a> Listing<'a> {
    fn new(path: &'a str, key: &'a str, paging: &'a Paging, json: bool) -> Self {
        Self {
            path,
            key,
            paging,
            json,
        }
    }

    /// Prints the listing: the JSON (see [`list`]), or `table` of its items, with the
    /// `--after` of the next page when one page was asked for and more remain.
    fn show(
        &self,
        api: &Api,
        query: &[(&str, &str)],
        out: &mut String,
        table: impl FnOnce(&[Value]) -> Table,
    ) -> Result<(), Failure> {
        let page = list(api, self, query, out)?;
        if let Some(page) = page {
            out.push_str(&table(items(&page, self.key)).render());
            if let Some(next) = page.get("next").and_then(Value::as_str) {
                let _ = writeln!(out, "(more: --after={})", clean(next));
            }
        }
        Ok(())
    }
}

/// A listing: one page with `--limit`, or every page, following `next`. With `json`, prints
/// the JSON (one page as it came; several merged into one object whose `next` is null) and
/// returns None; otherwise returns the page, or the pages merged.
fn list(
    api: &Api,
    listing: &Listing<'_>,
    query: &[(&str, &str)],
    out: &mut String,
) -> Result<Option<Value>, Failure> {
    let Listing {
        path,
        key,
        paging,
        json,
    } = *listing;
    let mut after = paging.after.clone();
    let one_page = paging.limit.is_some();
    let limit = paging.limit.map_or(PAGE, usize::from).to_string();
    let mut merged: Option<Value> = None;
    loop {
        let mut q = query.to_vec();
        q.push(("limit", &limit));
        if let Some(a) = &after {
            q.push(("after", a));
        }
        let body = api.get(path, &q)?;
        if one_page && json {
            raw(out, &body)?;
            return Ok(None);
        }
        let page = parse(&body)?;
        let next = page.get("next").and_then(Value::as_str).map(str::to_owned);
        let done = one_page || next.is_none() || next == after;
        merged = Some(match merged {
            None => page,
            Some(mut all) => {
                let more = items(&page, key).to_vec();
                if let Some(Value::Array(list)) = all.get_mut(key) {
                    list.extend(more);
                }
                // The latest figures (such as `total`) of the last page.
                if let (Value::Object(all), Value::Object(page)) = (&mut all, page) {
                    for (k, v) in page {
                        if k != key {
                            all.insert(k, v);
                        }
                    }
                }
                all
            }
        });
        if done {
            break;
        }
        after = next;
    }
    let mut all = merged.unwrap_or(Value::Null);
    if !one_page {
        if let Value::Object(map) = &mut all {
            map.insert("next".into(), Value::Null);
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&all).unwrap_or_default();
        raw(out, &text)?;
        return Ok(None);
    }
    Ok(Some(all))
}

fn items<'a>(page: &'a Value, key: &str) -> &'a [Value] {
    page.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[derive(Clone, Copy, Debug)]
enum Method {
    Get,
    Post,
    Delete,
}

/// The admin API at one address, with its token.
struct Api {
    agent: ureq::Agent,
    /// `http://host:port`, without a trailing slash.
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(args: &CtlArgs) -> Result<Self, Failure> {
        let base = args.url.trim_end_matches('/').to_owned();
        let Some(rest) = base.strip_prefix("http://") else {
            return Err(Failure::Usage(if base.starts_with("https://") {
                format!("--url {base}: midge ctl speaks plain HTTP only (the broker's [http] endpoint has no TLS); give http://HOST:PORT")
            } else {
                format!("--url {base}: give http://HOST:PORT")
            }));
        };
        if rest.is_empty() || rest.contains(['/', '?', '#']) {
            return Err(Failure::Usage(format!(
                "--url {base}: give http://HOST:PORT, without a path"
            )));
        }
        if args.timeout == 0 {
            return Err(Failure::Usage("--timeout must be at least 1 second".into()));
        }
        let token = token(args.token_file.as_ref(), std::env::var(TOKEN_ENV).ok())?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(args.timeout)))
            .max_redirects(0)
            .user_agent(concat!("midge-ctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Self { agent, base, token })
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<String, Failure> {
        self.call(Method::Get, path, query)
    }

    /// Sends a request; the body of a 2xx answer, or the failure.
    fn call(&self, method: Method, path: &str, query: &[(&str, &str)]) -> Result<String, Failure> {
        let mut url = format!("{}{path}", self.base);
        for (i, (k, v)) in query.iter().enumerate() {
            let _ = write!(
                url,
                "{}{k}={}",
                if i == 0 { '?' } else { '&' },
                utf8_percent_encode(v, QUERY_VALUE)
            );
        }
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match method {
            Method::Get => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            Method::Delete => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            Method::Post => {
                let mut r = self.agent.post(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send_empty()
            }
        };
        let mut response = result.map_err(transport_failure)?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(|e| Failure::Other(format!("reading the answer: {e}")))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(Failure::Api {
            status: status.as_u16(),
            message: error_message(status.as_u16(), status.canonical_reason(), &body),
        })
    }
}

/// What went wrong before an answer came.
fn transport_failure(e: ureq::Error) -> Failure {
    use std::io::ErrorKind;
    match e {
        ureq::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => Failure::Unreachable("connection refused".into()),
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof => {
                Failure::Unreachable(format!("the connection closed ({io})"))
            }
            ErrorKind::TimedOut => Failure::Unreachable("timed out".into()),
            _ => Failure::Unreachable(io.to_string()),
        },
        ureq::Error::HostNotFound => Failure::Unreachable("host not found".into()),
        ureq::Error::Timeout(t) => Failure::Unreachable(format!("timed out ({t})")),
        ureq::Error::ConnectionFailed => Failure::Unreachable("connection failed".into()),
        ureq::Error::BadUri(u) => Failure::Usage(format!("invalid URL: {u}")),
        other => Failure::Other(other.to_string()),
    }
}

/// The message of an error answer: its JSON `error`, or its text, or the status's name.
fn error_message(status: u16, reason: Option<&str>, body: &str) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) {
        if let Some(Value::String(message)) = map.get("error") {
            return clean(message);
        }
    }
    let text = body.trim();
    if !text.is_empty() && text.len() <= 200 {
        return clean(text);
    }
    reason.map_or_else(|| format!("HTTP error {status}"), str::to_owned)
}

/// The token: from `file` (trimmed), else from `env` (the value of MIDGE_TOKEN).
fn token(file: Option<&PathBuf>, env: Option<String>) -> Result<Option<String>, Failure> {
    let token = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::Usage(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Err(Failure::Usage(format!(
                    "the token file {} is empty",
                    path.display()
                )));
            }
            token
        }
        None => match env.map(|t| t.trim().to_owned()) {
            Some(t) if !t.is_empty() => t,
            _ => return Ok(None),
        },
    };
    if token.chars().any(|c| c.is_control()) {
        return Err(Failure::Usage(
            "the token holds control characters: it cannot go in an HTTP header".into(),
        ));
    }
    Ok(Some(token))
}

/// Characters of a query value sent as they are: what is left unreserved.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A client id as one path segment (`/` and every other reserved character encoded).
fn segment(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// Text from the broker made safe for a terminal and a table: control characters (escape
/// sequences, line breaks) shown escaped.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        // Control characters, and the marks that reorder text on a terminal (a client id
        // holding U+202E would turn the rest of its row around).
        let reorders = matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        );
        // What Rust's debug escaping of a string escapes past its first character, besides
        // quotes and backslashes: invisible format characters, line and paragraph
        // separators (combining marks after a letter stay).
        let invisible =
            !matches!(c, '"' | '\'' | '\\') && format!("a{c}").escape_debug().count() > 2;
        if c.is_control() || reorders || invisible {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A field of a JSON object as table text: strings cleaned, null and absent as `-`,
/// booleans as yes and no.
fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => clean(s),
        Some(Value::Bool(b)) => (if *b { "yes" } else { "no" }).into(),
        Some(other) => clean(&other.to_string()),
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A duration as `3d 4h`, `2h 5m`, `4m 10s`, `12s`: its two largest units.
fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// How long ago the Unix time `key` of `v` was.
fn age(v: &Value, key: &str, now: u64) -> String {
    match v.get(key).and_then(Value::as_u64) {
        Some(t) => human_duration(now.saturating_sub(t)),
        None => "-".into(),
    }
}

/// A table printed as `docker ps` prints one: a header in capitals, columns left-aligned
/// and three spaces apart, no trailing spaces.
#[derive(Debug, Default)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, cell) in cells.enumerate().take(columns) {
                if i > 0 {
                    text.push_str("   ");
                }
                text.push_str(cell);
                if i + 1 < columns {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&mut self.header.iter().copied());
        for row in &self.rows {
            line(&mut row.iter().map(String::as_str));
        }
        out
    }
}

/// `name value` lines with the values aligned.
fn pairs(rows: &[(String, String)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}   {v}");
    }
    out
}

fn stats_text(v: &Value, now: u64) -> String {
    let info = v.get("info").unwrap_or(&Value::Null);
    let mut rows = vec![
        ("version".to_owned(), field(info, "version")),
        (
            "uptime".to_owned(),
            info.get("uptime_secs")
                .and_then(Value::as_u64)
                .map_or("-".into(), human_duration),
        ),
    ];
    if info.get("started_at_unix").is_some() {
        rows.push((
            "started".to_owned(),
            format!("{} ago", age(info, "started_at_unix", now)),
        ));
    }
    rows.push((
        "persistence".to_owned(),
        match info.get("persistence") {
            Some(Value::Bool(true)) => "on".into(),
            Some(Value::Bool(false)) => "off".into(),
            _ => "-".into(),
        },
    ));
    let mut out = pairs(&rows);
    if let Some(listeners) = info.get("listeners").and_then(Value::as_array) {
        out.push('\n');
        let mut t = Table::new(&["LISTENER", "ADDRESS", "CONNECTIONS"]);
        for l in listeners {
            t.row(vec![
                field(l, "index"),
                field(l, "name"),
                field(l, "connections"),
            ]);
        }
        out.push_str(&t.render());
    }
    if let Some(Value::Object(stats)) = v.get("stats") {
        out.push('\n');
        out.push_str(&pairs(&stat_rows(stats)));
    }
    out
}

/// The broker's counters, in the server's order, nested objects flattened as `a.b`.
fn stat_rows(stats: &Map<String, Value>) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for (k, v) in stats {
        match v {
            Value::Object(inner) => {
                for (ik, iv) in stat_rows(inner) {
                    rows.push((format!("{k}.{ik}"), iv));
                }
            }
            Value::String(s) => rows.push((clean(k), clean(s))),
            Value::Null => rows.push((clean(k), "-".into())),
            other => rows.push((clean(k), other.to_string())),
        }
    }
    rows
}

fn clients_table(clients: &[Value], now: u64) -> Table {
    let mut t = Table::new(&[
        "CLIENT ID",
        "USERNAME",
        "ADDRESS",
        "PROTOCOL",
        "KEEPALIVE",
        "CLEAN",
        "CONNECTED",
        "INFLIGHT",
        "QUEUED",
    ]);
    for c in clients {
        t.row(vec![
            field(c, "client_id"),
            field(c, "username"),
            field(c, "address"),
            field(c, "protocol"),
            field(c, "keepalive"),
            field(c, "clean_start"),
            age(c, "connected_since_unix", now),
            field(c, "inflight"),
            field(c, "queued"),
        ]);
    }
    t
}

fn client_text(c: &Value, now: u64) -> String {
    let rows = [
        ("client id", field(c, "client_id")),
        ("username", field(c, "username")),
        ("address", field(c, "address")),
        ("listener", field(c, "listener")),
        ("protocol", field(c, "protocol")),
        ("keepalive", field(c, "keepalive")),
        ("clean start", field(c, "clean_start")),
        (
            "connected",
            format!("{} ago", age(c, "connected_since_unix", now)),
        ),
        ("inflight", field(c, "inflight")),
        ("queued", field(c, "queued")),
    ];
    let rows: Vec<(String, String)> = rows.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let mut out = pairs(&rows);
    out.push('\n');
    let subs = items(c, "subscriptions");
    if subs.is_empty() {
        out.push_str("no subscriptions\n");
    } else {
        let mut t = Table::new(&[
            "FILTER",
            "SHARE GROUP",
            "QOS",
            "NO LOCAL",
            "RETAIN AS PUBLISHED",
            "RETAIN HANDLING",
        ]);
        for s in subs {
            t.row(vec![
                field(s, "filter"),
                field(s, "share_group"),
                field(s, "qos"),
                field(s, "no_local"),
                field(s, "retain_as_published"),
                field(s, "retain_handling"),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

fn retained_table(topics: &[Value]) -> Table {
    let mut t = Table::new(&["TOPIC", "QOS", "BYTES", "PREVIEW"]);
    for r in topics {
        t.row(vec![
            field(r, "topic"),
            field(r, "qos"),
            field(r, "payload_bytes"),
            field(r, "payload_preview"),
        ]);
    }
    t
}

fn subscriptions_table(subs: &[Value]) -> Table {
    let mut t = Table::new(&[
        "FILTER",
        "CLIENT ID",
        "SHARE GROUP",
        "QOS",
        "NO LOCAL",
        "RETAIN AS PUBLISHED",
        "RETAIN HANDLING",
    ]);
    for s in subs {
        t.row(vec![
            field(s, "filter"),
            field(s, "client_id"),
            field(s, "share_group"),
            field(s, "qos"),
            field(s, "no_local"),
            field(s, "retain_as_published"),
            field(s, "retain_handling"),
        ]);
    }
    t
}

fn bridges_table(bridges: &[Value]) -> Table {
    let mut t = Table::new(&[
        "BRIDGE",
        "STATE",
        "CONNECTIONS",
        "OUT",
        "IN",
        "REFUSED",
        "LAST ERROR",
    ]);
    for b in bridges {
        let state = match b["connected"].as_bool() {
            Some(true) => "connected",
            _ => "not connected",
        };
        let refused =
            b["refused_out"].as_u64().unwrap_or(0) + b["refused_in"].as_u64().unwrap_or(0);
        t.row(vec![
            field(b, "name"),
            state.to_owned(),
            field(b, "connections"),
            field(b, "forwarded_out"),
            field(b, "forwarded_in"),
            refused.to_string(),
            field(b, "last_error"),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn clean_escapes_control_characters_and_reordering_marks() {
        assert_eq!(clean("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(clean("x\u{202e}yz"), "x\\u{202e}yz");
        assert_eq!(clean("é/+/#"), "é/+/#");
        assert_eq!(clean("a\u{200b}b\u{2028}"), "a\\u{200b}b\\u{2028}");
        assert_eq!(clean("say \"hi\" it's"), "say \"hi\" it's");
        assert_eq!(
            clean("e\u{301}\u{2764}\u{fe0f}"),
            "e\u{301}\u{2764}\u{fe0f}"
        );
    }

    #[test]
    fn tables_align_like_docker_ps() {
        let mut t = Table::new(&["CLIENT ID", "QOS", "NOTE"]);
        t.row(vec!["a".into(), "1".into(), "x".into()]);
        t.row(vec!["longer-id".into(), "0".into(), String::new()]);
        t.row(vec!["ü".into(), "2".into(), "last".into()]);
        assert_eq!(
            t.render(),
            "CLIENT ID   QOS   NOTE\n\
             a           1     x\n\
             longer-id   0\n\
             ü           2     last\n"
        );
        // A header alone for no rows.
        assert_eq!(Table::new(&["A", "B"]).render(), "A   B\n");
    }

    #[test]
    fn bridges_table_from_the_api_shape() {
        let bridges = json!([
            {"name": "cloud", "addresses": ["a:1883"], "connected": true, "connections": 2,
             "forwarded_out": 10, "forwarded_in": 3, "refused_out": 1, "refused_in": 1,
             "last_error": null},
            {"name": "bad\u{1b}[31m", "addresses": [], "connected": false, "connections": 0,
             "forwarded_out": 0, "forwarded_in": 0, "refused_out": 0, "refused_in": 0,
             "last_error": "transport error: connection refused"}
        ]);
        let text = bridges_table(bridges.as_array().expect("array")).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("BRIDGE"), "{text}");
        assert!(
            lines[1].starts_with("cloud")
                && lines[1].contains("connected")
                && lines[1].contains(" 2 "),
            "{text}"
        );
        assert!(
            lines[2].contains("not connected") && lines[2].contains("connection refused"),
            "{text}"
        );
        // Control characters from the API are shown escaped, never sent to the terminal.
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn clients_table_from_the_api_shape() {
        let page = json!({
            "clients": [
                {"client_id": "sensor-1", "username": null, "address": "127.0.0.1:50000",
                 "listener": 0, "protocol": "5.0", "keepalive": 60, "clean_start": true,
                 "connected_since_unix": 4_715, "inflight": 0, "queued": 3},
                {"client_id": "bad\u{1b}[31m", "username": "alice", "address": "127.0.0.1:50001",
                 "listener": 0, "protocol": "3.1.1", "keepalive": 30, "clean_start": false,
                 "connected_since_unix": 1_000, "inflight": 12, "queued": 0}
            ],
            "total": 2,
            "next": null
        });
        let text = clients_table(items(&page, "clients"), 4_725).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("CLIENT ID       USERNAME   ADDRESS"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("sensor-1        -          127.0.0.1:50000"),
            "{text}"
        );
        assert!(lines[1].contains("   10s   "), "{text}");
        // An escape sequence in a client id is shown, not sent to the terminal.
        assert!(lines[2].starts_with("bad\\u{1b}[31m   alice"), "{text}");
        assert!(lines[2].contains("1h 2m"), "{text}");
        assert!(!text.contains('\u{1b}'));
    }

    #[test]
    fn stats_and_client_detail() {
        let v = json!({
            "info": {"version": "0.1.0", "uptime_secs": 3_700, "started_at_unix": 100,
                     "listeners": [{"index": 0, "name": "127.0.0.1:1883 (mqtt)", "connections": 2}],
                     "persistence": false},
            "stats": {"connections": 2, "messages_received": 10}
        });
        let text = stats_text(&v, 3_800);
        assert!(text.contains("version       0.1.0\n"), "{text}");
        assert!(text.contains("uptime        1h 1m\n"), "{text}");
        assert!(text.contains("persistence   off\n"), "{text}");
        assert!(text.contains("LISTENER   ADDRESS                 CONNECTIONS\n0          127.0.0.1:1883 (mqtt)   2\n"), "{text}");
        assert!(
            text.contains("connections         2\nmessages_received   10\n"),
            "{text}"
        );
        let c = json!({"client_id": "c", "username": null, "address": "a", "listener": 0,
            "protocol": "5.0", "keepalive": 60, "clean_start": true, "connected_since_unix": 5,
            "inflight": 0, "queued": 0,
            "subscriptions": [{"client_id": "c", "filter": "a/#", "share_group": null, "qos": 1,
                "no_local": false, "retain_as_published": true, "retain_handling": 0}]});
        let text = client_text(&c, 65);
        assert!(text.contains("connected     1m 0s ago\n"), "{text}");
        assert!(
            text.contains("a/#      -             1     no         yes                   0\n"),
            "{text}"
        );
    }

    #[test]
    fn error_messages_and_durations() {
        assert_eq!(
            error_message(401, Some("Unauthorized"), r#"{"error": "bad token"}"#),
            "bad token"
        );
        assert_eq!(error_message(404, Some("Not Found"), ""), "Not Found");
        assert_eq!(error_message(500, None, "oops\n"), "oops");
        assert_eq!(error_message(500, None, ""), "HTTP error 500");
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(61), "1m 1s");
        assert_eq!(human_duration(7_260), "2h 1m");
        assert_eq!(human_duration(90_000), "1d 1h");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(
            utf8_percent_encode("s/+/#", QUERY_VALUE).to_string(),
            "s%2F%2B%2F%23"
        );
    }

    #[test]
    fn tokens_come_from_the_file_then_the_environment() {
        let dir = std::env::temp_dir().join(format!("midge-ctl-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("token");
        std::fs::write(&file, "  secret\n").expect("write");
        assert_eq!(
            token(Some(&file), Some("env".into()))
                .expect("ok")
                .as_deref(),
            Some("secret")
        );
        assert_eq!(
            token(None, Some(" env ".into())).expect("ok").as_deref(),
            Some("env")
        );
        assert_eq!(token(None, Some(String::new())).expect("ok"), None);
        assert_eq!(token(None, None).expect("ok"), None);
        std::fs::write(&file, "\n").expect("write");
        assert!(matches!(token(Some(&file), None), Err(Failure::Usage(m)) if m.contains("empty")));
        let missing = dir.join("missing");
        assert!(
            matches!(token(Some(&missing), None), Err(Failure::Usage(m)) if m.contains("cannot read"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
