//! `Options::parse(Some(..))` on arbitrary text (invalid UTF-8 replaced).
//!
//! Invariants of accepted options:
//! - every value is within its documented range (block a power of two
//!   from 4K to 64M, the default unless `block=` was given, sizes up to
//!   16G, retries <= 100, timeouts <= 1h,
//!   layer < 10^6, a blob a valid digest);
//! - the cache holds the readahead window plus two blocks;
//! - the platform is normalised (normalising it again changes nothing);
//! - a password comes with a user name, cert with key, flatten with no
//!   layer or blob; every mirror is a bare `host[:port]`;
//! - the options written back as `key=value,...` parse to the same value
//!   (credentials as `auth=<base64>` where that can hold them).
//!
//! Every rejection is EINVAL, and its message does not depend on the
//! value of a `password=` item (the password never reaches a message).
#![no_main]

mod common;

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use oci_registry::options::{Options, Target, Verify, DEFAULT_BLOCK, MAX_OPTIONS_LEN};
use oci_registry::registry::credentials::base64_encode;
use oci_registry::registry::platform::Platform;
use oci_registry::registry::reference::Reference;

const MAX_SIZE: usize = 16 << 30;

/// The options as one string, or None when no string can hold them
/// (a user name with ':' and a password with ',' set by separate items).
fn canonical(o: &Options) -> Option<String> {
    let mut items = vec![format!("platform={}", o.platform)];
    // 'flatten' excludes an explicit layer or blob.
    if !o.flatten {
        items.push(match &o.target {
            Target::Layer(n) => format!("layer={n}"),
            Target::Blob(d) => format!("blob={d}"),
        });
    }
    items.push(format!(
        "insecure={}",
        if o.insecure { "true" } else { "false" }
    ));
    // Left out when not given: a gzip layer then gets its own default.
    if o.block_given {
        items.push(format!("block={}", o.block));
    }
    // Raised above 16G only by readahead + 2 blocks, which parsing
    // computes again when cache_mem is left out.
    if o.cache_mem <= MAX_SIZE {
        items.push(format!("cache_mem={}", o.cache_mem));
    }
    items.push(format!("readahead={}", o.readahead));
    items.push(
        match o.verify {
            Verify::Stream => "verify=stream",
            Verify::Full => "verify=full",
            Verify::None => "verify=none",
        }
        .to_string(),
    );
    items.push(format!("retries={}", o.retries));
    items.push(format!("connect_timeout={}", o.connect_timeout.as_secs()));
    items.push(format!("low_speed_limit={}", o.low_speed_limit));
    items.push(format!("low_speed_time={}", o.low_speed_time.as_secs()));
    match (&o.username, &o.password) {
        (None, None) => {}
        (Some(u), None) => items.push(format!("username={u}")),
        (Some(u), Some(p)) if !u.contains(':') => items.push(format!(
            "auth={}",
            base64_encode(format!("{u}:{}", p.expose()).as_bytes())
        )),
        (Some(u), Some(p)) if !p.expose().contains(',') => {
            items.push(format!("username={u}"));
            items.push(format!("password={}", p.expose()));
        }
        (Some(_), Some(_)) => return None,
        (None, Some(_)) => panic!("a password without a user name"),
    }
    for (key, path) in [("ca", &o.ca), ("cert", &o.cert), ("key", &o.key)] {
        if let Some(p) = path {
            items.push(format!("{key}={}", p.to_str().expect("a path from a &str")));
        }
    }
    items.push(format!("tls_verify={}", o.tls_verify));
    items.push(format!(
        "decompress={}",
        if o.decompress { "auto" } else { "none" }
    ));
    items.push(format!("flatten={}", o.flatten));
    for m in &o.mirrors {
        items.push(format!("mirror={m}"));
    }
    Some(items.join(","))
}

