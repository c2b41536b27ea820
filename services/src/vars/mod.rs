//! The `IOHUBOS_*` variable files as the config service loads them: the layering of SPEC §1.1
//! ([`layers`]: sysvars, envvars, `envvars.d` by version, includes mapped onto the root, renames
//! and defaults; pure) and [`load`], which reads the root off the async workers. The config
//! service, the admin API's `/v2/config` and [`crate::secrets`] read through here; only the
//! config service writes the files.

pub mod layers;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use bus_schema::{BusError, ErrorCode};

use crate::ctx::Paths;
use crate::shared::files::io_error;
use layers::{Loaded, ENVVARS, LAYER_DIR};

/// Load the root as it is on disk, with `overrides` (path relative to the root -> text) standing
/// in for files (a dry run of an edit).
pub async fn load(paths: &Paths, overrides: BTreeMap<String, String>) -> Result<Loaded, BusError> {
    let root = paths.root.clone();
    let version_file = paths.firmware_lib().join("version");
    tokio::task::spawn_blocking(move || load_blocking(&root, &version_file, &overrides))
        .await
        .map_err(|e| io_error("config load task", e))
}

fn load_blocking(root: &Path, version_file: &Path, overrides: &BTreeMap<String, String>) -> Loaded {
    let mut errors = Vec::new();
    let version_text = match read_text(version_file) {
        Ok(text) => text,
        Err(e) => {
            errors.push(io_error(layers::VERSION_FILE, e).with_field(layers::VERSION_FILE));
            None
        }
    };
    let layer_names = list_layers(&root.join(LAYER_DIR));
    let canonical_root = root.canonicalize().ok();
    let mut read = |rel: &str| -> Option<String> {
        if let Some(text) = overrides.get(rel) {
            return Some(text.clone());
        }
        match read_under(root, canonical_root.as_deref(), rel) {
            Ok(text) => text,
            Err(e) => {
                errors.push(io_error(rel, e).with_field(rel));
                None
            }
        }
    };
    let mut loaded = layers::load(version_text.as_deref(), layer_names.as_deref(), &mut read);
    if !errors.iter().any(|e| e.field.as_deref() == Some(ENVVARS)) {
        errors.extend(envvars_problem(&loaded));
    }
    loaded.errors.extend(errors);
    loaded
}

/// `envvars` is the one file a box cannot do without: missing, or without a single assignment
/// (an empty file, a file of comments), it is an error, never "every variable at its default"
/// (which would turn the admin API off and the network back to standalone DHCP). As a load error
/// it withholds every section: the last good ones stay published. On a fresh data partition the
/// lifecycle service copies the firmware's defaults in, and the reload that follows is clean.
fn envvars_problem(loaded: &Loaded) -> Option<BusError> {
    let message = match loaded.texts.get(ENVVARS) {
        None => {
            "envvars is missing: every section keeps its last good value (restore the file; \
                 a fresh data partition gets the firmware's defaults at its first start)"
        }
        Some(text) if bus_schema::envvars::assignments(text).is_empty() => {
            "envvars assigns no variable (empty, or only comments): every section keeps its last \
             good value"
        }
        Some(_) => return None,
    };
    Some(BusError::new(ErrorCode::Missing, message).with_field(ENVVARS))
}

/// Entries of `envvars.d` (plain files and links to them); `None` when it is not a directory.
fn list_layers(dir: &Path) -> Option<Vec<String>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Some(names)
}

/// The largest variable or list file read (a `forwards-tcp` of 10,000 forwards is ~250 KB): a
/// bigger one is an error before it is read, so a runaway script cannot make iohubd hold and
/// parse gigabytes (issue 16: 50 MB of assignments cost 2.7 GB of RSS).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// A file's text; `Ok(None)` when it does not exist.
fn read_text(path: &Path) -> io::Result<Option<String>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB; not read", MAX_FILE_BYTES >> 20),
        ));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Read `rel` under the root, refusing anything that resolves (through links) outside it.
fn read_under(root: &Path, canonical_root: Option<&Path>, rel: &str) -> io::Result<Option<String>> {
    let path = root.join(rel);
    if let (Some(croot), Ok(real)) = (canonical_root, path.canonicalize()) {
        if !real.starts_with(croot) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "resolves outside the root; not read",
            ));
        }
    }
    read_text(&path)
}

#[cfg(test)]
mod tests {
    //! The loader against whatever bytes `envvars` may hold (issue 16: empty, huge, binary):
    //! a property test over the real disk path, run in the suite. Every input either loads
    //! cleanly or is a load error on `envvars`, which withholds every section; nothing panics,
    //! and a file past [`MAX_FILE_BYTES`] is refused before it is read whole.
    #![allow(clippy::disallowed_methods)] // the test writes the file under test

    use super::*;
    use proptest::prelude::*;

    fn load_bytes(bytes: Option<&[u8]>) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        if let Some(bytes) = bytes {
            std::fs::write(dir.path().join(ENVVARS), bytes).unwrap();
        }
        load_blocking(dir.path(), &dir.path().join("no-version"), &BTreeMap::new())
    }

    fn envvars_error(loaded: &Loaded) -> bool {
        loaded
            .errors
            .iter()
            .any(|e| e.field.as_deref() == Some(ENVVARS))
    }

    fn text_like() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            "IOHUBOS_[A-Z_]{1,20}=[a-z0-9 \"'$(){}]{0,20}",
            "#[ -~]{0,30}",
            "[ -~]{0,40}",
            Just(String::new()),
        ];
        prop::collection::vec(line, 0..30).prop_map(|lines| lines.join("\n").into_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn any_bytes_load_or_are_an_envvars_error(
            bytes in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..2048),
                text_like(),
            ]
        ) {
            let loaded = load_bytes(Some(&bytes));
            let text = std::str::from_utf8(&bytes).ok();
            let assigns = text.is_some_and(|t| !bus_schema::envvars::assignments(t).is_empty());
            if !assigns {
                prop_assert!(envvars_error(&loaded), "{:?}", loaded.errors);
            }
        }
    }

    #[test]
    fn missing_empty_binary_and_huge_files_are_envvars_errors() {
        let huge = b"IOHUBOS_HOSTNAME=box\n".repeat(1 + (MAX_FILE_BYTES as usize) / 21);
        assert!(huge.len() as u64 > MAX_FILE_BYTES);
        for (what, bytes) in [
            ("missing", None),
            ("empty", Some(&b""[..])),
            ("comments only", Some(&b"# nothing\n\n"[..])),
            ("binary", Some(&b"\x7fELF\x02\x01\x01\0\0\0\xff\xfe"[..])),
            ("huge", Some(&huge[..])),
        ] {
            let loaded = load_bytes(bytes);
            assert!(envvars_error(&loaded), "{what}: {:?}", loaded.errors);
        }
        let good = load_bytes(Some(b"IOHUBOS_HOSTNAME=box\n"));
        assert!(!envvars_error(&good), "{:?}", good.errors);
    }
}
