//! Generated documentation of the bus contract: `docs/topics.md` and `docs/schemas/*.json`.
//!
//! Both are built from the types and tables of this crate, so they cannot say anything the code
//! does not; `tests/schema_docs.rs` fails when the committed copies drift
//! (`UPDATE_DOCS=1 cargo test -p bus-schema --test schema_docs` rewrites them).

use std::fmt::Write as _;

use schemars::JsonSchema;
use serde_json::Value;

use crate::envelope::{Reply, Request};
use crate::error::{BusError, ErrorCode, LineError};
use crate::events::FileEvent;
use crate::facts::GlobalMqttFacts;
use crate::secret::Secret;
use crate::sections::{self, Config, ConfigFacts, SectionPayload, INTERNAL_VARIABLES, VARIABLES};
use crate::state::{Phase, ServiceState};
use crate::topic::{filter, EventKind, Section, ServiceName, Topic, Verb};

/// The schema of `T` with every object's keys sorted, so the text does not depend on whether
/// serde_json keeps insertion order (its `preserve_order` feature may be on in the workspace).
fn schema<T: JsonSchema>() -> Value {
    sorted(schemars::schema_for!(T).to_value())
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The schema of one config section's struct.
fn section_schema(s: Section) -> Value {
    match s {
        Section::Network => schema::<sections::Network>(),
        Section::Firewall => schema::<sections::Firewall>(),
        Section::Forwards => schema::<sections::Forwards>(),
        Section::Routes => schema::<sections::Routes>(),
        Section::Dhcp => schema::<sections::Dhcp>(),
        Section::Wifi => schema::<sections::Wifi>(),
        Section::Ssh => schema::<sections::Ssh>(),
        Section::System => schema::<sections::System>(),
        Section::Docker => schema::<sections::Docker>(),
        Section::Registry => schema::<sections::Registry>(),
        Section::Deployer => schema::<sections::Deployer>(),
        Section::Upgrader => schema::<sections::Upgrader>(),
        Section::AdminApi => schema::<sections::AdminApi>(),
        Section::Wireguard => schema::<sections::Wireguard>(),
        Section::Zerotier => schema::<sections::Zerotier>(),
        Section::GlobalMqtt => schema::<sections::GlobalMqtt>(),
        Section::Bridge => schema::<sections::Bridge>(),
    }
}

/// File name of the schema of a config section.
pub fn section_schema_file(s: Section) -> String {
    format!("config.{s}.json")
}

/// `(file name, JSON Schema)` of every payload type, for `docs/schemas/`.
pub fn json_schemas() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Section::ALL
        .iter()
        .map(|s| (section_schema_file(*s), section_schema(*s)))
        .collect();
    out.extend([
        ("config.json".to_string(), schema::<Config>()),
        (
            "section_payload.json".to_string(),
            schema::<SectionPayload>(),
        ),
        ("config_facts.json".to_string(), schema::<ConfigFacts>()),
        (
            "global_mqtt_facts.json".to_string(),
            schema::<GlobalMqttFacts>(),
        ),
        ("service_state.json".to_string(), schema::<ServiceState>()),
        ("request.json".to_string(), schema::<Request>()),
        ("reply.json".to_string(), schema::<Reply>()),
        ("bus_error.json".to_string(), schema::<BusError>()),
        ("line_error.json".to_string(), schema::<LineError>()),
        ("file_event.json".to_string(), schema::<FileEvent>()),
        ("secret.json".to_string(), schema::<Secret>()),
    ]);
    out
}

/// `(wire value, doc comment)` of every variant of a unit enum, read from its schema so the
/// docs come from the doc comments in the code.
fn variants<T: JsonSchema>() -> Vec<(String, String)> {
    let root = schemars::schema_for!(T).to_value();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    if let Some(one_of) = root.get("oneOf").and_then(Value::as_array) {
        let mut out = Vec::new();
        for v in one_of {
            let doc = v.get("description").map(text).unwrap_or_default();
            if let Some(c) = v.get("const") {
                out.push((text(c), doc));
            } else if let Some(values) = v.get("enum").and_then(Value::as_array) {
                out.extend(values.iter().map(|c| (text(c), doc.clone())));
            }
        }
        return out;
    }
    root.get("enum")
        .and_then(Value::as_array)
        .map(|values| values.iter().map(|c| (text(c), String::new())).collect())
        .unwrap_or_default()
}

/// Escapes text for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn code(s: &str) -> String {
    if s.is_empty() {
        "*(empty)*".to_string()
    } else {
        format!("`{}`", cell(s))
    }
}

/// `docs/topics.md`: the topic tree, every topic level value, every error code and the variable
/// registry.
pub fn topics_markdown() -> String {
    let mut md = String::new();
    // `write!` into a String cannot fail; the results are ignored on purpose in every `write_*`.
    let w = &mut md;
    write_header(w);
    write_topic_tree(w);
    write_filters(w);
    write_config_sections(w);
    write_services(w);
    write_verbs(w);
    write_event_kinds(w);
    write_phases(w);
    write_error_codes(w);
    write_variables(w);
    md
}

