//! `IOHUBOS_ADMIN_API_COMPOSE_POLICY=restricted`: what a compose deployed through the admin API
//! may not ask of the host. With the default (`any`, the original's behaviour) a compose may run
//! privileged containers, join the host's namespaces and mount any host path, so the API token
//! is root-equivalent; `restricted` refuses, at deploy time, every key that would give a
//! container the host:
//!
//! - per service: `privileged` (anything but `false`), `network_mode`, `pid`, `ipc`, `uts`,
//!   `userns_mode` or `cgroup` set to `host`, `cap_add`, `devices`, `device_cgroup_rules`,
//!   `security_opt` that unconfines (`unconfined`, `label=disable`), `volumes_from` another
//!   container, `extends` from another file, and `volumes` that bind a host path outside the
//!   allowed folders;
//! - top level: local `volumes` whose `driver_opts.device` is such a path, `configs` and
//!   `secrets` whose `file` is, and `include` (other files are not checked).
//!
//! The allowed host folders are the app's own, `<root>/docker/apps/<app>` (relative paths are
//! relative to it, as for docker-compose), and the IOhub global volume,
//! `<root>/docker/global/volumes/global-vol` (SPEC §4.5). Paths are compared after resolving
//! `.` and `..` lexically. Merge keys (`<<: *anchor`) are followed, as docker-compose does.

use std::path::{Component, Path, PathBuf};

use yaml_rust2::Yaml;

/// Namespace keys of a service that may not be `host`.
const HOST_NAMESPACES: &[&str] = &["network_mode", "pid", "ipc", "uts", "userns_mode", "cgroup"];
/// Keys of a service refused whenever they hold anything.
const REFUSED_WHEN_SET: &[(&str, &str)] = &[
    ("cap_add", "adds kernel capabilities"),
    ("devices", "gives host devices"),
    ("device_cgroup_rules", "gives host devices"),
];
/// `security_opt` values that lift the confinement of a container.
const UNCONFINED: &[&str] = &["unconfined", "label=disable", "label:disable"];

/// The host folders a restricted compose may bind.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// `<root>/docker/apps/<app>`: relative paths resolve against it.
    pub app_dir: PathBuf,
    /// `<root>/docker/global/volumes/global-vol`.
    pub global_volume: PathBuf,
}

impl Allowed {
    fn contains(&self, path: &Path) -> bool {
        path.starts_with(&self.app_dir) || path.starts_with(&self.global_volume)
    }

    fn describe(&self) -> String {
        format!(
            "outside {} and {}",
            self.app_dir.display(),
            self.global_volume.display()
        )
    }
}

/// Every key of `doc` the restricted policy refuses, one message each naming the key (e.g.
/// `services.web.privileged: a privileged container is root on the host`); empty when the
/// compose is allowed.
pub fn restricted_violations(doc: &Yaml, allowed: &Allowed) -> Vec<String> {
    let mut out = Vec::new();
    if !matches!(doc["include"], Yaml::BadValue) {
        out.push("include: other compose files cannot be checked".to_string());
    }
    if let Yaml::Hash(services) = &doc["services"] {
        for (name, service) in services {
            let name = scalar_text(name);
            check_service(&format!("services.{name}"), service, allowed, &mut out);
        }
    }
    if let Yaml::Hash(volumes) = &doc["volumes"] {
        for (name, volume) in volumes {
            let key = format!("volumes.{}.driver_opts.device", scalar_text(name));
            if let Some(device) = lookup(volume, "driver_opts").and_then(|o| lookup(o, "device")) {
                check_host_path(&key, &scalar_text(device), allowed, &mut out);
            }
        }
    }
    for top in ["configs", "secrets"] {
        if let Yaml::Hash(items) = &doc[top] {
            for (name, item) in items {
                if let Some(file) = lookup(item, "file") {
                    let key = format!("{top}.{}.file", scalar_text(name));
                    check_host_path(&key, &scalar_text(file), allowed, &mut out);
                }
            }
        }
    }
    out
}

