//! Tests of the defaults: an empty input, a section put back to its defaults, defaults that
//! follow other variables, and unknown names.

use std::collections::BTreeMap;

use super::{config, with_sysvars, ROUTER};
use crate::sections::{spec, Config};
use crate::topic::Section;

/// The config service falls back to the defaults of a section whose input is refused: they
/// must be valid whatever the sysvars say.
#[test]
fn an_empty_input_is_a_valid_config() {
    let c = config(&BTreeMap::new());
    assert_eq!(c.network.eth0.device, None);
    assert_eq!(c.network.hostname, None);
    assert_eq!(c.global_mqtt.image, ":5000/iohubos/iohubos-mqtt");
}

/// The config service puts the variables of a refused section back to their defaults and
/// builds again: a section at its defaults is never to blame, whatever the others hold.
#[test]
fn a_section_at_its_defaults_is_never_blamed() {
    let full = with_sysvars(ROUTER);
    for s in Section::ALL {
        let mut v = full.clone();
        v.retain(|name, _| spec(name).is_none_or(|spec| spec.section != *s));
        if let Err(errors) = Config::from_vars(&v, Vec::new(), Vec::new(), Vec::new(), Vec::new()) {
            for e in errors {
                let field = e.field.as_deref().unwrap_or_default();
                assert_ne!(spec(field).map(|f| f.section), Some(*s), "{e}");
            }
        }
    }
}

#[test]
fn the_global_broker_image_follows_the_hostname_and_registry_port() {
    let c = config(&with_sysvars(&[("IOHUBOS_DOCKER_REGISTRY_PORT", "5050")]));
    assert_eq!(
        c.global_mqtt.image,
        "iohub-525400aabbcc:5050/iohubos/iohubos-mqtt"
    );
    // An empty port is 5000 (setDefaults), also inside the image reference.
    let c = config(&with_sysvars(&[("IOHUBOS_DOCKER_REGISTRY_PORT", "")]));
    assert_eq!(c.registry.port, 5000);
    assert_eq!(
        c.global_mqtt.image,
        "iohub-525400aabbcc:5000/iohubos/iohubos-mqtt"
    );
    // An explicit image is kept as written.
    let c = config(&with_sysvars(&[(
        "IOHUBOS_GLOBAL_MQTT_IMG",
        "iohub-x:5000/ezvpn/iohubos-mqtt",
    )]));
    assert_eq!(c.global_mqtt.image, "iohub-x:5000/ezvpn/iohubos-mqtt");
}

#[test]
fn unknown_variables_are_not_errors_here() {
    let c = config(&with_sysvars(&[
        ("IOHUBOS_SOMETHING_NEW", "1"),
        ("OTHER", "x"),
    ]));
    assert!(c.docker.enabled);
}
