//! The Docker boundary: the only place iohub talks to dockerd (through bollard, on the local
//! socket). Everything the services need is here, in iohub's own small types, so that no service
//! names a bollard type: containers (list, inspect, create, start, stop, restart, remove,
//! logs), the container event stream, images (list, import, remove), networks (ensure) and the
//! data root's disk usage.
//!
//! The API version is negotiated at connect time: bollard speaks 1.53 by default and the
//! engine on IOhubOS boxes (Debian's docker.io 20.10) answers only up to 1.41.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HostConfig, NetworkCreateRequest, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::models::{ContainerSummaryStateEnum, EventMessageTypeEnum, HealthStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, InspectContainerOptions,
    ListContainersOptions, ListImagesOptions, ListNetworksOptions, LogsOptions,
    RemoveContainerOptions, RemoveImageOptions, RestartContainerOptions, StartContainerOptions,
    StopContainerOptions,
};
use futures::{Stream, StreamExt};
use serde::Serialize;

/// The compose v1 project label; docker-compose sets it to the folder name of the compose file.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// The compose v1 service label.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// How long one API call may take (logs and events streams are not bounded by it).
const API_TIMEOUT_SECS: u64 = 120;

/// A dockerd error, with what we were doing.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct DockerError {
    pub what: String,
    pub message: String,
    /// HTTP status of the engine's answer, when it answered.
    pub status: Option<u16>,
}

impl DockerError {
    fn new(what: impl Into<String>, e: bollard::errors::Error) -> DockerError {
        let status = match &e {
            bollard::errors::Error::DockerResponseServerError { status_code, .. } => {
                Some(*status_code)
            }
            _ => None,
        };
        DockerError {
            what: what.into(),
            message: e.to_string(),
            status,
        }
    }

    /// The engine answered 404 (no such container or image).
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    /// The engine answered 304 (already started / already stopped).
    pub fn is_not_modified(&self) -> bool {
        self.status == Some(304)
    }
}

/// One published port: `ip:public -> private/proto`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PortMap {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public: Option<u16>,
    pub private: u16,
    pub proto: String,
}

/// A container as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    pub id: String,
    /// The name without its leading `/`.
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// `created`, `running`, `exited`, ...
    pub state: String,
    /// Docker's human status (`Up 3 minutes (healthy)`).
    pub status: String,
    pub created: i64,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PortMap>,
}

impl Container {
    pub fn running(&self) -> bool {
        self.state == "running"
    }

    /// The compose project label, if any.
    pub fn project(&self) -> Option<&str> {
        self.labels.get(COMPOSE_PROJECT).map(String::as_str)
    }

    /// The compose service label, if any.
    pub fn service(&self) -> Option<&str> {
        self.labels.get(COMPOSE_SERVICE).map(String::as_str)
    }
}

/// What `inspect` adds to a listed container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ContainerDetail {
    pub restart_count: i64,
    /// `healthy`, `unhealthy`, `starting`; `None` without a health check.
    pub health: Option<String>,
    pub exit_code: Option<i64>,
    pub started_at: Option<String>,
    pub running: bool,
    /// The main process's PID as the host sees it (while running).
    pub pid: Option<u32>,
    /// The image the container was created from, as named at creation.
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// The networks the container is attached to.
    pub networks: Vec<String>,
}

/// A long-running container of iohub's own (a `docker create` + `docker start`), confined: read
/// only root, no capabilities, no new privileges, a few PIDs, restarted unless stopped, killed
/// at once on stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnContainer {
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub network: String,
    pub labels: BTreeMap<String, String>,
}

/// An image as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    pub id: String,
    pub tags: Vec<String>,
    pub size_bytes: i64,
}

/// A container event (`start`, `die`, `health_status: healthy`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerEvent {
    pub action: String,
    pub id: String,
    /// The container name, when the engine says.
    pub name: Option<String>,
    /// The compose project label, when the container has one.
    pub project: Option<String>,
}

/// A log line of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub line: String,
}

/// A connected engine client (cheap to clone).
#[derive(Debug, Clone)]
pub struct Docker {
    inner: bollard::Docker,
}

