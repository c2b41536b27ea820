//! The registry service's validated inputs: the `registry` section, gated by `docker.enabled`
//! (SPEC §3.14: the original ran the registry only with Docker on), and the host name of the
//! `network` section (image references are `<hostname>:<port>/<name>:<tag>`).

use bus_schema::sections::{Docker, Network, Registry};
use bus_schema::{BusError, Section};

use crate::reconcile::Latest;

/// What the registry service is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// `IOHUBOS_DOCKER_ENABLED` and `IOHUBOS_DOCKER_REGISTRY_ENABLED`.
    pub enabled: bool,
    pub port: u16,
    /// Import archives found in `runtime/iohub-registry/` at start and when dropped.
    pub rescan: bool,
    /// Delete an archive once it is imported (never after a failure).
    pub rescan_delete: bool,
    /// The host part of image references; `127.0.0.1` when no host name is configured.
    pub host: String,
}

/// The sections the service follows.
/// The desired config with its generation, once `registry` and `docker` are published; a
/// section that does not decode is an error (the caller keeps the last good config).
pub fn desired(latest: &Latest) -> Option<Result<(u64, RegistryConfig), Vec<BusError>>> {
    let registry = latest.section::<Registry>(Section::Registry)?;
    let docker = latest.section::<Docker>(Section::Docker)?;
    // The host name is cosmetic here (facts only): a missing network section is no reason to
    // wait.
    let network = latest.section::<Network>(Section::Network);
    let mut errors = Vec::new();
    let registry = registry.map_err(|e| errors.push(e)).ok();
    let docker = docker.map_err(|e| errors.push(e)).ok();
    let hostname = match network {
        Some(Ok((_, n))) => n.hostname,
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };
    let (Some((generation, registry)), Some((_, docker))) = (registry, docker) else {
        return Some(Err(errors));
    };
    if !errors.is_empty() {
        return Some(Err(errors));
    }
    Some(Ok((
        generation,
        RegistryConfig {
            enabled: docker.enabled && registry.enabled,
            port: registry.port,
            rescan: registry.rescan,
            rescan_delete: registry.rescan_delete,
            host: hostname.unwrap_or_else(|| "127.0.0.1".to_string()),
        },
    )))
}
