//! Topic maps: a filter on one side, a template on the other, with the wildcard levels carried
//! across in order, so a map works both ways and wildcard subtrees can be renamed
//! (nanomq#2081, mosquitto#3365).
//!
//! A map `plant/+/temp/#` -> `fleet/{box}/+/temperature/#` sends `plant/l1/temp/a/b` to
//! `fleet/<box>/l1/temperature/a/b`: the n-th `+` of the template takes the level the n-th `+`
//! of the filter matched, `#` takes the rest, `{box}` is the box id. The filter and the template
//! must have the same wildcards in the same order, so the template, read as a filter, is the
//! exact image of the filter: that is what the loop check of [`Maps::new`] relies on.

use std::fmt;

/// Which way a map carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Local bus -> remote broker.
    Out,
    /// Remote broker -> local bus.
    In,
}

/// One validated map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    pub direction: Direction,
    /// The filter on the source side (`{box}` already replaced).
    pub filter: String,
    /// The template on the target side (`{box}` already replaced).
    pub template: String,
    /// Queue priority of what this map carries out (higher first).
    pub priority: u8,
    /// How long a message of this map may wait in the queue.
    pub ttl_ms: Option<u64>,
}

/// A map as written by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSpec {
    pub direction: Direction,
    pub filter: String,
    pub template: String,
    pub priority: u8,
    pub ttl_ms: Option<u64>,
}

/// Why a set of maps is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    /// Which map (index in the list given).
    pub index: usize,
    pub message: String,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "map {}: {}", self.index, self.message)
    }
}

/// The validated maps of one remote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Maps {
    maps: Vec<Map>,
}

/// The wildcards of a filter or template, in order (`+` or `#`).
fn wildcards(levels: &[&str]) -> Vec<&'static str> {
    levels
        .iter()
        .filter_map(|l| match *l {
            "+" => Some("+"),
            "#" => Some("#"),
            _ => None,
        })
        .collect()
}

/// Check one filter (or template) for MQTT filter syntax.
fn check_filter(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > 1024 {
        return Err("is longer than 1024 bytes".into());
    }
    let levels: Vec<&str> = s.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains(['+', '#']) && *level != "+" && *level != "#" {
            return Err(format!(
                "`{s}`: a wildcard must be a whole level (`{level}`)"
            ));
        }
        if *level == "#" && i + 1 != levels.len() {
            return Err(format!("`{s}`: `#` must be the last level"));
        }
        if level.contains(['\0', '{', '}']) {
            return Err(format!("`{s}`: `{level}` is not a valid level"));
        }
    }
    Ok(())
}

/// Whether some topic matches both filters.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            (Some(&"#"), _) | (_, Some(&"#")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if *x == "+" || *y == "+" || x == y => i += 1,
            _ => return false,
        }
    }
}

/// Whether `topic` matches `filter`; the levels the wildcards matched, in order (`#` takes the
/// rest joined by `/`).
fn captures<'t>(filter: &str, topic: &'t str) -> Option<Vec<&'t str>> {
    let mut out = Vec::new();
    let mut rest = Some(topic);
    for level in filter.split('/') {
        if level == "#" {
            // `a/#` also matches `a` itself (MQTT 3.1.1 §4.7.1.2): the capture is then empty.
            out.push(rest.unwrap_or(""));
            return Some(out);
        }
        let r = rest?;
        let (head, tail) = match r.split_once('/') {
            Some((h, t)) => (h, Some(t)),
            None => (r, None),
        };
        if level == "+" {
            out.push(head);
        } else if level != head {
            return None;
        }
        rest = tail;
    }
    rest.is_none().then_some(out)
}

impl Map {
    /// The target topic of `topic`, when this map's filter matches it.
    pub fn apply(&self, topic: &str) -> Option<String> {
        // Topics starting with `$` are not matched by wildcards at the first level (§4.7.2).
        if topic.starts_with('$') && self.filter.starts_with(['+', '#']) {
            return None;
        }
        let caught = captures(&self.filter, topic)?;
        let mut caught = caught.into_iter();
        let mut out: Vec<&str> = Vec::new();
        for level in self.template.split('/') {
            match level {
                "+" => out.push(caught.next().expect("validated: same wildcards")),
                "#" => {
                    let rest = caught.next().expect("validated: same wildcards");
                    if !rest.is_empty() {
                        out.push(rest);
                    }
                }
                l => out.push(l),
            }
        }
        Some(out.join("/"))
    }
}