impl Docker {
    /// Connect to the local socket (`DOCKER_HOST` when set, else `/var/run/docker.sock`) and
    /// negotiate the API version.
    pub async fn connect() -> Result<Docker, DockerError> {
        let inner = match std::env::var("DOCKER_HOST") {
            Ok(host) if host.starts_with("unix://") => bollard::Docker::connect_with_unix(
                &host,
                API_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
            _ => bollard::Docker::connect_with_unix(
                "/var/run/docker.sock",
                API_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
        }
        .map_err(|e| DockerError::new("connect to dockerd", e))?;
        let inner = inner
            .negotiate_version()
            .await
            .map_err(|e| DockerError::new("negotiate the API version", e))?;
        Ok(Docker { inner })
    }

    /// The engine's data root (`/var/lib/docker`).
    pub async fn data_root(&self) -> Result<String, DockerError> {
        let info = self
            .inner
            .info()
            .await
            .map_err(|e| DockerError::new("docker info", e))?;
        Ok(info
            .docker_root_dir
            .unwrap_or_else(|| "/var/lib/docker".into()))
    }

    /// Every container (stopped ones included).
    pub async fn containers(&self) -> Result<Vec<Container>, DockerError> {
        let opts = ListContainersOptions {
            all: true,
            ..Default::default()
        };
        let list = self
            .inner
            .list_containers(Some(opts))
            .await
            .map_err(|e| DockerError::new("list containers", e))?;
        Ok(list
            .into_iter()
            .map(|c| {
                let name = c
                    .names
                    .as_ref()
                    .and_then(|n| n.first())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default();
                let mut ports: Vec<PortMap> = c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| PortMap {
                        ip: p.ip,
                        public: p.public_port,
                        private: p.private_port,
                        proto: p.typ.map(|t| t.to_string()).unwrap_or_else(|| "tcp".into()),
                    })
                    .collect();
                ports.sort();
                ports.dedup();
                Container {
                    id: c.id.unwrap_or_default(),
                    name,
                    image: c.image.unwrap_or_default(),
                    image_id: c.image_id.unwrap_or_default(),
                    state: c
                        .state
                        .unwrap_or(ContainerSummaryStateEnum::EMPTY)
                        .to_string(),
                    status: c.status.unwrap_or_default(),
                    created: c.created.unwrap_or(0),
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                    ports,
                }
            })
            .collect())
    }

    /// Restart count and health of one container.
    pub async fn inspect(&self, id: &str) -> Result<ContainerDetail, DockerError> {
        let c = self
            .inner
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| DockerError::new(format!("inspect {id}"), e))?;
        let state = c.state.unwrap_or_default();
        let config = c.config.unwrap_or_default();
        let mut networks: Vec<String> = c
            .network_settings
            .and_then(|n| n.networks)
            .map(|n| n.into_keys().collect())
            .unwrap_or_default();
        networks.sort();
        Ok(ContainerDetail {
            running: state.running.unwrap_or(false),
            pid: state
                .pid
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p > 0),
            image: config.image.unwrap_or_default(),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            networks,
            restart_count: c.restart_count.unwrap_or(0),
            health: state
                .health
                .and_then(|h| h.status)
                .filter(|s| *s != HealthStatusEnum::EMPTY && *s != HealthStatusEnum::NONE)
                .map(|s| s.to_string()),
            exit_code: state.exit_code,
            started_at: state.started_at,
        })
    }

    /// Create (not start) `spec`; returns the new container's id.
    pub async fn create(&self, spec: &OwnContainer) -> Result<String, DockerError> {
        let host = HostConfig {
            network_mode: Some(spec.network.clone()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            pids_limit: Some(8),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            stop_signal: Some("SIGKILL".into()),
            network_disabled: Some(false),
            host_config: Some(host),
            ..Default::default()
        };
        let opts = CreateContainerOptions {
            name: Some(spec.name.clone()),
            platform: String::new(),
        };
        self.inner
            .create_container(Some(opts), body)
            .await
            .map(|r| r.id)
            .map_err(|e| DockerError::new(format!("create container {}", spec.name), e))
    }

    /// Create the bridge network `name` unless a network of exactly that name exists; returns
    /// whether it was created.
    pub async fn ensure_network(&self, name: &str) -> Result<bool, DockerError> {
        let mut filters = std::collections::HashMap::new();
        // The engine's name filter matches substrings: compare exactly below.
        filters.insert("name".to_string(), vec![name.to_string()]);
        let list = self
            .inner
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| DockerError::new("list networks", e))?;
        if list.iter().any(|n| n.name.as_deref() == Some(name)) {
            return Ok(false);
        }
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            ..Default::default()
        };
        self.inner
            .create_network(request)
            .await
            .map(|_| true)
            .map_err(|e| DockerError::new(format!("create network {name}"), e))
    }

    /// Whether an image of that reference exists locally.
    pub async fn image_exists(&self, reference: &str) -> Result<bool, DockerError> {
        match self.inner.inspect_image(reference).await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = DockerError::new(format!("inspect image {reference}"), e);
                if e.is_not_found() {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// `docker import`: make the image `repo:tag` from a root filesystem tar, with Dockerfile
    /// `changes` (`CMD [...]`, `ENV ...`).
    pub async fn import_rootfs(
        &self,
        rootfs_tar: bytes::Bytes,
        repo: &str,
        tag: &str,
        changes: Vec<String>,
    ) -> Result<(), DockerError> {
        let opts = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo.into()),
            tag: Some(tag.into()),
            changes,
            ..Default::default()
        };
        let mut progress =
            self.inner
                .create_image(Some(opts), Some(bollard::body_full(rootfs_tar)), None);
        while let Some(item) = progress.next().await {
            item.map_err(|e| DockerError::new(format!("import {repo}:{tag}"), e))?;
        }
        Ok(())
    }

    /// Start a container; an already running one is fine.
    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        match self
            .inner
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            Err(e) => {
                let e = DockerError::new(format!("start {id}"), e);
                if e.is_not_modified() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Ok(()) => Ok(()),
        }
    }

    /// Stop a container (SIGTERM, SIGKILL after `timeout`); a stopped one is fine.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), DockerError> {
        let opts = StopContainerOptions {
            t: Some(secs(timeout)),
            signal: None,
        };
        match self.inner.stop_container(id, Some(opts)).await {
            Err(e) => {
                let e = DockerError::new(format!("stop {id}"), e);
                if e.is_not_modified() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Ok(()) => Ok(()),
        }
    }

    /// Restart a container.
    pub async fn restart(&self, id: &str, timeout: Duration) -> Result<(), DockerError> {
        let opts = RestartContainerOptions {
            t: Some(secs(timeout)),
            signal: None,
        };
        self.inner
            .restart_container(id, Some(opts))
            .await
            .map_err(|e| DockerError::new(format!("restart {id}"), e))
    }

    /// Remove a container (forcefully: a running one is killed). Its anonymous volumes are
    /// kept (named and bind volumes are never touched).
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        let opts = RemoveContainerOptions {
            force: true,
            v: false,
            link: false,
        };
        self.inner
            .remove_container(id, Some(opts))
            .await
            .map_err(|e| DockerError::new(format!("remove {id}"), e))
    }

    /// The last `tail` log lines of a container; with `follow`, the stream goes on with new
    /// lines (the caller bounds it).
    pub fn logs(
        &self,
        id: &str,
        tail: usize,
        follow: bool,
    ) -> Pin<Box<dyn Stream<Item = Result<LogLine, DockerError>> + Send>> {
        let opts = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            ..Default::default()
        };
        let what = format!("logs of {id}");
        self.inner
            .logs(id, Some(opts))
            .flat_map(move |item| {
                let lines: Vec<Result<LogLine, DockerError>> = match item {
                    Ok(out) => {
                        let (stream, bytes) = match out {
                            bollard::container::LogOutput::StdErr { message } => {
                                ("stderr", message)
                            }
                            bollard::container::LogOutput::StdOut { message }
                            | bollard::container::LogOutput::Console { message }
                            | bollard::container::LogOutput::StdIn { message } => {
                                ("stdout", message)
                            }
                        };
                        String::from_utf8_lossy(&bytes)
                            .lines()
                            .map(|l| {
                                Ok(LogLine {
                                    stream,
                                    line: l.to_string(),
                                })
                            })
                            .collect()
                    }
                    Err(e) => vec![Err(DockerError::new(what.clone(), e))],
                };
                futures::stream::iter(lines)
            })
            .boxed()
    }

    /// Container events from now on (the stream ends when dockerd goes away).
    pub fn container_events(
        &self,
    ) -> Pin<Box<dyn Stream<Item = Result<ContainerEvent, DockerError>> + Send>> {
        let mut filters = std::collections::HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        let opts = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        self.inner
            .events(Some(opts))
            .filter_map(|item| async move {
                match item {
                    Ok(ev) => {
                        if ev.typ.is_some_and(|t| t != EventMessageTypeEnum::CONTAINER) {
                            return None;
                        }
                        let actor = ev.actor.unwrap_or_default();
                        let attrs = actor.attributes.unwrap_or_default();
                        Some(Ok(ContainerEvent {
                            action: ev.action.unwrap_or_default(),
                            id: actor.id.unwrap_or_default(),
                            name: attrs.get("name").cloned(),
                            project: attrs.get(COMPOSE_PROJECT).cloned(),
                        }))
                    }
                    Err(e) => Some(Err(DockerError::new("docker events", e))),
                }
            })
            .boxed()
    }

    /// Every image (tagged or not; intermediate layers excluded).
    pub async fn images(&self) -> Result<Vec<Image>, DockerError> {
        let list = self
            .inner
            .list_images(Some(ListImagesOptions::default()))
            .await
            .map_err(|e| DockerError::new("list images", e))?;
        Ok(list
            .into_iter()
            .map(|i| Image {
                id: i.id,
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                size_bytes: i.size,
            })
            .collect())
    }

    /// Remove an image by id (not forced: an image a container uses stays).
    pub async fn remove_image(&self, id: &str) -> Result<(), DockerError> {
        let opts = RemoveImageOptions {
            force: false,
            noprune: false,
            platforms: None,
        };
        self.inner
            .remove_image(id, Some(opts), None)
            .await
            .map(|_| ())
            .map_err(|e| DockerError::new(format!("remove image {id}"), e))
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// Used percentage of the filesystem holding `path` (`statvfs`), e.g. Docker's data root.
pub fn disk_used_percent(path: &std::path::Path) -> std::io::Result<u8> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let total = st.blocks() as u128 * st.fragment_size() as u128;
    let avail = st.blocks_available() as u128 * st.fragment_size() as u128;
    let free = st.blocks_free() as u128 * st.fragment_size() as u128;
    if total == 0 {
        return Ok(0);
    }
    // Like df: used / (used + available to unprivileged users).
    let used = total.saturating_sub(free);
    let denom = used + avail;
    if denom == 0 {
        return Ok(0);
    }
    Ok(u8::try_from((used * 100).div_ceil(denom)).unwrap_or(100))
}
