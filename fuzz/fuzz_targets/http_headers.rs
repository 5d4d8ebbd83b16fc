//! The response headers a registry, CDN or proxy controls that the
//! transport parses: `Content-Range` (the first byte of a 206 answer) and
//! `Retry-After` (how long a 429 or 503 asks us to wait), on arbitrary
//! values (invalid UTF-8 replaced). Both return no errors; they must not
//! panic, and:
//! - `Content-Range`: a start is found only in `bytes <first>-…`, and it
//!   is that number exactly;
//! - `Retry-After`: nothing for an empty (blank) value; whole seconds as
//!   written, capped at 60; anything else (an HTTP date) is 1 s.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use oci_registry::transport::{parse_content_range_start, parse_retry_after};

fn check_content_range(v: &str) {
    let Some(start) = parse_content_range_start(v) else {
        return;
    };
    let rest = v
        .trim()
        .strip_prefix("bytes")
        .unwrap_or_else(|| panic!("{v:?}: start {start} without 'bytes'"));
    let first = rest.trim_start().split('-').next().unwrap_or("");
    assert_eq!(
        first.trim().parse::<u64>().ok(),
        Some(start),
        "{v:?}: start {start}, first field {first:?}"
    );
}

fn check_retry_after(v: &str) {
    let got = parse_retry_after(v);
    let t = v.trim();
    if t.is_empty() {
        assert_eq!(got, None, "{v:?}");
        return;
    }
    let d = got.unwrap_or_else(|| panic!("{v:?}: no delay"));
    assert!(d <= Duration::from_secs(60), "{v:?}: {d:?} over the cap");
    match t.parse::<u64>() {
        Ok(s) => assert_eq!(d, Duration::from_secs(s.min(60)), "{v:?}"),
        Err(_) => assert_eq!(d, Duration::from_secs(1), "{v:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let v = String::from_utf8_lossy(data);
    check_content_range(&v);
    check_retry_after(&v);
});
