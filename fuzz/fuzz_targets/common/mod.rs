//! Checks shared by the fuzz targets. They are written independently of
//! the library's own validators, so that a parser and its checker
//! cannot be wrong in the same way.

#![allow(dead_code)]

use oci_registry::error::Error;

/// The errno values the parsers may fail with.
pub fn assert_errno_in(e: &Error, allowed: &[i32], input: &dyn std::fmt::Debug) {
    assert!(
        allowed.contains(&e.errno()),
        "errno {} not in {:?} for {:?}: {}",
        e.errno(),
        allowed,
        input,
        e.message()
    );
    assert!(!e.message().is_empty(), "empty error message for {input:?}");
}

/// `sha256:` + 64 or `sha512:` + 128 lower-case hex digits.
pub fn assert_valid_digest(d: &str) {
    let (alg, hex) = d
        .split_once(':')
        .unwrap_or_else(|| panic!("digest {d:?} has no ':'"));
    let want = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => panic!("digest {d:?}: algorithm {alg:?}"),
    };
    assert_eq!(hex.len(), want, "digest {d:?} has the wrong length");
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "digest {d:?} is not lower-case hex"
    );
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn assert_valid_tag(t: &str) {
    assert!(!t.is_empty() && t.len() <= 128, "tag {t:?} length");
    for (i, c) in t.chars().enumerate() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (i > 0 && (c == '.' || c == '-'));
        assert!(ok, "tag {t:?}: bad character {c:?} at {i}");
    }
}

/// A repository path: components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
/// joined by '/', 255 bytes at most (the distribution spec).
pub fn assert_valid_repository(r: &str) {
    assert!(
        !r.is_empty() && r.len() <= 255,
        "repository {r:?} length {}",
        r.len()
    );
    for comp in r.split('/') {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        assert!(
            comp.starts_with(alnum) && comp.ends_with(alnum),
            "repository {r:?}: component {comp:?} must start and end with [a-z0-9]"
        );
        // Every maximal run of non-alphanumerics is one separator.
        for sep in comp.split(alnum).filter(|s| !s.is_empty()) {
            let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
            assert!(ok, "repository {r:?}: separator {sep:?} in {comp:?}");
        }
    }
}

/// A registry host as a reference names it: no path, no credentials.
pub fn assert_plausible_registry(h: &str) {
    assert!(!h.is_empty(), "empty registry");
    assert!(
        !h.contains(['/', '@', ' ', '?', '#']),
        "registry {h:?} holds a path, query or credentials"
    );
}

/// `message` shows none of `secrets`. A secret counts when it has six
/// characters or more besides digits and is not part of the fixed text
/// the messages are made of (`fixed`): a token "line 1, column" in "…at
/// line 1, column 5" is not a leak. Digits are left out on both sides,
/// as positions and counts vary.
pub fn assert_hides(message: &str, secrets: &[String], fixed: &str, input: &dyn std::fmt::Debug) {
    let strip = |s: &str| {
        s.chars()
            .filter(|c| !c.is_ascii_digit())
            .collect::<String>()
    };
    let msg = strip(message);
    for s in secrets {
        let s = strip(s);
        if s.chars().count() < 6 || fixed.contains(s.as_str()) {
            continue;
        }
        assert!(
            !msg.contains(s.as_str()),
            "{input:?}: the message {message:?} shows the secret {s:?}"
        );
    }
}
