//! `POST /v1/app/{app}/deploy` as data: the compose text is checked (SPEC.md §7.6: YAML with a
//! non-empty `services` map) and packed, with a `start.sh` of **fixed** text when the app is to
//! be enabled, into a deploy zip of the standard layout (§4.4) that the deployer installs.
//!
//! Nothing from the request ever becomes shell: the original wrote each top-level volume name
//! into `start.sh` unquoted (command injection, §11.1.4); here `start.sh` is a constant and the
//! compose text is only ever a file.

use std::io::{Cursor, Write};

use yaml_rust2::{Yaml, YamlLoader};

pub mod policy;

/// The whole `start.sh` an enabled app gets. It runs compose on the file next to it; the project
/// name is the app folder's name, as with the original's `-f <dir>/docker-compose.yml`.
pub const START_SH: &str = "#!/bin/sh\n\
# Written by the iohub admin API; fixed text, nothing in it comes from a request.\n\
cd \"$(dirname \"$0\")\" || exit 1\n\
exec docker-compose -f docker-compose.yml up -d\n";

/// Why compose text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    #[error("not YAML: {0}")]
    Syntax(String),
    #[error("expected one YAML document, found {0}")]
    Documents(usize),
    #[error("the document has no non-empty `services` map")]
    NoServices,
    #[error("`version` is present but empty or false")]
    FalsyVersion,
    #[error("its aliases expand to more than {MAX_EXPANDED_NODES} nodes (a \"billion laughs\" document?)")]
    TooLarge,
}

/// The most YAML nodes a compose text may have once its aliases are expanded. Real compose files
/// have hundreds; a 421-byte document of nested aliases expanded to 3 GB before this bound.
pub const MAX_EXPANDED_NODES: usize = 100_000;

/// Check compose text the way the original did, minus one defect: a Compose-spec file without
/// `version` is accepted (SPEC.md §7.6 lists its rejection as a defect); a `version` that is
/// present must be truthy.
pub fn check(text: &str) -> Result<(), ComposeError> {
    parse(text).map(drop)
}

/// The document of compose text that passes [`check`].
pub fn parse(text: &str) -> Result<Yaml, ComposeError> {
    expanded_nodes(text)?;
    let mut docs =
        YamlLoader::load_from_str(text).map_err(|e| ComposeError::Syntax(e.to_string()))?;
    if docs.len() != 1 {
        return Err(ComposeError::Documents(docs.len()));
    }
    let doc = docs.swap_remove(0);
    match &doc["version"] {
        Yaml::BadValue => {}
        v if !truthy(v) => return Err(ComposeError::FalsyVersion),
        _ => {}
    }
    match &doc["services"] {
        Yaml::Hash(h) if !h.is_empty() => Ok(doc),
        _ => Err(ComposeError::NoServices),
    }
}

/// How many nodes the document has with its aliases expanded, counted on the parser's events
/// (an alias costs the size of the node it names), without building anything: refused past
/// [`MAX_EXPANDED_NODES`] before the loader would expand it in memory.
fn expanded_nodes(text: &str) -> Result<usize, ComposeError> {
    use std::collections::HashMap;
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    // Size of each anchored node, and the open collections (anchor id, size so far).
    let mut anchored: HashMap<usize, usize> = HashMap::new();
    let mut open: Vec<(usize, usize)> = Vec::new();
    let mut total = 0usize;
    loop {
        let (event, _) = parser
            .next_token()
            .map_err(|e| ComposeError::Syntax(e.to_string()))?;
        let node = match event {
            Event::StreamEnd => return Ok(total),
            Event::Scalar(_, _, anchor, _) => Some((anchor, 1)),
            Event::Alias(id) => Some((0, anchored.get(&id).copied().unwrap_or(1))),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                open.push((anchor, 1));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => open.pop(),
            _ => None,
        };
        if let Some((anchor, size)) = node {
            if anchor != 0 {
                anchored.insert(anchor, size);
            }
            match open.last_mut() {
                Some((_, parent)) => *parent = parent.saturating_add(size),
                None => total = total.saturating_add(size),
            }
            if total.saturating_add(open.iter().map(|(_, s)| *s).sum::<usize>())
                > MAX_EXPANDED_NODES
            {
                return Err(ComposeError::TooLarge);
            }
        }
    }
}

