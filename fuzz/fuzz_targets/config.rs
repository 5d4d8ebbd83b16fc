//! `credentials::in_config` on arbitrary credentials files (docker's
//! `config.json`, podman's `auth.json`: anything in the user's home, or
//! what a compromised tool wrote there), looked up for a host and
//! repository the input picks. It must not panic, and:
//! - found credentials come from an `auths` key whose host is the one
//!   asked for, and name that key in their source;
//! - neither a message nor a source shows a secret: no `auth`,
//!   `password` or `identitytoken` value of the file, nor the password
//!   an `auth` value decodes to;
//! - every rejection is EINVAL.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use oci_registry::registry::credentials::{base64_decode, in_config, normalise_key};

const HOSTS: [&str; 4] = ["docker.io", "127.0.0.1:5000", "ghcr.io", "quay.io"];
const REPOS: [&str; 3] = ["library/hello", "org/app/sub", "x"];

fn secrets(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if let Some(s) = x.as_str() {
                    match k.as_str() {
                        "password" | "identitytoken" => out.push(s.to_string()),
                        "auth" => {
                            out.push(s.to_string());
                            let pass = base64_decode(s)
                                .and_then(|b| String::from_utf8(b).ok())
                                .and_then(|p| p.split_once(':').map(|(_, p)| p.to_string()));
                            out.extend(pass);
                        }
                        _ => {}
                    }
                }
                secrets(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| secrets(x, out)),
        _ => {}
    }
}

/// The keys of the `auths` and `credHelpers` maps (registry hosts, which
/// messages name), not field names.
fn keys_of(v: &serde_json::Value, out: &mut Vec<String>) {
    for map in ["auths", "credHelpers"] {
        if let Some(m) = v.get(map).and_then(|m| m.as_object()) {
            out.extend(m.keys().cloned());
        }
    }
}

/// What the messages of `in_config` are made of, digits left out.
const FIXED: &str = "config.json (): 'auth' is not base64 | 'auth' is not UTF-8 | \
    'auth' is not user:password | config.json: invalid JSON at line , column | not a JSON object | \
    JSON cut short | JSON of an unexpected shape | unreadable JSON";

fuzz_target!(|data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let host = HOSTS[(pick & 3) as usize];
    let repo = REPOS[((pick >> 2) % 3) as usize];
    let mut hidden = Vec::new();
    let mut keys = Vec::new();
    if let Ok(j) = serde_json::from_str::<serde_json::Value>(&text) {
        secrets(&j, &mut hidden);
        keys_of(&j, &mut keys);
    }
    let hides = |m: &str| {
        // Messages name the auths key they are about, "(KEY)": a host,
        // never a secret.
        let mut m = m.to_string();
        for k in keys.iter().filter(|k| !k.is_empty()) {
            m = m.replace(&format!("({k})"), "()");
        }
        common::assert_hides(&m, &hidden, FIXED, &text);
    };
    match in_config(&text, "config.json", host, repo) {
        Ok(found) => {
            if let Some(c) = &found.credentials {
                let key = c
                    .source
                    .strip_prefix("config.json (")
                    .and_then(|k| k.strip_suffix(')'))
                    .unwrap_or_else(|| panic!("source {:?}", c.source));
                assert_eq!(normalise_key(key).0, host, "{text:?}: key {key:?}");
                hides(&c.source);
                assert!(
                    !c.username.is_empty() || !c.password.is_empty() || c.identity_token.is_some(),
                    "{text:?}: empty credentials"
                );
            }
            if let Some(h) = &found.helper {
                assert!(!h.is_empty(), "{text:?}: empty helper name");
            }
        }
        Err(e) => {
            common::assert_errno_in(&e, &[libc::EINVAL], &text);
            hides(e.message());
        }
    }
});
