//! A `set` checked with the services it concerns, before anything is written: the sections
//! whose content the edit changes go, as a [`CheckRequest`], to every service that follows them
//! ([`Section::followers`]) and runs (it has a state); each answers with the plan it would make
//! or every reason it would refuse them (a timezone missing from the tz database, ...). A refusal
//! refuses the `set`; the plans are what `iohubctl set --dry-run` shows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use broker::Bus;
use bus_schema::sections::{CheckRequest, Config, SectionPayload};
use bus_schema::{BusError, ErrorCode, Section, ServiceName, Topic, Verb};
use serde::Serialize;

/// How long one service may take to answer a check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the services said of a candidate config.
#[derive(Debug, Default, Serialize)]
pub struct Checked {
    /// The sections the edit changes.
    pub sections: Vec<Section>,
    /// The plan each checking service would make.
    pub plans: BTreeMap<ServiceName, serde_json::Value>,
    /// Services that follow a changed section but did not check it, and why.
    pub unchecked: BTreeMap<ServiceName, String>,
    /// Why a service would refuse the candidate (each error names its variable).
    #[serde(skip)]
    pub refused: Vec<BusError>,
}

/// The sections of `config` whose content differs from what is published, as payloads (with
/// the next generation, which is not reserved: the candidate is never published as such).
pub fn candidates(
    config: &Config,
    published: &BTreeMap<Section, SectionPayload>,
) -> BTreeMap<Section, SectionPayload> {
    Section::ALL
        .iter()
        .filter_map(|s| {
            let current = published.get(s);
            let value = config.section_value(*s);
            (current.map(|p| &p.config) != Some(&value)).then(|| {
                let generation = current.map_or(1, |p| p.generation + 1);
                (*s, config.section_payload(*s, generation))
            })
        })
        .collect()
}

/// Ask every running follower of the candidate sections to check them.
pub async fn with_followers(bus: &Bus, candidates: BTreeMap<Section, SectionPayload>) -> Checked {
    let mut checked = Checked {
        sections: candidates.keys().copied().collect(),
        ..Checked::default()
    };
    let followers: BTreeSet<ServiceName> = candidates.keys().flat_map(|s| s.followers()).collect();
    let body = serde_json::to_value(CheckRequest {
        sections: candidates,
    })
    .unwrap_or_default();
    for service in followers {
        if !runs(bus, service) {
            checked
                .unchecked
                .insert(service, "not running in this daemon".into());
            continue;
        }
        match bus
            .request(service, Verb::Check, body.clone(), CHECK_TIMEOUT)
            .await
        {
            Ok(reply) if reply.ok => {
                let plan = reply.result.map(|r| r["plan"].clone()).unwrap_or_default();
                checked.plans.insert(service, plan);
            }
            Ok(reply) => {
                let (unavailable, refusals): (Vec<_>, Vec<_>) = reply
                    .errors
                    .into_iter()
                    .partition(|e| matches!(e.code, ErrorCode::Unavailable | ErrorCode::BadTopic));
                if let Some(e) = unavailable.first() {
                    checked.unchecked.insert(service, e.message.clone());
                }
                checked.refused.extend(refusals);
            }
            Err(e) => {
                checked.unchecked.insert(service, e.to_string());
            }
        }
    }
    checked
}

/// Whether `service` runs: it has published a state (the supervisor restarts a service that
/// fails, so a state means it is there to answer).
fn runs(bus: &Bus, service: ServiceName) -> bool {
    let topic = Topic::state(service).to_string();
    !bus.retained_snapshot(|t| t == topic).1.is_empty()
}