/// JavaScript truthiness of a YAML value.
fn truthy(v: &Yaml) -> bool {
    match v {
        Yaml::Null | Yaml::BadValue => false,
        Yaml::Boolean(b) => *b,
        Yaml::Integer(i) => *i != 0,
        Yaml::Real(r) => r.parse::<f64>().is_ok_and(|f| f != 0.0 && !f.is_nan()),
        Yaml::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// The original's `enabled` rule: `/true/i.test(String(enabled))`.
pub fn enabled_flag(value: Option<&serde_json::Value>) -> bool {
    let text = match value {
        None | Some(serde_json::Value::Null) => return false,
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    text.to_ascii_lowercase().contains("true")
}

/// A deploy zip holding `docker/apps/<app>/docker-compose.yml` (0644) and, when `enabled`,
/// `docker/apps/<app>/start.sh` (0755, [`START_SH`]). `app` must already be a valid app name.
pub fn deploy_zip(app: &str, compose: &str, enabled: bool) -> Result<Vec<u8>, String> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = |mode: u32| {
        zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode)
    };
    let dir = format!("docker/apps/{app}");
    zip.add_directory(format!("{dir}/"), opts(0o755))
        .map_err(|e| e.to_string())?;
    zip.start_file(format!("{dir}/docker-compose.yml"), opts(0o644))
        .map_err(|e| e.to_string())?;
    zip.write_all(compose.as_bytes())
        .map_err(|e| e.to_string())?;
    if enabled {
        zip.start_file(format!("{dir}/start.sh"), opts(0o755))
            .map_err(|e| e.to_string())?;
        zip.write_all(START_SH.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let cursor = zip.finish().map_err(|e| e.to_string())?;
    Ok(cursor.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use std::io::Read;

    #[test]
    fn a_billion_laughs_document_is_refused_before_it_is_expanded() {
        // Issue 16: 421 bytes like these took iohubd to 3 GB of RSS.
        let mut text = String::from("version: '3'\nservices:\n  a: {image: x}\nx0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for level in 1..10 {
            let prev = format!("*x{}", level - 1);
            let items = [prev.as_str(); 9].join(", ");
            text.push_str(&format!("x{level}: &x{level} [{items}]\n"));
        }
        assert!(text.len() < 600, "{}", text.len());
        assert_eq!(check(&text), Err(ComposeError::TooLarge));
        // Anchors and merge keys of everyday compose files are fine.
        let common = "version: '3'\nx-common: &common\n  restart: always\n  image: x\nservices:\n  a:\n    <<: *common\n  b:\n    <<: *common\n";
        assert_eq!(check(common), Ok(()));
    }

    #[test]
    fn compose_needs_a_services_map_and_a_truthy_version_when_present() {
        assert_eq!(
            check("version: '3'\nservices:\n  a:\n    image: x\n"),
            Ok(())
        );
        assert_eq!(check("services:\n  a:\n    image: x\n"), Ok(()));
        assert_eq!(check("version: '3'\n"), Err(ComposeError::NoServices));
        assert_eq!(
            check("version: ''\nservices:\n  a: {}\n"),
            Err(ComposeError::FalsyVersion)
        );
        assert_eq!(check("services: {}\n"), Err(ComposeError::NoServices));
        assert!(matches!(check("a: [\n"), Err(ComposeError::Syntax(_))));
        assert_eq!(check(""), Err(ComposeError::Documents(0)));
        assert_eq!(check("a: 1\n---\nb: 2\n"), Err(ComposeError::Documents(2)));
    }

    #[test]
    fn enabled_follows_the_original_regex_test() {
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
        assert!(enabled_flag(j("true").as_ref()));
        assert!(enabled_flag(j("\"TRUE\"").as_ref()));
        assert!(enabled_flag(j("\"untrue\"").as_ref()));
        assert!(!enabled_flag(j("false").as_ref()));
        assert!(!enabled_flag(j("\"yes\"").as_ref()));
        assert!(!enabled_flag(None));
    }

    #[test]
    fn the_zip_holds_the_compose_text_verbatim_and_a_fixed_start_script() {
        let evil = "services:\n  a:\n    image: x\nvolumes:\n  \"$(touch /tmp/x)\": {}\n  \"`id`;rm -rf /\": {}\n";
        let bytes = deploy_zip("demo", evil, true).unwrap();
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        let mut names: Vec<String> = zip.file_names().map(|n| n.unwrap().to_string()).collect();
        names.sort();
        expect![[r#"["docker/apps/demo/", "docker/apps/demo/docker-compose.yml", "docker/apps/demo/start.sh"]"#]]
            .assert_eq(&format!("{names:?}"));
        let mut text = String::new();
        zip.by_name("docker/apps/demo/docker-compose.yml")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, evil);
        let mut script = String::new();
        let mut f = zip.by_name("docker/apps/demo/start.sh").unwrap();
        assert_eq!(f.unix_mode().map(|m| m & 0o777), Some(0o755));
        f.read_to_string(&mut script).unwrap();
        assert_eq!(script, START_SH);
        // Not enabled: no start.sh at all (the original left an existing one untouched).
        let bytes = deploy_zip("demo", evil, false).unwrap();
        let zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        assert_eq!(zip.len(), 2);
    }
}
