//! Blocking file-system work, run on `spawn_blocking`: adding inotify watches, scanning the
//! watched directories, `stat`.
//!
//! A scan job first (re-)adds the watches of the directories it covers, then lists them: every
//! file created after the watch is in place produces inotify events, every file created before
//! is in the listing, so nothing falls in between.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use super::classify::{classify, under_live, watched_dir, Area, Depth, WATCHED_DIRS};
use super::tracker::{Fp, Stat};

/// What to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Job {
    /// Every watched directory: at start, after a queue overflow, periodically.
    Full { start: bool, events_lost: bool },
    /// A directory of interest that appeared (a watched directory recreated, a new dir in live/).
    Dir(String),
}

/// What a job found.
#[derive(Debug)]
pub(crate) struct Report {
    pub job: Job,
    /// Files the watcher reports, relative to the root, with their fingerprint.
    pub files: Vec<(String, Fp)>,
    /// Watches that could not be added (the watcher is degraded).
    pub errors: Vec<String>,
    /// The root itself could not be watched (the watcher fails).
    pub root_error: Option<String>,
}

pub(crate) fn join(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

pub(crate) fn fingerprint(m: &Metadata) -> Fp {
    Fp {
        size: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ino: m.ino(),
    }
}

/// `stat` of a reported file. A config file may be a link (followed; a dangling link is
/// missing). A drop (`deploy/`, `firmware/`, `runtime/iohub-registry/`) must be a regular file
/// itself: a symlink there is never a drop, wherever it points (`deploy/x.zip -> /etc/shadow`
/// would otherwise be opened and measured by the service that takes the drop).
pub(crate) fn stat(root: &Path, rel: &str) -> Stat {
    let path = join(root, rel);
    let meta = if classify(rel).is_some_and(Area::is_drop) {
        std::fs::symlink_metadata(&path)
    } else {
        std::fs::metadata(&path)
    };
    match meta {
        Ok(m) if m.is_file() => Stat::File(fingerprint(&m)),
        Ok(_) => Stat::NotFile,
        Err(_) => Stat::Missing,
    }
}

/// `stat` each of `rels` under `root`.
pub(crate) fn stat_all(root: &Path, rels: &[String]) -> Vec<Stat> {
    rels.iter().map(|rel| stat(root, rel)).collect()
}

/// Whether `path` is a directory (following symlinks).
pub(crate) fn is_dir(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}

/// Run a job: add the watches, then list the files.
pub(crate) fn run(root: &Path, watcher: &Mutex<RecommendedWatcher>, job: Job) -> Report {
    let dirs: Vec<(String, Depth)> = match &job {
        Job::Full { .. } => WATCHED_DIRS
            .iter()
            .map(|(d, depth)| ((*d).to_owned(), *depth))
            .collect(),
        Job::Dir(rel) if watched_dir(rel).is_some() => {
            // The directory and the watched directories below it (`runtime` -> `runtime/iohub-registry`).
            let prefix = format!("{rel}/");
            WATCHED_DIRS
                .iter()
                .filter(|(d, _)| d == rel || d.starts_with(&prefix))
                .map(|(d, depth)| ((*d).to_owned(), *depth))
                .collect()
        }
        Job::Dir(rel) if under_live(rel) => vec![(rel.clone(), Depth::Tree)],
        Job::Dir(_) => Vec::new(),
    };
    let mut report = Report {
        job,
        files: Vec::new(),
        errors: Vec::new(),
        root_error: None,
    };
    for (rel, depth) in dirs {
        let path = join(root, &rel);
        if !is_dir(&path) {
            if rel.is_empty() {
                report.root_error = Some(format!("{} is not a directory", path.display()));
                return report;
            }
            continue;
        }
        let mode = match depth {
            Depth::One => RecursiveMode::NonRecursive,
            Depth::Tree => RecursiveMode::Recursive,
        };
        // Adding a watch twice is harmless (inotify returns the same descriptor).
        let added = watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .watch(&path, mode);
        if let Err(e) = added {
            if rel.is_empty() {
                report.root_error = Some(format!("watch {}: {e}", path.display()));
                return report;
            }
            // Removed again in the meantime: its events will say so.
            if !matches!(e.kind, notify::ErrorKind::PathNotFound) {
                report.errors.push(format!("watch {}: {e}", path.display()));
            }
        }
        list(root, &rel, depth, &mut report.files);
    }
    report
}

/// The reported files in the directory `rel` (and below it for [`Depth::Tree`]). Directory
/// symlinks are not followed; file symlinks are where [`stat`] follows them.
fn list(root: &Path, rel: &str, depth: Depth, out: &mut Vec<(String, Fp)>) {
    let mut stack = vec![rel.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(join(root, &dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let child = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                if depth == Depth::Tree {
                    stack.push(child);
                }
                continue;
            }
            if classify(&child).is_none() {
                continue;
            }
            if let Stat::File(fp) = stat(root, &child) {
                out.push((child, fp));
            }
        }
    }
}
