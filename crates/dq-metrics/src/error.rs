//! Errors of dq-metrics.

use std::path::PathBuf;

/// The result type of dq-metrics' fallible functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`Recorder::install`](crate::Recorder::install) found a global `metrics` recorder set
    /// already (the process may have only one).
    #[error("a global metrics recorder is installed already")]
    RecorderInstalled,
    /// A snapshot file could not be written or read.
    #[error("snapshot file {}", path.display())]
    SnapshotFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot file holds something else than a snapshot.
    #[error("snapshot file {} does not hold a snapshot", path.display())]
    SnapshotFormat {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}
