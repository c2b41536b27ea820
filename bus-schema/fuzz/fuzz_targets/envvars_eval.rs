//! Fuzz `envvars::eval` (with includes that resolve to the same text, so nesting, cycles and the
//! include budget are exercised), `assignments` and `set` on arbitrary text: none may panic, hang
//! or allocate without bound.
#![no_main]

use bus_schema::envvars::{assignments, eval, set, Vars};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut vars = Vars::new();
    let body = text.to_string();
    let _ = eval("fuzz", &text, &mut vars, &mut |path| {
        (path.len() % 2 == 0).then(|| body.clone())
    });
    let _ = assignments(&text);
    let edited = set(
        &text,
        &[
            ("FUZZ".to_string(), Some(text.to_string())),
            ("A".to_string(), None),
        ],
    );
    let _ = eval("fuzz", &edited, &mut Vars::new(), &mut |_| None);
});
