//! Why a store could not be opened or read.

use std::path::{Path, PathBuf};

/// The midge versions that read each store format, for the message of
/// [`StoreError::UnsupportedVersion`].
const READERS: &[(u32, &str)] = &[(1, "midge 0.1")];

/// Why a store could not be opened or read. Each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file or its directory could not be created, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a midge store, or is damaged.
    #[error("{}: not a readable midge store: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The store was written in a format this version does not read.
    #[error("{}", version_message(path, *found, *supported))]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its format.
        found: u32,
        /// The format this version reads and writes.
        supported: u32,
    },
    /// Another process has the store open (a broker that is running, say).
    #[error("{}: the store is open in another process", path.display())]
    InUse {
        /// The file.
        path: PathBuf,
    },
}

fn readers(format: u32) -> Option<&'static str> {
    READERS
        .iter()
        .find(|(f, _)| *f == format)
        .map(|(_, readers)| *readers)
}

fn version_message(path: &Path, found: u32, supported: u32) -> String {
    let this = env!("CARGO_PKG_VERSION");
    let ours = readers(supported).unwrap_or("this midge");
    match readers(found) {
        Some(theirs) => format!(
            "{}: the store has format {found}, which {theirs} reads; this midge ({this}) reads \
             format {supported} ({ours})",
            path.display()
        ),
        None => format!(
            "{}: the store has format {found}, which no midge up to {this} reads: a later midge \
             wrote it, and only that version or a later one reads it (this one reads format \
             {supported}, as {ours} does)",
            path.display()
        ),
    }
}

impl StoreError {
    /// Maps a redb error about the file at `path`.
    pub(crate) fn from_redb(path: &Path, err: impl Into<redb::Error>) -> Self {
        let path = path.to_path_buf();
        let corrupt = |reason: String| Self::Corrupt {
            path: path.clone(),
            reason,
        };
        match err.into() {
            redb::Error::Io(source) => match source.kind() {
                // What a short or garbled file looks like from below.
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData => {
                    corrupt(source.to_string())
                }
                _ => Self::Io { path, source },
            },
            redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
                Self::InUse { path }
            }
            redb::Error::Corrupted(reason) => corrupt(reason),
            redb::Error::UpgradeRequired(version) => corrupt(format!(
                "a redb file of format {version}, which the redb this midge uses does not open"
            )),
            redb::Error::RepairAborted => corrupt("it needs a repair, which was not done".into()),
            err @ (redb::Error::TableTypeMismatch(_)
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TableIsNotMultimap(_)
            | redb::Error::TypeDefinitionChanged(_)
            | redb::Error::TableDoesNotExist(_)) => corrupt(format!("a redb file, but {err}")),
            err => corrupt(err.to_string()),
        }
    }
}

/// Runs `f`, which reads the file at `path` through redb, turning a panic into
/// [`StoreError::Corrupt`]. redb checks what it reads with assertions in a few places, and a
/// damaged file can trip them; a store that cannot be read must be an error, not a crash.
pub(crate) fn guarded<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // Nothing `f` touches outlives it but its result, so a panic leaves nothing half-changed
    // behind for the caller to see.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a check failed".to_owned());
        Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("redb could not read it: {what}"),
        })
    })
}
