//! `manifest::parse(content_type, body)` and `manifest::select_platform`.
//!
//! The first byte picks the Content-Type (`'0'..'9'` pick the entries of
//! CONTENT_TYPES in order, which the seeds use); the rest is the body.
//!
//! Invariants:
//! - parse fails with EPROTO or EOPNOTSUPP only; a body that is not JSON
//!   is EPROTO; a schema 1 Content-Type never parses;
//! - an index Content-Type gives an index, a manifest one an image;
//! - what parses is a JSON object with `"schemaVersion": 2` and at most
//!   MAX_ENTRIES entries;
//! - select_platform returns the first entry whose platform matches, or
//!   ENOENT (naming the platform asked for) when none does.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use oci_registry::registry::manifest::{self, Descriptor, Document, MAX_ENTRIES};
use oci_registry::registry::platform::Platform;

const CONTENT_TYPES: [Option<&str>; 10] = [
    Some(manifest::OCI_INDEX),
    Some(manifest::OCI_MANIFEST),
    Some(manifest::DOCKER_LIST),
    Some(manifest::DOCKER_MANIFEST),
    Some("application/vnd.docker.distribution.manifest.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/json"),
    None,
    Some("Application/VND.OCI.Image.Index.v1+JSON; charset=utf-8"),
    Some("application/vnd.docker.distribution.manifest.v2+json ; q=1"),
];

#[derive(PartialEq)]
enum Expect {
    Index,
    Image,
    Schema1,
    FromBody,
}

fn expect(ct: Option<&str>) -> Expect {
    let Some(ct) = ct else {
        return Expect::FromBody;
    };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        manifest::OCI_INDEX | manifest::DOCKER_LIST => Expect::Index,
        manifest::OCI_MANIFEST | manifest::DOCKER_MANIFEST => Expect::Image,
        "application/vnd.docker.distribution.manifest.v1+json"
        | "application/vnd.docker.distribution.manifest.v1+prettyjws" => Expect::Schema1,
        _ => Expect::FromBody,
    }
}

fn check_select(entries: &[Descriptor], want: &Platform) {
    let matches = |d: &Descriptor| match &d.platform {
        Some(p) => want.matches(&p.os, &p.architecture, p.variant.as_deref().unwrap_or("")),
        None => false,
    };
    let first = entries.iter().position(matches);
    match manifest::select_platform(entries, want) {
        Ok(d) => {
            let at = entries
                .iter()
                .position(|e| std::ptr::eq(e, d))
                .expect("select_platform returned an entry not in the list");
            assert_eq!(Some(at), first, "not the first match for {want}");
        }
        Err(e) => {
            assert_eq!(first, None, "missed entry {first:?} for {want}");
            common::assert_errno_in(&e, &[libc::ENOENT], &want);
            assert!(
                e.message().contains(&want.to_string()),
                "message does not name {want}: {}",
                e.message()
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let ct = CONTENT_TYPES[usize::from(sel.wrapping_sub(b'0')) % CONTENT_TYPES.len()];
    let kind = expect(ct);
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match manifest::parse(ct, body) {
        Err(e) => {
            common::assert_errno_in(&e, &[libc::EPROTO, libc::EOPNOTSUPP], &ct);
            match &json {
                None => assert_eq!(e.errno(), libc::EPROTO, "not JSON: {}", e.message()),
                Some(v) if kind == Expect::Schema1 && v.is_object() => {
                    assert_eq!(e.errno(), libc::EOPNOTSUPP, "schema 1: {}", e.message())
                }
                _ => {}
            }
        }
        Ok(doc) => {
            assert!(kind != Expect::Schema1, "a schema 1 Content-Type parsed");
            let v = json.expect("parsed, yet not JSON");
            let schema = v
                .as_object()
                .expect("parsed, yet not an object")
                .get("schemaVersion")
                .and_then(|s| s.as_u64());
            assert_eq!(schema, Some(2), "parsed with schemaVersion {schema:?}");
            let entries = match &doc {
                Document::Index(e) => {
                    assert!(kind != Expect::Image, "{ct:?} gave an index");
                    e
                }
                Document::Image(e) => {
                    assert!(kind != Expect::Index, "{ct:?} gave an image");
                    e
                }
            };
            assert!(entries.len() <= MAX_ENTRIES, "{} entries", entries.len());
            if let Document::Index(entries) = &doc {
                for want in ["linux/amd64", "linux/arm64", "linux/arm/v7"] {
                    check_select(entries, &Platform::parse(want).unwrap());
                }
            }
        }
    }
});
