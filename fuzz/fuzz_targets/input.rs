//! Bytes as a YAML file, through everything `berth plan` does before it touches a host:
//! parse, validate, resolve, plan from empty and from an earlier revision on a simulated host
//! (see `berth::rehearsal`). A panic is a bug; invalid input must only come back as errors.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rehearsal = berth::rehearsal::rehearse(Path::new("fuzz.yaml"), data);
    // Every error names where it is: the file at least.
    for e in &rehearsal.errors {
        assert!(e.origin.starts_with("fuzz.yaml") || e.origin == "environment", "an error without its file: {e:?}");
        assert!(!e.message.is_empty(), "an error without a message: {e:?}");
    }
});
