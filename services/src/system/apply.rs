//! The system service's effects, in `Backend::Live` only: the `localtime` symlink (made under
//! a temporary name and renamed over the old one, so the link is never missing; left alone
//! when it already points there) and `/etc/timezone` (through [`crate::sys::fs`], only when it
//! differs).
//!
//! `sys::fs` has no symlink writer, so the link is made here with `std::os::unix::fs::symlink`
//! and `rename` (see the report to the lead: it belongs in `sys::fs`).

use std::path::{Path, PathBuf};

use bus_schema::BusError;

use super::plan::TimezonePlan;
use crate::ssh::apply::{io_error, write_planned};
use crate::sys;

/// Point `link` at `target` unless it already does. Returns whether it changed.
pub fn replace_symlink(link: &Path, target: &Path) -> Result<bool, BusError> {
    if std::fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(false);
    }
    let dir = link.parent().map(Path::to_path_buf).unwrap_or_default();
    sys::fs::ensure_dir(&dir).map_err(|e| io_error("mkdir", e))?;
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()));
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| io_error(tmp.display(), e))?;
    if let Err(e) = std::fs::rename(&tmp, link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(link.display(), e));
    }
    Ok(true)
}

/// Apply the timezone. Returns the paths that changed.
pub async fn apply_timezone(tz: &TimezonePlan) -> Result<Vec<PathBuf>, BusError> {
    let (link, target) = (tz.link.clone(), tz.target.clone());
    let mut changed = Vec::new();
    let linked = tokio::task::spawn_blocking(move || replace_symlink(&link, &target))
        .await
        .map_err(|e| io_error("blocking task", e))??;
    if linked {
        changed.push(tz.link.clone());
    }
    if write_planned(&tz.file).await? {
        changed.push(tz.file.path.clone());
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_link_is_replaced_atomically_and_only_when_it_differs() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("etc/localtime");
        assert!(replace_symlink(&link, Path::new("/usr/share/zoneinfo/UTC")).unwrap());
        assert!(!replace_symlink(&link, Path::new("/usr/share/zoneinfo/UTC")).unwrap());
        assert!(replace_symlink(&link, Path::new("/usr/share/zoneinfo/Europe/Rome")).unwrap());
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("/usr/share/zoneinfo/Europe/Rome")
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("etc")).unwrap().count(),
            1
        );
    }
}
