//! The system service's effects, in `Backend::Live` only: the `localtime` symlink (made under
//! a temporary name and renamed over the old one by [`sys::fs::replace_symlink`], so the link is
//! never missing; left alone when it already points there) and `/etc/timezone` (only when it
//! differs).

use std::path::PathBuf;

use bus_schema::BusError;

use super::plan::TimezonePlan;
use crate::shared::files::{replace_symlink, write_planned};

/// Apply the timezone. Returns the paths that changed.
pub async fn apply_timezone(tz: &TimezonePlan) -> Result<Vec<PathBuf>, BusError> {
    let mut changed = Vec::new();
    if replace_symlink(tz.link.clone(), tz.target.clone()).await? {
        changed.push(tz.link.clone());
    }
    if write_planned(&tz.file).await? {
        changed.push(tz.file.path.clone());
    }
    Ok(changed)
}
