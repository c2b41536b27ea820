//! Atomic file writes: the only place in iohub that opens a file for writing (whole files through
//! [`atomic_write`], append-only logs through [`open_append_log`], a staging directory's new
//! files through [`write_new`], fixed-size blocks rewritten in place through
//! [`overwrite_in_place`]).
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

// sys::fs is the one place entries under the roots are written, renamed, removed, linked or
// have their mode changed: the bans of clippy.toml are lifted for this whole file.
#![allow(clippy::disallowed_methods)]

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

/// Open the append-only log file `path` (the bridge queue's segments and ledger) for appending,
/// creating it with permission bits `mode` if it is missing; a new entry is made durable by an
/// fsync of its directory. Appends are not atomic like [`atomic_write`]: the log's own format
/// (a length and a checksum per record) finds a torn tail after a power cut, and the caller
/// decides when its appends are durable (`File::sync_data`).
pub fn open_append_log(path: &Path, mode: u32) -> io::Result<File> {
    let existed = path.exists();
    let file = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode & MODE_MASK)
        .open(path)
        .map_err(|e| with_path(e, path))?;
    if !existed {
        sync_parent(path);
    }
    Ok(file)
}

/// Open the partial download `path` to continue it: created when missing, never truncated; the
/// file is positioned at its end, whose offset is returned. Its bytes are fsynced by the caller
/// (`File::sync_data`) before they are counted as downloaded.
pub fn open_resumable(path: &Path, mode: u32) -> io::Result<(File, u64)> {
    use std::io::Seek;
    let existed = path.exists();
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode & MODE_MASK)
        .open(path)
        .map_err(|e| with_path(e, path))?;
    if !existed {
        sync_parent(path);
    }
    let len = file.seek(io::SeekFrom::End(0))?;
    Ok((file, len))
}

/// Create the new file `path` (it must not exist: a staging directory's), fill it with `fill`
/// and fsync it. Not atomic: for files that nothing reads under their final name until the
/// whole staging directory is complete (the firmware service's extracted bundle).
pub fn write_new(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & MODE_MASK)
        .open(path)
        .map_err(|e| with_path(e, path))?;
    let mut buffered = io::BufWriter::with_capacity(1 << 20, &mut file);
    fill(&mut buffered)?;
    buffered.flush()?;
    drop(buffered);
    file.sync_all().map_err(|e| with_path(e, path))
}

/// Overwrite `bytes` at `offset` of the existing file or block device `path`, in place (never
/// truncated, never grown past its end), then fsync it: GRUB's environment block (a fixed
/// 1024-byte file GRUB itself rewrites in place) and the first blocks of a firmware slot.
pub fn overwrite_in_place(path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| with_path(e, path))?;
    let len = file.seek(SeekFrom::End(0))?;
    if offset + bytes.len() as u64 > len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: {} bytes at {offset} go past its end ({len} bytes)",
                path.display(),
                bytes.len()
            ),
        ));
    }
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes).map_err(|e| with_path(e, path))?;
    file.sync_all().map_err(|e| with_path(e, path))
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

/// Write `bytes` with `mode` unless `path` already holds exactly that (content and permission
/// bits). Returns whether the file changed. Creates missing parent directories.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> io::Result<bool> {
    let same = fs::read(path).is_ok_and(|old| old == bytes)
        && fs::metadata(path).is_ok_and(|m| m.permissions().mode() & MODE_MASK == mode & MODE_MASK);
    if same {
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        ensure_dir(dir)?;
    }
    atomic_write(path, bytes, mode)?;
    Ok(true)
}

/// Set the permission bits of `path` to `mode` unless they already are. Returns whether they
/// changed.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<bool> {
    let meta = fs::metadata(path).map_err(|e| with_path(e, path))?;
    if meta.permissions().mode() & MODE_MASK == mode & MODE_MASK {
        return Ok(false);
    }
    fs::set_permissions(path, Permissions::from_mode(mode & MODE_MASK))
        .map_err(|e| with_path(e, path))?;
    Ok(true)
}

/// Rename `from` to `to` (same file system) and make the new entry durable.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to).map_err(|e| with_path(e, from))?;
    sync_parent(to);
    if from.parent() != to.parent() {
        sync_parent(from);
    }
    Ok(())
}

