//! What the admin API service works from: the `admin_api` section (enabled, port, compose
//! policy) and the token,
//! which is a secret and never on the bus: it is read from the root's variable files, loaded
//! exactly as the config service loads them ([`crate::vars::load`], read-only).

use bus_schema::sections::{AdminApi, ComposePolicy};
use bus_schema::{BusError, Secret};

use crate::ctx::Paths;

/// The variable holding the token.
pub const TOKEN_VAR: &str = "IOHUBOS_ADMIN_API_AUTH_TOKEN";

/// The desired listener and token.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub enabled: bool,
    pub port: u16,
    /// What a deployed compose may ask of the host ([`super::compose::policy`]).
    pub compose_policy: ComposePolicy,
    /// The section's generation.
    pub generation: u64,
}

impl Settings {
    pub fn from_section(generation: u64, section: &AdminApi) -> Settings {
        Settings {
            enabled: section.enabled,
            port: section.port,
            compose_policy: section.compose_policy,
            generation,
        }
    }
}

/// Read the token from the root's files (the layered load of the config service: sysvars,
/// envvars, envvars.d, defaults), read-only, through [`crate::secrets::read`]: a variable file
/// that does not read (or an `envvars` missing or empty) or a refused line that assigns the
/// token is an error, and the caller keeps the last good token. Taking "no token" from a broken
/// file would answer 403 to everything and lock the admin out (issue 16).
pub async fn load_token(paths: &Paths) -> Result<Secret, BusError> {
    crate::secrets::read(paths, TOKEN_VAR).await
}
