//! Atomic file writes: the only place in iohub that opens a file for writing.
//!
//! [`atomic_write`] and [`atomic_copy`] write `.NAME.tmp-<random>` in the target's directory,
//! fsync it, set its mode, rename it over `NAME` and fsync the directory. A concurrent reader or a
//! power cut sees the complete old content or the complete new content, never a mix; a failed
//! write removes its temporary file and leaves the target untouched. The mode is set with
//! `fchmod`, so it is exact whatever the process umask is.
//!
//! The temporary name starts with a dot so that directory scans that skip hidden files (bash
//! globs, the actions dir, the watcher) never pick up a half-written file.
//!
//! Every function here blocks (fsync can take a long time on a slow disk): async code calls
//! [`atomic_write_async`] or wraps a batch in `tokio::task::spawn_blocking`.

use std::ffi::OsStr;
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The permission bits a caller may ask for (no file type bits).
const MODE_MASK: u32 = 0o7777;

/// How many random temporary names are tried before giving up (they only collide when a
/// previous write was interrupted by a crash and left its temporary file behind).
const TEMP_ATTEMPTS: usize = 8;

/// Replace `path` with `bytes`, atomically, with permission bits `mode` (e.g. `0o644`).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace_with(path, mode, |file| file.write_all(bytes))
}

/// [`atomic_write`] on a blocking thread.
pub async fn atomic_write_async(path: PathBuf, bytes: Vec<u8>, mode: u32) -> io::Result<()> {
    tokio::task::spawn_blocking(move || atomic_write(&path, &bytes, mode))
        .await
        .map_err(io::Error::other)?
}

/// Replace `dst` with the content of `src`, atomically, with permission bits `mode`. The content
/// is streamed (a large file is never held in memory). Returns the number of bytes copied.
pub fn atomic_copy(src: &Path, dst: &Path, mode: u32) -> io::Result<u64> {
    let mut from = File::open(src).map_err(|e| with_path(e, src))?;
    let mut copied = 0;
    replace_with(dst, mode, |file| {
        copied = io::copy(&mut from, file)?;
        Ok(())
    })?;
    Ok(copied)
}

/// Create an empty marker file (`setup.done`, ...) atomically, mode 0644.
pub fn touch_marker(path: &Path) -> io::Result<()> {
    atomic_write(path, b"", 0o644)
}

/// Create `path` and its missing parents (like `mkdir -p`). An existing directory is fine.
pub fn ensure_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path).map_err(|e| with_path(e, path))
}

/// Create one directory with exactly the permission bits `mode` (the parent must exist).
pub fn create_dir(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| with_path(e, path))?;
    fs::set_permissions(path, Permissions::from_mode(mode & MODE_MASK))
        .map_err(|e| with_path(e, path))
}

/// Write a temporary file with `fill`, then rename it over `path`; the temporary file is removed
/// on any failure.
fn replace_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (tmp, mut file) = create_temp(dir, name).map_err(|e| with_path(e, path))?;
    let written = fill(&mut file)
        .and_then(|()| file.set_permissions(Permissions::from_mode(mode & MODE_MASK)))
        .and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        // Best effort: the error that matters is `e`.
        let _ = fs::remove_file(&tmp);
        return Err(with_path(e, path));
    }
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, dir))
}

#[allow(clippy::disallowed_methods)] // sys::fs is the one place files are opened for writing.
fn create_temp(dir: &Path, name: &OsStr) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{:016x}", rand::random::<u64>()));
        let tmp = dir.join(tmp_name);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary name available")))
}

/// Prefix an error's message with the path it is about (std's errors do not say).
fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn temp_leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn a_concurrent_reader_only_ever_sees_a_whole_old_or_a_whole_new_file() {
        const SIZE: usize = 2 << 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        atomic_write(&path, &vec![b'a'; SIZE], 0o644).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let content = fs::read(&path).unwrap();
                    assert_eq!(
                        content.len(),
                        SIZE,
                        "a short read: the file was seen half written"
                    );
                    let first = content[0];
                    assert!(first == b'a' || first == b'b');
                    assert!(
                        content.iter().all(|&c| c == first),
                        "old and new content mixed"
                    );
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..60 {
            let byte = if i % 2 == 0 { b'b' } else { b'a' };
            atomic_write(&path, &vec![byte; SIZE], 0o644).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        assert!(temp_leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_write_removes_its_temporary_file_and_keeps_the_target() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails after the temp file was written.
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        atomic_write(&target.join("inside"), b"keep", 0o644).unwrap();
        let err = atomic_write(&target, b"new", 0o644).unwrap_err();
        assert!(err.to_string().contains("target"), "{err}");
        assert!(target.is_dir());
        assert_eq!(fs::read(target.join("inside")).unwrap(), b"keep");
        assert!(
            temp_leftovers(dir.path()).is_empty(),
            "{:?}",
            temp_leftovers(dir.path())
        );

        // A missing directory: nothing is created.
        assert!(atomic_write(&dir.path().join("missing/file"), b"x", 0o644).is_err());
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn the_mode_is_exact_whatever_the_umask_and_the_old_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        atomic_write(&path, b"1", 0o600).unwrap();
        atomic_write(&path, b"2", 0o755).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o755);
        assert_eq!(fs::read(&path).unwrap(), b"2");
        let copy = dir.path().join("copy");
        assert_eq!(atomic_copy(&path, &copy, 0o640).unwrap(), 1);
        assert_eq!(fs::metadata(&copy).unwrap().mode() & 0o7777, 0o640);
        touch_marker(&dir.path().join("setup.done")).unwrap();
        assert_eq!(fs::read(dir.path().join("setup.done")).unwrap(), b"");
        create_dir(&dir.path().join("d"), 0o750).unwrap();
        assert_eq!(
            fs::metadata(dir.path().join("d")).unwrap().mode() & 0o7777,
            0o750
        );
    }

    #[tokio::test]
    async fn the_async_variant_writes_off_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        atomic_write_async(path.clone(), b"async".to_vec(), 0o644)
            .await
            .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"async");
    }
}
