//! Which paths under the root the watcher reports, and as what. Pure string rules, no I/O.
//!
//! Paths are relative to the root and `/`-separated (`deploy/app.zip`, `envvars.d/1.1.1-envvars`).

use bus_schema::EventKind;

/// What a reported file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Area {
    /// `deploy/*.zip`
    Deploy,
    /// `firmware/firmware.tgz`, other bundles, and the `firmware-pre`/`firmware-post` hooks.
    Firmware,
    /// `runtime/iohub-registry/*.tar.gz`
    Registry,
    /// `envvars`, `envvars.d/*`, `sysvars`, `forwards-tcp`, `forwards-udp`, `routes`.
    Config,
    /// Anything under `live/`.
    Live,
}

impl Area {
    pub(crate) fn event_kind(self) -> EventKind {
        match self {
            Area::Deploy => EventKind::DeployDropped,
            Area::Firmware => EventKind::FirmwareDropped,
            Area::Registry => EventKind::RegistryArchiveDropped,
            Area::Config => EventKind::ConfigFileChanged,
            Area::Live => EventKind::LiveChanged,
        }
    }

    /// Drops are reported when they arrive, and at start; their removal is not an event (the
    /// service that consumed a drop usually removes it).
    pub(crate) fn is_drop(self) -> bool {
        matches!(self, Area::Deploy | Area::Firmware | Area::Registry)
    }

    /// Whether a complete file here fires at once rather than after a quiet period, given how
    /// it became complete (`renamed`: moved into place; else closed after writing). Only where
    /// specific names count: in `envvars.d/` and `live/` any name counts, so an editor's or
    /// `sed -i`'s temp file, written, closed and renamed away within the quiet period, must not
    /// be reported. A config file written in place waits too: a script that rewrites it twice
    /// in a row truncates it again right after the first close, and an event for that
    /// intermediate (empty) version would apply it; a rename into place is atomic.
    pub(crate) fn fires_at_once(self, rel: &str, renamed: bool) -> bool {
        match self {
            Area::Deploy | Area::Firmware | Area::Registry => true,
            Area::Config => renamed && !rel.contains('/'),
            Area::Live => false,
        }
    }

    /// Config files and live files report their removal (`removed: true`).
    pub(crate) fn reports_removal(self) -> bool {
        !self.is_drop()
    }
}

/// The config files at the top of the root.
pub(crate) const CONFIG_FILES: &[&str] = &[
    "envvars",
    "sysvars",
    "forwards-tcp",
    "forwards-udp",
    "routes",
];

/// How deep a watched directory is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Depth {
    /// Its direct children only.
    One,
    /// The whole tree below it.
    Tree,
}

/// The directories the watcher watches (`""` is the root). The root itself is watched one level
/// deep only: `/iohub/docker` holds Docker's data root and app volumes (hundreds of thousands of
/// directories and busy databases), which a recursive watch would register one inotify watch per
/// directory for and wake up on every write.
pub(crate) const WATCHED_DIRS: &[(&str, Depth)] = &[
    ("", Depth::One),
    ("runtime", Depth::One),
    ("deploy", Depth::One),
    ("firmware", Depth::One),
    ("envvars.d", Depth::One),
    ("runtime/iohub-registry", Depth::One),
    ("live", Depth::Tree),
];

/// The depth of `rel` if it is one of [`WATCHED_DIRS`].
pub(crate) fn watched_dir(rel: &str) -> Option<Depth> {
    WATCHED_DIRS
        .iter()
        .find(|(d, _)| *d == rel)
        .map(|(_, depth)| *depth)
}

/// Whether `rel` is strictly inside `live/` (a file or a directory there).
pub(crate) fn under_live(rel: &str) -> bool {
    rel.strip_prefix("live/")
        .is_some_and(|rest| !rest.is_empty())
}

/// Whether a directory appearing at `rel` must be watched and scanned.
pub(crate) fn is_dir_of_interest(rel: &str) -> bool {
    watched_dir(rel).is_some() || under_live(rel)
}

