//! `midge broker`'s logs: text or JSON lines on stderr, at a level that SIGHUP may change.

use midge_broker::{LogConfig, LogFormat};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// The levels `[log] level` may name on their own.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The filter of a `[log] level`: a level, or directives in `RUST_LOG`'s syntax
/// (`info,midge_broker=debug`). Unset or empty: `info`. A bare word that is not a level is
/// refused, though `RUST_LOG` would take it as a target name: in a configuration file it is
/// much more likely a misspelt level.
pub(crate) fn config_filter(level: Option<&str>) -> Result<EnvFilter, String> {
    let text = level
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .unwrap_or("info");
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=') && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "log.level: {directive:?} is neither a level (error, warn, info, debug, trace, off) nor target=level"
            ));
        }
    }
    EnvFilter::builder()
        .parse(text)
        .map_err(|e| format!("log.level {text:?}: {e}"))
}

/// The installed logger: what changes its level.
pub(crate) struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    /// What fixed the level, if not `[log] level`: `-v` or `RUST_LOG`.
    fixed_by: Option<&'static str>,
}

impl std::fmt::Debug for Logging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logging")
            .field("fixed_by", &self.fixed_by)
            .finish_non_exhaustive()
    }
}

/// Installs the logger for the whole process: lines on stderr in `format`, at the level of
/// `RUST_LOG` if it is set (and valid), else of `-v` (`verbose` > 0), else of `[log] level`
/// (checked by [`config_filter`] when the configuration was loaded), else `info`.
pub(crate) fn init(verbose: u8, config: &LogConfig, format: LogFormat) -> Logging {
    // Set but empty (`RUST_LOG=${RUST_LOG}` in a compose file) is as if unset; set and
    // invalid is said, once logging works.
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty());
    let mut invalid_env = None;
    let from_env = env.as_deref().and_then(|value| {
        EnvFilter::builder()
            .parse(value)
            .map_err(|err| invalid_env = Some(err.to_string()))
            .ok()
    });
    let (filter, fixed_by) = match from_env {
        Some(filter) => (filter, Some("RUST_LOG")),
        None if verbose > 0 => {
            let level = if verbose == 1 { "debug" } else { "trace" };
            (EnvFilter::new(level), Some("-v"))
        }
        None => (
            config_filter(config.level.as_deref()).unwrap_or_else(|_| EnvFilter::new("info")),
            None,
        ),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    // The event's fields (`message` among them) beside `timestamp`, `level`
                    // and `target`, not inside a `fields` object.
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .init(),
        _ => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours only for a person at a terminal, not for log files and pipes.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
    }
    if let Some(err) = invalid_env {
        // On stderr itself, in the log's format: the filter in effect might hide a warning.
        let message = format!("RUST_LOG is not a valid filter ({err}): it is ignored");
        match format {
            LogFormat::Json => eprintln!(
                "{}",
                serde_json::json!({"level": "WARN", "target": "midge", "message": message})
            ),
            _ => eprintln!("midge broker: {message}"),
        }
    }
    Logging {
        filter: handle,
        fixed_by,
    }
}

impl Logging {
    /// What fixed the level instead of `[log] level` (`-v` or `RUST_LOG`), if anything did.
    pub(crate) fn fixed_by(&self) -> Option<&'static str> {
        self.fixed_by
    }

    /// Logs from now on at `level` (a `[log] level`, already checked).
    pub(crate) fn set_level(&self, level: Option<&str>) -> Result<(), String> {
        let filter = config_filter(level)?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_are_accepted_and_misspellings_refused() {
        for ok in [
            None,
            Some(""),
            Some("warn"),
            Some("INFO"),
            Some("info,midge_broker=debug"),
            Some("midge_broker::core=trace"),
            Some("off"),
        ] {
            config_filter(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in ["wran", "info,verbose", "midge_broker=loud"] {
            let err = config_filter(Some(bad)).expect_err(bad);
            assert!(err.contains("log.level"), "{err}");
        }
    }
}
