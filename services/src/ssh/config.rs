//! The ssh service's validated desired config, from the `ssh` section.
//!
//! `bus_schema` already checks the shape of each `IOHUBOS_SSH_PUBLIC_KEY` line; here each key is
//! checked the way sshd reads it: a known key type, a base64 blob that decodes, and a blob whose
//! first field names the same type. Every bad line is reported at once, with the variable named;
//! a refused config never replaces the last good one.

use bus_schema::sections::Ssh;
use bus_schema::{BusError, ErrorCode};

/// The variable the keys come from.
pub const KEYS_VAR: &str = "IOHUBOS_SSH_PUBLIC_KEY";

/// The TCP port sshd listens on (the firewall opens tcp/22 when SSH is enabled).
pub const SSH_PORT: u16 = 22;

/// Key types sshd accepts in `authorized_keys`.
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
];

/// What the ssh service must make true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshDesired {
    /// `IOHUBOS_OPENSSH_ENABLED`: sshd runs.
    pub enabled: bool,
    /// The `authorized_keys` lines, as written (options and comment kept).
    pub authorized_keys: Vec<String>,
}

impl SshDesired {
    /// Check the section; every bad key line is an error naming [`KEYS_VAR`].
    pub fn from_section(section: &Ssh) -> Result<SshDesired, Vec<BusError>> {
        let errors: Vec<BusError> = section
            .authorized_keys
            .iter()
            .enumerate()
            .filter_map(|(i, line)| {
                check_key_line(line).err().map(|why| {
                    BusError::new(
                        ErrorCode::InvalidValue,
                        format!("key {} of {KEYS_VAR}: {why}", i + 1),
                    )
                    .with_field(KEYS_VAR)
                })
            })
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(SshDesired {
            enabled: section.enabled,
            authorized_keys: section.authorized_keys.clone(),
        })
    }
}

/// One `authorized_keys` line: `[options] <type> <base64> [comment]`.
pub fn check_key_line(line: &str) -> Result<(), String> {
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err("contains a control character".into());
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    let Some(at) = fields.iter().position(|f| KEY_TYPES.contains(f)) else {
        return Err(format!(
            "no known key type (one of {})",
            KEY_TYPES[..5].join(", ")
        ));
    };
    let kind = fields[at];
    let Some(blob) = fields.get(at + 1) else {
        return Err(format!("`{kind}` is not followed by a base64 key"));
    };
    let bytes =
        base64_decode(blob).ok_or_else(|| format!("the `{kind}` key is not valid base64"))?;
    // The blob starts with a length-prefixed string naming its type.
    let inner = bytes
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| bytes.get(4..4 + n));
    if inner != Some(kind.as_bytes()) {
        return Err(format!("the base64 key is not a `{kind}` key"));
    }
    Ok(())
}

/// Standard base64 with `=` padding, as sshd reads it; `None` when malformed or empty.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .filter(|b| !b.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOGCHXHv/0rJ21FeJDCXSqYsRxkT5afhOyI+03K6ewDs admin@laptop";

    #[test]
    fn real_keys_pass_and_malformed_lines_are_refused_with_the_variable_named() {
        assert_eq!(check_key_line(ED25519), Ok(()));
        assert_eq!(
            check_key_line(&format!("from=\"10.0.0.0/8\",no-pty {ED25519}")),
            Ok(())
        );
        let section = Ssh {
            enabled: true,
            authorized_keys: vec![
                ED25519.into(),
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxyz0123456789 truncated".into(),
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOGCHXHv/0rJ21FeJDCXSqYsRxkT5afhOyI+03K6ewDs wrong-type".into(),
                "ssh-dss AAAAB3NzaC1kc3MAAACBAP== old".into(),
            ],
        };
        let errors = SshDesired::from_section(&section).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        expect_test::expect![[r#"
            [
                "invalid_value: key 2 of IOHUBOS_SSH_PUBLIC_KEY: the `ssh-ed25519` key is not valid base64 (IOHUBOS_SSH_PUBLIC_KEY)",
                "invalid_value: key 3 of IOHUBOS_SSH_PUBLIC_KEY: the base64 key is not a `ssh-rsa` key (IOHUBOS_SSH_PUBLIC_KEY)",
                "invalid_value: key 4 of IOHUBOS_SSH_PUBLIC_KEY: no known key type (one of ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521) (IOHUBOS_SSH_PUBLIC_KEY)",
            ]
        "#]]
        .assert_debug_eq(&text);
    }

    #[test]
    fn malformed_base64_is_refused() {
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(base64_decode("Zm9vYmE=").unwrap(), b"fooba");
        assert!(base64_decode("Zm9=YmE=").is_none());
        assert!(base64_decode("Zm9vY").is_none());
        assert!(base64_decode("").is_none());
    }
}
