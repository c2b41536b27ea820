//! Generation bookkeeping, one counter per section, and which section payloads a build
//! publishes. Pure (the ledger is read and written by the caller).
//!
//! - A section's generation starts at 1 and grows by one each time its content changes, and only
//!   then: an unchanged section keeps its number, whatever else changed.
//! - "Content" is the published JSON plus, in memory only, the values of the section's secret
//!   variables (a new WiFi passphrase is a new generation although the bus only shows
//!   `{"set": true}`).
//! - The ledger (`<root>/runtime/config-generations.json`) keeps, per section, the last
//!   generation and its published JSON, so a restart never reuses a number for other content and
//!   republishes an unchanged section with its old number. Secret values are never written to it:
//!   after a restart only the public JSON is compared.

use std::collections::{BTreeMap, BTreeSet};

use bus_schema::envvars::Vars;
use bus_schema::sections::{self, SectionPayload};
use bus_schema::{Section, PAYLOAD_VERSION};
use serde::{Deserialize, Serialize};

use super::build::Built;

/// File name of the ledger under `<root>/runtime`.
pub const LEDGER_FILE: &str = "config-generations.json";
/// Version of the ledger format.
pub const LEDGER_VERSION: u32 = 1;

/// The persisted ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub version: u32,
    #[serde(default)]
    pub sections: BTreeMap<Section, Entry>,
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger {
            version: LEDGER_VERSION,
            sections: BTreeMap::new(),
        }
    }
}

/// The last published value of one section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub generation: u64,
    /// The section's `config` as published (secrets redacted).
    pub config: serde_json::Value,
}

/// The generation counters of a run.
#[derive(Debug, Clone, Default)]
pub struct Generations {
    ledger: Ledger,
    /// Fingerprint of each section's secret values, known only for sections seen in this run.
    secrets: BTreeMap<Section, String>,
}

impl Generations {
    /// Start from a persisted ledger (or an empty one).
    pub fn new(ledger: Ledger) -> Generations {
        Generations {
            ledger,
            secrets: BTreeMap::new(),
        }
    }

    /// Record the newest content of a section; returns its generation and whether that is a new
    /// generation (first sight or changed content).
    pub fn observe(
        &mut self,
        section: Section,
        config: &serde_json::Value,
        secrets: &str,
    ) -> (u64, bool) {
        let secrets_same = self
            .secrets
            .get(&section)
            .is_none_or(|known| known == secrets);
        self.secrets.insert(section, secrets.to_string());
        match self.ledger.sections.get_mut(&section) {
            Some(entry) if entry.config == *config && secrets_same => (entry.generation, false),
            Some(entry) => {
                entry.generation += 1;
                entry.config = config.clone();
                (entry.generation, true)
            }
            None => {
                self.ledger.sections.insert(
                    section,
                    Entry {
                        generation: 1,
                        config: config.clone(),
                    },
                );
                (1, true)
            }
        }
    }

    /// The last recorded value of a section.
    pub fn entry(&self, section: Section) -> Option<&Entry> {
        self.ledger.sections.get(&section)
    }

    /// Every section's current generation.
    pub fn current(&self) -> BTreeMap<Section, u64> {
        self.ledger
            .sections
            .iter()
            .map(|(s, e)| (*s, e.generation))
            .collect()
    }

    /// What to persist.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Which section payloads to publish and which sections got a new generation.
    ///
    /// A built section is published when its generation is new or when it was not published
    /// yet in this run (`published`: the retained store starts empty with the broker). A
    /// withheld section keeps what was published; after a restart its last good value comes
    /// from the ledger.
    pub fn plan(
        &mut self,
        built: &Built,
        published: &BTreeMap<Section, SectionPayload>,
    ) -> (Vec<SectionPayload>, Vec<Section>) {
        let mut payloads = Vec::new();
        let mut changed = Vec::new();
        for &section in Section::ALL {
            let seen = published.contains_key(&section);
            match &built.config {
                Some(config) if built.publishes(section) => {
                    let value = config.section_value(section);
                    let secrets = secret_fingerprint(section, &built.good_vars);
                    let (generation, new) = self.observe(section, &value, &secrets);
                    if new {
                        changed.push(section);
                    }
                    if new || !seen {
                        payloads.push(section_payload(section, generation, value));
                    }
                }
                _ if !seen => {
                    if let Some(entry) = self.entry(section) {
                        payloads.push(section_payload(
                            section,
                            entry.generation,
                            entry.config.clone(),
                        ));
                    }
                }
                _ => {}
            }
        }
        (payloads, changed)
    }
}