fn check(input: &str, o: &Options) {
    assert!(input.len() <= MAX_OPTIONS_LEN);
    assert!(
        o.block.is_power_of_two() && (4096..=64 << 20).contains(&o.block),
        "{input:?}: block {}",
        o.block
    );
    assert!(
        o.block_given || o.block == DEFAULT_BLOCK,
        "{input:?}: block {} though block= was not given",
        o.block
    );
    assert!(
        (1..=MAX_SIZE).contains(&o.readahead),
        "{input:?}: readahead {}",
        o.readahead
    );
    assert!(
        o.cache_mem >= o.readahead + 2 * o.block,
        "{input:?}: cache_mem {} < readahead {} + 2 * block {}",
        o.cache_mem,
        o.readahead,
        o.block
    );
    assert!(
        o.cache_mem <= MAX_SIZE.max(o.readahead + 2 * o.block),
        "{input:?}: cache_mem {}",
        o.cache_mem
    );
    assert!(o.retries <= 100, "{input:?}: retries {}", o.retries);
    for t in [o.connect_timeout, o.low_speed_time] {
        assert!(t <= Duration::from_secs(3600), "{input:?}: timeout {t:?}");
        assert_eq!(t.subsec_nanos(), 0, "{input:?}");
    }
    match &o.target {
        Target::Layer(n) => assert!(*n < 1_000_000, "{input:?}: layer {n}"),
        Target::Blob(d) => common::assert_valid_digest(d),
    }

    let p = &o.platform;
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    };
    assert!(
        part(&p.os) && part(&p.arch) && (p.variant.is_empty() || part(&p.variant)),
        "{input:?}: platform {p:?}"
    );
    assert_eq!(
        &Platform::new(&p.os, &p.arch, &p.variant),
        p,
        "{input:?}: normalising {p:?} again changes it"
    );
    assert!(
        p.matches(&p.os, &p.arch, &p.variant),
        "{input:?}: {p:?} does not match itself"
    );

    if o.password.is_some() {
        assert!(o.username.is_some(), "{input:?}: a password without a user");
    }
    if let Some(u) = &o.username {
        assert!(
            !u.is_empty() || o.password.is_some(),
            "{input:?}: empty user"
        );
    }
    assert_eq!(
        o.cert.is_some(),
        o.key.is_some(),
        "{input:?}: cert without key"
    );
    if o.flatten {
        assert_eq!(
            o.target,
            Target::Layer(0),
            "{input:?}: flatten with a target"
        );
    }
    for m in &o.mirrors {
        common::assert_plausible_registry(m);
        let r = Reference::parse(&format!("{m}/x"))
            .unwrap_or_else(|e| panic!("{input:?}: mirror {m:?}: {}", e.message()));
        assert_eq!(&r.registry, m, "{input:?}: mirror {m:?}");
    }

    // The written-back form can outgrow the length limit (defaults
    // written out, base64 of auth= is 4/3 longer): no round trip then.
    let Some(canon) = canonical(o) else {
        return;
    };
    if canon.len() > MAX_OPTIONS_LEN {
        return;
    }
    match Options::parse(Some(&canon)) {
        Ok(again) => assert_eq!(
            &again, o,
            "{input:?}: written back as {canon:?}, parses to something else"
        ),
        Err(e) => panic!(
            "{input:?}: written back as {canon:?}, is rejected: {}",
            e.message()
        ),
    }
}

/// The input with the value of every `password=` item replaced by as
/// many 'x' (parsing never looks into a password), if it has one.
fn other_passwords(input: &str) -> Option<String> {
    let mut changed = false;
    let items: Vec<String> = input
        .split(',')
        .map(|item| match item.strip_prefix("password=") {
            Some(v) if !v.bytes().all(|b| b == b'x') => {
                changed = true;
                format!("password={}", "x".repeat(v.len()))
            }
            _ => item.to_string(),
        })
        .collect();
    changed.then(|| items.join(","))
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    match Options::parse(Some(&input)) {
        Ok(o) => check(&input, &o),
        Err(e) => {
            common::assert_errno_in(&e, &[libc::EINVAL], &input);
            if let Some(other) = other_passwords(&input) {
                let e2 = Options::parse(Some(&other)).expect_err(&other);
                assert_eq!(
                    e.message(),
                    e2.message(),
                    "the message for {input:?} depends on its password"
                );
            }
        }
    }
});
