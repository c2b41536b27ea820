//! Tests of the variable registry: names, sections, form checks and pre-1.0 names.

use super::{config, with_sysvars};
use crate::sections::form::check_form;
use crate::sections::{renamed_to, spec, VARIABLES};
use crate::topic::Section;

#[test]
fn every_variable_is_named_once_and_has_a_form_check() {
    let mut names: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "duplicate names in VARIABLES");
    for v in VARIABLES {
        assert!(v.name.starts_with("IOHUBOS_"), "{}", v.name);
        assert!(!v.doc.is_empty(), "{}", v.name);
        let unchecked = matches!(check_form(v.name, "x"), Err(m) if m.starts_with("no check"));
        assert!(!unchecked, "{} has no form check", v.name);
        assert_eq!(spec(v.name), Some(v));
    }
}

#[test]
fn every_section_has_at_least_one_variable_or_file() {
    for s in Section::ALL {
        let has_var = VARIABLES.iter().any(|v| v.section == *s);
        assert!(
            has_var || matches!(s, Section::Forwards | Section::Routes),
            "{s}"
        );
    }
}

#[test]
fn deprecated_and_pre_1_0_names_feed_their_successors() {
    let c = config(&with_sysvars(&[
        ("IOHUBOS_VPN_ACCESS_HOST", "true"),
        ("IOHUBOS_ENGINE_ENABLED", "false"),
        ("IOHUBOS_ENGINE_REGISTRY_RESCAN", "false"),
    ]));
    assert!(c.wireguard.access_host);
    assert!(!c.docker.enabled);
    assert!(!c.registry.rescan);
    // The new name wins when both are present.
    let c = config(&with_sysvars(&[
        ("IOHUBOS_VPN_ACCESS_HOST", "true"),
        ("IOHUBOS_WIREGUARD_ACCESS_HOST", "false"),
        ("IOHUBOS_ENGINE_ENABLED", "false"),
        ("IOHUBOS_DOCKER_ENABLED", "true"),
    ]));
    assert!(!c.wireguard.access_host);
    assert!(c.docker.enabled);
    assert_eq!(
        renamed_to("IOHUBOS_ENGINE_REGISTRY_EXPOSE_ETH0"),
        Some("IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH0")
    );
    assert_eq!(renamed_to("IOHUBOS_ENGINE_NOPE"), None);
}
