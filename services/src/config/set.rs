//! `iohub/cmd/config/set`: checking a request and deciding which file each variable is written
//! to. Pure.
//!
//! Owning file (SPEC.md §1.1: a later layer overrides an earlier one, so writing a variable into
//! `envvars` while `envvars.d/1.1.1-envvars` assigns it would have no effect):
//! - a new value goes into the file whose assignment currently wins (the last file in load order
//!   that assigns the variable, an included file counting where it is included); when no file
//!   assigns it, into `envvars`;
//! - a removal (`null`) deletes the assignment from every loaded file that has one, so the
//!   variable falls back to its inherited value or its default.
//!
//! Files are rewritten with [`envvars::set`], which keeps every other line byte for byte.

use std::collections::BTreeMap;

use bus_schema::envvars;
use bus_schema::sections::Config;
use bus_schema::{BusError, ErrorCode};
use serde::Deserialize;

use super::build;
use crate::vars::layers::{self, Loaded, ENVVARS, VERSION_VAR};

/// Body of `set`: `{"vars": {"IOHUBOS_X": "value", "IOHUBOS_Y": null}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBody {
    pub vars: BTreeMap<String, Option<String>>,
    /// Commit-confirm: undo the change unless confirmed within this many seconds.
    #[serde(default)]
    pub confirm_secs: Option<u32>,
    /// Check everything and answer with what each service would plan; write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One variable file to rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Path relative to the root.
    pub rel: String,
    /// The new text.
    pub text: String,
    /// Whether a secret value is written to it (the file is then made private).
    pub secret: bool,
}

/// Check every requested variable on its own: known, writable, valid value. Every problem is
/// reported, none stops the others from being checked.
pub fn check(body: &SetBody) -> Vec<BusError> {
    let mut errors = Vec::new();
    if body.vars.is_empty() {
        errors.push(BusError::new(ErrorCode::Missing, "no variables to set").with_field("vars"));
    }
    for (name, value) in &body.vars {
        if name == VERSION_VAR {
            errors.push(
                BusError::new(
                    ErrorCode::InvalidValue,
                    format!("{name} is set by the firmware"),
                )
                .with_field(name.clone()),
            );
            continue;
        }
        // Unknown, pre-1.0 and internal names are refused here too, with a hint.
        let checked = match value {
            Some(value) => Config::validate_one(name, value),
            None => Config::validate_one(name, ""),
        };
        if let Err(e) = checked {
            errors.push(e);
        }
    }
    errors
}

/// The files to rewrite for `body` against the current load. Files whose text would not change
/// are left out.
pub fn plan(loaded: &Loaded, body: &SetBody) -> Vec<Edit> {
    let mut per_file: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
    for (name, value) in &body.vars {
        match value {
            Some(_) => {
                let owner = loaded.owner(name).unwrap_or(ENVVARS).to_string();
                per_file
                    .entry(owner)
                    .or_default()
                    .push((name.clone(), value.clone()));
            }
            None => {
                for rel in loaded.definers(name) {
                    per_file
                        .entry(rel.to_string())
                        .or_default()
                        .push((name.clone(), None));
                }
            }
        }
    }
    per_file
        .into_iter()
        .filter_map(|(rel, updates)| {
            let old = loaded.texts.get(&rel).map(String::as_str).unwrap_or("");
            let text = envvars::set(old, &updates);
            let secret = updates
                .iter()
                .any(|(name, v)| v.is_some() && layers::is_secret(name));
            (text != old).then_some(Edit { rel, text, secret })
        })
        .collect()
}

/// The problems of a dry run of the edits that refuse them: all but the refused lines of
/// `forwards-*`/`routes` (files `set` does not write) and a missing firmware version file.
/// An unreadable variable file refuses the edit: rewriting it would lose its content.
pub fn blocking(errors: Vec<BusError>) -> Vec<BusError> {
    errors
        .into_iter()
        .filter(|e| {
            let field = e.field.as_deref().unwrap_or("");
            !build::is_list_line(field) && field != layers::VERSION_FILE
        })
        .collect()
}

/// The problem of the current `envvars` itself (missing, empty), which a `set` must not paper
/// over by writing a file of the set variables alone.
pub fn broken_envvars(current: &Loaded) -> Vec<BusError> {
    current
        .errors
        .iter()
        .filter(|e| e.field.as_deref() == Some(ENVVARS))
        .cloned()
        .collect()
}

