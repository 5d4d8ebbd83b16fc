//! liboci_registry: a blob of a container image in any OCI / Docker
//! registry, opened as an erofs-utils `struct erofs_vfile` for C.
//!
//! The core (references, options, transport, auth, manifests, blob
//! reading) is plain Rust and unit-tested without C; `ffi` is the C
//! boundary.

pub mod auth;
pub mod blob;
pub mod cache;
pub mod decompress;
pub mod digest;
pub mod error;
pub mod ffi;
pub mod flatten;
pub mod manifest;
pub mod options;
pub mod platform;
pub mod reference;
pub mod registry;
pub mod transport;

use std::sync::Arc;

use crate::blob::{Blob, ReadConfig};
use crate::error::Result;
use crate::options::{Options, Target};
use crate::platform::Platform;
use crate::reference::{LegacyUrl, Reference};
use crate::registry::{Policy, Registry};
use crate::transport::Timeouts;

fn policy(o: &Options) -> Policy {
    Policy {
        retries: o.retries,
        timeouts: Timeouts {
            connect: o.connect_timeout,
            low_speed_limit: o.low_speed_limit,
            low_speed_time: o.low_speed_time,
        },
    }
}

/// Opens the blob that `reference` plus `options` name.
pub fn open_reference(reference: &str, options: Option<&str>) -> Result<Blob> {
    let opts = Options::parse(options)?;
    let r = Reference::parse(reference)?;
    let registry = Arc::new(Registry::connect(&r, opts.insecure, policy(&opts))?);
    let desc = registry.resolve(&r, &opts.target, &opts.platform)?;
    Blob::new(registry, desc, ReadConfig::from_options(&opts))
}

/// Opens the blob an original-grammar URL names.
pub fn open_legacy_url(url: &str) -> Result<Blob> {
    let u = LegacyUrl::parse(url)?;
    let opts = Options::default();
    let registry = Arc::new(Registry::connect(&u.reference, false, policy(&opts))?);
    let (target, platform) = match &u.blob {
        Some(d) => (Target::Blob(d.clone()), Platform::host()),
        None => (Target::Layer(u.layer), Platform::new(&u.os, &u.arch, "")),
    };
    let desc = registry.resolve(&u.reference, &target, &platform)?;
    Blob::new(registry, desc, ReadConfig::from_options(&opts))
}
