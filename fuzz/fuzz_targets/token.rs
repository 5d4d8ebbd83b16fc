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
    // What was sent under the two names, read with a struct of our own
    // (serde_json's Value refuses what the typed parse skips: invalid
    // UTF-8 or a number out of range in a field nobody reads).
    #[derive(serde::Deserialize)]
    struct Sent {
        token: Option<String>,
        access_token: Option<String>,
    }
    let sent: Option<Sent> = serde_json::from_slice(data).ok();
    let json: Option<serde_json::Value> = serde_json::from_slice(data).ok();
    let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    match got {
        Ok(t) => {
            let v = t.value.expose();
            assert!(!v.is_empty(), "{data:?}: empty token");
            assert!(
                !v.bytes().any(|c| c.is_ascii_control() || c == b' '),
                "{data:?}: token {v:?}"
            );
            let want = sent
                .as_ref()
                .and_then(|s| given(&s.token).or_else(|| given(&s.access_token)));
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
