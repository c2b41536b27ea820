//! Live sync: `<root>/live/` copied over the system root with the semantics of IOhubOS's
//! `rsync -rK /iohub/live/ /` (SPEC §2.2 step 8), natively.
//!
//! - regular files and directories, recursively, dotfiles included;
//! - symlinks in the source are skipped (rsync without `-l`), and so are fifos, sockets and
//!   devices (without `-D`);
//! - nothing is deleted on the destination;
//! - an existing destination file keeps its permission bits; a new file or directory gets the
//!   source's bits masked by the service umask 022 (without `-p`); times and owners are not
//!   preserved;
//! - a symlink to a directory on the destination is followed (`-K`);
//! - every file is written atomically (temp + fsync + rename), and a file whose content is
//!   already identical is not rewritten, so syncing twice changes nothing.
//!
//! Where rsync would replace a destination directory by a file or the reverse, the entry is
//! skipped and reported instead.
//!
//! [`plan`] only reads; [`apply`] performs a plan. Both block: call them from `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use super::setup::UMASK;

/// A directory to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedDir {
    pub path: PathBuf,
    #[serde(serialize_with = "octal")]
    pub mode: u32,
}

/// A file to copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedFile {
    pub from: PathBuf,
    pub to: PathBuf,
    /// The destination's mode after the copy.
    #[serde(serialize_with = "octal")]
    pub mode: u32,
    /// Whether the destination file is new (otherwise its content changes).
    pub new: bool,
}

/// A source entry that is not copied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// What a live sync would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LiveSyncPlan {
    pub dirs: Vec<PlannedDir>,
    pub files: Vec<PlannedFile>,
    /// Files whose destination already has the same content.
    pub unchanged: usize,
    pub skipped: Vec<Skipped>,
    /// Entries left out of `dirs`, `files` and `skipped` by [`LiveSyncPlan::summary`].
    pub omitted: usize,
}

impl LiveSyncPlan {
    /// The plan with at most `max` entries in each list, for publishing.
    pub fn summary(&self, max: usize) -> LiveSyncPlan {
        let omitted = [self.dirs.len(), self.files.len(), self.skipped.len()]
            .iter()
            .map(|n| n.saturating_sub(max))
            .sum::<usize>();
        LiveSyncPlan {
            dirs: self.dirs.iter().take(max).cloned().collect(),
            files: self.files.iter().take(max).cloned().collect(),
            unchanged: self.unchanged,
            skipped: self.skipped.iter().take(max).cloned().collect(),
            omitted: self.omitted + omitted,
        }
    }
}

/// What a live sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LiveSyncReport {
    /// Files written.
    pub files: usize,
    /// Directories created.
    pub dirs: usize,
    pub unchanged: usize,
    pub skipped: Vec<Skipped>,
    /// Writes that failed (the sync goes on with the other entries).
    pub errors: Vec<String>,
}

fn octal<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// Compare `live` (the source tree) with `dest` (the system root).
pub fn plan(live: &Path, dest: &Path) -> io::Result<LiveSyncPlan> {
    let mut plan = LiveSyncPlan::default();
    walk(live, dest, true, &mut plan)?;
    Ok(plan)
}

