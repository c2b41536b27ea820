//! Fuzz `files::parse_routes` on arbitrary text: it must not panic, and what it accepts must
//! print and parse back to the same routes.
#![no_main]

use bus_schema::files::{parse_routes, print_routes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (routes, _) = parse_routes("routes", &text);
    let (again, errors) = parse_routes("routes", &print_routes(&routes));
    assert!(errors.is_empty(), "printed routes do not parse: {errors:?}");
    let strip = |r: &bus_schema::files::Route| (r.dest, r.prefix_len, r.gateway);
    assert_eq!(
        routes.iter().map(strip).collect::<Vec<_>>(),
        again.iter().map(strip).collect::<Vec<_>>()
    );
});
