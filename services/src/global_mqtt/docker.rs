//! The Docker side of the global broker: what keeps `<IOHUBOS_GLOBAL_MQTT_NAME>:1883` on the
//! bridge network `<IOHUBOS_GLOBAL_MQTT_NET>` answering for old IOhub apps, with iohubd's own
//! broker behind it instead of a mosquitto container (plan steps in [`super::plan`]).
//!
//! 1. The network is created (bridge) unless one of exactly that name exists; it is never
//!    removed (apps' containers may be attached to it).
//! 2. A placeholder container of that name runs on it, from a local image made offline at
//!    first use (`docker import` of a tar holding only a static busybox, whose `sleep` is the
//!    one process). It is confined (read-only root, no capabilities, 8 PIDs) and labelled
//!    `io.iohub.role=global-mqtt`. A container of that name without the label (the original's
//!    mosquitto, started by its `start.sh`) is removed and replaced.
//! 3. iohubd binds `0.0.0.0:1883` *inside the placeholder's network namespace*: a thread of its
//!    own `setns()`es into `/proc/<pid>/ns/net`, binds, and ends. The socket keeps that
//!    namespace, so Docker's DNS name and the container's address on the network lead apps
//!    straight into iohubd's front end, with no relay process and no copy of the traffic.
//!
//! When the container restarts (dockerd restart, `docker restart`, a reboot), its namespace is
//! a new one: the service follows the container's events and binds again.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

use bus_schema::{BusError, ErrorCode};

use sys::docker::{Docker, DockerError, OwnContainer};

/// The label marking iohub's own placeholder.
pub const ROLE_LABEL: &str = "io.iohub.role";
pub const ROLE: &str = "global-mqtt";

const PLACEHOLDER_REPO: &str = "iohub-netns-holder";
const PLACEHOLDER_TAG: &str = "1";

/// Where the static busybox the placeholder image is made of is looked for.
const BUSYBOX: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

/// The running placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub id: String,
    pub pid: u32,
}

fn docker_err(e: DockerError) -> BusError {
    BusError::new(ErrorCode::Unavailable, e.to_string())
}

/// The offline image the placeholder runs (made by `docker import` of a static busybox; only
/// `sleep` is used).
pub fn placeholder_image() -> String {
    format!("{PLACEHOLDER_REPO}:{PLACEHOLDER_TAG}")
}

fn spec(container: &str, network: &str) -> OwnContainer {
    OwnContainer {
        name: container.to_string(),
        image: placeholder_image(),
        cmd: ["/bin/busybox", "sleep", "2147483647"]
            .map(String::from)
            .to_vec(),
        network: network.to_string(),
        labels: BTreeMap::from([(ROLE_LABEL.to_string(), ROLE.to_string())]),
    }
}

/// Steps 1 and 2: the network, the image and the running placeholder; returns its PID.
pub async fn ensure(
    docker: &Docker,
    container: &str,
    network: &str,
) -> Result<Placeholder, BusError> {
    if docker.ensure_network(network).await.map_err(docker_err)? {
        tracing::info!(%network, "global broker network created");
    }
    let image = placeholder_image();
    if !docker.image_exists(&image).await.map_err(docker_err)? {
        let tar = tokio::task::spawn_blocking(placeholder_rootfs)
            .await
            .map_err(|e| BusError::new(ErrorCode::Internal, e.to_string()))??;
        docker
            .import_rootfs(tar.into(), PLACEHOLDER_REPO, PLACEHOLDER_TAG, Vec::new())
            .await
            .map_err(docker_err)?;
        tracing::info!(%image, "placeholder image imported");
    }
    let want = spec(container, network);
    let id = match docker.inspect(container).await {
        Err(e) if e.is_not_found() => create(docker, &want).await?,
        Err(e) => return Err(docker_err(e)),
        Ok(d) => {
            let ours = d.labels.get(ROLE_LABEL).map(String::as_str) == Some(ROLE);
            if ours && d.image == want.image && d.networks == [network.to_string()] {
                container.to_string()
            } else {
                if ours {
                    tracing::info!(%container, "placeholder changed: replacing it");
                } else {
                    tracing::warn!(%container, image = %d.image, "a container not made by iohub holds the global broker's name: replacing it");
                }
                docker.remove(container).await.map_err(docker_err)?;
                create(docker, &want).await?
            }
        }
    };
    docker.start(&id).await.map_err(docker_err)?;
    let d = docker.inspect(&id).await.map_err(docker_err)?;
    match d.pid {
        Some(pid) if d.running => Ok(Placeholder { id, pid }),
        _ => Err(BusError::new(
            ErrorCode::Unavailable,
            format!(
                "placeholder {container} is not running (exit code {:?})",
                d.exit_code
            ),
        )),
    }
}

