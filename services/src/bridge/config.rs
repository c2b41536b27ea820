//! The `bridge` section (`IOHUBOS_BRIDGE_*`) -> the plan of the bridge service: one remote, its
//! out maps (each topic filter carried under the same name), its queue budget, and its fleet
//! topics (commands in, replies out). Every problem is reported at once.

use std::path::PathBuf;

use ::bridge::{Direction, MapSpec, Maps};
use bus_schema::sections::Bridge;
use bus_schema::topic::filter;
use bus_schema::{BusError, ErrorCode};
use serde::Serialize;

/// The remote of the `IOHUBOS_BRIDGE_*` variables.
pub const DEFAULT_REMOTE: &str = "default";

/// What the bridge service runs: the validated section, or nothing when disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgePlan {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemotePlan>,
}

/// One remote to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemotePlan {
    pub name: String,
    /// `(host, port)` of each node.
    pub addresses: Vec<(String, u16)>,
    pub tls: bool,
    pub username: Option<String>,
    /// Whether a password is set (it is never published).
    pub password_set: bool,
    #[serde(skip)]
    pub password: Option<String>,
    /// `local filter -> remote template` of each out map.
    pub maps: Vec<(String, String)>,
    pub queue_dir: PathBuf,
    pub budget_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Fleet>,
}

/// The fleet topics of a remote (`IOHUBOS_BRIDGE_FLEET_*`, `IOHUBOS_BRIDGE_BOX_ID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fleet {
    pub prefix: String,
    /// `None`: the host name.
    pub box_id: Option<String>,
    /// `<verb>` or `<service>/<verb>` entries.
    pub commands: Vec<String>,
}

/// The local client name of fleet requests: their replies come back on
/// `iohub/reply/<FLEET_CLIENT>/<id>`.
pub const FLEET_CLIENT: &str = "bridge-fleet";

impl Fleet {
    /// Whether the fleet may run `verb` of `service`.
    pub fn allows(&self, service: &str, verb: &str) -> bool {
        self.commands.iter().any(|c| match c.split_once('/') {
            Some((s, v)) => s == service && v == verb,
            None => c == verb,
        })
    }

    /// The fleet's maps: requests in from the box's and every box's command topics, replies out.
    fn maps(&self) -> Vec<MapSpec> {
        let p = &self.prefix;
        let map = |direction, from: String, template: &str| MapSpec {
            direction,
            filter: from,
            template: template.to_string(),
            priority: 0,
            ttl_ms: None,
        };
        vec![
            map(
                Direction::In,
                format!("{p}/{{box}}/cmd/+/+"),
                filter::CMD_LEVELS,
            ),
            map(
                Direction::In,
                format!("{p}/all/cmd/+/+"),
                filter::CMD_LEVELS,
            ),
            map(
                Direction::Out,
                filter::replies(FLEET_CLIENT),
                &format!("{p}/{{box}}/reply/+"),
            ),
        ]
    }
}

impl RemotePlan {
    /// The bridge crate's remote, with `client_id`; `ca_pem` is what TLS trusts.
    pub fn remote(&self, client_id: &str, ca_pem: Option<Vec<u8>>) -> ::bridge::Remote {
        ::bridge::Remote {
            name: self.name.clone(),
            addresses: self.addresses.clone(),
            tls: ca_pem.filter(|_| self.tls).map(|ca_pem| ::bridge::Tls {
                ca_pem,
                client: None,
            }),
            username: self.username.clone(),
            password: self.password.clone(),
            client_id: client_id.to_string(),
            keep_alive_secs: 30,
            max_inflight: 256,
            backoff: ::bridge::Backoff::default(),
        }
    }

    /// The validated maps (for `box_id`).
    pub fn maps(&self, box_id: &str) -> Result<Maps, Vec<BusError>> {
        let specs: Vec<MapSpec> = self
            .maps
            .iter()
            .map(|(filter, template)| MapSpec {
                direction: Direction::Out,
                filter: filter.clone(),
                template: template.clone(),
                priority: 0,
                ttl_ms: None,
            })
            .chain(self.fleet.iter().flat_map(Fleet::maps))
            .collect();
        Maps::new(&specs, box_id).map_err(|errs| {
            errs.into_iter()
                .map(|e| {
                    BusError::new(ErrorCode::InvalidValue, e.to_string())
                        .with_field("IOHUBOS_BRIDGE_TOPICS")
                })
                .collect()
        })
    }
}

