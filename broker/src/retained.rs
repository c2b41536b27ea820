//! The retained store: every retained publish updates it (under the router's lock) before it is
//! fanned out, and every new subscription is first served the matching entries from here.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

/// One retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    pub payload: Bytes,
    pub qos: u8,
}

/// Topic -> last retained message. Ordered, so snapshots are deterministic.
#[derive(Debug, Default)]
pub(crate) struct RetainedStore {
    map: BTreeMap<String, Retained>,
    bytes: usize,
}

impl RetainedStore {
    /// Apply a retained publish: an empty payload deletes the topic (MQTT 3.3.1.3).
    pub(crate) fn apply(&mut self, topic: &str, payload: Bytes, qos: u8) {
        if payload.is_empty() {
            if let Some(old) = self.map.remove(topic) {
                self.bytes -= topic.len() + old.payload.len();
            }
            return;
        }
        self.bytes += topic.len() + payload.len();
        if let Some(old) = self
            .map
            .insert(topic.to_string(), Retained { payload, qos })
        {
            self.bytes -= topic.len() + old.payload.len();
        }
    }

    /// Every retained message whose topic matches `filter` (a valid filter), in topic order.
    ///
    /// Only the topics that start with the filter's levels before its first wildcard are looked
    /// at (a range of the ordered map; one lookup for a filter without wildcards), so a request's
    /// reply subscription does not scan a store of 100,000 topics.
    pub(crate) fn matching(&self, filter: &str) -> Vec<(String, Retained)> {
        let matches = |topic: &str| crate::filter::matches(filter, topic);
        let entry = |(t, r): (&String, &Retained)| (t.clone(), r.clone());
        let Some(wildcard) = filter.find(['+', '#']) else {
            return self
                .map
                .get_key_value(filter)
                .map(entry)
                .into_iter()
                .collect();
        };
        // Wildcards are whole levels: `prefix` is empty or ends with `/`.
        let prefix = &filter[..wildcard];
        let mut out = Vec::new();
        // `a/#` also matches `a` itself, which sorts before every `a/...`.
        if let Some(parent) = prefix
            .strip_suffix('/')
            .filter(|_| &filter[wildcard..] == "#")
        {
            out.extend(self.map.get_key_value(parent).map(entry));
        }
        out.extend(
            self.map
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(t, _)| t.starts_with(prefix))
                .filter(|(t, _)| matches(t))
                .map(entry),
        );
        out
    }

    /// Every entry, in topic order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &Retained)> {
        self.map.iter()
    }

    pub(crate) fn get(&self, topic: &str) -> Option<&Retained> {
        self.map.get(topic)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes of topics and payloads held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_looks_only_at_the_filters_prefix_and_finds_what_a_full_scan_finds() {
        let topics = [
            "a", "a/b", "a/b/c", "a//c", "/a", "/", "b", "ab", "a!", "a/bc", "x/b", "x/b/y",
            "$SYS/x", "$SYS", "a/x/c", "a/b/c/d", "a/",
        ];
        let mut s = RetainedStore::default();
        for t in topics {
            s.apply(t, Bytes::from_static(b"1"), 0);
        }
        let filters = [
            "#",
            "+",
            "a",
            "a/#",
            "a/+",
            "a/b",
            "a/+/c",
            "+/b/#",
            "a//c",
            "/a",
            "+/+",
            "$SYS/#",
            "$SYS/+",
            "a/b/#",
            "/",
            "/#",
            "a//#",
            "nothing",
            "a/b/c/d/#",
        ];
        for f in filters {
            let scan: Vec<String> = s
                .iter()
                .filter(|(t, _)| crate::filter::matches(f, t))
                .map(|(t, _)| t.clone())
                .collect();
            let got: Vec<String> = s.matching(f).into_iter().map(|(t, _)| t).collect();
            assert_eq!(got, scan, "filter {f:?}");
        }
    }

    #[test]
    fn empty_payload_deletes_and_byte_count_follows() {
        let mut s = RetainedStore::default();
        s.apply("a/b", Bytes::from_static(b"12345"), 0);
        s.apply("a/b", Bytes::from_static(b"12"), 1);
        s.apply("a/c", Bytes::from_static(b"x"), 0);
        assert_eq!(s.bytes(), 3 + 2 + 3 + 1);
        assert_eq!(s.matching("a/+").len(), 2);
        assert_eq!(s.matching("a/b")[0].1.qos, 1);
        s.apply("a/b", Bytes::new(), 0);
        assert_eq!(s.len(), 1);
        assert_eq!(s.bytes(), 4);
        assert!(s.matching("b/#").is_empty());
    }
}