/// After a dry run of the edits, every variable set must have the requested value (a guard
/// against an edit that would not take effect).
pub fn not_effective(dry_run: &Loaded, body: &SetBody) -> Vec<BusError> {
    body.vars
        .iter()
        .filter_map(|(name, value)| {
            let value = value.as_ref()?;
            (dry_run.vars.get(name) != Some(value)).then(|| {
                BusError::new(
                    ErrorCode::Conflict,
                    format!(
                        "{name} would not take this value once written (a later file or a \
                         default overrides it)"
                    ),
                )
                .with_field(name.clone())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::layers::load;

    fn loaded(files: &[(&str, &str)]) -> Loaded {
        let files: BTreeMap<String, String> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let layers: Vec<String> = files
            .keys()
            .filter_map(|k| k.strip_prefix("envvars.d/"))
            .map(String::from)
            .collect();
        load(Some("IOHUBOS_VERSION=1.1.3"), Some(&layers), &mut |rel| {
            files.get(rel).cloned()
        })
    }

    fn body(vars: &[(&str, Option<&str>)]) -> SetBody {
        SetBody {
            confirm_secs: None,
            dry_run: false,
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(String::from)))
                .collect(),
        }
    }

    const ENVVARS: &str =
        "# mine\nIOHUBOS_TIMEZONE='UTC'  # tz\n\nIOHUBOS_ZEROTIER_ENABLED='true'\n";
    const L111: &str = "# 1.1.1\nIOHUBOS_ZEROTIER_ENABLED='false'\nIOHUBOS_ZEROTIER_NETWORK=''\n";

    #[test]
    fn a_value_goes_to_the_file_whose_assignment_wins_or_else_to_envvars() {
        let root = loaded(&[
            ("sysvars", "IOHUBOS_HOSTNAME=\"iohub-1\"\n"),
            ("envvars", ENVVARS),
            ("envvars.d/1.1.1-envvars", L111),
        ]);
        let edits = plan(
            &root,
            &body(&[
                ("IOHUBOS_ZEROTIER_ENABLED", Some("true")),
                ("IOHUBOS_HOSTNAME", Some("box-2")),
                ("IOHUBOS_SSH_PUBLIC_KEY", Some("ssh-ed25519 AAAA me")),
            ]),
        );
        let files: Vec<&str> = edits.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(files, ["envvars", "envvars.d/1.1.1-envvars", "sysvars"]);
        assert_eq!(
            edits[0].text,
            format!("{ENVVARS}IOHUBOS_SSH_PUBLIC_KEY='ssh-ed25519 AAAA me'\n")
        );
        assert_eq!(
            edits[1].text,
            L111.replace("ENABLED='false'", "ENABLED='true'")
        );
        assert_eq!(edits[2].text, "IOHUBOS_HOSTNAME='box-2'\n");
    }

    #[test]
    fn a_removal_deletes_every_assignment_and_an_unchanged_value_writes_nothing() {
        let root = loaded(&[("envvars", ENVVARS), ("envvars.d/1.1.1-envvars", L111)]);
        let edits = plan(&root, &body(&[("IOHUBOS_ZEROTIER_ENABLED", None)]));
        assert_eq!(edits.len(), 2);
        assert!(edits.iter().all(|e| !e.text.contains("ZEROTIER_ENABLED")));
        assert_eq!(edits[0].text, "# mine\nIOHUBOS_TIMEZONE='UTC'  # tz\n\n");
        assert!(plan(&root, &body(&[("IOHUBOS_TIMEZONE", Some("UTC"))])).is_empty());
        assert!(plan(&root, &body(&[("IOHUBOS_WIFI_AP_SSID", None)])).is_empty());
    }

    #[test]
    fn a_secret_marks_its_file_private() {
        let root = loaded(&[("envvars", ENVVARS)]);
        let edits = plan(
            &root,
            &body(&[("IOHUBOS_WIFI_CLIENT_PASS", Some("correct horse"))]),
        );
        assert!(edits[0].secret);
        assert!(!plan(&root, &body(&[("IOHUBOS_TIMEZONE", Some("Europe/Rome"))]))[0].secret);
    }

    #[test]
    fn every_problem_of_a_request_is_reported() {
        let errors = check(&body(&[
            ("IOHUBOS_ETH0_IP", Some("300.1.1.1")),
            ("IOHUBOS_DOCKER_REGISTRY_PORT", Some("99999")),
            ("IOHUBOS_NOPE", Some("1")),
            ("IOHUBOS_ENGINE_ENABLED", Some("true")),
            ("IOHUBOS_VERSION", Some("2.0.0")),
            ("IOHUBOS_TIMEZONE", None),
            ("IOHUBOS_VPN_ENABLED", Some("true")),
        ]));
        let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(
            fields,
            [
                "IOHUBOS_DOCKER_REGISTRY_PORT",
                "IOHUBOS_ENGINE_ENABLED",
                "IOHUBOS_ETH0_IP",
                "IOHUBOS_NOPE",
                "IOHUBOS_VERSION",
            ]
        );
        assert!(errors
            .iter()
            .any(|e| e.message.contains("IOHUBOS_DOCKER_ENABLED")));
        let unknown = errors
            .iter()
            .find(|e| e.field.as_deref() == Some("IOHUBOS_NOPE"))
            .unwrap();
        assert_eq!(unknown.code, ErrorCode::UnknownVariable);
        assert_eq!(check(&body(&[]))[0].code, ErrorCode::Missing);
    }
}
