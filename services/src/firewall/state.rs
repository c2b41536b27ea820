//! The firewall's payloads: the `facts` of `iohub/state/firewall` and the plan on
//! `iohub/plan/firewall`. Pure.

use bus_schema::sections::{Ipv4Cidr, NetworkMode};
use bus_schema::LineError;
use serde::Serialize;

use super::config::{Desired, NamesFrom};
use super::plan::{Exposed, Plan, Summary, FAMILY_NAME, TABLE};
use crate::ctx::Backend;

/// Above this many forwards the plan carries a summary and the hash instead of the ruleset
/// (10,000 forwards are ~1.5 MB of JSON; a retained message of that size helps no one).
pub const PLAN_FULL_MAX_FORWARDS: usize = 1000;

/// How many refused/rejected lines the retained state lists (the counts are always exact).
pub const LISTED_MAX: usize = 100;

/// The interfaces the ruleset uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interfaces {
    pub wan: Option<String>,
    pub lan: Option<String>,
    pub lan_cidr: Option<Ipv4Cidr>,
    pub from: NamesFrom,
    pub mode: NetworkMode,
}

impl Interfaces {
    pub fn of(d: &Desired) -> Interfaces {
        Interfaces {
            wan: d.wan.clone(),
            lan: d.lan.clone(),
            lan_cidr: d.lan_cidr,
            from: d.names_from,
            mode: d.mode,
        }
    }
}

/// What the last conntrack cut did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConntrackCut {
    /// `conntrack -D -s <cidr>`.
    pub source: String,
    /// Its outcome (the tool's message).
    pub result: String,
}

/// `facts` of `iohub/state/firewall`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub backend: Backend,
    /// `inet iohub`.
    pub table: String,
    pub managed: bool,
    pub interfaces: Interfaces,
    pub router_to_internet: bool,
    /// Ports the box exposes on the uplink (forwards may not take them).
    pub exposed: Vec<Exposed>,
    /// Forwards refused by the firewall (collisions), with file, line and reason.
    pub refused: Vec<LineError>,
    pub refused_count: usize,
    /// Lines the config service could not parse (they do not apply either).
    pub rejected_lines: Vec<LineError>,
    pub rejected_lines_count: usize,
    pub summary: Summary,
    /// SHA-256 of the ruleset in the kernel (the last load that succeeded); none before one.
    pub applied_sha256: Option<String>,
    /// How many transactions this run loaded (an unchanged config loads nothing).
    pub loads: u64,
    /// How long the last load took in `nft`, in ms.
    pub last_load_ms: Option<u64>,
    /// The last conntrack cut (router-to-internet switched off).
    pub conntrack_cut: Option<ConntrackCut>,
    /// What the last reconcile did to Docker's `DOCKER-USER` chain (live backend only): see
    /// [`super::apply::hook_docker`].
    pub docker_user: Option<String>,
    pub notes: Vec<String>,
}

fn first<T: Clone>(items: &[T]) -> Vec<T> {
    items.iter().take(LISTED_MAX).cloned().collect()
}

impl Facts {
    pub fn new(backend: Backend, d: &Desired, plan: &Plan) -> Facts {
        Facts {
            backend,
            table: format!("{FAMILY_NAME} {TABLE}"),
            managed: d.managed,
            interfaces: Interfaces::of(d),
            router_to_internet: d.router_to_internet,
            exposed: plan.exposed.clone(),
            refused: first(&plan.refused),
            refused_count: plan.refused.len(),
            rejected_lines: first(&d.rejected_lines),
            rejected_lines_count: d.rejected_lines.len(),
            summary: plan.summary.clone(),
            applied_sha256: None,
            loads: 0,
            last_load_ms: None,
            conntrack_cut: None,
            docker_user: None,
            notes: plan.notes.clone(),
        }
    }
}

/// The payload of `iohub/plan/firewall`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanPayload {
    pub version: u32,
    pub backend: Backend,
    pub table: String,
    pub managed: bool,
    pub interfaces: Interfaces,
    pub refused: Vec<LineError>,
    pub summary: Summary,
    pub notes: Vec<String>,
    /// The exact transaction (`nft -j -f -` input), up to [`PLAN_FULL_MAX_FORWARDS`] forwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<serde_json::Value>,
    /// Why the ruleset is left out (then `summary.sha256` identifies it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruleset_omitted: Option<String>,
}

impl PlanPayload {
    pub fn new(backend: Backend, d: &Desired, plan: &Plan) -> PlanPayload {
        let big = d.forwards.len() > PLAN_FULL_MAX_FORWARDS;
        PlanPayload {
            version: bus_schema::PAYLOAD_VERSION,
            backend,
            table: format!("{FAMILY_NAME} {TABLE}"),
            managed: d.managed,
            interfaces: Interfaces::of(d),
            refused: first(&plan.refused),
            summary: plan.summary.clone(),
            notes: plan.notes.clone(),
            ruleset: (!big).then(|| serde_json::to_value(&plan.ruleset).unwrap_or_default()),
            ruleset_omitted: big.then(|| {
                format!(
                    "{} forwards (more than {PLAN_FULL_MAX_FORWARDS}): summary and sha256 only",
                    d.forwards.len()
                )
            }),
        }
    }
}
