//! The subscription tree: every granted filter, indexed level by level, so that routing a publish
//! costs one walk down the topic's levels instead of one filter comparison per subscription (a
//! linear scan was most of the broker's time under fan-in with only 49 filters; the apps broker
//! may carry thousands).
//!
//! A node stands for a filter prefix. Exact levels are children by name, `+` is one child of its
//! own, and a filter ending in `#` is kept on the node of its prefix (`a/#` on `a`), since it
//! matches that prefix itself and everything below. Wildcards at the first level do not match
//! topics starting with `$` (MQTT 3.1.1 §4.7.2). Walks are iterative (a filter may have tens of
//! thousands of levels), and removal prunes empty nodes, so unsubscribed filters leave nothing.

use std::collections::HashMap;

/// One subscription's grant on one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The subscription.
    pub(crate) id: u64,
    /// Granted QoS (0 or 1).
    pub(crate) qos: u8,
    /// Deliveries through this filter are checked with the subscription's ACL.
    pub(crate) checked: bool,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    /// Grants of the filter that ends at this node.
    here: Vec<Grant>,
    /// Grants of this node's filter followed by `/#` (or of `#` at the root).
    hash: Vec<Grant>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.hash.is_empty()
    }
}

/// Dropped iteratively: the default drop recurses once per level, and a deep branch would
/// overflow the stack.
impl Drop for Node {
    fn drop(&mut self) {
        fn take(node: &mut Node, into: &mut Vec<Node>) {
            into.extend(node.children.drain().map(|(_, child)| child));
            if let Some(plus) = node.plus.take() {
                into.push(*plus);
            }
        }
        let mut below = Vec::new();
        take(self, &mut below);
        while let Some(mut node) = below.pop() {
            take(&mut node, &mut below);
        }
    }
}

/// A filter's position in the tree: the levels leading to its node, and which list of that node
/// holds its grants.
struct Path<'a> {
    levels: Vec<&'a str>,
    hash: bool,
}

fn path(filter: &str) -> Path<'_> {
    let mut levels: Vec<&str> = filter.split('/').collect();
    let hash = levels.last() == Some(&"#");
    if hash {
        levels.pop();
    }
    Path { levels, hash }
}

/// The size of the tree, or of what adding a filter would add to it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size {
    /// Nodes below the root.
    pub(crate) nodes: usize,
    /// Bytes of the nodes' level names.
    pub(crate) bytes: usize,
}

