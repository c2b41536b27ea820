//! The retained store: every retained publish updates it (under the router's lock) before it is
//! fanned out, and every new subscription is first served the matching entries from here.

use std::collections::BTreeMap;

use bytes::Bytes;

/// One retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    pub payload: Bytes,
    pub qos: u8,
}

/// Topic -> last retained message. Ordered, so snapshots are deterministic.
#[derive(Debug, Default)]
pub struct RetainedStore {
    map: BTreeMap<String, Retained>,
    bytes: usize,
}

impl RetainedStore {
    /// Apply a retained publish: an empty payload deletes the topic (MQTT 3.3.1.3).
    pub fn apply(&mut self, topic: &str, payload: Bytes, qos: u8) {
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

    /// Every retained message whose topic matches `filter`, in topic order.
    pub fn matching(&self, filter: &str) -> Vec<(String, Retained)> {
        self.map
            .iter()
            .filter(|(topic, _)| crate::listener::acl::matches(filter, topic))
            .map(|(t, r)| (t.clone(), r.clone()))
            .collect()
    }

    /// Every entry, in topic order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Retained)> {
        self.map.iter()
    }

    pub fn get(&self, topic: &str) -> Option<&Retained> {
        self.map.get(topic)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of topics and payloads held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
