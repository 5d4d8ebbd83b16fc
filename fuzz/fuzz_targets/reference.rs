//! `Reference::parse` on arbitrary text (invalid UTF-8 replaced).
//!
//! Invariants of an accepted reference:
//! - every part is valid on its own (registry, repository, tag, digest);
//! - a tag or a digest is always there (`latest` by default);
//! - Docker Hub is always `registry-1.docker.io` with a two-level path;
//! - its canonical form `registry/repository[:tag][@digest]` parses to
//!   the same value (normalisation is idempotent), unless that form is
//!   over the length limit.
//!
//! Every rejection is EINVAL.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use oci_registry::registry::reference::{Reference, Scheme, MAX_REFERENCE_LEN};

const HUB: &str = "registry-1.docker.io";

fn canonical(r: &Reference) -> String {
    let mut s = format!("{}/{}", r.registry, r.repository);
    if let Some(t) = &r.tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = &r.digest {
        s.push('@');
        s.push_str(d);
    }
    s
}

fn check(input: &str, r: &Reference) {
    assert!(!input.is_empty() && input.len() <= MAX_REFERENCE_LEN);
    assert_eq!(r.scheme, Scheme::Auto, "{input:?}");
    common::assert_plausible_registry(&r.registry);
    common::assert_valid_repository(&r.repository);
    if let Some(t) = &r.tag {
        common::assert_valid_tag(t);
    }
    if let Some(d) = &r.digest {
        common::assert_valid_digest(d);
        assert!(input.ends_with(d.as_str()), "{input:?}: digest {d:?}");
    }
    match (&r.digest, &r.tag) {
        (Some(d), _) => assert_eq!(r.manifest_ref(), d),
        (None, Some(t)) => assert_eq!(r.manifest_ref(), t),
        (None, None) => panic!("{input:?}: neither tag nor digest: {r:?}"),
    }
    if matches!(
        r.registry.as_str(),
        "docker.io" | "index.docker.io" | "registry.hub.docker.com"
    ) {
        panic!(
            "{input:?}: Docker Hub alias {:?} not normalised",
            r.registry
        );
    }
    if r.registry == HUB {
        assert!(
            r.repository.contains('/'),
            "{input:?}: Docker Hub repository {:?} without a namespace",
            r.repository
        );
    }
    // No '/' before the digest: a Docker Hub official image.
    let name = input.split('@').next().unwrap_or("");
    if !name.contains('/') {
        assert_eq!(r.registry, HUB, "{input:?}");
        assert!(r.repository.starts_with("library/"), "{input:?}: {r:?}");
    }

    let canon = canonical(r);
    match Reference::parse(&canon) {
        Ok(again) => assert_eq!(
            &again, r,
            "{input:?}: canonical form {canon:?} parses to something else"
        ),
        Err(e) => assert!(
            canon.len() > MAX_REFERENCE_LEN,
            "{input:?}: canonical form {canon:?} of {r:?} is rejected: {}",
            e.message()
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    match Reference::parse(&input) {
        Ok(r) => check(&input, &r),
        Err(e) => common::assert_errno_in(&e, &[libc::EINVAL], &input),
    }
});
