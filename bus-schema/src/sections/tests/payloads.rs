//! Tests of what the config service publishes: section payloads and section values.

use expect_test::expect;

use super::{config, vars, with_sysvars, ROUTER, SYSVARS};
use crate::sections::{Config, Docker, SectionPayload};
use crate::topic::Section;

#[test]
fn a_section_payload_carries_its_section_and_generation() {
    let c = config(&vars(SYSVARS));
    let p = c.section_payload(Section::Docker, 7);
    expect![[r#"{"version":1,"section":"docker","generation":7,"config":{"enabled":true}}"#]]
        .assert_eq(&serde_json::to_string(&p).unwrap());
    let back: SectionPayload = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
    let docker: Docker = serde_json::from_value(back.config).unwrap();
    assert_eq!(docker, c.docker);
}

#[test]
fn every_section_value_deserializes_back_into_its_type() {
    let c = config(&with_sysvars(ROUTER));
    let json = serde_json::to_value(&c).unwrap();
    let mut rebuilt = serde_json::Map::new();
    for s in Section::ALL {
        rebuilt.insert(s.as_str().to_string(), c.section_value(*s));
    }
    assert_eq!(serde_json::Value::Object(rebuilt), json);
    let back: Config = serde_json::from_value(json).unwrap();
    assert_eq!(back.network, c.network);
    assert_eq!(back.wireguard, c.wireguard);
    assert!(serde_json::from_str::<Docker>(r#"{"enabled":true,"extra":1}"#).is_err());
}