fn section_payload(section: Section, generation: u64, config: serde_json::Value) -> SectionPayload {
    SectionPayload {
        version: PAYLOAD_VERSION,
        section,
        generation,
        config,
    }
}

/// The secret values of a section, compared in memory only (see the module docs).
fn secret_fingerprint(section: Section, vars: &Vars) -> String {
    let names: BTreeSet<&str> = sections::VARIABLES
        .iter()
        .filter(|s| s.secret && s.section == section)
        .map(|s| s.name)
        .collect();
    names
        .into_iter()
        .map(|name| {
            format!(
                "{name}={}\n",
                vars.get(name).map(String::as_str).unwrap_or("")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_generation_changes_only_with_its_sections_content() {
        let mut g = Generations::default();
        assert_eq!(g.observe(Section::Network, &json!({"a": 1}), ""), (1, true));
        assert_eq!(g.observe(Section::Ssh, &json!({"b": 1}), ""), (1, true));
        assert_eq!(
            g.observe(Section::Network, &json!({"a": 1}), ""),
            (1, false)
        );
        assert_eq!(g.observe(Section::Network, &json!({"a": 2}), ""), (2, true));
        assert_eq!(g.observe(Section::Ssh, &json!({"b": 1}), ""), (1, false));
        assert_eq!(
            g.current(),
            BTreeMap::from([(Section::Network, 2), (Section::Ssh, 1)])
        );
    }

    #[test]
    fn a_new_secret_value_is_a_new_generation_but_never_reaches_the_ledger() {
        let mut g = Generations::default();
        let cfg = json!({"pass": {"set": true}});
        assert_eq!(
            g.observe(Section::Wifi, &cfg, "IOHUBOS_WIFI_CLIENT_PASS=one\n"),
            (1, true)
        );
        assert_eq!(
            g.observe(Section::Wifi, &cfg, "IOHUBOS_WIFI_CLIENT_PASS=two\n"),
            (2, true)
        );
        assert_eq!(
            g.observe(Section::Wifi, &cfg, "IOHUBOS_WIFI_CLIENT_PASS=two\n"),
            (2, false)
        );
        let text = serde_json::to_string(g.ledger()).unwrap();
        assert!(!text.contains("two"), "{text}");
    }

    #[test]
    fn after_a_restart_unchanged_sections_keep_their_number_and_changed_ones_never_reuse_one() {
        let mut before = Generations::default();
        before.observe(Section::Network, &json!(1), "");
        before.observe(Section::Network, &json!(2), "");
        before.observe(Section::Routes, &json!([]), "");
        let ledger: Ledger =
            serde_json::from_str(&serde_json::to_string(before.ledger()).unwrap()).unwrap();
        let mut after = Generations::new(ledger);
        assert_eq!(
            after.observe(Section::Routes, &json!([]), "secret"),
            (1, false)
        );
        assert_eq!(after.observe(Section::Network, &json!(1), ""), (3, true));
    }

    fn built(envvars: &str) -> Built {
        let files = BTreeMap::from([("envvars".to_string(), envvars.to_string())]);
        let loaded = crate::vars::layers::load(Some("IOHUBOS_VERSION=1.1.3"), None, &mut |rel| {
            files.get(rel).cloned()
        });
        crate::config::build::build(&loaded, None)
    }

    #[test]
    fn a_withheld_section_keeps_its_published_value_also_across_a_restart() {
        let mut before = Generations::default();
        let (first, changed) = before.plan(&built("IOHUBOS_TIMEZONE='UTC'\n"), &BTreeMap::new());
        assert_eq!(
            (first.len(), changed.len()),
            (Section::ALL.len(), Section::ALL.len())
        );
        let system = first
            .iter()
            .find(|p| p.section == Section::System)
            .unwrap()
            .clone();

        // Restarted with a broken timezone line: every section is published (the retained store
        // is new), the system section from the ledger, and no generation moves.
        let mut after = Generations::new(before.ledger().clone());
        let broken = built("IOHUBOS_TIMEZONE=$(date)\n");
        assert_eq!(broken.withheld, BTreeSet::from([Section::System]));
        let (again, changed) = after.plan(&broken, &BTreeMap::new());
        assert!(changed.is_empty());
        assert_eq!(again, first);
        assert!(again.contains(&system));

        // Once published in this run, an unchanged build publishes nothing.
        let published = again.into_iter().map(|p| (p.section, p)).collect();
        assert_eq!(after.plan(&broken, &published), (vec![], vec![]));
    }
}
