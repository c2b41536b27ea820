//! The [`Reader`]: looks variables up (under their pre-1.0 names too), resolves the `${...}`
//! defaults of the registry, parses values and collects every error.

use std::collections::BTreeMap;

use super::parse::{parse_bool, parse_port};
use super::registry::{old_name, spec};
use crate::error::{BusError, ErrorCode};

/// Looks variables up with defaults, and collects every error.
pub(super) struct Reader<'a> {
    pub(super) vars: &'a BTreeMap<String, String>,
    pub(super) errors: Vec<BusError>,
}

impl Reader<'_> {
    pub(super) fn fail(&mut self, code: ErrorCode, name: &str, message: impl Into<String>) {
        self.errors
            .push(BusError::new(code, message).with_field(name));
    }

    /// The value as set, or as set under its pre-1.0 name.
    pub(super) fn lookup(&self, name: &str) -> Option<&str> {
        if let Some(v) = self.vars.get(name) {
            return Some(v);
        }
        old_name(name)
            .and_then(|old| self.vars.get(&old))
            .map(String::as_str)
    }

    /// The effective text of a registry variable: as set, else its default with `${...}`
    /// references resolved. An empty registry port is 5000 (the original's `setDefaults`).
    pub(super) fn resolve(&self, name: &str, depth: u8) -> String {
        debug_assert!(spec(name).is_some(), "{name} is not in VARIABLES");
        let value = match self.lookup(name) {
            Some(v) => v.to_string(),
            None => spec(name)
                .map(|s| self.expand(s.default, depth))
                .unwrap_or_default(),
        };
        if name == "IOHUBOS_DOCKER_REGISTRY_PORT" && value.trim().is_empty() {
            return "5000".to_string();
        }
        value
    }

    /// Expands `${NAME}` and `${NAME:-fallback}` in a registry default.
    pub(super) fn expand(&self, text: &str, depth: u8) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let inner = &after[..end];
            let (name, fallback) = match inner.split_once(":-") {
                Some((n, f)) => (n, Some(f)),
                None => (inner, None),
            };
            let value = if depth == 0 || spec(name).is_none() {
                self.lookup(name).unwrap_or_default().to_string()
            } else {
                self.resolve(name, depth - 1)
            };
            match fallback {
                Some(fb) if value.is_empty() => out.push_str(fb),
                _ => out.push_str(&value),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    pub(super) fn raw(&self, name: &str) -> String {
        self.resolve(name, 4)
    }

    pub(super) fn bool(&mut self, name: &str) -> bool {
        match parse_bool(&self.raw(name)) {
            Ok(b) => b,
            Err(m) => {
                self.fail(ErrorCode::InvalidValue, name, m);
                false
            }
        }
    }

    /// A trimmed value; `None` when empty. Parse errors are reported only when `checked` (the
    /// value takes effect); otherwise an unparsable value is left out.
    pub(super) fn value<T>(
        &mut self,
        name: &str,
        checked: bool,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.raw(name);
        let text = raw.trim();
        if text.is_empty() {
            return None;
        }
        match parse(text) {
            Ok(v) => Some(v),
            Err(m) => {
                if checked {
                    self.fail(ErrorCode::InvalidValue, name, m);
                }
                None
            }
        }
    }

    /// Like [`Reader::value`], and a missing value is an error when `checked`.
    pub(super) fn required<T>(
        &mut self,
        name: &str,
        checked: bool,
        when: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        if checked && self.raw(name).trim().is_empty() {
            self.fail(ErrorCode::Missing, name, format!("required when {when}"));
            return None;
        }
        self.value(name, checked, parse)
    }

    /// A port whose empty value means its default.
    pub(super) fn port_with_default(&mut self, name: &str) -> u16 {
        let fallback = spec(name).and_then(|s| s.default.parse().ok()).unwrap_or(0);
        self.value(name, true, parse_port).unwrap_or(fallback)
    }
}
