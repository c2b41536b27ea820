//! Fuzz `files::parse_forwards` on arbitrary text: it must not panic, and what it accepts must
//! print and parse back to the same forwards.
#![no_main]

use bus_schema::files::{parse_forwards, print_forwards, Proto};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (fwds, _) = parse_forwards("forwards-tcp", Proto::Tcp, &text);
    let (again, errors) = parse_forwards("forwards-tcp", Proto::Tcp, &print_forwards(&fwds));
    assert!(errors.is_empty(), "printed forwards do not parse: {errors:?}");
    let strip = |f: &bus_schema::files::Forward| (f.src, f.dst_ip, f.dst_port);
    assert_eq!(
        fwds.iter().map(strip).collect::<Vec<_>>(),
        again.iter().map(strip).collect::<Vec<_>>()
    );
});