/// Remove a file (or a symlink). Returns whether it existed.
pub fn remove_file(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_parent(path);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(with_path(e, path)),
    }
}

/// Remove a directory tree. Returns whether it existed.
pub fn remove_dir_all(path: &Path) -> io::Result<bool> {
    match fs::remove_dir_all(path) {
        Ok(()) => {
            sync_parent(path);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(with_path(e, path)),
    }
}

/// Point the symlink `link` at `target` unless it already does: a link made under a temporary
/// name next to it is renamed over the old one, so `link` is never missing. Creates missing
/// parent directories. Returns whether it changed.
pub fn replace_symlink(link: &Path, target: &Path) -> io::Result<bool> {
    if fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(false);
    }
    let name = link.file_name().ok_or_else(|| not_a_file_path(link))?;
    let dir = parent_dir(link);
    ensure_dir(dir)?;
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = dir.join(temp_name(name));
        match std::os::unix::fs::symlink(target, &tmp) {
            Ok(()) => {
                if let Err(e) = fs::rename(&tmp, link) {
                    let _ = fs::remove_file(&tmp);
                    return Err(with_path(e, link));
                }
                sync_parent(link);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(with_path(e, &tmp)),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary name available")))
}

/// Put the directory `staged` in the place of `target` (same file system). An existing `target`
/// directory is first renamed to `.old-<name>-<16 hex>` beside it, then `staged` is renamed in
/// and the old tree removed; a file or symlink at `target` is replaced. A crash between the two
/// renames leaves the `.old-` tree for the caller's recovery (`target` missing, `.old-` present:
/// rename it back). A failure to remove the old tree is returned as `Ok(Some(path))`: the swap
/// itself is done.
pub fn swap_dir(staged: &Path, target: &Path) -> io::Result<Option<PathBuf>> {
    let mut leftover = None;
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => {
            let name = target.file_name().ok_or_else(|| not_a_file_path(target))?;
            let old = parent_dir(target).join(format!(
                ".old-{}-{:016x}",
                name.to_string_lossy(),
                rand::random::<u64>()
            ));
            fs::rename(target, &old).map_err(|e| with_path(e, target))?;
            fs::rename(staged, target).map_err(|e| with_path(e, staged))?;
            sync_parent(target);
            if fs::remove_dir_all(&old).is_err() {
                leftover = Some(old);
            }
        }
        Ok(_) => {
            fs::remove_file(target).map_err(|e| with_path(e, target))?;
            fs::rename(staged, target).map_err(|e| with_path(e, staged))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::rename(staged, target).map_err(|e| with_path(e, staged))?;
        }
        Err(e) => return Err(with_path(e, target)),
    }
    sync_parent(target);
    Ok(leftover)
}

/// Remove the temporary files of writes that a crash (kill -9, a power cut) interrupted: entries
/// of `dir` (not below it) named like ours, `.<name>.tmp-<16 hex digits>`, that are regular files
/// or symlinks. Another program's temporary names never match. Returns what was removed.
pub fn remove_stale_temps(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(with_path(e, dir)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_ours = name.to_str().is_some_and(is_temp_name);
        let kind = entry.file_type()?;
        if is_ours && (kind.is_file() || kind.is_symlink()) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| with_path(e, &path))?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| with_path(e, dir))?;
    }
    Ok(removed)
}

/// `.<name>.tmp-<16 lowercase hex digits>`, what [`temp_name`] makes.
fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((base, hex)) = rest.rsplit_once(".tmp-") else {
        return false;
    };
    !base.is_empty()
        && hex.len() == 16
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// fsync the directory holding `path`, so that a change of its entries survives a power cut.
/// Best effort: the change itself has happened either way.
pub fn sync_parent(path: &Path) {
    if let Ok(d) = File::open(parent_dir(path)) {
        let _ = d.sync_all();
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn not_a_file_path(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: not a file path", path.display()),
    )
}

fn temp_name(name: &OsStr) -> std::ffi::OsString {
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{:016x}", rand::random::<u64>()));
    tmp_name
}

/// Write a temporary file with `fill`, then rename it over `path`; the temporary file is removed
/// on any failure.
fn replace_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| not_a_file_path(path))?;
    let dir = parent_dir(path);
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

