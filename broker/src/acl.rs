//! Topic access control: which topics a client may publish to, subscribe to and receive.
//!
//! An [`Acl`] is four lists of MQTT filters. A topic may be published (or received) when some
//! allow filter matches it and no deny filter does. A SUBSCRIBE filter is compared filter against
//! filter (with the algebra of [`crate::filter`]):
//! - it is refused (SUBACK failure) when no allow filter intersects it (no topic it could ever
//!   deliver is allowed) or a deny filter covers it (every topic it could deliver is denied);
//! - otherwise it is granted, and when it is not entirely inside one allow filter, or it
//!   intersects a deny filter, every message delivered through it is checked topic by topic, in
//!   the router (so an apps ACL `allow #, deny iohub/#` grants `#` but never delivers
//!   `iohub/...`).
//!
//! `subscribe_deny_except` lifts the subscribe deny list for the topics it matches: the apps
//! ACL denies `iohub/#` except what the control plane mirrors to apps (read-only, e.g.
//! `iohub/state/#`).

use bus_schema::topic::ROOT;

use crate::filter::{covers, intersects, valid_filter};

/// Which topics an authenticated client of a listener may publish to and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
    pub subscribe_deny: Vec<String>,
    /// Topics readable although `subscribe_deny` matches them (never publishable).
    pub subscribe_deny_except: Vec<String>,
}

impl Acl {
    /// The control listener: anything under `iohub/#`, nothing else.
    pub fn control() -> Acl {
        let all = vec![format!("{ROOT}/#")];
        Acl {
            publish_allow: all.clone(),
            publish_deny: Vec::new(),
            subscribe_allow: all,
            subscribe_deny: Vec::new(),
            subscribe_deny_except: Vec::new(),
        }
    }

    /// The apps listener: anything but `iohub/#`; of `iohub/#`, only the `mirror` filters may be
    /// read (none by default), and nothing under it may be published. `$SYS/#` (the broker's
    /// figures for tools) may be read, never published (`#` does not cover `$` topics).
    pub fn apps(mirror: Vec<String>) -> Acl {
        let control = vec![format!("{ROOT}/#")];
        Acl {
            publish_allow: vec!["#".into()],
            publish_deny: control.clone(),
            subscribe_allow: vec!["#".into(), "$SYS/#".into()],
            subscribe_deny: control,
            subscribe_deny_except: mirror,
        }
    }

    /// Every entry must be a valid MQTT filter.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let bad: Vec<&str> = [
            &self.publish_allow,
            &self.publish_deny,
            &self.subscribe_allow,
            &self.subscribe_deny,
            &self.subscribe_deny_except,
        ]
        .into_iter()
        .flatten()
        .filter(|f| !valid_filter(f))
        .map(String::as_str)
        .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid ACL filters: {bad:?}"))
        }
    }

    /// May a client publish on `topic` (a valid topic name)?
    pub(crate) fn may_publish(&self, topic: &str) -> bool {
        allowed(&self.publish_allow, &self.publish_deny, topic)
    }

    /// May a client subscribe to `filter` (a valid filter)? See the module docs.
    pub(crate) fn may_subscribe(&self, filter: &str) -> bool {
        let allowed = self.subscribe_allow.iter().any(|a| intersects(a, filter));
        let denied = self.subscribe_deny.iter().any(|d| covers(d, filter));
        let excepted = self
            .subscribe_deny_except
            .iter()
            .any(|e| intersects(e, filter));
        allowed && (!denied || excepted)
    }

    /// May a message on `topic` be delivered to a client?
    pub(crate) fn may_receive(&self, topic: &str) -> bool {
        self.subscribe_allow.iter().any(|f| covers(f, topic))
            && (!self.subscribe_deny.iter().any(|f| covers(f, topic))
                || self.subscribe_deny_except.iter().any(|f| covers(f, topic)))
    }

    /// Whether messages delivered through the granted `filter` must be checked one by one with
    /// [`Acl::may_receive`] (conservative: `true` unless one allow filter covers `filter` and no
    /// deny filter intersects it).
    pub(crate) fn needs_delivery_check(&self, filter: &str) -> bool {
        let inside_one_allow = self.subscribe_allow.iter().any(|a| covers(a, filter));
        let meets_a_deny = self.subscribe_deny.iter().any(|d| intersects(d, filter));
        !inside_one_allow || meets_a_deny
    }
}

fn allowed(allow: &[String], deny: &[String], topic: &str) -> bool {
    allow.iter().any(|f| covers(f, topic)) && !deny.iter().any(|f| covers(f, topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<root>/<rest>`: topic strings are spelled only in bus-schema.
    fn ctl(rest: &str) -> String {
        format!("{ROOT}/{rest}")
    }

    fn apps() -> Acl {
        Acl::apps(Vec::new())
    }

    #[test]
    fn control_acl_is_iohub_only() {
        let acl = Acl::control();
        assert!(acl.validate().is_ok());
        assert!(acl.may_publish(&ctl("cmd/config/set")));
        assert!(!acl.may_publish("apps/x"));
        assert!(acl.may_subscribe(&ctl("#")));
        assert!(acl.may_subscribe(&ctl("state/+")));
        assert!(!acl.may_subscribe("apps/#"));
        // `#` is granted but only `iohub/...` is delivered through it.
        assert!(acl.may_subscribe("#"));
        assert!(acl.needs_delivery_check("#"));
        assert!(!acl.needs_delivery_check(&ctl("#")));
        assert!(acl.may_receive(&ctl("state/x")) && !acl.may_receive("apps/x"));
    }

    #[test]
    fn apps_acl_keeps_clients_out_of_control_topics() {
        let acl = apps();
        assert!(acl.may_publish("sensors/t1"));
        assert!(!acl.may_publish(&ctl("cmd/config/set")));
        assert!(!acl.may_subscribe(&ctl("#")));
        assert!(!acl.may_subscribe(&ctl("state/+")));
        assert!(acl.may_subscribe("sensors/#"));
        assert!(!acl.needs_delivery_check("sensors/#"));
        assert!(acl.may_subscribe("#"));
        assert!(acl.may_subscribe("+/state/x"));
        assert!(acl.needs_delivery_check("+/state/x"));
        assert!(!acl.may_receive(&ctl("state/x")));
    }

    #[test]
    fn the_apps_mirror_is_read_only_and_only_what_it_names() {
        let acl = Acl::apps(vec![ctl("state/#")]);
        assert!(acl.may_subscribe(&ctl("state/+")));
        assert!(acl.may_subscribe(&ctl("#")));
        assert!(acl.needs_delivery_check(&ctl("#")));
        assert!(!acl.may_subscribe(&ctl("cmd/#")));
        assert!(acl.may_receive(&ctl("state/broker")));
        assert!(!acl.may_receive(&ctl("config/network")));
        assert!(!acl.may_publish(&ctl("state/broker")));
        assert!(acl.may_receive("sensors/t1"));
    }

    #[test]
    fn invalid_acl_entries_are_reported_together() {
        let acl = Acl {
            publish_allow: vec!["a/#/b".into(), "ok".into(), "x+".into()],
            ..apps()
        };
        let e = acl.validate().unwrap_err();
        assert!(
            e.contains("a/#/b") && e.contains("x+") && !e.contains("\"ok\""),
            "{e}"
        );
    }
}
