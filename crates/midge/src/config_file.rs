//! `midge broker --config FILE`: reading the file, and errors that name the file, the line and
//! the key, whether the file does not parse (`maximum_qos = "two"`, `bind = "localhost:1883"`)
//! or parses to values the broker refuses (`maximum_qos = 3`).
//!
//! A line is named, never shown: it may hold a secret (a token written without its quotes).

use std::ops::Range;
use std::path::{Path, PathBuf};

use midge_broker::config::ConfigError;
use midge_broker::BrokerConfig;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The exit code of invalid arguments and of a configuration that cannot be used, as clap
/// exits for arguments it refuses (the crate's README: "Exit codes").
pub(crate) const EXIT_USAGE: u8 = 2;

/// The exit codes, for `midge broker --help`.
pub(crate) const BROKER_EXIT_CODES: &str = "\
Exit codes:
  0  stopped by SIGINT or SIGTERM, after a clean shutdown
  1  it could not start or run: the address is in use, a certificate does not load, the
     store is damaged or in use, the last changes could not be stored
  2  invalid arguments or configuration: an unknown flag or key, a value of the wrong type
     or out of range, an address that is not one, an unreadable configuration file";

/// A configuration file as read: its path and text, to place later errors in it.
pub(crate) struct ConfigFile {
    path: PathBuf,
    text: String,
}

impl ConfigFile {
    /// Reads and parses `path`; its relative paths are taken from its directory.
    pub(crate) fn load(path: &Path) -> Result<(BrokerConfig, Self), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file = Self {
            path: path.to_owned(),
            text,
        };
        let mut config = toml::from_str::<BrokerConfig>(&file.text).map_err(|error| {
            let at = error.span().map(|span| span.start);
            file.error(at, error.message())
        })?;
        // Paths in the file are relative to the file, wherever the broker is started from.
        let dir = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(dir);
        Ok((config, file))
    }

    /// What `validate` refused, placed at the key it names when the file sets it.
    pub(crate) fn invalid(&self, error: &ConfigError) -> String {
        let key = match error {
            ConfigError::MaximumQos(_) => Some("mqtt.maximum_qos"),
            ConfigError::Zero(key) => Some(*key),
            ConfigError::VerifyThreads => Some("auth.verify_threads"),
            _ => None,
        };
        self.invalid_key(key, &error.to_string())
    }

    /// `message` about `key` (dotted, as `log.level`), at the key's line if the file sets it.
    pub(crate) fn invalid_key(&self, key: Option<&str>, message: &str) -> String {
        let at = key.and_then(|key| {
            let table = DeTable::parse(&self.text).ok()?;
            find(table.get_ref(), key).map(|span| span.start)
        });
        self.error(at, message)
    }

    /// `invalid configuration FILE, line L, column C (key KEY): MESSAGE`.
    fn error(&self, at: Option<usize>, message: &str) -> String {
        let mut place = String::new();
        if let Some(at) = at {
            if let Some(before) = self.text.get(..at) {
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                place = format!(", line {line}, column {column}");
            }
            let key = DeTable::parse(&self.text)
                .ok()
                .and_then(|table| key_at(table.get_ref(), at));
            // A message that names its key already (`mqtt.maximum_qos must be ...`) needs it
            // no second time.
            if let Some(key) = key.filter(|key| !message.starts_with(key.as_str())) {
                place.push_str(&format!(" (key {key})"));
            }
        }
        format!(
            "invalid configuration {}{place}: {message}",
            self.path.display()
        )
    }
}

/// The span of the value at a dotted `key` (`mqtt.maximum_qos`), if the file sets it.
fn find(table: &DeTable<'_>, key: &str) -> Option<Range<usize>> {
    let (first, rest) = match key.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (key, None),
    };
    let value = table
        .iter()
        .find(|(name, _)| &**name.get_ref() == first)
        .map(|(_, value)| value)?;
    match (rest, value.get_ref()) {
        (None, _) => Some(value.span()),
        (Some(rest), DeValue::Table(inner)) => find(inner, rest),
        (Some(_), _) => None,
    }
}

/// The dotted name of the innermost key at `at` (its name or its value), with `[[listener]]`
/// entries numbered from 1: `listener[2].bind`.
fn key_at(table: &DeTable<'_>, at: usize) -> Option<String> {
    table.iter().find_map(|(name, value)| {
        let name_text: &str = name.get_ref();
        let inner = within(value, at);
        let here = name.span().contains(&at) || value.span().contains(&at);
        match inner {
            Some(inner) => Some(format!("{name_text}{inner}")),
            None => here.then(|| name_text.to_owned()),
        }
    })
}

/// Below `value`: `.key` in a table, `[n]` or `[n].key` in an array.
fn within(value: &Spanned<DeValue<'_>>, at: usize) -> Option<String> {
    match value.get_ref() {
        DeValue::Table(inner) => key_at(inner, at).map(|key| format!(".{key}")),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            let number = index + 1;
            match within(item, at) {
                Some(inner) => Some(format!("[{number}]{inner}")),
                None => item.span().contains(&at).then(|| format!("[{number}]")),
            }
        }),
        _ => None,
    }
}

/// `midge broker --bind`: an IP address (IPv6 with or without brackets); for anything else,
/// how to write one.
pub(crate) fn parse_ip(text: &str) -> Result<std::net::IpAddr, String> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = bare.parse() {
        return Ok(ip);
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Err(format!(
            "--bind takes the address alone; the port is -p: --bind {} -p {}",
            addr.ip(),
            addr.port()
        ));
    }
    Err(format!(
        "{text:?} is not an IP address: write 127.0.0.1 (this machine only), 0.0.0.0 (every \
         IPv4 address), ::1 or :: (IPv6); host names are not resolved"
    ))
}
