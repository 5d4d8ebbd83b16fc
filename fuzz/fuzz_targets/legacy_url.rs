//! `LegacyUrl::parse` (`http[s]://host/v2/library/<repo>/...`) on
//! arbitrary text (invalid UTF-8 replaced).
//!
//! Invariants of an accepted URL:
//! - the scheme is the one written; the repository is `library/<one
//!   component>`; the tag is `latest` and there is no digest;
//! - `blobs/<digest>` holds a valid digest and keeps the defaults;
//!   otherwise arch/os are `[A-Za-z0-9_]+` and the layer is below 10^6;
//! - its canonical form parses to the same value (unless too long).
//!
//! Every rejection is EINVAL, and its message does not depend on the
//! user info of the URL (credentials never reach a message).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use oci_registry::registry::reference::{LegacyUrl, Scheme, MAX_REFERENCE_LEN};

fn canonical(u: &LegacyUrl) -> String {
    let scheme = match u.reference.scheme {
        Scheme::Https => "https",
        Scheme::Http => "http",
        Scheme::Auto => panic!("LegacyUrl with Scheme::Auto: {u:?}"),
    };
    let mut s = format!(
        "{scheme}://{}/v2/{}/",
        u.reference.registry, u.reference.repository
    );
    match &u.blob {
        Some(d) => s.push_str(&format!("blobs/{d}")),
        None => s.push_str(&format!(
            "arch-{}/os-{}/digest-{}",
            u.arch,
            u.os,
            u.layer + 1
        )),
    }
    s
}

fn check(url: &str, u: &LegacyUrl) {
    let r = &u.reference;
    match r.scheme {
        Scheme::Https => assert!(url.starts_with("https://"), "{url:?}"),
        Scheme::Http => assert!(url.starts_with("http://"), "{url:?}"),
        Scheme::Auto => panic!("{url:?}: Scheme::Auto"),
    }
    common::assert_plausible_registry(&r.registry);
    common::assert_valid_repository(&r.repository);
    let repo = r
        .repository
        .strip_prefix("library/")
        .unwrap_or_else(|| panic!("{url:?}: repository {:?}", r.repository));
    assert!(
        !repo.contains('/'),
        "{url:?}: repository {:?}",
        r.repository
    );
    assert_eq!(r.tag.as_deref(), Some("latest"), "{url:?}");
    assert_eq!(r.digest, None, "{url:?}");
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    assert!(word(&u.os) && word(&u.arch), "{url:?}: {u:?}");
    assert!(u.layer < 1_000_000, "{url:?}: layer {}", u.layer);
    if let Some(d) = &u.blob {
        common::assert_valid_digest(d);
        assert_eq!(
            (u.os.as_str(), u.arch.as_str(), u.layer),
            ("linux", "amd64", 0),
            "{url:?}"
        );
    }

    let canon = canonical(u);
    match LegacyUrl::parse(&canon) {
        Ok(again) => assert_eq!(
            &again, u,
            "{url:?}: canonical form {canon:?} parses to something else"
        ),
        Err(e) => assert!(
            canon.len() > MAX_REFERENCE_LEN,
            "{url:?}: canonical form {canon:?} is rejected: {}",
            e.message()
        ),
    }
}

/// The URL with each byte of its user info (what `redact_url` drops:
/// after the first "://", up to the last '@' before the first '/')
/// replaced by 'x': same length, other credentials.
fn other_credentials(url: &str) -> Option<String> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let auth_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..auth_end].rfind('@')?;
    let user = &rest[..at];
    if user.bytes().all(|b| b == b'x') {
        return None;
    }
    Some(format!(
        "{}{}{}",
        &url[..start],
        "x".repeat(user.len()),
        &rest[at..]
    ))
}

fuzz_target!(|data: &[u8]| {
    let url = String::from_utf8_lossy(data);
    match LegacyUrl::parse(&url) {
        Ok(u) => {
            check(&url, &u);
            assert!(
                other_credentials(&url).is_none(),
                "{url:?}: accepted with credentials"
            );
        }
        Err(e) => {
            common::assert_errno_in(&e, &[libc::EINVAL], &url);
            if let Some(other) = other_credentials(&url) {
                let e2 = LegacyUrl::parse(&other).expect_err(&other);
                assert_eq!(
                    e.message(),
                    e2.message(),
                    "the message for {url:?} depends on its credentials"
                );
            }
        }
    }
});
