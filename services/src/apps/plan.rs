//! Pure decisions of the apps service: which app dirs start at daemon start, which container
//! belongs to which app, an app's phase, and which images the garbage collector may remove.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bus_schema::Phase;
use serde::Serialize;

use crate::shared::apps::valid_app_name;
use sys::docker::{Container, Image};

/// One directory under `<root>/docker/apps/` as scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppDir {
    pub name: String,
    /// `start.sh` is a regular file.
    pub has_start: bool,
    /// `start.sh` is a regular file with an execute bit (the runner's `-x`).
    pub enabled: bool,
}

/// What happens to one app at daemon start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStart {
    pub app: String,
    /// `start` or `skip`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The start-up plan: apps in name order (the runner's glob order), started one after the other.
pub fn start_plan(docker_enabled: bool, live: bool, apps: &[AppDir]) -> Vec<PlannedStart> {
    let mut apps: Vec<&AppDir> = apps.iter().collect();
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    apps.into_iter()
        .map(|a| {
            let skip = if !valid_app_name(&a.name) {
                Some("not a valid app name (SPEC §4.5)".to_string())
            } else if !a.has_start {
                Some("no start.sh".to_string())
            } else if !a.enabled {
                Some("disabled (start.sh is not executable)".to_string())
            } else if !docker_enabled {
                Some("Docker is disabled (IOHUBOS_DOCKER_ENABLED)".to_string())
            } else if !live {
                Some("plan-only backend".to_string())
            } else {
                None
            };
            PlannedStart {
                app: a.name.clone(),
                action: if skip.is_some() { "skip" } else { "start" },
                reason: skip,
            }
        })
        .collect()
}

/// The app a container belongs to: its compose project label when that names an app, else the
/// longest app name that the container name equals or starts with followed by `_` or `-`.
pub fn app_of<'a>(c: &Container, apps: &'a BTreeSet<String>) -> Option<&'a String> {
    if let Some(project) = c.project() {
        return apps.get(project);
    }
    apps.iter()
        .filter(|a| {
            c.name == **a
                || c.name
                    .strip_prefix(a.as_str())
                    .is_some_and(|rest| rest.starts_with('_') || rest.starts_with('-'))
        })
        .max_by_key(|a| a.len())
}

/// Group containers by app (apps without containers get an empty list).
pub fn group<'a>(
    containers: &'a [Container],
    apps: &BTreeSet<String>,
) -> BTreeMap<String, Vec<&'a Container>> {
    let mut out: BTreeMap<String, Vec<&Container>> =
        apps.iter().map(|a| (a.clone(), Vec::new())).collect();
    for c in containers {
        if let Some(app) = app_of(c, apps) {
            out.entry(app.clone()).or_default().push(c);
        }
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

/// An app's phase: disabled; applied when it has containers and all run (healthy or without a
/// health check); degraded otherwise (none yet, one stopped, one unhealthy, a failed start).
pub fn app_phase(
    enabled: bool,
    running: usize,
    total: usize,
    unhealthy: usize,
    start_failed: bool,
) -> Phase {
    if !enabled && running == 0 {
        Phase::Disabled
    } else if total > 0 && running == total && unhealthy == 0 && !start_failed {
        Phase::Applied
    } else {
        Phase::Degraded
    }
}

/// Image references named by `image:` lines of a compose file (a line scan: enough to protect
/// the images of apps whose containers are gone).
pub fn compose_images(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start().strip_prefix("- ").unwrap_or(l.trim_start());
            let v = l.strip_prefix("image:")?.trim();
            let v = v.trim_matches(|c| c == '"' || c == '\'');
            (!v.is_empty() && !v.starts_with('#')).then(|| v.to_string())
        })
        .collect()
}

/// `repo:tag` with `:latest` added when there is no tag (`host:5000/x` has a port, not a tag).
fn normalise(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') || reference.contains('@') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

/// Images the garbage collector may remove: no container (running or not, of an app or not)
/// uses them and no app's compose file names them.
pub fn gc_candidates<'a>(
    images: &'a [Image],
    containers: &[Container],
    referenced: &BTreeSet<String>,
) -> Vec<&'a Image> {
    let used: BTreeSet<&str> = containers.iter().map(|c| c.image_id.as_str()).collect();
    let named: BTreeSet<String> = referenced.iter().map(|r| normalise(r)).collect();
    images
        .iter()
        .filter(|i| !used.contains(i.id.as_str()))
        .filter(|i| !i.tags.iter().any(|t| named.contains(&normalise(t))))
        .collect()
}

