//! `auth::parse_challenges` on arbitrary header values (invalid UTF-8
//! replaced). It returns no errors; it must not panic, and:
//! - schemes are non-empty lower-case tokens (RFC 7235 tchar);
//! - parameter names are non-empty lower-case tokens, except `token68`
//!   whose value is `token "="+`;
//! - there are no more challenges, nor parameters, than input bytes;
//! - the challenges written back in the canonical form
//!   `scheme name="value", name2="value2", scheme2 token68==` parse to
//!   the same challenges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_registry::registry::auth::{parse_challenges, Challenge};

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_tchar)
}

/// `token "="+`, as a token68 parameter's value is stored.
fn is_token68_value(v: &str) -> bool {
    let t = v.trim_end_matches('=');
    t.len() < v.len() && is_token(t)
}

fn quote(v: &str, out: &mut String) {
    out.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn write_back(chs: &[Challenge]) -> String {
    let mut out = String::new();
    for (ci, ch) in chs.iter().enumerate() {
        if ci > 0 {
            out.push_str(", ");
        }
        out.push_str(&ch.scheme);
        for (pi, (name, value)) in ch.params.iter().enumerate() {
            out.push_str(if pi == 0 { " " } else { ", " });
            // A lone '=' is token68 only as the first item.
            if name == "token68" && is_token68_value(value) && (pi == 0 || value.ends_with("==")) {
                out.push_str(value);
            } else {
                out.push_str(name);
                out.push('=');
                quote(value, &mut out);
            }
        }
    }
    out
}

fn check(input: &str, chs: &[Challenge]) {
    assert!(
        chs.len() <= input.len(),
        "{input:?}: {} challenges",
        chs.len()
    );
    let params: usize = chs.iter().map(|c| c.params.len()).sum();
    assert!(params <= input.len(), "{input:?}: {params} parameters");
    for ch in chs {
        assert!(is_token(&ch.scheme), "{input:?}: scheme {:?}", ch.scheme);
        assert!(
            !ch.scheme.bytes().any(|b| b.is_ascii_uppercase()),
            "{input:?}: scheme {:?} not lower-cased",
            ch.scheme
        );
        for (name, value) in &ch.params {
            assert!(is_token(name), "{input:?}: parameter name {name:?}");
            assert!(
                !name.bytes().any(|b| b.is_ascii_uppercase()),
                "{input:?}: parameter name {name:?} not lower-cased"
            );
            assert!(
                value.len() <= input.len(),
                "{input:?}: value {value:?} longer than the input"
            );
        }
        if let Some((_, v)) = ch.params.iter().find(|(n, _)| n == "token68") {
            assert_eq!(ch.param("token68"), Some(v.as_str()));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let chs = parse_challenges(&input);
    check(&input, &chs);
    let again_input = write_back(&chs);
    let again = parse_challenges(&again_input);
    assert_eq!(
        again, chs,
        "{input:?}: written back as {again_input:?}, parses to something else"
    );
});
