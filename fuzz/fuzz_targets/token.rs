//! `auth::parse_token` on arbitrary token-endpoint answers (the registry's
//! token server, or whatever a man in the middle of a plain-HTTP realm
//! sends). It must not panic, and:
//! - an accepted token is `token` (or, when that is missing or empty,
//!   `access_token`) as sent, non-empty, without spaces or control bytes;
//! - it is used for at least `MIN_TOKEN_LIFETIME` and at most a day;
//! - every rejection is EPROTO, and its message holds neither of the two
//!   token values (a token never reaches a message).
#![no_main]

mod common;

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use oci_registry::registry::auth::{parse_token, MIN_TOKEN_LIFETIME};

/// The string values of `key` anywhere in a JSON text, read with
/// serde_json's own `Value` (not the library's typed parse).
fn values_of(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                }
                values_of(x, key, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| values_of(x, key, out)),
        _ => {}
    }
}

/// What the messages of `parse_token` are made of, digits left out.
const FIXED: &str =
    "bad token response: invalid JSON at line , column | not a JSON object | JSON cut short | \
    JSON of an unexpected shape | unreadable JSON | token response has neither 'token' nor \
    'access_token' | token response holds a malformed token";

fuzz_target!(|data: &[u8]| {
    let before = Instant::now();
    let got = parse_token(data);
    let after = Instant::now();
    // serde_json's Value refuses invalid UTF-8 anywhere, where the typed
    // parse skips fields it ignores: such bytes can only be inside
    // strings of an input the typed parse took, so the lossy text has the
    // same structure and the same token strings.
    let json: Option<serde_json::Value> = serde_json::from_slice(data)
        .ok()
        .or_else(|| serde_json::from_str(&String::from_utf8_lossy(data)).ok());
    let top = |key: &str| {
        json.as_ref()
            .and_then(|j| j.get(key))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match got {
        Ok(t) => {
            let v = t.value.expose();
            assert!(!v.is_empty(), "{data:?}: empty token");
            assert!(
                !v.bytes().any(|c| c.is_ascii_control() || c == b' '),
                "{data:?}: token {v:?}"
            );
            let want = top("token").or_else(|| top("access_token"));
            assert_eq!(Some(v.to_string()), want, "{data:?}");
            assert!(
                t.expires >= before + MIN_TOKEN_LIFETIME,
                "{data:?}: too short"
            );
            assert!(
                t.expires <= after + Duration::from_secs(86_400),
                "{data:?}: longer than a day"
            );
        }
        Err(e) => {
            common::assert_errno_in(&e, &[libc::EPROTO], &data);
            let mut secrets = Vec::new();
            if let Some(j) = &json {
                values_of(j, "token", &mut secrets);
                values_of(j, "access_token", &mut secrets);
            }
            common::assert_hides(e.message(), &secrets, FIXED, &data);
        }
    }
});