fn create_temp(dir: &Path, name: &OsStr) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = dir.join(temp_name(name));
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

    #[test]
    fn writing_the_same_content_and_mode_twice_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/f");
        assert!(write_if_changed(&p, b"x", 0o600).unwrap());
        let ino = fs::metadata(&p).unwrap().ino();
        assert!(!write_if_changed(&p, b"x", 0o600).unwrap());
        assert_eq!(ino, fs::metadata(&p).unwrap().ino());
        assert!(
            write_if_changed(&p, b"x", 0o644).unwrap(),
            "a mode change is a change"
        );
        assert!(write_if_changed(&p, b"y", 0o644).unwrap());
    }

    #[test]
    fn a_replaced_symlink_is_never_missing_and_an_unchanged_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("etc/localtime");
        assert!(replace_symlink(&link, Path::new("/usr/share/zoneinfo/UTC")).unwrap());
        assert!(!replace_symlink(&link, Path::new("/usr/share/zoneinfo/UTC")).unwrap());
        assert!(replace_symlink(&link, Path::new("/usr/share/zoneinfo/Europe/Rome")).unwrap());
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("/usr/share/zoneinfo/Europe/Rome")
        );
        assert!(temp_leftovers(&dir.path().join("etc")).is_empty());
    }

    #[test]
    fn temporary_files_left_by_a_killed_write_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // What a write killed between create and rename leaves, and what must stay.
        let ours = [
            ".envvars.tmp-0123456789abcdef",
            ".config-generations.json.tmp-fedcba9876543210",
        ];
        let theirs = [
            "envvars",
            ".envvars.swp",
            ".envvars.tmp-notours",
            ".envvars.tmp-0123456789ABCDEF",
            "x.tmp-0123456789abcdef",
        ];
        for name in ours.iter().chain(&theirs) {
            atomic_write(&d.join(name), b"partial", 0o600).unwrap();
        }
        let mut removed = remove_stale_temps(d).unwrap();
        removed.sort();
        let mut want: Vec<PathBuf> = ours.iter().map(|n| d.join(n)).collect();
        want.sort();
        assert_eq!(removed, want);
        for name in theirs {
            assert!(d.join(name).exists(), "{name} was removed");
        }
        assert!(remove_stale_temps(&d.join("missing")).unwrap().is_empty());
    }

    #[test]
    fn a_swapped_directory_replaces_the_old_tree_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (staged, target) = (dir.path().join(".staging-app"), dir.path().join("app"));
        create_dir(&target, 0o755).unwrap();
        atomic_write(&target.join("old"), b"old", 0o644).unwrap();
        create_dir(&staged, 0o755).unwrap();
        atomic_write(&staged.join("new"), b"new", 0o644).unwrap();
        assert_eq!(swap_dir(&staged, &target).unwrap(), None);
        assert!(!staged.exists());
        assert!(target.join("new").is_file() && !target.join("old").exists());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "the old tree is removed");
        // A file where the directory goes is replaced too; a missing target is just renamed in.
        let file = dir.path().join("file");
        atomic_write(&file, b"f", 0o644).unwrap();
        create_dir(&staged, 0o755).unwrap();
        swap_dir(&staged, &file).unwrap();
        assert!(file.is_dir());
        assert!(remove_dir_all(&file).unwrap());
        assert!(!remove_dir_all(&file).unwrap());
        create_dir(&staged, 0o755).unwrap();
        swap_dir(&staged, &file).unwrap();
        assert!(file.is_dir());
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

    #[test]
    fn overwrite_in_place_keeps_the_size_and_write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("block");
        atomic_write(&path, &[b'#'; 16], 0o644).unwrap();
        overwrite_in_place(&path, 4, b"abcd").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"####abcd########");
        let err = overwrite_in_place(&path, 14, b"xyz").unwrap_err();
        assert!(err.to_string().contains("go past its end"), "{err}");
        assert_eq!(fs::metadata(&path).unwrap().len(), 16);
        assert!(overwrite_in_place(&dir.path().join("missing"), 0, b"x").is_err());

        let new = dir.path().join("new");
        write_new(&new, 0o600, |w| w.write_all(b"staged")).unwrap();
        assert_eq!(fs::read(&new).unwrap(), b"staged");
        assert_eq!(
            fs::metadata(&new).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(write_new(&new, 0o600, |w| w.write_all(b"again")).is_err());
        assert_eq!(fs::read(&new).unwrap(), b"staged");
    }
}