async fn create(docker: &Docker, spec: &OwnContainer) -> Result<String, BusError> {
    let id = docker.create(spec).await.map_err(docker_err)?;
    tracing::info!(container = %spec.name, network = %spec.network, "placeholder created");
    Ok(id)
}

/// Remove the placeholder if it is ours (the broker was switched off).
pub async fn remove(docker: &Docker, container: &str) -> Result<bool, BusError> {
    match docker.inspect(container).await {
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(docker_err(e)),
        Ok(d) if d.labels.get(ROLE_LABEL).map(String::as_str) != Some(ROLE) => Ok(false),
        Ok(_) => {
            docker.remove(container).await.map_err(docker_err)?;
            Ok(true)
        }
    }
}

/// Step 3: a listening socket on `0.0.0.0:port` in the network namespace of `pid`. Blocking
/// (a short-lived thread of its own does the `setns`, so no other thread changes namespace).
pub fn bind_in_netns(pid: u32, port: u16) -> io::Result<TcpListener> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::Builder::new()
        .name("netns-bind".into())
        .spawn(move || -> io::Result<TcpListener> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })?
        .join()
        .map_err(|_| io::Error::other("the netns bind thread panicked"))?
}

/// The placeholder image's root filesystem: `bin/busybox` (static) and an empty `tmp/`.
fn placeholder_rootfs() -> Result<Vec<u8>, BusError> {
    let unavailable = |m: String| BusError::new(ErrorCode::Unavailable, m);
    let path = BUSYBOX
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            unavailable(format!(
                "no busybox at {}: the global broker's placeholder image is made of a static busybox",
                BUSYBOX.join(" or ")
            ))
        })?;
    let binary =
        std::fs::read(path).map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
    if !is_static_elf(&binary)? {
        return Err(unavailable(format!(
            "{} is dynamically linked: install a static busybox (Debian: busybox-static)",
            path.display()
        )));
    }
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        tar.append_data(&mut h, name, data)
    };
    add("bin/", tar::EntryType::Directory, 0o755, &[])
        .and_then(|()| add("tmp/", tar::EntryType::Directory, 0o1777, &[]))
        .and_then(|()| add("bin/busybox", tar::EntryType::Regular, 0o755, &binary))
        .map_err(|e| BusError::new(ErrorCode::Internal, format!("placeholder tar: {e}")))?;
    tar.into_inner()
        .map_err(|e| BusError::new(ErrorCode::Internal, format!("placeholder tar: {e}")))
}

/// Whether an ELF executable has no program interpreter (`PT_INTERP`), i.e. runs without a
/// dynamic loader in an otherwise empty image. Little-endian ELF32 and ELF64 only.
fn is_static_elf(bytes: &[u8]) -> Result<bool, BusError> {
    let bad = || {
        BusError::new(
            ErrorCode::Unavailable,
            "busybox is not a little-endian ELF file",
        )
    };
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(5) != Some(&1) {
        return Err(bad());
    }
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (phoff, phentsize, phnum) = match bytes.get(4) {
        Some(1) => (u32_at(0x1c), u16_at(0x2a), u16_at(0x2c)),
        Some(2) => (
            bytes
                .get(0x20..0x28)
                .and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok()),
            u16_at(0x36),
            u16_at(0x38),
        ),
        _ => return Err(bad()),
    };
    let (phoff, phentsize, phnum) = (
        phoff.ok_or_else(bad)?,
        phentsize.ok_or_else(bad)?,
        phnum.ok_or_else(bad)?,
    );
    const PT_INTERP: usize = 3;
    for i in 0..phnum {
        let p_type = u32_at(phoff + i * phentsize).ok_or_else(bad)?;
        if p_type == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_executables_are_told_apart() {
        // Whatever this machine has: the test binary itself is dynamically linked.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me).unwrap());
        assert!(is_static_elf(b"#!/bin/sh\n").is_err());
        let busybox = BUSYBOX.iter().map(Path::new).find(|p| p.is_file());
        let Some(elf) = busybox.map(|p| std::fs::read(p).unwrap()) else {
            // scripts/test.sh installs busybox-static: under CI its absence is a failure.
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "no busybox");
            return;
        };
        if is_static_elf(&elf).unwrap() {
            let tar = placeholder_rootfs().unwrap();
            let mut a = tar::Archive::new(&tar[..]);
            let names: Vec<String> = a
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect();
            assert_eq!(names, ["bin/", "tmp/", "bin/busybox"]);
        }
    }
}
