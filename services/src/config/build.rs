//! From loaded variables to a validated [`Config`], keeping the last good value of every section
//! the newest input breaks. Pure.
//!
//! The rule for invalid input (DESIGN.md §1 "an invalid input never replaces the last good
//! state"):
//! - a section is *withheld* when one of its variables has an error: a value
//!   [`Config::from_vars`] refuses, or a refused line (e.g. `$(...)`) that assigns it;
//! - every other section is built and published from the new input;
//! - a withheld section keeps its last good value: the one published before (also across a
//!   restart, from the generation ledger); on a first start with no good value it is not
//!   published at all (no guessing of defaults in its place);
//! - refused lines of `forwards-*`/`routes` withhold nothing: the good lines apply and the bad
//!   ones are listed in the section's `rejected`;
//! - an unreadable variable file (not a missing one) withholds every section: its values are
//!   unknown; an unreadable `forwards-*`/`routes` withholds its own section;
//! - an error that names no variable, or a withheld section whose stand-in values do not build
//!   either, withholds every section (`from_vars` builds all sections or none). The stand-ins
//!   are the last good values, else the defaults (first start, or after a restart: the ledger
//!   keeps the published JSON, not the variables); the registry's defaults are valid on their
//!   own, so in practice this takes a cross-section conflict that does not settle. After a
//!   restart, withheld sections are republished from the ledger: the box keeps its last good
//!   config.
//!
//! To build the other sections, the variables of withheld sections are replaced by their last
//! good values (or their defaults) and the config is built again.

use std::collections::BTreeSet;

use bus_schema::envvars::Vars;
use bus_schema::sections::{self, Config};
use bus_schema::{BusError, Section};

use crate::vars::layers::{self, Loaded, FORWARDS_TCP, FORWARDS_UDP, ROUTES, VERSION_FILE};

/// Rebuilds tried when patching withheld sections reveals more broken sections.
const MAX_REBUILDS: usize = 4;

/// The outcome of validating one load.
#[derive(Debug, Clone)]
pub struct Built {
    /// The config to publish the non-withheld sections from; `None` when nothing could be built.
    pub config: Option<Config>,
    /// Sections that keep their last good value.
    pub withheld: BTreeSet<Section>,
    /// Every problem: unreadable files, refused lines, invalid values (secrets are never in
    /// them: `eval` and `from_vars` redact).
    pub errors: Vec<BusError>,
    /// The (known) variables `config` was built from; the last good values of next time.
    pub good_vars: Vars,
}

impl Built {
    /// Whether `section` is published from this build.
    pub fn publishes(&self, section: Section) -> bool {
        self.config.is_some() && !self.withheld.contains(&section)
    }
}

/// Which sections an error breaks.
enum Blame {
    Sections(BTreeSet<Section>),
    /// The error cannot be tied to a section: nothing is trustworthy.
    Everything,
}

impl Blame {
    fn of(errors: &[BusError]) -> Blame {
        let mut sections = BTreeSet::new();
        for e in errors {
            let Some(field) = e.field.as_deref() else {
                return Blame::Everything;
            };
            if let Some(spec) = sections::spec(field) {
                sections.insert(spec.section);
            } else if let Ok(section) = field.parse::<Section>() {
                sections.insert(section);
            } else if !is_list_line(field) {
                return Blame::Everything;
            }
            // A refused list line is in its section's `rejected`; the rest of the file applies.
        }
        Blame::Sections(sections)
    }
}

/// `forwards-tcp:3`, `routes:1`: a refused line of a list file.
pub fn is_list_line(field: &str) -> bool {
    field
        .split_once(':')
        .and_then(|(file, _)| list_section(file))
        .is_some()
}

/// The section a list file feeds.
fn list_section(file: &str) -> Option<Section> {
    match file {
        FORWARDS_TCP | FORWARDS_UDP => Some(Section::Forwards),
        ROUTES => Some(Section::Routes),
        _ => None,
    }
}