impl Maps {
    /// Validate `specs` for the box `box_id`: every problem is reported, with the map it is in.
    /// A pair of an out map and an in map that would carry a message back where it came from
    /// is refused.
    pub fn new(specs: &[MapSpec], box_id: &str) -> Result<Maps, Vec<MapError>> {
        let mut errors = Vec::new();
        let mut maps = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let filter = spec.filter.replace("{box}", box_id);
            let template = spec.template.replace("{box}", box_id);
            let mut problems = Vec::new();
            for (what, s) in [("filter", &filter), ("template", &template)] {
                if let Err(e) = check_filter(s) {
                    problems.push(format!("the {what} {e}"));
                }
            }
            let fl: Vec<&str> = filter.split('/').collect();
            let tl: Vec<&str> = template.split('/').collect();
            if problems.is_empty() && wildcards(&fl) != wildcards(&tl) {
                problems.push(format!(
                    "`{filter}` and `{template}` must have the same wildcards in the same order"
                ));
            }
            if spec.ttl_ms == Some(0) {
                problems.push("a TTL of 0 would drop every message".into());
            }
            if problems.is_empty() {
                maps.push((
                    index,
                    Map {
                        direction: spec.direction,
                        filter,
                        template,
                        priority: spec.priority,
                        ttl_ms: spec.ttl_ms,
                    },
                ));
            }
            errors.extend(
                problems
                    .into_iter()
                    .map(|message| MapError { index, message }),
            );
        }
        for (oi, out) in maps.iter().filter(|(_, m)| m.direction == Direction::Out) {
            for (ii, inn) in maps.iter().filter(|(_, m)| m.direction == Direction::In) {
                if filters_overlap(&out.template, &inn.filter)
                    && filters_overlap(&inn.template, &out.filter)
                {
                    errors.push(MapError {
                        index: *ii,
                        message: format!(
                            "loops with map {oi}: `{}` goes out as `{}`, which `{}` brings back in as `{}`, which goes out again",
                            out.filter, out.template, inn.filter, inn.template
                        ),
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(Maps {
                maps: maps.into_iter().map(|(_, m)| m).collect(),
            })
        } else {
            Err(errors)
        }
    }

    /// The maps of one direction.
    pub fn of(&self, direction: Direction) -> impl Iterator<Item = &Map> {
        self.maps.iter().filter(move |m| m.direction == direction)
    }

    /// The first map of `direction` whose filter matches `topic`, and the target topic.
    pub fn route(&self, direction: Direction, topic: &str) -> Option<(&Map, String)> {
        self.of(direction)
            .find_map(|m| m.apply(topic).map(|t| (m, t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(direction: Direction, filter: &str, template: &str) -> MapSpec {
        MapSpec {
            direction,
            filter: filter.into(),
            template: template.into(),
            priority: 0,
            ttl_ms: None,
        }
    }

    #[test]
    fn wildcard_levels_are_carried_across_in_order_both_ways() {
        let maps = Maps::new(
            &[
                spec(
                    Direction::Out,
                    "plant/+/temp/#",
                    "fleet/{box}/+/temperature/#",
                ),
                spec(Direction::In, "fleet/{box}/cmd/+", "local/cmd/+"),
            ],
            "b7",
        )
        .unwrap();
        let route = |d, t| maps.route(d, t).map(|(_, t)| t);
        assert_eq!(
            route(Direction::Out, "plant/l1/temp/a/b").as_deref(),
            Some("fleet/b7/l1/temperature/a/b")
        );
        assert_eq!(
            route(Direction::Out, "plant/l1/temp").as_deref(),
            Some("fleet/b7/l1/temperature")
        );
        assert_eq!(route(Direction::Out, "plant/l1/hum/a"), None);
        assert_eq!(
            route(Direction::In, "fleet/b7/cmd/reboot").as_deref(),
            Some("local/cmd/reboot")
        );
        assert_eq!(route(Direction::In, "fleet/b8/cmd/reboot"), None);
        assert_eq!(route(Direction::Out, "$SYS/x"), None);
    }

    #[test]
    fn every_bad_map_is_reported_at_once() {
        let errs = Maps::new(
            &[
                spec(Direction::Out, "a/+/b", "x/#"),
                spec(Direction::Out, "a/#/b", "x/#/b"),
                spec(Direction::Out, "a/b+", "x"),
                spec(Direction::Out, "ok/#", "fine/#"),
            ],
            "b",
        )
        .unwrap_err();
        let idx: Vec<usize> = errs.iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![0, 1, 1, 2], "{errs:?}");
    }

    #[test]
    fn a_map_pair_that_would_loop_is_refused() {
        let errs = Maps::new(
            &[
                spec(Direction::Out, "data/#", "fleet/{box}/data/#"),
                spec(Direction::In, "fleet/{box}/data/#", "data/#"),
            ],
            "b1",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("loops with map 0"), "{}", errs[0]);
        // Commands in, data out: no loop.
        Maps::new(
            &[
                spec(Direction::Out, "data/#", "fleet/{box}/data/#"),
                spec(Direction::In, "fleet/{box}/cmd/#", "cmd/#"),
            ],
            "b1",
        )
        .unwrap();
    }

    #[test]
    fn overlap_follows_mqtt_wildcards() {
        assert!(filters_overlap("a/+/c", "a/b/#"));
        assert!(filters_overlap("a/#", "a"));
        assert!(!filters_overlap("a/+", "a/b/c"));
        assert!(!filters_overlap("a/b", "a/c"));
    }
}