impl Size {
    fn of(levels: &[&str]) -> Size {
        Size {
            nodes: levels.len(),
            bytes: levels.iter().filter(|l| **l != "+").map(|l| l.len()).sum(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Tree {
    root: Node,
    size: Size,
}

impl Tree {
    /// The nodes the tree holds and the bytes of their names (its memory is about
    /// `nodes * (size_of::<Node>() + HashMap entry) + bytes`).
    pub(crate) fn size(&self) -> Size {
        self.size
    }

    /// What inserting `filter` would add to [`Tree::size`].
    pub(crate) fn growth(&self, filter: &str) -> Size {
        let p = path(filter);
        let mut node = &self.root;
        for (i, level) in p.levels.iter().enumerate() {
            let next = if *level == "+" {
                node.plus.as_deref()
            } else {
                node.children.get(*level)
            };
            match next {
                Some(n) => node = n,
                None => return Size::of(&p.levels[i..]),
            }
        }
        Size::default()
    }

    /// Add or replace subscription `grant.id`'s grant on `filter` (a valid filter).
    pub(crate) fn insert(&mut self, filter: &str, grant: Grant) {
        let p = path(filter);
        let size = &mut self.size;
        let mut node = &mut self.root;
        for level in p.levels {
            let is_new = if level == "+" {
                node.plus.is_none()
            } else {
                !node.children.contains_key(level)
            };
            if is_new {
                size.nodes += 1;
                size.bytes += if level == "+" { 0 } else { level.len() };
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.children.entry(level.into()).or_default()
            };
        }
        let list = if p.hash {
            &mut node.hash
        } else {
            &mut node.here
        };
        match list.iter_mut().find(|g| g.id == grant.id) {
            Some(g) => *g = grant,
            None => list.push(grant),
        }
    }

    /// Remove subscription `id`'s grant on `filter`, and the nodes left empty.
    pub(crate) fn remove(&mut self, filter: &str, id: u64) {
        let p = path(filter);
        let mut node = &mut self.root;
        for level in &p.levels {
            let next = if *level == "+" {
                node.plus.as_deref_mut()
            } else {
                node.children.get_mut(*level)
            };
            match next {
                Some(n) => node = n,
                None => return,
            }
        }
        let list = if p.hash {
            &mut node.hash
        } else {
            &mut node.here
        };
        list.retain(|g| g.id != id);
        if node.is_empty() && !p.levels.is_empty() {
            self.prune(&p.levels);
        }
    }

    /// Drop the empty nodes at the end of `levels`, deepest first.
    fn prune(&mut self, levels: &[&str]) {
        // The deepest non-empty ancestor keeps everything above it; find it, then cut below it.
        let mut keep = 0; // levels of the deepest ancestor that must stay
        let mut node = &self.root;
        for (i, level) in levels.iter().enumerate() {
            let next = if *level == "+" {
                node.plus.as_deref()
            } else {
                node.children.get(*level)
            };
            let Some(next) = next else { return };
            // `node` (the ancestor at depth i) stays if it holds anything besides this branch.
            let others = node.children.len() + usize::from(node.plus.is_some()) > 1
                || !node.here.is_empty()
                || !node.hash.is_empty();
            if i == 0 || others {
                keep = i;
            }
            node = next;
        }
        let mut node = &mut self.root;
        for level in &levels[..keep] {
            node = if *level == "+" {
                match node.plus.as_deref_mut() {
                    Some(n) => n,
                    None => return,
                }
            } else {
                match node.children.get_mut(*level) {
                    Some(n) => n,
                    None => return,
                }
            };
        }
        let cut = Size::of(&levels[keep..]);
        self.size.nodes -= cut.nodes;
        self.size.bytes -= cut.bytes;
        let level = levels[keep];
        if level == "+" {
            node.plus = None;
        } else {
            node.children.remove(level);
        }
    }

    /// Append to `out` every grant whose filter matches the topic name `topic` (one per matching
    /// filter: a subscription with overlapping filters appears once for each).
    pub(crate) fn matching(&self, topic: &str, out: &mut Vec<Grant>) {
        let dollar = topic.starts_with('$');
        // (node, the topic's levels still to match (`None`: all matched), node is the root)
        let mut stack: Vec<(&Node, Option<&str>, bool)> = vec![(&self.root, Some(topic), true)];
        while let Some((node, rest, root)) = stack.pop() {
            let wildcards = !(root && dollar);
            if wildcards {
                out.extend_from_slice(&node.hash);
            }
            let Some(rest) = rest else {
                out.extend_from_slice(&node.here);
                continue;
            };
            let (level, after) = match rest.split_once('/') {
                Some((level, after)) => (level, Some(after)),
                None => (rest, None),
            };
            if let Some(child) = node.children.get(level) {
                stack.push((child, after, false));
            }
            if let (Some(plus), true) = (&node.plus, wildcards) {
                stack.push((plus, after, false));
            }
        }
    }

    /// Whether the tree holds no filter at all.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.root.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::matches;

    fn grant(id: u64) -> Grant {
        Grant {
            id,
            qos: 0,
            checked: false,
        }
    }

    fn ids(t: &Tree, topic: &str) -> Vec<u64> {
        let mut out = Vec::new();
        t.matching(topic, &mut out);
        let mut ids: Vec<u64> = out.iter().map(|g| g.id).collect();
        ids.sort_unstable();
        ids
    }

    const FILTERS: &[&str] = &[
        "#", "+", "a", "a/#", "a/+", "a/b", "a/+/c", "+/b/#", "a//c", "/a", "+/+", "$SYS/#",
        "$SYS/+", "+/x/#", "a/b/c/d", "", "/", "a/b/#",
    ];

    const TOPICS: &[&str] = &[
        "a",
        "a/b",
        "a/b/c",
        "a//c",
        "/a",
        "/",
        "b",
        "x/b",
        "x/b/y",
        "$SYS/x",
        "$SYS",
        "a/x/c",
        "a/b/c/d",
        "q/x",
        "q/x/y",
        "",
        "a/b/c/d/e",
    ];

    #[test]
    fn the_tree_matches_exactly_what_the_filter_algebra_matches() {
        let mut t = Tree::default();
        for (id, f) in FILTERS.iter().enumerate() {
            t.insert(f, grant(id as u64));
        }
        for topic in TOPICS {
            let expected: Vec<u64> = FILTERS
                .iter()
                .enumerate()
                .filter(|(_, f)| matches(f, topic))
                .map(|(id, _)| id as u64)
                .collect();
            assert_eq!(ids(&t, topic), expected, "topic {topic:?}");
        }
    }

    #[test]
    fn a_grant_is_replaced_and_removal_leaves_no_node_behind() {
        let mut t = Tree::default();
        t.insert("a/+/c", grant(1));
        t.insert(
            "a/+/c",
            Grant {
                id: 1,
                qos: 1,
                checked: true,
            },
        );
        let mut out = Vec::new();
        t.matching("a/b/c", &mut out);
        assert_eq!(
            out,
            vec![Grant {
                id: 1,
                qos: 1,
                checked: true
            }]
        );
        t.insert("a/+/c", grant(2));
        t.insert("a/#", grant(3));
        t.remove("a/+/c", 1);
        assert_eq!(ids(&t, "a/b/c"), vec![2, 3]);
        t.remove("a/+/c", 2);
        assert_eq!(ids(&t, "a/b/c"), vec![3]);
        // The `a` node still holds `a/#`.
        assert!(!t.is_empty());
        t.remove("a/#", 3);
        assert!(t.is_empty(), "{t:?}");
        // Unknown filters and ids are ignored.
        t.remove("x/y", 9);
        t.insert("x/y/z", grant(4));
        t.remove("x/y", 4);
        t.remove("x/y/z", 5);
        assert_eq!(ids(&t, "x/y/z"), vec![4]);
        t.remove("x/y/z", 4);
        assert!(t.is_empty(), "{t:?}");
        assert_eq!(t.size(), Size::default());
    }

    #[test]
    fn the_size_counts_every_node_and_name_and_growth_predicts_it() {
        let mut t = Tree::default();
        for (id, f) in FILTERS.iter().enumerate() {
            let before = t.size();
            let grown = t.growth(f);
            t.insert(f, grant(id as u64));
            let after = t.size();
            assert_eq!(after.nodes, before.nodes + grown.nodes, "{f:?}");
            assert_eq!(after.bytes, before.bytes + grown.bytes, "{f:?}");
        }
        fn count(n: &Node) -> Size {
            let mut s = Size::default();
            for (name, child) in &n.children {
                let c = count(child);
                s.nodes += 1 + c.nodes;
                s.bytes += name.len() + c.bytes;
            }
            if let Some(plus) = &n.plus {
                let c = count(plus);
                s.nodes += 1 + c.nodes;
                s.bytes += c.bytes;
            }
            s
        }
        assert_eq!(t.size(), count(&t.root));
        for (id, f) in FILTERS.iter().enumerate().step_by(3) {
            t.remove(f, id as u64);
            assert_eq!(t.size(), count(&t.root), "after removing {f:?}");
        }
        for (id, f) in FILTERS.iter().enumerate() {
            t.remove(f, id as u64);
        }
        assert_eq!(t.size(), Size::default());
    }

    #[test]
    fn every_filter_and_topic_pair_agrees_with_the_algebra_after_churn() {
        // Insert all, remove every other one, check, re-insert: the tree must agree throughout.
        let mut t = Tree::default();
        for (id, f) in FILTERS.iter().enumerate() {
            t.insert(f, grant(id as u64));
        }
        for (id, f) in FILTERS.iter().enumerate().step_by(2) {
            t.remove(f, id as u64);
        }
        for topic in TOPICS {
            let expected: Vec<u64> = FILTERS
                .iter()
                .enumerate()
                .skip(1)
                .step_by(2)
                .filter(|(_, f)| matches(f, topic))
                .map(|(id, _)| id as u64)
                .collect();
            assert_eq!(ids(&t, topic), expected, "topic {topic:?}");
        }
        for (id, f) in FILTERS.iter().enumerate() {
            t.remove(f, id as u64);
        }
        assert!(t.is_empty(), "{t:?}");
    }

    #[test]
    fn a_very_deep_filter_does_not_overflow_the_stack() {
        let deep = vec!["a"; 50_000].join("/");
        let mut t = Tree::default();
        t.insert(&deep, grant(1));
        t.insert(&format!("{deep}/#"), grant(2));
        assert_eq!(ids(&t, &deep), vec![1, 2]);
        t.remove(&deep, 1);
        t.remove(&format!("{deep}/#"), 2);
        assert!(t.is_empty());
    }
}
