#![no_main]
//! Arbitrary text into the Go duration parser (`conntrack_gc::sizing::parse_go_duration`, used
//! for every duration of the configuration and the command line): errors are fine, panics are
//! not. A parsed duration below 2^50 ns (where f64 sums are exact to the nanosecond) formats
//! as Go does and parses back to itself.

use std::time::Duration;

use conntrack_gc::sizing::{format_go_duration, parse_go_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(duration) = parse_go_duration(text) else {
        return;
    };
    if duration.as_nanos() < 1 << 50 {
        let formatted = format_go_duration(duration);
        assert_eq!(
            parse_go_duration(&formatted),
            Ok(duration),
            "{text:?} -> {formatted:?}"
        );
    }
    let _ = Duration::ZERO.checked_add(duration);
});
