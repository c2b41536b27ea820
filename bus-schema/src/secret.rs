//! Secrets (WiFi passphrases, the admin token, VPN keys) never travel in clear on the bus.
//!
//! A [`Secret`] holds the value in memory for the service that needs it, but serializes as
//! `{"set": true}` / `{"set": false}` and prints as `<redacted>`.
//!
//! [`matches`] is the one comparison of a presented secret (a password, an API token) with the
//! expected one in iohub: both are hashed and the digests compared in constant time (`subtle`),
//! so the time taken says nothing about where they differ nor about their lengths.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// SHA-256 of a secret, for a holder that keeps only the digest (the admin API's token).
pub fn digest(secret: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret).into()
}

/// Whether `presented` hashes to `expected` (a [`digest`]), in constant time.
pub fn digest_matches(expected: &[u8; 32], presented: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(expected.ct_eq(&digest(presented)))
}

/// Whether `presented` is `expected`, in time independent of their contents and lengths.
pub fn matches(expected: &[u8], presented: &[u8]) -> bool {
    digest_matches(&digest(expected), presented)
}

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
    fn only_the_same_secret_matches() {
        assert!(matches(b"secret", b"secret"));
        assert!(matches(b"", b""));
        assert!(!matches(b"secret", b"secreT"));
        assert!(!matches(b"secret", b"secret\0"));
        assert!(!matches(b"", b"\0"));
        assert!(digest_matches(&digest(b"token"), b"token"));
    }

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
