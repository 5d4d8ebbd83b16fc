//! Reading a blob's bytes: the blob reader and the tiers that hold its
//! blocks.
//!
//! - `blob`: `Blob`, reads at any offset, readahead, retries, the running
//!   hash that verifies what was served;
//! - `cache`: the memory tier, aligned blocks in LRU order;
//! - `disk`: the disk tiers, `cache_dir=` (shared, content-addressed) and
//!   the private spill file, and the unlinked temporary files they use;
//! - `erofs`: where an EROFS image's first directory levels lie, for
//!   `meta_prefetch=`.

pub mod blob;
pub mod cache;
pub mod disk;
mod erofs;
mod fetches;
mod planner;
mod store;
mod verify;