/// The title, where the file comes from, and what every payload has in common.
fn write_header(w: &mut String) {
    let _ = writeln!(w, "# iohub bus: topics, payloads, errors and variables\n");
    let _ = writeln!(
        w,
        "Generated from the `bus-schema` crate by `bus_schema::schema::topics_markdown()`; do not \
         edit. Regenerate with `UPDATE_DOCS=1 cargo test -p bus-schema --test schema_docs`.\n"
    );
    let _ = writeln!(
        w,
        "Every payload is JSON with `deny_unknown_fields`; payloads that carry a `version` use \
         version {}. JSON Schemas of the payloads are in [`schemas/`](schemas/). Topics outside \
         `{}/` belong to apps (the IOhub-compatible global broker space).\n",
        crate::PAYLOAD_VERSION,
        crate::topic::ROOT
    );
}

/// The topic patterns: whether retained, who publishes, which payload.
fn write_topic_tree(w: &mut String) {
    let _ = writeln!(w, "## Topic tree\n");
    let _ = writeln!(w, "| topic | retained | published by | payload |");
    let _ = writeln!(w, "|---|---|---|---|");
    let item = Some("<item>".to_string());
    let tree: [(&str, Topic, &str, &str); 7] = [
        (
            "iohub/config/<section>",
            Topic::Config(Section::Network),
            "the config service only",
            "[`SectionPayload`](schemas/section_payload.json); `config` is the section's struct",
        ),
        (
            "iohub/state/<service>",
            Topic::state(ServiceName::Network),
            "the owning service",
            "[`ServiceState`](schemas/service_state.json)",
        ),
        (
            "iohub/state/<service>/<item>",
            Topic::State(ServiceName::Apps, item),
            "the owning service",
            "[`ServiceState`](schemas/service_state.json) of one item (e.g. one app)",
        ),
        (
            "iohub/plan/<service>",
            Topic::Plan(ServiceName::Network),
            "the owning service",
            "the service's plan (service-specific JSON)",
        ),
        (
            "iohub/cmd/<service>/<verb>",
            Topic::Cmd(ServiceName::Config, Verb::Get),
            "any authorised client",
            "[`Request`](schemas/request.json)",
        ),
        (
            "iohub/reply/<client>/<id>",
            Topic::Reply {
                client: "c".into(),
                id: "1".into(),
            },
            "the service answering a request (MQTT 3.1.1 clients; MQTT 5 clients get the \
             response topic they asked for)",
            "[`Reply`](schemas/reply.json)",
        ),
        (
            "iohub/event/<source>/<kind>",
            Topic::Event(ServiceName::Watcher, EventKind::DeployDropped),
            "the watcher and the services",
            "[`FileEvent`](schemas/file_event.json) for file events; otherwise kind-specific JSON",
        ),
    ];
    for (pattern, sample, publisher, payload) in tree {
        let retained = if sample.is_retained() { "yes" } else { "no" };
        let _ = writeln!(w, "| `{pattern}` | {retained} | {publisher} | {payload} |");
    }
}

/// The subscription filters of `topic::filter`.
fn write_filters(w: &mut String) {
    let _ = writeln!(w, "\nSubscription filters:\n");
    for (name, f) in [
        ("every control topic", filter::ALL),
        ("every config section", filter::CONFIG),
        ("every state, including per-item states", filter::STATE),
        ("every service's own state", filter::SERVICE_STATES),
        ("every plan", filter::PLAN),
        ("every event", filter::EVENT),
        ("every command", filter::CMD),
    ] {
        let _ = writeln!(w, "- `{f}`: {name}");
    }
}

/// One row per config section: topic, schema file and the variables that feed it.
fn write_config_sections(w: &mut String) {
    let _ = writeln!(w, "\n## Config sections (`<section>`)\n");
    let _ = writeln!(w, "| section | topic | schema | variables |");
    let _ = writeln!(w, "|---|---|---|---|");
    for s in Section::ALL {
        let vars: Vec<String> = VARIABLES
            .iter()
            .filter(|v| v.section == *s)
            .map(|v| format!("`{}`", v.name))
            .collect();
        let vars = match s {
            Section::Forwards => "files `forwards-tcp`, `forwards-udp`".to_string(),
            Section::Routes => "file `routes`".to_string(),
            _ => vars.join(", "),
        };
        let file = section_schema_file(*s);
        let _ = writeln!(
            w,
            "| `{s}` | `{}` | [`{file}`](schemas/{file}) | {vars} |",
            Topic::Config(*s)
        );
    }
}