/// Text form of a start plan, for snapshots and logs.
pub fn render_start_plan(plan: &[PlannedStart]) -> String {
    let mut out = String::new();
    for p in plan {
        let _ = match &p.reason {
            Some(r) => writeln!(out, "{} {}: {r}", p.action, p.app),
            None => writeln!(out, "{} {}", p.action, p.app),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn dir(name: &str, has_start: bool, enabled: bool) -> AppDir {
        AppDir {
            name: name.into(),
            has_start,
            enabled,
        }
    }

    fn container(name: &str, project: Option<&str>, image_id: &str) -> Container {
        Container {
            id: format!("id-{name}"),
            name: name.into(),
            image: "img".into(),
            image_id: image_id.into(),
            state: "running".into(),
            status: "Up".into(),
            created: 0,
            labels: project
                .map(|p| {
                    [(sys::docker::COMPOSE_PROJECT.to_string(), p.to_string())]
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
            ports: Vec::new(),
        }
    }

    #[test]
    fn start_plan_runs_enabled_apps_in_name_order_and_says_why_others_wait() {
        let apps = [
            dir("zeta", true, true),
            dir("alpha", true, true),
            dir("off", true, false),
            dir("empty", false, false),
            dir("Bad Name", true, true),
        ];
        expect![[r#"
            skip Bad Name: not a valid app name (SPEC §4.5)
            start alpha
            skip empty: no start.sh
            skip off: disabled (start.sh is not executable)
            start zeta
        "#]]
        .assert_eq(&render_start_plan(&start_plan(true, true, &apps)));
        expect![[r#"
            skip alpha: Docker is disabled (IOHUBOS_DOCKER_ENABLED)
        "#]]
        .assert_eq(&render_start_plan(&start_plan(false, true, &apps[1..2])));
        expect![[r#"
            skip alpha: plan-only backend
        "#]]
        .assert_eq(&render_start_plan(&start_plan(true, false, &apps[1..2])));
    }

    #[test]
    fn containers_belong_to_their_compose_project_or_the_longest_name_prefix() {
        let apps: BTreeSet<String> = ["a", "a-b", "grafana", "web"].map(String::from).into();
        let cs = [
            container("web_httpd_1", Some("web"), "i1"),
            container("a-b-x", None, "i1"),
            container("a_1", None, "i1"),
            container("grafana", None, "i1"),
            container("webby", None, "i1"),
            container("x_1", Some("unknown"), "i1"),
            container("web-2", Some("unknown"), "i1"),
        ];
        let got: Vec<String> = cs
            .iter()
            .map(|c| format!("{} -> {:?}", c.name, app_of(c, &apps)))
            .collect();
        expect![[r#"
            [
                "web_httpd_1 -> Some(\"web\")",
                "a-b-x -> Some(\"a-b\")",
                "a_1 -> Some(\"a\")",
                "grafana -> Some(\"grafana\")",
                "webby -> None",
                "x_1 -> None",
                "web-2 -> None",
            ]
        "#]]
        .assert_debug_eq(&got);
    }

    #[test]
    fn garbage_collection_spares_images_in_use_or_named_by_an_app() {
        let images = vec![
            Image {
                id: "sha256:used".into(),
                tags: vec!["busybox:1".into()],
                size_bytes: 1,
            },
            Image {
                id: "sha256:named".into(),
                tags: vec!["host:5000/grafana:latest".into()],
                size_bytes: 1,
            },
            Image {
                id: "sha256:stale".into(),
                tags: vec!["old:2".into()],
                size_bytes: 1,
            },
            Image {
                id: "sha256:dangling".into(),
                tags: vec![],
                size_bytes: 1,
            },
        ];
        let containers = [container("c", None, "sha256:used")];
        let compose = "services:\n  g:\n    image: \"host:5000/grafana\"\n  # image: old:2\n";
        let refs: BTreeSet<String> = compose_images(compose).into_iter().collect();
        let ids: Vec<&str> = gc_candidates(&images, &containers, &refs)
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        expect![[r#"
            [
                "sha256:stale",
                "sha256:dangling",
            ]
        "#]]
        .assert_debug_eq(&ids);
    }

    #[test]
    fn an_app_is_applied_only_when_every_container_runs_healthy() {
        let got = [
            app_phase(true, 2, 2, 0, false),
            app_phase(true, 1, 2, 0, false),
            app_phase(true, 2, 2, 1, false),
            app_phase(true, 0, 0, 0, false),
            app_phase(false, 0, 1, 0, false),
            app_phase(true, 2, 2, 0, true),
        ];
        expect![[r#"
            [
                Applied,
                Degraded,
                Degraded,
                Degraded,
                Disabled,
                Degraded,
            ]
        "#]]
        .assert_debug_eq(&got);
    }
}
