//! The wifi service's effects, in `Backend::Live` only: the config file with the clear
//! passphrase (read through [`crate::secrets`], checked again, written 0600 through
//! [`sys::fs`] only when it differs), removal of the other mode's file. The process is
//! started by the service loop through [`sys::child`].

use bus_schema::{BusError, ErrorCode};

use super::config::check_passphrase;
use super::plan::WifiPlan;
use crate::ctx::Paths;
use crate::shared::files::{ensure_dirs, remove_if_present, write_if_changed, PlannedDir};

/// What an apply did.
#[derive(Debug, Default)]
pub struct Applied {
    /// The config file changed (the program must be restarted).
    pub changed: bool,
    /// The passphrase and its PSK, to scrub from the program's output.
    pub secrets: Vec<String>,
}

/// Write the plan's file and remove the others.
pub async fn apply(paths: &Paths, plan: &WifiPlan) -> Result<Applied, BusError> {
    let mut applied = Applied::default();
    for path in &plan.remove {
        remove_if_present(path.clone()).await?;
    }
    let (Some(file), Some(var)) = (&plan.file, &plan.secret_var) else {
        return Ok(applied);
    };
    let pass = crate::secrets::read(paths, var).await?;
    check_passphrase(var, pass.expose())?;
    let content = plan
        .render(pass.expose())
        .ok_or_else(|| BusError::new(ErrorCode::Internal, "the wifi plan has no file to render"))?;
    if let Some(parent) = file.path.parent() {
        ensure_dirs(&[PlannedDir::new(parent, 0o755)]).await?;
    }
    applied.changed = write_if_changed(file.path.clone(), content.into_bytes(), 0o600).await?;
    let psk = plan
        .ssid
        .as_deref()
        .map(|ssid| super::plan::wpa_psk(ssid, pass.expose()));
    applied.secrets = std::iter::once(pass.expose().to_string())
        .chain(psk)
        .collect();
    Ok(applied)
}