/// Perform `plan`: directories first (parents before children), then files.
pub fn apply(plan: &LiveSyncPlan) -> LiveSyncReport {
    let mut report = LiveSyncReport {
        unchanged: plan.unchanged,
        skipped: plan.skipped.clone(),
        ..LiveSyncReport::default()
    };
    let mut failed_dirs: Vec<&Path> = Vec::new();
    for dir in &plan.dirs {
        if failed_dirs.iter().any(|f| dir.path.starts_with(f)) {
            continue;
        }
        match sys::fs::create_dir(&dir.path, dir.mode) {
            Ok(()) => report.dirs += 1,
            // Created meanwhile (another writer): fine, like `mkdir -p`.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.path.is_dir() => {}
            Err(e) => {
                report.errors.push(e.to_string());
                failed_dirs.push(&dir.path);
            }
        }
    }
    for file in &plan.files {
        if failed_dirs.iter().any(|f| file.to.starts_with(f)) {
            continue;
        }
        match sys::fs::atomic_copy(&file.from, &file.to, file.mode) {
            Ok(_) => report.files += 1,
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    report
}

/// `dest_exists`: whether `dest` is an existing directory (else everything below is new).
fn walk(src: &Path, dest: &Path, dest_exists: bool, plan: &mut LiveSyncPlan) -> io::Result<()> {
    let mut entries = fs::read_dir(src)?.collect::<io::Result<Vec<_>>>()?;
    // Byte order of names: deterministic plans.
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let skip = |plan: &mut LiveSyncPlan, reason: &str| {
            plan.skipped.push(Skipped {
                path: from.clone(),
                reason: reason.to_string(),
            });
        };
        let meta = match fs::symlink_metadata(&from) {
            Ok(m) => m,
            Err(e) => {
                skip(plan, &e.to_string());
                continue;
            }
        };
        let source_mode = meta.permissions().mode() & 0o777 & !UMASK;
        if meta.file_type().is_symlink() {
            skip(plan, "symlink (not copied)");
        } else if meta.is_dir() {
            if !dest_exists {
                plan.dirs.push(PlannedDir {
                    path: to.clone(),
                    mode: source_mode,
                });
                walk(&from, &to, false, plan)?;
                continue;
            }
            // `-K`: a symlink to a directory on the destination counts as that directory.
            match fs::metadata(&to) {
                Ok(m) if m.is_dir() => walk(&from, &to, true, plan)?,
                Ok(_) => skip(plan, "the destination exists and is not a directory"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if fs::symlink_metadata(&to).is_ok() {
                        skip(plan, "the destination is a dangling symlink");
                    } else {
                        plan.dirs.push(PlannedDir {
                            path: to.clone(),
                            mode: source_mode,
                        });
                        walk(&from, &to, false, plan)?;
                    }
                }
                Err(e) => skip(plan, &format!("{}: {e}", to.display())),
            }
        } else if meta.is_file() {
            if !dest_exists {
                plan.files.push(PlannedFile {
                    from,
                    to,
                    mode: source_mode,
                    new: true,
                });
                continue;
            }
            match fs::symlink_metadata(&to) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    plan.files.push(PlannedFile {
                        from,
                        to,
                        mode: source_mode,
                        new: true,
                    });
                }
                Ok(m) if m.is_file() => {
                    if same_content(&from, &to)? {
                        plan.unchanged += 1;
                    } else {
                        let mode = m.permissions().mode() & 0o7777;
                        plan.files.push(PlannedFile {
                            from,
                            to,
                            mode,
                            new: false,
                        });
                    }
                }
                // rsync replaces a symlink by the file (it does not write through it).
                Ok(m) if m.file_type().is_symlink() && !to.is_dir() => {
                    plan.files.push(PlannedFile {
                        from,
                        to,
                        mode: source_mode,
                        new: true,
                    });
                }
                Ok(m) if m.is_dir() || to.is_dir() => skip(plan, "the destination is a directory"),
                Ok(_) => skip(plan, "the destination is not a regular file"),
                Err(e) => skip(plan, &format!("{}: {e}", to.display())),
            }
        } else {
            skip(plan, "not a regular file or directory");
        }
    }
    Ok(())
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    if fs::metadata(a)?.len() != fs::metadata(b)?.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        if n != read_full(&mut fb, &mut bb)? || ba[..n] != bb[..n] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sys::fs::{atomic_write, ensure_dir};

    fn write(path: &Path, content: &str) {
        ensure_dir(path.parent().unwrap()).unwrap();
        atomic_write(path, content.as_bytes(), 0o644).unwrap();
    }

    #[test]
    fn type_conflicts_are_skipped_and_a_second_sync_changes_nothing() {
        let (live, dest) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(&live.path().join("a/file"), "1");
        write(&live.path().join("file-vs-dir"), "2");
        write(&live.path().join("dir-vs-file/inner"), "3");
        ensure_dir(&dest.path().join("file-vs-dir")).unwrap();
        write(&dest.path().join("dir-vs-file"), "a file");

        let first = plan(live.path(), dest.path()).unwrap();
        let reasons: Vec<(String, &str)> = first
            .skipped
            .iter()
            .map(|s| {
                let name = s.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, s.reason.as_str())
            })
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "dir-vs-file".to_string(),
                    "the destination exists and is not a directory"
                ),
                ("file-vs-dir".to_string(), "the destination is a directory"),
            ]
        );
        assert_eq!(first.dirs.len(), 1);
        assert_eq!(first.files.len(), 1);
        let report = apply(&first);
        assert_eq!((report.files, report.dirs, report.errors.len()), (1, 1, 0));

        let second = plan(live.path(), dest.path()).unwrap();
        assert!(
            second.files.is_empty() && second.dirs.is_empty(),
            "{second:?}"
        );
        assert_eq!(second.unchanged, 1);

        let summary = first.summary(0);
        assert_eq!(summary.omitted, 4);
        assert!(summary.files.is_empty());
    }
}
