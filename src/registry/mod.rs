//! Talking to a registry: what a reference names, who may ask, and which
//! blob the caller means.
//!
//! - `reference`: image references and the original patch's URL grammar;
//! - `platform`: platforms and their normalisation (`arm64` = `arm64/v8`);
//! - `credentials`: where credentials come from (options, podman's
//!   `auth.json`, docker's `config.json`, credential helpers);
//! - `auth`: `WWW-Authenticate` challenges and Bearer tokens;
//! - `manifest`: manifests and indexes, and choosing a platform's entry;
//! - `session`: one repository's session (`Registry`): authenticated
//!   requests, manifests, a reference plus options resolved to a blob.

pub mod auth;
pub mod credentials;
pub mod manifest;
pub mod platform;
pub mod reference;
pub mod session;

pub use session::{backoff, BlobDesc, Policy, Registry};
