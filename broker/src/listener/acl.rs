//! Topic access control of a listener, and the MQTT topic/filter algebra it needs.
//!
//! An [`Acl`] is four lists of MQTT filters. A topic may be published (or received) when some
//! allow filter matches it and no deny filter does. A SUBSCRIBE filter is compared filter against
//! filter:
//! - it is refused (SUBACK failure) when no allow filter intersects it (no topic it could ever
//!   deliver is allowed) or a deny filter covers it (every topic it could deliver is denied);
//! - otherwise it is granted, and when it is not entirely inside one allow filter, or it
//!   intersects a deny filter, every message delivered through it is checked topic by topic
//!   (so an apps ACL `allow #, deny iohub/#` grants `#` but never delivers `iohub/...`).
//!
//! `subscribe_deny_except` lifts the subscribe deny list for the topics it matches: the apps
//! listener denies `iohub/#` except what the control plane mirrors to apps (read-only, e.g.
//! `iohub/state/#`).
//!
//! Wildcards at the first level never match topics starting with `$` (MQTT 3.1.1 §4.7.2).

use bus_schema::topic::ROOT;

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
    /// read (none by default), and nothing under it may be published.
    pub fn apps(mirror: Vec<String>) -> Acl {
        let control = vec![format!("{ROOT}/#")];
        Acl {
            publish_allow: vec!["#".into()],
            publish_deny: control.clone(),
            subscribe_allow: vec!["#".into()],
            subscribe_deny: control,
            subscribe_deny_except: mirror,
        }
    }

    /// Every entry must be a valid MQTT filter.
    pub fn validate(&self) -> Result<(), String> {
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
    pub fn may_publish(&self, topic: &str) -> bool {
        allowed(&self.publish_allow, &self.publish_deny, topic)
    }

    /// May a client subscribe to `filter` (a valid filter)? See the module docs.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let allowed = self.subscribe_allow.iter().any(|a| intersects(a, filter));
        let denied = self.subscribe_deny.iter().any(|d| covers(d, filter));
        let excepted = self
            .subscribe_deny_except
            .iter()
            .any(|e| intersects(e, filter));
        allowed && (!denied || excepted)
    }

    /// May a message on `topic` be delivered to a client?
    pub fn may_receive(&self, topic: &str) -> bool {
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

/// A topic name a client may publish on: non-empty, no wildcards, no NUL.
pub(crate) fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Most levels a subscription filter may have. MQTT sets no bound; every level of a subscribed
/// filter is a node of the router's subscription tree, so a client could otherwise make one
/// SUBSCRIBE cost megabytes (a 256 KiB filter of `/`).
pub const MAX_FILTER_LEVELS: usize = 200;

/// A valid subscription filter (MQTT 3.1.1 §4.7.1): `#` only as the whole last level, `+` only as
/// a whole level, non-empty, no NUL; and at most [`MAX_FILTER_LEVELS`] levels.
pub(crate) fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    let mut depth = 0;
    while let Some(level) = levels.next() {
        depth += 1;
        if depth > MAX_FILTER_LEVELS {
            return false;
        }
        match level {
            "#" if levels.peek().is_some() => return false,
            "#" | "+" => {}
            l if l.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// Does `filter` match the topic name `topic`?
pub(crate) fn matches(filter: &str, topic: &str) -> bool {
    covers(filter, topic)
}

/// The levels of a topic or filter. A byte split: levels are short, and `str::split`'s searcher
/// costs more than the comparisons (it was most of the router's time under fan-in).
fn levels(s: &str) -> std::slice::Split<'_, u8, impl FnMut(&u8) -> bool> {
    s.as_bytes().split(|&b| b == b'/')
}

/// Wildcards at the first level of `pattern` cannot match the `$` topics `other` stands for.
fn dollar_excluded(pattern: &str, other: &str) -> bool {
    other.starts_with('$')
        && levels(pattern)
            .next()
            .is_some_and(|p| p == b"+" || p == b"#")
}

/// Is every topic matched by `inner` also matched by `outer`? Both are valid filters (a topic
/// name is a filter without wildcards).
pub(crate) fn covers(outer: &str, inner: &str) -> bool {
    if dollar_excluded(outer, inner) {
        return false;
    }
    let mut o = levels(outer);
    let mut i = levels(inner);
    loop {
        match (o.next(), i.next()) {
            // `a/#` also matches `a` itself.
            (Some(b"#"), _) => return true,
            (Some(_), Some(b"#")) => return false,
            (Some(b"+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Is some topic matched by both filters?
pub(crate) fn intersects(a: &str, b: &str) -> bool {
    if dollar_excluded(a, b) || dollar_excluded(b, a) {
        return false;
    }
    let mut x = levels(a);
    let mut y = levels(b);
    loop {
        match (x.next(), y.next()) {
            (Some(b"#"), _) | (_, Some(b"#")) => return true,
            (Some(b"+"), Some(_)) | (Some(_), Some(b"+")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
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
    fn filters_and_topics_are_validated() {
        for ok in [
            "a", "a/b", "#", "+", "a/+/c", "a/#", "/", "a//b", "+/+/#", "$SYS/#",
        ] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "a/+b/c", "##", "a\0b"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        let deepest = vec!["+"; MAX_FILTER_LEVELS].join("/");
        assert!(valid_filter(&deepest));
        assert!(!valid_filter(&format!("{deepest}/a")));
        assert!(valid_topic("a/b") && valid_topic("/") && valid_topic("$SYS/x"));
        assert!(
            !valid_topic("") && !valid_topic("a/+") && !valid_topic("a/#") && !valid_topic("a\0")
        );
    }

    #[test]
    fn topic_matching_follows_the_spec() {
        let cases = [
            ("a/b/c", "a/b/c", true),
            ("d/b/c", "a/b/c", false),
            ("a/b/c/d", "a/b/c", false),
            ("a/b/c", "a/b/c/d", false),
            ("#", "a/b/c", true),
            ("a/b/c/#", "a/b/c", true),
            ("a/b/c/#", "a/b/c/d/e", true),
            ("a/+/c", "a/b/c", true),
            ("a/+/c/+/e", "a/b/c/d/e", true),
            ("a/b/+", "a/b", false),
            ("+", "a/b", false),
            ("+/+", "/x", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(matches(filter, topic), expected, "{filter} vs {topic}");
        }
    }

    #[test]
    fn filter_against_filter() {
        // (outer, inner, covers, intersects)
        let cases = [
            ("a/#", "a/b/+", true, true),
            ("a/b/+", "a/#", false, true),
            ("#", "a/+/c", true, true),
            ("a/+/+/d", "a/+/c/d", true, true),
            ("a/+/c/d", "a/+/+/d", false, true),
            ("a/b", "a/c", false, false),
            ("a/+", "b/#", false, false),
            ("a/#", "a", true, true),
            ("a", "a/#", false, true),
            ("a/+", "a", false, false),
            ("root/#", "#", false, true),
            ("root/#", "+/state/x", false, true),
            ("root/#", "other/#", false, false),
            ("#", "$SYS/#", false, false),
            ("+/#", "$x/y", false, false),
        ];
        for (outer, inner, c, i) in cases {
            assert_eq!(covers(outer, inner), c, "{outer} covers {inner}");
            assert_eq!(intersects(outer, inner), i, "{outer} meets {inner}");
            assert_eq!(intersects(inner, outer), i, "{inner} meets {outer}");
        }
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
