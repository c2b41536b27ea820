//! Secrets (WiFi passphrases, the admin token, VPN keys) never travel in clear on the bus.
//!
//! A [`Secret`] holds the value in memory for the service that needs it, but serializes as
//! `{"set": true}` / `{"set": false}` and prints as `<redacted>`.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret value. `Debug`, `Display` and `Serialize` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The clear value, for the one place that must use it (a generated config file).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() {
            "Secret(<redacted>)"
        } else {
            "Secret(<unset>)"
        })
    }
}

/// What a secret looks like on the bus.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SecretWire {
    set: bool,
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SecretWire { set: self.is_set() }.serialize(s)
    }
}

/// Deserializing gives an unset-or-placeholder secret: the value never comes from the bus
/// payload itself (only `iohub/cmd/config/set` carries new values, as plain variables).
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let wire = SecretWire::deserialize(d)?;
        Ok(if wire.set {
            Secret("<redacted>".into())
        } else {
            Secret::default()
        })
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        SecretWire::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_serializes_or_prints_its_value() {
        let s = Secret::new("hunter2-very-secret");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"set":true}"#);
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(
            serde_json::to_string(&Secret::default()).unwrap(),
            r#"{"set":false}"#
        );
    }
}
