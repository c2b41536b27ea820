//! The MQTT topic/filter algebra of the broker's core: which topic names and subscription filters
//! are valid, whether a filter matches a topic, and how two filters compare (one covers the
//! other, or they intersect). The router, the retained store and the [`crate::Acl`] build on it.
//!
//! Wildcards at the first level never match topics starting with `$` (MQTT 3.1.1 §4.7.2).

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
}
