//! The zip validator (pure): from the central directory of a deploy zip to the list of apps and
//! files to install, or every reason to refuse it. Nothing is read from the entries' data here
//! and nothing is written; [`super::apply`] extracts only what a [`Manifest`] lists, counting
//! the bytes again (declared sizes can lie).
//!
//! Accepted (SPEC §4.4, §11.1 item 2): only `docker/apps/<app>/...` entries, `<app>` a valid app
//! name (SPEC §4.5), regular files and directories (a unix mode in the external attributes that
//! says symlink, device, fifo or socket is refused), relative paths without `.`, `..`, empty
//! components, backslashes or control characters, no encryption, no duplicate or conflicting
//! paths, at most [`Limits`] entries and bytes. An app without `start.sh` is valid: it installs
//! as a disabled app, or keeps the `start.sh` it has (the admin API's deploy without `enabled`
//! sends only `docker-compose.yml`, and the original leaves `start.sh` untouched then). The
//! directory entries `docker/` and `docker/apps/` the EZ VPN IOhub composer writes are accepted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bus_schema::ErrorCode;
use serde::Serialize;

use crate::shared::apps::valid_app_name;

/// Size and count limits of one deploy zip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Entries in the central directory.
    pub max_entries: usize,
    /// Uncompressed bytes of one file (files are staged from memory, so this bounds memory).
    pub max_entry_bytes: u64,
    /// Uncompressed bytes of the whole zip.
    pub max_total_bytes: u64,
    /// Length of one entry name, in bytes.
    pub max_path_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entries: 10_000,
            max_entry_bytes: 64 << 20,
            max_total_bytes: 512 << 20,
            max_path_bytes: 1024,
        }
    }
}

/// What the validator needs to know about one entry (from the central directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    pub index: usize,
    pub name: String,
    /// The name ends with `/`.
    pub dir_name: bool,
    /// Unix mode from the external attributes (zips made on unix).
    pub unix_mode: Option<u32>,
    /// Declared uncompressed size.
    pub size: u64,
    pub encrypted: bool,
}

/// One file to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    pub index: usize,
    /// Path inside the app directory (`start.sh`, `volumes/x/y`).
    pub rel: String,
    /// Permission bits to give the file (`start.sh` is decided at install time).
    pub mode: u32,
    /// Declared size.
    pub size: u64,
}

/// The content of one app in the zip.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AppFiles {
    pub files: Vec<FileEntry>,
    /// Directories inside the app directory (explicit entries and parents of files).
    pub dirs: BTreeSet<String>,
}

/// A valid deploy zip: what to install.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub apps: BTreeMap<String, AppFiles>,
    pub total_bytes: u64,
}

/// One reason to refuse a zip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub code: ErrorCode,
    /// The entry name, when the problem is about one entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    pub message: String,
}

impl Problem {
    fn new(code: ErrorCode, entry: Option<&str>, message: impl Into<String>) -> Problem {
        Problem {
            code,
            entry: entry.map(str::to_string),
            message: message.into(),
        }
    }
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;
const S_IFSOCK: u32 = 0o140000;

/// How many problems a report lists (a zip of 10,000 bad entries gets a short reason).
pub const MAX_PROBLEMS: usize = 50;

/// Validate a zip's central directory. Every problem is reported (up to [`MAX_PROBLEMS`]).
pub fn validate(entries: &[EntryMeta], limits: &Limits) -> Result<Manifest, Vec<Problem>> {
    if entries.len() > limits.max_entries {
        return Err(vec![Problem::new(
            ErrorCode::InvalidValue,
            None,
            format!(
                "{} entries; at most {} are accepted",
                entries.len(),
                limits.max_entries
            ),
        )]);
    }
    let mut v = Validation::new(limits);
    for e in entries {
        v.entry(e);
    }
    v.check_total();
    v.check_files_that_are_directories();
    v.finish()
}

/// The state of [`validate`] while it goes through the entries.
struct Validation<'a> {
    limits: &'a Limits,
    manifest: Manifest,
    /// Every path seen (normalised, without trailing `/`) and whether it is a directory.
    seen: BTreeMap<String, bool>,
    /// Declared bytes of the files accepted so far.
    total: u64,
    problems: Vec<Problem>,
}

