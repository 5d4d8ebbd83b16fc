//! liboci_registry: a blob of a container image in any OCI / Docker
//! registry, opened as an erofs-utils `struct erofs_vfile` for C.
//!
//! The modules, from the C boundary down; each uses only those below it:
//!
//! ```text
//! ffi            the C boundary: exports, ops tables, errno, panic guard, messages
//!  └ lib.rs      open_reference / open_legacy_url: options → registry → source
//!     ├ options  the option string
//!     └ layer    what a vfile reads: image (Source), decompress, flatten, stream
//!        └ fetch     blob reads: blob (reader, readahead, verification), cache, disk
//!           └ registry   reference, platform, credentials, auth, manifest, session
//!              └ transport   one curl multi handle on one I/O thread
//!                 └ digest, error   content digests; errors and their errno
//! ```
//!
//! Everything but `ffi` is plain Rust, unit-tested without C.

pub mod digest;
pub mod error;
pub mod fetch;
pub mod ffi;
pub mod layer;
pub mod options;
pub mod registry;
pub mod transport;

use std::sync::Arc;

use crate::error::Result;
use crate::fetch::blob::{Blob, ReadConfig};
use crate::layer::image::Source;
use crate::options::{Options, Target};
use crate::registry::credentials::Credentials;
use crate::registry::platform::Platform;
use crate::registry::reference::{LegacyUrl, Reference};
use crate::registry::{Policy, Registry};
use crate::transport::{Timeouts, TlsOptions};

fn policy(o: &Options) -> Policy {
    let tls = (o.ca.is_some() || !o.tls_verify || o.cert.is_some()).then(|| {
        Arc::new(TlsOptions {
            ca: o.ca.clone(),
            insecure_skip_verify: !o.tls_verify,
            cert: o.cert.clone(),
            key: o.key.clone(),
        })
    });
    Policy {
        retries: o.retries,
        timeouts: Timeouts {
            connect: o.connect_timeout,
            low_speed_limit: o.low_speed_limit,
            low_speed_time: o.low_speed_time,
        },
        tls,
        insecure: o.insecure,
        creds: o.username.as_ref().map(|u| Credentials {
            username: u.clone(),
            password: o.password.clone().unwrap_or_default(),
            identity_token: None,
            source: "the username=/password= options".to_string(),
        }),
    }
}

/// Opens the blob that `reference` plus `options` name.
pub fn open_reference(reference: &str, options: Option<&str>) -> Result<Source> {
    let opts = Options::parse(options)?;
    let r = Reference::parse(reference)?;
    let pol = policy(&opts);
    // Mirrors first, then the registry itself (as containerd's hosts.toml
    // does for pulls); the first that has the image serves it.
    let mut errors = Vec::new();
    for m in &opts.mirrors {
        let mut mr = r.clone();
        mr.registry = m.clone();
        match Registry::connect(&mr, &pol).and_then(|reg| open_on(Arc::new(reg), &mr, &opts)) {
            Ok(src) => return Ok(src),
            Err(e) => errors.push(format!("mirror {m}: {}", e.message())),
        }
    }
    let warn = |e: crate::error::Error| {
        if opts.tls_verify || e.message().contains("tls_verify=0") {
            e
        } else {
            e.context("warning: TLS verification is off (tls_verify=0)")
        }
    };
    let registry = Registry::connect(&r, &pol).map_err(|e| warn(with_mirrors(e, &errors)))?;
    open_on(Arc::new(registry), &r, &opts).map_err(|e| warn(with_mirrors(e, &errors)))
}

/// What the options ask for, from one registry.
fn open_on(registry: Arc<Registry>, r: &Reference, opts: &Options) -> Result<Source> {
    let cfg = ReadConfig::from_options(opts);
    if opts.flatten {
        let layers = registry.layers(r, &opts.platform)?;
        let top = layers
            .last()
            .cloned()
            .ok_or_else(|| crate::error::Error::protocol("flatten: the image has no layers"))?;
        let image = registry::BlobDesc {
            media_type: "application/x-tar".to_string(),
            size: 0,
            ..top
        };
        return crate::layer::image::flattened(registry, layers, cfg, image);
    }
    let zinfo = match &opts.zinfo {
        Some(p) => {
            let data = std::fs::read(p).map_err(|e| {
                crate::error::Error::invalid(format!("option 'zinfo={}': {e}", p.display()))
            })?;
            let z = crate::layer::gzran::Zinfo::parse(&data)
                .map_err(|e| e.context(&format!("option 'zinfo={}'", p.display())))?;
            Some(z)
        }
        None => None,
    };
    let desc = registry.resolve(r, &opts.target, &opts.platform)?;
    let src = if opts.decompress {
        crate::layer::image::decompressed(registry, desc, cfg, zinfo)?
    } else {
        Source::Blob(Arc::new(Blob::new(registry, desc, cfg)?))
    };
    match &opts.tarindex {
        Some(p) => crate::layer::image::indexed(p, src),
        None => Ok(src),
    }
}

/// The layers of an image (for `platform` when it is an index).
pub fn list_layers(reference: &str, options: Option<&str>) -> Result<Vec<registry::BlobDesc>> {
    let opts = Options::parse(options)?;
    let r = Reference::parse(reference)?;
    let registry = Registry::connect(&r, &policy(&opts))?;
    registry.layers(&r, &opts.platform)
}

fn with_mirrors(e: crate::error::Error, mirror_errors: &[String]) -> crate::error::Error {
    if mirror_errors.is_empty() {
        e
    } else {
        let msg = format!("{} (after: {})", e.message(), mirror_errors.join("; "));
        crate::error::Error::new(e.errno(), msg)
    }
}

/// Opens the blob an original-grammar URL names.
pub fn open_legacy_url(url: &str) -> Result<Source> {
    let u = LegacyUrl::parse(url)?;
    let opts = Options::default();
    let registry = Arc::new(Registry::connect(&u.reference, &policy(&opts))?);
    let (target, platform) = match &u.blob {
        Some(d) => (Target::Blob(d.clone()), Platform::host()),
        None => (Target::Layer(u.layer), Platform::new(&u.os, &u.arch, "")),
    };
    let desc = registry.resolve(&u.reference, &target, &platform)?;
    Ok(Source::Blob(Arc::new(Blob::new(
        registry,
        desc,
        ReadConfig::from_options(&opts),
    )?)))
}