/// Load errors (unreadable files, the version file) and what they withhold.
fn blame_load_errors(errors: &[BusError]) -> Blame {
    let mut sections = BTreeSet::new();
    for field in errors.iter().map(|e| e.field.as_deref().unwrap_or("")) {
        match list_section(field) {
            Some(section) => {
                sections.insert(section);
            }
            // A missing or broken version file means version 0.0.0, as documented.
            None if field == VERSION_FILE => {}
            None => return Blame::Everything,
        }
    }
    Blame::Sections(sections)
}

/// The known variables of a load (unknown ones only produce warnings).
pub fn known_vars(vars: &Vars) -> Vars {
    vars.iter()
        .filter(|(name, _)| sections::spec(name).is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Validate a load. `last_good` are the variables of the previous good build, if any.
pub fn build(loaded: &Loaded, last_good: Option<&Vars>) -> Built {
    let vars = known_vars(&loaded.vars);
    let from_vars = |vars: &Vars| {
        Config::from_vars(
            vars,
            loaded.forwards_tcp.clone(),
            loaded.forwards_udp.clone(),
            loaded.routes.clone(),
            loaded.rejected_lines.clone(),
        )
    };

    // Sections whose variables sit on refused lines.
    let mut withheld: BTreeSet<Section> = loaded
        .line_errors
        .iter()
        .filter_map(|e| layers::assigned_name(&e.text))
        .filter_map(|name| sections::spec(&name).map(|s| s.section))
        .collect();
    let first = from_vars(&vars);
    let mut errors = loaded.errors.clone();
    errors.extend(loaded.line_bus_errors());
    let invalid = first.as_ref().err().cloned().unwrap_or_default();
    errors.extend(invalid.iter().cloned());
    let everything = Built {
        config: None,
        withheld: Section::ALL.iter().copied().collect(),
        errors: errors.clone(),
        good_vars: Vars::new(),
    };
    for blame in [blame_load_errors(&loaded.errors), Blame::of(&invalid)] {
        match blame {
            Blame::Everything => return everything,
            Blame::Sections(s) => withheld.extend(s),
        }
    }
    if withheld.is_empty() {
        if let Ok(config) = first {
            return Built {
                config: Some(config),
                withheld,
                errors,
                good_vars: vars,
            };
        }
    }

    for _ in 0..MAX_REBUILDS {
        let patched = patch(&vars, &withheld, last_good);
        match from_vars(&patched) {
            Ok(config) => {
                return Built {
                    config: Some(config),
                    withheld,
                    errors,
                    good_vars: patched,
                };
            }
            Err(more) => match Blame::of(&more) {
                Blame::Sections(s) if !s.is_subset(&withheld) => withheld.extend(s),
                _ => break,
            },
        }
    }
    everything
}

/// The variables with those of `withheld` sections put back to their last good values (their
/// defaults when there is none).
pub fn patch(vars: &Vars, withheld: &BTreeSet<Section>, last_good: Option<&Vars>) -> Vars {
    let mut patched = vars.clone();
    for spec in sections::VARIABLES
        .iter()
        .filter(|s| withheld.contains(&s.section))
    {
        match last_good.and_then(|good| good.get(spec.name)) {
            Some(value) => patched.insert(spec.name.to_string(), value.clone()),
            None => patched.remove(spec.name),
        };
    }
    layers::apply_defaults(&mut patched);
    patched
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_schema::ErrorCode;
    use std::collections::BTreeMap;

    const SYSVARS: &str = "IOHUBOS_ETH0_DEVICE=\"eth0\"\nIOHUBOS_HOSTNAME=\"iohub-1\"\n";

    fn loaded(envvars: &str) -> Loaded {
        let files = BTreeMap::from([
            ("sysvars".to_string(), SYSVARS.to_string()),
            ("envvars".to_string(), envvars.to_string()),
        ]);
        layers::load(Some("IOHUBOS_VERSION=1.1.3"), None, &mut |rel| {
            files.get(rel).cloned()
        })
    }

    fn withheld(built: &Built) -> Vec<Section> {
        built.withheld.iter().copied().collect()
    }

    #[test]
    fn a_valid_load_builds_every_section() {
        let built = build(&loaded("IOHUBOS_TIMEZONE='UTC'\n"), None);
        assert!(built.errors.is_empty(), "{:?}", built.errors);
        assert!(Section::ALL.iter().all(|s| built.publishes(*s)));
    }

    #[test]
    fn an_invalid_value_withholds_its_section_only_and_falls_back_to_the_last_good_value() {
        let good = build(
            &loaded(
                "IOHUBOS_ZEROTIER_ENABLED='true'\nIOHUBOS_ZEROTIER_NETWORK='8056c2e21c000001'\n",
            ),
            None,
        );
        assert!(good.errors.is_empty(), "{:?}", good.errors);
        let bad = loaded("IOHUBOS_ZEROTIER_ENABLED='true'\nIOHUBOS_ZEROTIER_NETWORK='xyz'\nIOHUBOS_TIMEZONE='UTC'\n");
        let built = build(&bad, Some(&good.good_vars));
        assert_eq!(withheld(&built), [Section::Zerotier]);
        assert_eq!(built.errors.len(), 1);
        assert_eq!(
            built.errors[0].field.as_deref(),
            Some("IOHUBOS_ZEROTIER_NETWORK")
        );
        let config = built.config.as_ref().unwrap();
        assert_eq!(config.system.timezone.as_deref(), Some("UTC"));
        // The patched variables are the last good ones, ready for the next time.
        assert_eq!(
            built.good_vars["IOHUBOS_ZEROTIER_NETWORK"],
            "8056c2e21c000001"
        );
        // Without a last good value, the defaults (ZeroTier off) stand in; still withheld.
        let first = build(&bad, None);
        assert_eq!(withheld(&first), [Section::Zerotier]);
        assert!(first.config.is_some());
    }

    #[test]
    fn a_refused_line_withholds_the_section_of_the_variable_it_assigns() {
        let built = build(&loaded("IOHUBOS_TIMEZONE=$(reboot)\n"), None);
        assert_eq!(withheld(&built), [Section::System]);
        assert_eq!(built.errors[0].code, ErrorCode::Forbidden);
        assert_eq!(built.errors[0].field.as_deref(), Some("envvars:1"));
        // A refused line that assigns nothing withholds nothing.
        let built = build(&loaded("reboot\n"), None);
        assert!(built.withheld.is_empty() && built.config.is_some());
        assert_eq!(built.errors.len(), 1);
    }

    #[test]
    fn a_refused_forward_line_withholds_nothing() {
        let mut l = loaded("");
        let (fwd, bad) = bus_schema::files::parse_forwards(
            FORWARDS_TCP,
            bus_schema::files::Proto::Tcp,
            "80=10.0.0.1:80\nx\n",
        );
        l.forwards_tcp = fwd;
        l.rejected_lines = bad;
        let built = build(&l, None);
        assert!(built.withheld.is_empty());
        assert_eq!(built.config.unwrap().forwards.rejected.len(), 1);
        assert_eq!(built.errors.len(), 1);
    }

    #[test]
    fn an_unreadable_file_withholds_what_it_feeds() {
        let mut l = loaded("");
        l.errors
            .push(BusError::new(ErrorCode::Io, "envvars: is a directory").with_field("envvars"));
        let built = build(&l, None);
        assert!(built.config.is_none());
        assert_eq!(built.withheld.len(), Section::ALL.len());

        let mut l = loaded("");
        l.errors
            .push(BusError::new(ErrorCode::Io, "routes: denied").with_field(ROUTES));
        assert_eq!(withheld(&build(&l, None)), [Section::Routes]);
    }
}