fn check_service(at: &str, service: &Yaml, allowed: &Allowed, out: &mut Vec<String>) {
    if let Some(v) = lookup(service, "privileged") {
        if !matches!(v, Yaml::Boolean(false)) {
            out.push(format!(
                "{at}.privileged: {}: a privileged container is root on the host",
                scalar_text(v)
            ));
        }
    }
    for key in HOST_NAMESPACES {
        if let Some(v) = lookup(service, key) {
            if scalar_text(v).trim().eq_ignore_ascii_case("host") {
                out.push(format!("{at}.{key}: host: shares the host's namespace"));
            }
        }
    }
    for (key, why) in REFUSED_WHEN_SET {
        if lookup(service, key).is_some_and(|v| !is_empty(v)) {
            out.push(format!("{at}.{key}: {why}"));
        }
    }
    if let Some(Yaml::Array(opts)) = lookup(service, "security_opt") {
        for (i, opt) in opts.iter().enumerate() {
            let opt = scalar_text(opt);
            if UNCONFINED.iter().any(|u| opt.contains(u)) {
                out.push(format!(
                    "{at}.security_opt[{i}]: {opt}: lifts the container's confinement"
                ));
            }
        }
    }
    if let Some(Yaml::Array(from)) = lookup(service, "volumes_from") {
        for (i, source) in from.iter().enumerate() {
            let source = scalar_text(source);
            if source.starts_with("container:") {
                out.push(format!(
                    "{at}.volumes_from[{i}]: {source}: another container's mounts cannot be checked"
                ));
            }
        }
    }
    if lookup(service, "extends").is_some_and(|e| lookup(e, "file").is_some()) {
        out.push(format!(
            "{at}.extends.file: another compose file cannot be checked"
        ));
    }
    if let Some(Yaml::Array(volumes)) = lookup(service, "volumes") {
        for (i, volume) in volumes.iter().enumerate() {
            let key = format!("{at}.volumes[{i}]");
            let source = match volume {
                Yaml::String(short) => short_syntax_source(short),
                Yaml::Hash(_) => {
                    let kind = lookup(volume, "type").map(scalar_text);
                    match kind.as_deref() {
                        Some("bind") => lookup(volume, "source").map(scalar_text),
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(source) = source {
                check_host_path(&key, &source, allowed, out);
            }
        }
    }
}

/// The host path of a short-syntax volume (`SOURCE:TARGET[:MODE]`), when it binds one: a source
/// that starts with `/`, `.` or `~` is a path, anything else a named volume.
fn short_syntax_source(spec: &str) -> Option<String> {
    let (source, _) = spec.split_once(':')?;
    source
        .starts_with(['/', '.', '~'])
        .then(|| source.to_string())
}

fn check_host_path(key: &str, path: &str, allowed: &Allowed, out: &mut Vec<String>) {
    let path = path.trim();
    if path.starts_with('~') {
        out.push(format!(
            "{key}: {path}: a home folder is {}",
            allowed.describe()
        ));
        return;
    }
    if !path.starts_with(['/', '.']) {
        // Not a host path (a named volume, a remote `device` like `:/export`).
        return;
    }
    let resolved = resolve(&allowed.app_dir, path);
    if !allowed.contains(&resolved) {
        out.push(format!(
            "{key}: {path}: binds {}, {}",
            resolved.display(),
            allowed.describe()
        ));
    }
}

/// `path` against `base`, with `.` and `..` resolved lexically (`..` never above `/`).
fn resolve(base: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    let joined = base.join(path);
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// `map[key]`, also through merge keys (`<<: *a` or `<<: [*a, *b]`), the map's own key first.
fn lookup<'a>(map: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    lookup_depth(map, key, 0)
}

fn lookup_depth<'a>(map: &'a Yaml, key: &str, depth: usize) -> Option<&'a Yaml> {
    let Yaml::Hash(h) = map else { return None };
    if let Some(v) = h.get(&Yaml::String(key.to_string())) {
        return Some(v);
    }
    // Bounded: merge chains are short; the expansion bound holds the document's size.
    if depth >= 16 {
        return None;
    }
    match h.get(&Yaml::String("<<".to_string()))? {
        merged @ Yaml::Hash(_) => lookup_depth(merged, key, depth + 1),
        Yaml::Array(list) => list.iter().find_map(|m| lookup_depth(m, key, depth + 1)),
        _ => None,
    }
}

fn is_empty(v: &Yaml) -> bool {
    match v {
        Yaml::Null | Yaml::BadValue => true,
        Yaml::Array(a) => a.is_empty(),
        Yaml::Hash(h) => h.is_empty(),
        Yaml::String(s) => s.is_empty(),
        _ => false,
    }
}

/// A scalar as text (a collection as its kind).
fn scalar_text(v: &Yaml) -> String {
    match v {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => "null".to_string(),
        Yaml::Array(_) => "a list".to_string(),
        Yaml::Hash(_) => "a map".to_string(),
        Yaml::Alias(_) | Yaml::BadValue => "?".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_api::compose::parse;

    fn allowed() -> Allowed {
        Allowed {
            app_dir: PathBuf::from("/iohub/docker/apps/web"),
            global_volume: PathBuf::from("/iohub/docker/global/volumes/global-vol"),
        }
    }

    fn violations(service: &str, top: &str) -> Vec<String> {
        let text = format!("version: '3'\nservices:\n  app:\n    image: x\n{service}{top}");
        restricted_violations(&parse(&text).unwrap(), &allowed())
    }

    /// One compose per refused key, each refused with a message naming the key.
    #[test]
    fn each_refused_key_is_named() {
        let cases = [
            ("    privileged: true\n", "", "services.app.privileged"),
            ("    privileged: 'yes'\n", "", "services.app.privileged"),
            ("    network_mode: host\n", "", "services.app.network_mode: host"),
            ("    pid: host\n", "", "services.app.pid: host"),
            ("    ipc: host\n", "", "services.app.ipc: host"),
            ("    uts: host\n", "", "services.app.uts: host"),
            ("    userns_mode: host\n", "", "services.app.userns_mode: host"),
            ("    cgroup: host\n", "", "services.app.cgroup: host"),
            ("    cap_add: [NET_ADMIN]\n", "", "services.app.cap_add"),
            ("    devices: ['/dev/sda:/dev/sda']\n", "", "services.app.devices"),
            (
                "    extends: {file: /etc/other.yml, service: x}\n",
                "",
                "services.app.extends.file",
            ),
            (
                "    volumes: ['/:/host']\n",
                "",
                "services.app.volumes[0]: /: binds /, outside /iohub/docker/apps/web",
            ),
            (
                "    volumes: ['../other/volumes:/data:ro']\n",
                "",
                "services.app.volumes[0]: ../other/volumes: binds /iohub/docker/apps/other/volumes",
            ),
            (
                "    volumes: ['/iohub/docker/apps/web/../../../envvars:/e']\n",
                "",
                "binds /iohub/envvars",
            ),
            ("    volumes: ['~/.ssh:/k']\n", "", "services.app.volumes[0]: ~/.ssh"),
            (
                "    volumes:\n      - {type: bind, source: /etc, target: /etc}\n",
                "",
                "services.app.volumes[0]: /etc: binds /etc",
            ),
            (
                "",
                "volumes:\n  data:\n    driver: local\n    driver_opts: {type: none, o: bind, device: /var/run}\n",
                "volumes.data.driver_opts.device: /var/run",
            ),
            (
                "",
                "secrets:\n  s:\n    file: /etc/shadow\n",
                "secrets.s.file: /etc/shadow",
            ),
            (
                "",
                "configs:\n  c:\n    file: ../../../../etc/passwd\n",
                "configs.c.file: ../../../../etc/passwd: binds /etc/passwd",
            ),
            ("", "include: [other.yml]\n", "include:"),
            (
                "    device_cgroup_rules: ['c 1:1 rwm']\n",
                "",
                "services.app.device_cgroup_rules",
            ),
            (
                "    security_opt: ['no-new-privileges:true', 'apparmor:unconfined']\n",
                "",
                "services.app.security_opt[1]: apparmor:unconfined",
            ),
            (
                "    volumes_from: ['container:iohub-registry']\n",
                "",
                "services.app.volumes_from[0]: container:iohub-registry",
            ),
        ];
        for (service, top, want) in cases {
            let v = violations(service, top);
            assert_eq!(v.len(), 1, "{service}{top}: {v:?}");
            assert!(v[0].contains(want), "{service}{top}: {v:?}");
        }
    }

    #[test]
    fn a_merge_key_does_not_hide_a_refused_key() {
        let text = "version: '3'\nx-base: &base\n  privileged: true\n  cap_add: [ALL]\nservices:\n  a:\n    <<: *base\n    image: x\n  b:\n    <<: [*base]\n    image: y\n";
        let v = restricted_violations(&parse(text).unwrap(), &allowed());
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(v.iter().any(|m| m.starts_with("services.a.privileged")));
        assert!(v.iter().any(|m| m.starts_with("services.b.cap_add")));
    }

    #[test]
    fn every_offending_key_is_reported_at_once() {
        let v = violations(
            "    privileged: true\n    network_mode: host\n    volumes: ['/etc:/etc', './ok:/ok']\n",
            "",
        );
        assert_eq!(v.len(), 3, "{v:?}");
    }

    /// An IOhub-style app: its own bind volumes, the global volume, named volumes, the global
    /// broker's external network, ports, an unprivileged user.
    #[test]
    fn an_iohub_style_compose_is_allowed() {
        let text = r#"version: '3.7'
services:
  web:
    image: nginx
    privileged: false
    network_mode: bridge
    ports: ["8080:80"]
    user: "1000:1000"
    volumes:
      - data:/data
      - global-vol:/global
      - ./conf:/etc/nginx/conf.d:ro
      - /iohub/docker/apps/web/volumes/logs:/logs
      - /iohub/docker/global/volumes/global-vol/shared:/shared
      - {type: bind, source: ./html, target: /usr/share/nginx/html}
      - {type: volume, source: data, target: /more}
      - /anonymous
    networks: [ezvpn-global-mqtt-net]
    cap_drop: [ALL]
    cap_add: []
volumes:
  data:
    driver: local
    driver_opts: {type: none, o: bind, device: /iohub/docker/apps/web/volumes/data}
  global-vol:
    driver: local
    driver_opts: {type: none, o: bind, device: /iohub/docker/global/volumes/global-vol}
  nfs:
    driver_opts: {type: nfs, o: "addr=10.0.0.1", device: ":/export"}
networks:
  ezvpn-global-mqtt-net:
    external: true
"#;
        assert_eq!(
            restricted_violations(&parse(text).unwrap(), &allowed()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn paths_resolve_lexically_against_the_app_folder() {
        let base = Path::new("/iohub/docker/apps/web");
        assert_eq!(
            resolve(base, "./a/../b"),
            Path::new("/iohub/docker/apps/web/b")
        );
        assert_eq!(resolve(base, "/../../etc"), Path::new("/etc"));
        assert_eq!(resolve(base, "../../../../../.."), Path::new("/"));
        // A sibling whose name starts with the app's is not inside it.
        let a = allowed();
        assert!(!a.contains(&resolve(base, "/iohub/docker/apps/webby")));
        assert!(a.contains(&resolve(base, "/iohub/docker/apps/web")));
    }
}