impl<'a> Validation<'a> {
    fn new(limits: &'a Limits) -> Validation<'a> {
        Validation {
            limits,
            manifest: Manifest::default(),
            seen: BTreeMap::new(),
            total: 0,
            problems: Vec::new(),
        }
    }

    /// Check one entry and, when it is good, add it to the manifest; else record its (first)
    /// problem.
    fn entry(&mut self, e: &EntryMeta) {
        let name = e.name.as_str();
        let Some(parts) = check_path(e, self.limits, &mut self.problems) else {
            return;
        };
        let kind = e.unix_mode.map_or(0, |m| m & S_IFMT);
        let is_dir = e.dir_name || kind == S_IFDIR;
        if let Some(message) = refused_file_type(kind) {
            self.problems
                .push(Problem::new(ErrorCode::Forbidden, Some(name), message));
            return;
        }
        if e.encrypted {
            self.problems.push(Problem::new(
                ErrorCode::Forbidden,
                Some(name),
                "is encrypted",
            ));
            return;
        }
        if !inside_apps(&parts, is_dir) {
            self.problems.push(Problem::new(
                ErrorCode::Forbidden,
                Some(name),
                "is outside docker/apps/<app>/",
            ));
            return;
        }
        let joined = parts.join("/");
        if self.seen.contains_key(&joined) {
            self.problems.push(Problem::new(
                ErrorCode::Conflict,
                Some(name),
                "appears twice",
            ));
            return;
        }
        self.seen.insert(joined, is_dir);
        if parts.len() < 3 {
            return; // `docker/` or `docker/apps/`
        }
        self.add_to_app(e, &parts, is_dir);
    }

    /// Add an entry under `docker/apps/<app>/` (`parts`, at least 3) to its app: the app
    /// itself, a directory, or a file within the size limit.
    fn add_to_app(&mut self, e: &EntryMeta, parts: &[String], is_dir: bool) {
        let name = e.name.as_str();
        let app = parts[2].as_str();
        if !valid_app_name(app) {
            self.problems.push(Problem::new(
                ErrorCode::InvalidValue,
                Some(name),
                format!(
                    "`{app}` is not a valid app name (a lowercase letter, then up to 63 lowercase letters, digits, `-` or `_`)"
                ),
            ));
            return;
        }
        let files = self.manifest.apps.entry(app.to_string()).or_default();
        if parts.len() == 3 {
            return; // the app directory itself
        }
        let rel = parts[3..].join("/");
        for i in 1..parts.len() - 3 {
            files.dirs.insert(parts[3..3 + i].join("/"));
        }
        if is_dir {
            files.dirs.insert(rel);
            return;
        }
        if e.size > self.limits.max_entry_bytes {
            self.problems.push(Problem::new(
                ErrorCode::InvalidValue,
                Some(name),
                format!(
                    "declares {} bytes; at most {} per file",
                    e.size, self.limits.max_entry_bytes
                ),
            ));
            return;
        }
        self.total = self.total.saturating_add(e.size);
        files.files.push(FileEntry {
            index: e.index,
            rel,
            mode: file_mode(e.unix_mode),
            size: e.size,
        });
    }

    /// The declared bytes of all the files within [`Limits::max_total_bytes`].
    fn check_total(&mut self) {
        if self.total > self.limits.max_total_bytes {
            self.problems.push(Problem::new(
                ErrorCode::InvalidValue,
                None,
                format!(
                    "declares {} bytes in all; at most {} are accepted",
                    self.total, self.limits.max_total_bytes
                ),
            ));
        }
    }

    /// A path that is a file and also the parent of another entry.
    fn check_files_that_are_directories(&mut self) {
        for (path, is_dir) in &self.seen {
            if *is_dir {
                continue;
            }
            let child = format!("{path}/");
            if self
                .seen
                .range(child.clone()..)
                .next()
                .is_some_and(|(p, _)| p.starts_with(&child))
            {
                self.problems.push(Problem::new(
                    ErrorCode::Conflict,
                    Some(path),
                    "is a file and a directory",
                ));
            }
        }
    }

    /// The manifest when there is no problem and at least one app; else the problems (at most
    /// [`MAX_PROBLEMS`]).
    fn finish(mut self) -> Result<Manifest, Vec<Problem>> {
        if self.manifest.apps.is_empty() && self.problems.is_empty() {
            self.problems.push(Problem::new(
                ErrorCode::Missing,
                None,
                "the zip holds no app (expected docker/apps/<app>/...)",
            ));
        }
        self.manifest.total_bytes = self.total;
        if self.problems.is_empty() {
            Ok(self.manifest)
        } else {
            self.problems.truncate(MAX_PROBLEMS);
            Err(self.problems)
        }
    }
}

/// Why an entry of unix file type `kind` (0 when unknown) is refused: anything but a regular
/// file or a directory.
fn refused_file_type(kind: u32) -> Option<String> {
    match kind {
        0 | S_IFREG | S_IFDIR => None,
        S_IFLNK => Some("is a symbolic link".to_string()),
        S_IFCHR | S_IFBLK => Some("is a device file".to_string()),
        S_IFIFO | S_IFSOCK => Some("is a fifo or socket".to_string()),
        other => Some(format!("has an unknown file type {other:o}")),
    }
}

/// Whether an entry (its checked components) may be in the zip: under `docker/apps/`, and a
/// directory unless it is deeper than `docker/apps/<app>` (`docker/` and `docker/apps/`
/// themselves are accepted as directories).
fn inside_apps(parts: &[String], is_dir: bool) -> bool {
    let prefix_ok = parts.first().map(String::as_str) == Some("docker")
        && parts.get(1).is_none_or(|p| p == "apps");
    prefix_ok && (is_dir || parts.len() > 3)
}

/// The permission bits of an installed file: its zip's, made readable and writable by the
/// owner, or 0644 when the zip has none.
fn file_mode(unix_mode: Option<u32>) -> u32 {
    match unix_mode.map(|m| m & 0o777) {
        Some(m) if m != 0 => (m & 0o777) | 0o600,
        _ => 0o644,
    }
}

/// Split a name into checked components; `None` (with a problem) when it is unsafe.
fn check_path(e: &EntryMeta, limits: &Limits, problems: &mut Vec<Problem>) -> Option<Vec<String>> {
    let name = e.name.as_str();
    let bad = |problems: &mut Vec<Problem>, msg: &str| {
        problems.push(Problem::new(ErrorCode::Forbidden, Some(name), msg));
        None
    };
    if name.len() > limits.max_path_bytes {
        return bad(problems, "has a name that is too long");
    }
    if name.chars().any(char::is_control) {
        return bad(problems, "has a control character in its name");
    }
    if name.contains('\\') {
        return bad(problems, "has a backslash in its name");
    }
    if name.starts_with('/') {
        return bad(problems, "is an absolute path");
    }
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    if trimmed.is_empty() {
        return bad(problems, "has an empty name");
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    let first = parts[0].as_bytes();
    if first.len() == 2 && first[0].is_ascii_alphabetic() && first[1] == b':' {
        return bad(problems, "is an absolute path");
    }
    if parts.contains(&"..") {
        return bad(problems, "has a `..` component");
    }
    if parts.iter().any(|p| p.is_empty() || *p == ".") {
        return bad(problems, "has an empty or `.` component");
    }
    if parts.iter().any(|p| p.len() > 255) {
        return bad(problems, "has a component longer than 255 bytes");
    }
    Some(parts.into_iter().map(str::to_string).collect())
}

/// The validator's outcome as text: the reason file of a refused zip, the plan of a good one.
pub fn render(outcome: &Result<Manifest, Vec<Problem>>) -> String {
    let mut out = String::new();
    match outcome {
        Ok(m) => {
            let _ = writeln!(out, "accepted: {} bytes", m.total_bytes);
            for (app, files) in &m.apps {
                let _ = writeln!(out, "app {app}");
                for d in &files.dirs {
                    let _ = writeln!(out, "  dir  {d}/");
                }
                for f in &files.files {
                    let _ = writeln!(out, "  file {} {:o} {} bytes", f.rel, f.mode, f.size);
                }
            }
        }
        Err(problems) => {
            let _ = writeln!(out, "refused:");
            for p in problems {
                match &p.entry {
                    Some(e) => {
                        let _ = writeln!(out, "  {}: `{e}` {}", p.code, p.message);
                    }
                    None => {
                        let _ = writeln!(out, "  {}: {}", p.code, p.message);
                    }
                }
            }
        }
    }
    out
}
