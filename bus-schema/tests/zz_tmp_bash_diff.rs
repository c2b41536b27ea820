//! temporary differential test against bash (deleted before hand-off)
use bus_schema::envvars::{eval, Vars};
use proptest::prelude::*;
use std::io::Write;

fn bash(text: &str) -> Vec<Option<String>> {
    let path = format!("/tmp/difftest/f{}", std::process::id());
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    let script = format!(". {path} 2>/dev/null; for n in A B C D; do if [ \"${{!n+set}}\" = set ]; then printf 's%s\\0' \"${{!n}}\"; else printf 'u\\0'; fi; done");
    let out = std::process::Command::new("env").args(["-i", "/bin/bash", "--norc", "--noprofile", "-c", &script]).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    s.split('\0').filter(|x| !x.is_empty()).map(|x| if x == "u" { None } else { Some(x[1..].to_string()) }).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, max_global_rejects: 200000, failure_persistence: None, .. ProptestConfig::default() })]
    #[test]
    fn same_as_bash(lines in prop::collection::vec(
        r#"(export )?[ABCD]=([a-z]|'[a-z $"\\{}]*'|"([a-z '{}:\-]|\\[$"\\a}]|\$[ABCD]|\$\{[ABCD]\}|\$\{[ABCD]:?-([a-z '"}\\]|\\[$}"a]|\$[ABCD]|\$\{[ABCD]:?-[a-z"'}\\]*\})*\})*"|\$[ABCD]|\$\{[ABCD]:?-([a-z '"}\\]|\$[ABCD]|\\[a$}])*\}|\\[a $#]|[#{}:%])*( #[a-z' ]*)?"#, 1..6)) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let mut vars = Vars::new();
        let errs = eval("t", &text, &mut vars, &mut |_| None);
        prop_assume!(errs.is_empty());
        let ours: Vec<Option<String>> = ["A","B","C","D"].iter().map(|n| vars.get(*n).cloned()).collect();
        prop_assert_eq!(ours, bash(&text), "{}", text);
    }
}

#[test]
fn scratch() {
    let text = std::fs::read_to_string("/tmp/difftest/scratch").unwrap_or_default();
    for line in text.lines() {
        let mut vars = Vars::new();
        let errs = eval("t", line, &mut vars, &mut |_| None);
        let name = line.split('=').next().unwrap();
        let b = bash(&format!("{line}\nA=\"${name}\"\n"));
        eprintln!("{line:30} ours={:?} bash={:?} errs={:?}", vars.get(name), b[0], errs.iter().map(|e| &e.reason).collect::<Vec<_>>());
    }
}