/// One row per service: its state, plan and command topics.
fn write_services(w: &mut String) {
    let _ = writeln!(w, "\n## Services (`<service>`, `<source>`)\n");
    let _ = writeln!(w, "| service | state | plan | commands |");
    let _ = writeln!(w, "|---|---|---|---|");
    for s in ServiceName::ALL {
        let _ = writeln!(
            w,
            "| `{s}` | `{}` | `{}` | `{}` |",
            Topic::state(*s),
            Topic::Plan(*s),
            filter::cmds(*s)
        );
    }
}

/// The command verbs.
fn write_verbs(w: &mut String) {
    let _ = writeln!(w, "\n## Verbs (`<verb>`)\n");
    let verbs: Vec<String> = Verb::ALL.iter().map(|v| format!("`{v}`")).collect();
    let _ = writeln!(w, "{}", verbs.join(", "));
}

/// The event kinds, with their doc comments.
fn write_event_kinds(w: &mut String) {
    let _ = writeln!(w, "\n## Event kinds (`<kind>`)\n");
    let _ = writeln!(w, "| kind | meaning |");
    let _ = writeln!(w, "|---|---|");
    for (kind, doc) in variants::<EventKind>() {
        let _ = writeln!(w, "| `{kind}` | {} |", cell(&doc));
    }
}

/// The service phases, with their doc comments.
fn write_phases(w: &mut String) {
    let _ = writeln!(w, "\n## Service phases (`ServiceState.phase`)\n");
    let _ = writeln!(w, "| phase | meaning |");
    let _ = writeln!(w, "|---|---|");
    for (phase, doc) in variants::<Phase>() {
        let _ = writeln!(w, "| `{phase}` | {} |", cell(&doc));
    }
}

/// The error codes, with their doc comments.
fn write_error_codes(w: &mut String) {
    let _ = writeln!(w, "\n## Error codes (`BusError.code`, `LineError.code`)\n");
    let _ = writeln!(
        w,
        "Errors are `{{code, message, field}}`; `field` names what was wrong: a variable \
         (`IOHUBOS_ETH0_IP`), a file and line (`forwards-tcp:3`) or a payload field. Codes are \
         stable.\n"
    );
    let _ = writeln!(w, "| code | meaning |");
    let _ = writeln!(w, "|---|---|");
    for (c, doc) in variants::<ErrorCode>() {
        let _ = writeln!(w, "| `{c}` | {} |", cell(&doc));
    }
}

/// The variable registry, and the names accepted for compatibility or without effect.
fn write_variables(w: &mut String) {
    let _ = writeln!(w, "\n## Variables\n");
    let _ = writeln!(
        w,
        "Every `IOHUBOS_*` variable read from `sysvars`, `envvars` and `envvars.d/`. An absent \
         variable takes its default; a `${{...}}` default is resolved against the other \
         variables, as in the original. Booleans accept `true/false`, `yes/no`, `on/off`, `1/0` \
         in any case (empty is false); anything else is an error. Lists accept spaces or commas. \
         A value is validated where it takes effect, and every problem is reported at once. \
         Secrets are published as `{{\"set\": true|false}}` only.\n"
    );
    let _ = writeln!(w, "| variable | section | default | secret | meaning |");
    let _ = writeln!(w, "|---|---|---|---|---|");
    for v in VARIABLES {
        let secret = if v.secret { "yes" } else { "" };
        let _ = writeln!(
            w,
            "| `{}` | `{}` | {} | {secret} | {} |",
            v.name,
            v.section,
            code(v.default),
            cell(v.doc)
        );
    }
    let _ =
        writeln!(
        w,
        "\nAccepted for compatibility: `IOHUBOS_ENGINE_ENABLED` and `IOHUBOS_ENGINE_REGISTRY_*` \
         (pre-1.0 names of `IOHUBOS_DOCKER_ENABLED` and `IOHUBOS_DOCKER_REGISTRY_*`) when the \
         current name is absent. Internal to the original scripts, without effect: {}.",
        INTERNAL_VARIABLES.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_docs_come_from_the_doc_comments() {
        let codes = variants::<ErrorCode>();
        assert_eq!(codes.len(), 15);
        assert_eq!(codes[0].0, "invalid_value");
        assert!(codes.iter().all(|(_, doc)| !doc.is_empty()), "{codes:?}");
        let sections = variants::<Section>();
        assert_eq!(sections.len(), Section::ALL.len());
    }

    #[test]
    fn every_schema_file_name_is_unique_and_every_schema_is_an_object() {
        let all = json_schemas();
        let mut names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for (name, schema) in &all {
            assert!(schema.is_object(), "{name}");
            assert!(name.ends_with(".json"), "{name}");
        }
    }

    #[test]
    fn the_markdown_names_every_variable_section_and_code() {
        let md = topics_markdown();
        for v in VARIABLES {
            assert!(md.contains(&format!("`{}`", v.name)), "{}", v.name);
        }
        for s in Section::ALL {
            assert!(md.contains(&format!("`iohub/config/{s}`")), "{s}");
        }
        for c in variants::<ErrorCode>() {
            assert!(md.contains(&format!("| `{}` |", c.0)), "{}", c.0);
        }
    }
}