/// The plan of a `bridge` section; `runtime` is `<root>/runtime`.
pub fn plan(section: &Bridge, runtime: &std::path::Path) -> Result<BridgePlan, Vec<BusError>> {
    if !section.enabled {
        return Ok(BridgePlan {
            enabled: false,
            remote: None,
        });
    }
    let mut errors = Vec::new();
    let url = section.url.as_ref();
    if url.is_none() {
        errors.push(
            BusError::new(
                ErrorCode::InvalidValue,
                "IOHUBOS_BRIDGE_URL is required when enabled",
            )
            .with_field("IOHUBOS_BRIDGE_URL"),
        );
    }
    let remote = RemotePlan {
        name: DEFAULT_REMOTE.to_string(),
        addresses: url.map(|u| (u.host.clone(), u.port)).into_iter().collect(),
        tls: url.is_some_and(|u| u.tls),
        username: section.username.clone(),
        password_set: section.password.is_set(),
        password: section
            .password
            .is_set()
            .then(|| section.password.expose().to_string()),
        maps: section
            .topics
            .iter()
            .map(|t| (t.clone(), t.clone()))
            .collect(),
        queue_dir: runtime.join("bridge").join(DEFAULT_REMOTE),
        budget_bytes: u64::from(section.queue_mib) << 20,
        fleet: section.fleet_prefix.as_ref().map(|prefix| Fleet {
            prefix: prefix.clone(),
            box_id: section.box_id.clone(),
            commands: section.fleet_commands.clone(),
        }),
    };
    if let Err(e) = remote.maps("box") {
        errors.extend(e);
    }
    if remote.maps.is_empty() {
        errors.push(
            BusError::new(
                ErrorCode::InvalidValue,
                "IOHUBOS_BRIDGE_TOPICS names no topic to forward",
            )
            .with_field("IOHUBOS_BRIDGE_TOPICS"),
        );
    }
    if errors.is_empty() {
        Ok(BridgePlan {
            enabled: true,
            remote: Some(remote),
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_schema::sections::BrokerUrl;
    use bus_schema::{Secret, ServiceName, Topic, Verb};

    fn section(url: Option<&str>, topics: &[&str]) -> Bridge {
        Bridge {
            enabled: true,
            url: url.map(|h| BrokerUrl {
                tls: true,
                host: h.to_string(),
                port: 8883,
            }),
            username: Some("box".into()),
            password: Secret::new("pw"),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            queue_mib: 64,
            fleet_prefix: None,
            box_id: None,
            fleet_commands: Vec::new(),
        }
    }

    #[test]
    fn every_problem_of_the_section_is_reported_at_once() {
        let errs = plan(&section(None, &[]), std::path::Path::new("/r")).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.clone()).collect();
        assert_eq!(
            fields,
            vec![
                Some("IOHUBOS_BRIDGE_URL".to_string()),
                Some("IOHUBOS_BRIDGE_TOPICS".to_string())
            ]
        );
    }

    #[test]
    fn the_section_becomes_one_remote_carrying_each_filter_under_its_name() {
        let p = plan(
            &section(Some("cloud.example"), &["sensors/#", "plant/+/t"]),
            std::path::Path::new("/iohub/runtime"),
        )
        .unwrap();
        let r = p.remote.unwrap();
        assert_eq!(r.addresses, vec![("cloud.example".to_string(), 8883)]);
        assert_eq!(r.budget_bytes, 64 << 20);
        assert_eq!(
            r.queue_dir,
            std::path::Path::new("/iohub/runtime/bridge/default")
        );
        let maps = r.maps("b1").unwrap();
        let (_, out) = maps.route(Direction::Out, "plant/l1/t").unwrap();
        assert_eq!(out, "plant/l1/t");
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            !json.contains("pw"),
            "the password is never published: {json}"
        );
        let disabled = Bridge {
            enabled: false,
            ..section(None, &[])
        };
        assert_eq!(
            plan(&disabled, std::path::Path::new("/r")).unwrap().remote,
            None
        );
    }

    #[test]
    fn fleet_commands_come_in_replies_go_out_and_the_allow_list_is_by_verb_or_service() {
        let mut s = section(Some("cloud.example"), &["plant/#"]);
        s.fleet_prefix = Some("acme/fleet".into());
        s.fleet_commands = vec!["status".into(), "apps/restart".into()];
        let r = plan(&s, std::path::Path::new("/r"))
            .unwrap()
            .remote
            .unwrap();
        let fleet = r.fleet.clone().unwrap();
        assert!(fleet.allows("ssh", "status"));
        assert!(fleet.allows("apps", "restart"));
        assert!(!fleet.allows("ssh", "restart"));
        assert!(!fleet.allows("config", "set"));
        let maps = r.maps("b7").unwrap();
        let route = |d, t: &str| maps.route(d, t).map(|(_, to)| to);
        let reply_r1 = Topic::reply(FLEET_CLIENT, "r1").unwrap().to_string();
        assert_eq!(
            route(Direction::In, "acme/fleet/b7/cmd/apps/restart"),
            Some(Topic::Cmd(ServiceName::Apps, Verb::Restart).to_string())
        );
        assert_eq!(
            route(Direction::In, "acme/fleet/all/cmd/ssh/status"),
            Some(Topic::Cmd(ServiceName::Ssh, Verb::Status).to_string())
        );
        assert_eq!(route(Direction::In, "acme/fleet/b8/cmd/ssh/status"), None);
        assert_eq!(
            route(Direction::Out, &reply_r1).as_deref(),
            Some("acme/fleet/b7/reply/r1")
        );
        // Forwarding every local topic would send the fleet's commands back out: refused.
        s.topics = vec!["#".into()];
        let errs = plan(&s, std::path::Path::new("/r")).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.field.as_deref() == Some("IOHUBOS_BRIDGE_TOPICS")),
            "{errs:?}"
        );
    }
}
