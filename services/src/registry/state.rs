//! The registry's payloads: the `facts` of `iohub/state/registry`, the progress events on
//! `iohub/event/registry/progress`, and the record of imported archives
//! (`runtime/registry-imports.json`, by content digest, written atomically).

use std::collections::BTreeMap;
use std::path::Path;

use bus_schema::BusError;
use serde::{Deserialize, Serialize};

/// The registry process as supervised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProcessFacts {
    /// A `docker-registry` process is running.
    pub running: bool,
    /// It answers `GET /v2/`.
    pub ready: bool,
    pub port: Option<u16>,
    /// Processes started since the service started (1 + restarts).
    pub starts: u32,
    /// How the last process ended (exit code or signal, and the end of its log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// Why the process cannot be started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What happened to one archive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportFacts {
    /// Path relative to the data root.
    pub archive: String,
    /// `imported`, `already_imported` or `failed`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub images: Vec<String>,
    pub skipped: Vec<String>,
    pub layers_uploaded: usize,
    pub layers_present: usize,
    pub bytes_uploaded: u64,
    pub duration_ms: u64,
    pub deleted: bool,
    /// Size of the archive file.
    pub archive_bytes: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<BusError>,
}

/// The `facts` of `iohub/state/registry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facts {
    pub process: ProcessFacts,
    /// `<hostname>:<port>/`
    pub image_prefix: String,
    /// Archives waiting for the registry or for their turn.
    pub queued: Vec<String>,
    /// The last [`RECENT_MAX`] imports, newest last.
    pub recent: Vec<ImportFacts>,
}

/// How many imports the facts remember.
pub const RECENT_MAX: usize = 20;

/// The payload of `iohub/event/registry/progress`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub version: u32,
    pub archive: String,
    /// `verifying`, `pushing`, then `imported`, `already_imported` or `failed`.
    pub phase: &'static str,
    /// Bytes of the archive file read in this phase.
    pub bytes_done: u64,
    pub bytes_total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<BusError>,
}

/// One imported archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoneArchive {
    /// File name when it was imported.
    pub file: String,
    pub images: Vec<String>,
    pub imported_ms: u64,
}

/// A layer pushed earlier: its compressed blob, so that a re-import can skip it unread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownLayer {
    /// `sha256:` of the gzip blob.
    pub digest: String,
    pub size: u64,
    /// A repository holding it (source of cross-repository mounts).
    pub repository: String,
}

/// `runtime/registry-imports.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoneStore {
    pub version: u32,
    /// Archive content digest (`sha256:<hex>` of the file) -> what it held.
    pub archives: BTreeMap<String, DoneArchive>,
    /// Uncompressed layer digest (diff id) -> its blob.
    pub layers: BTreeMap<String, KnownLayer>,
}

impl DoneStore {
    /// Read the store; a missing file is an empty store, an unreadable one too (with a warning:
    /// at worst archives are imported again, which changes nothing in the registry).
    pub fn load(path: &Path) -> DoneStore {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "unreadable import record ignored");
                DoneStore::default()
            }),
            Err(_) => DoneStore::default(),
        }
    }

    /// Write the store atomically.
    pub async fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut store = self.clone();
        store.version = 1;
        let bytes = serde_json::to_vec_pretty(&store).map_err(std::io::Error::other)?;
        sys::fs::atomic_write_async(path.to_path_buf(), bytes, 0o644).await
    }
}