/// What `rel` is reported as, or `None` when the watcher ignores it.
pub(crate) fn classify(rel: &str) -> Option<Area> {
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    match parts.as_slice() {
        [name] if CONFIG_FILES.contains(name) => Some(Area::Config),
        ["envvars.d", name] if !is_partial(name) => Some(Area::Config),
        ["deploy", name] if !is_partial(name) && name.ends_with(".zip") => Some(Area::Deploy),
        ["firmware", name] if !is_partial(name) && is_firmware(name) => Some(Area::Firmware),
        ["runtime", "iohub-registry", name] if !is_partial(name) && name.ends_with(".tar.gz") => {
            Some(Area::Registry)
        }
        // Dotfiles are real files under live/ (`live/root/.profile`): only editor temps are skipped.
        ["live", .., name] if !is_editor_temp(name) => Some(Area::Live),
        _ => None,
    }
}

fn is_firmware(name: &str) -> bool {
    matches!(name, "firmware-pre" | "firmware-post")
        || [".tgz", ".tar.gz", ".swu"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// A name that is not (yet) the real file: hidden files (partial downloads, `.#lock`, our own
/// atomic-write temps `.NAME.tmp-*`) and editor temps.
pub(crate) fn is_partial(name: &str) -> bool {
    name.starts_with('.') || is_editor_temp(name)
}

/// Editor and downloader temps: `*~`, `*.swp`, `*.swx`, `*.part`, `*.tmp`, `.#*`, `.NAME.tmp-*`.
pub(crate) fn is_editor_temp(name: &str) -> bool {
    name.ends_with('~')
        || [".swp", ".swx", ".part", ".tmp"]
            .iter()
            .any(|ext| name.ends_with(ext))
        || name.starts_with(".#")
        || (name.starts_with('.') && name.contains(".tmp-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_config_and_live_files_are_classified_and_temps_are_not() {
        let cases: &[(&str, Option<Area>)] = &[
            ("deploy/app.zip", Some(Area::Deploy)),
            ("deploy/app.zip.part", None),
            ("deploy/.app.zip", None),
            ("deploy/readme.txt", None),
            ("deploy/sub/app.zip", None),
            ("firmware/firmware.tgz", Some(Area::Firmware)),
            ("firmware/bundle-1.2.tar.gz", Some(Area::Firmware)),
            ("firmware/update.swu", Some(Area::Firmware)),
            ("firmware/firmware-pre", Some(Area::Firmware)),
            ("firmware/firmware-post", Some(Area::Firmware)),
            ("firmware/notes.txt", None),
            ("firmware/firmware.tgz.tmp", None),
            ("runtime/iohub-registry/mysql.tar.gz", Some(Area::Registry)),
            ("runtime/iohub-registry/mysql.tar", None),
            ("runtime/other/x.tar.gz", None),
            ("envvars", Some(Area::Config)),
            ("sysvars", Some(Area::Config)),
            ("forwards-tcp", Some(Area::Config)),
            ("forwards-udp", Some(Area::Config)),
            ("routes", Some(Area::Config)),
            ("envvars.d/1.1.1-envvars", Some(Area::Config)),
            ("envvars.d/.1.1.1-envvars.swp", None),
            ("envvars.d/1.1.1-envvars~", None),
            (".envvars.swp", None),
            (".envvars.tmp-1234", None),
            ("envvars~", None),
            ("setup.done", None),
            ("docker/apps/a/start.sh", None),
            ("live/etc/hosts", Some(Area::Live)),
            ("live/root/.profile", Some(Area::Live)),
            ("live/etc/.hosts.swp", None),
            ("live/etc/hosts~", None),
            ("live/etc/.#hosts", None),
            ("live/etc/.hosts.tmp-9", None),
            ("live", None),
            ("", None),
        ];
        for (rel, want) in cases {
            assert_eq!(classify(rel), *want, "{rel}");
        }
    }

    #[test]
    fn watched_dirs_and_live_subdirs_are_dirs_of_interest() {
        for rel in [
            "",
            "deploy",
            "runtime",
            "runtime/iohub-registry",
            "live",
            "live/etc/x",
        ] {
            assert!(is_dir_of_interest(rel), "{rel}");
        }
        for rel in ["docker", "deploy/sub", "runtime/wireguard", "livex"] {
            assert!(!is_dir_of_interest(rel), "{rel}");
        }
    }
}
