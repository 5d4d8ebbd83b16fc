//! Reading one blob through a block cache.
//!
//! Every byte served comes from a fixed, aligned block of the in-memory
//! cache. Missing blocks are fetched by *fetches*: Range GETs whose body
//! the I/O thread cuts into blocks as it arrives. A sequential reader gets
//! one open-ended fetch that runs ahead of it by the readahead window and
//! pauses there; a random miss gets a one-off fetch of its run of missing
//! blocks (adjacent misses coalesced). Several threads' misses are in
//! flight at once on the one curl multi handle, and a thread that needs a
//! block another fetch is bringing waits for it.
//!
//! A fetch that fails with a transient error (a dropped connection, a
//! 5xx, a 429) is resumed from the exact byte where it stopped, by the
//! reader that needs it, after a backoff.
//!
//! A block a sequential reader has read to its end leaves the cache at
//! once (drop-behind), so streaming a blob of any size costs the
//! readahead window, and the cache keeps what random readers use. A pread
//! reader found sequential by its offsets (three in a row) gets a window
//! that starts at two blocks and grows as it follows, so a filesystem
//! reading a few adjacent metadata blocks does not pull megabytes. A
//! readahead stream that runs into blocks already here stops.
//!
//! A blob bigger than the memory cache gets a spill file (a private,
//! unlinked temporary file): evicted blocks go there and come back from
//! there, read just where asked. Once random reads have asked for a
//! quarter of the blob's blocks, the rest is fetched in the background
//! in one stream (the fill), from where the running hash stands.
//!
//! Verification: blocks that arrive in order from byte 0 extend a running
//! hash (computed on the I/O thread); when it reaches the end it is
//! checked against the digest, and the read that reaches the end of the
//! blob fails with EBADMSG on a mismatch, as do all reads after it.
//! `verify=full` fetches and verifies the whole blob at open.
//!
//! The pieces: a read asks the tiers for each block (`store`: memory,
//! then the spill file or cache_dir); the planner decides what to fetch
//! and how far ahead (`planner`); the fetches bring it (`fetches`: the
//! Range GETs and the I/O thread's end of them); `verify` keeps the
//! running hash.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::disk::DiskCache;
use super::erofs::{self, Walk};
use super::fetches::{Fetches, Phase, Table};
use super::planner::{is_far, Blocks, Planner, Want};
use super::store::{Memory, Served, POOL_MAX};
use super::verify::Chain;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::options::{Options, Verify};
use crate::registry::{backoff, BlobDesc, Registry};
use crate::transport::{Request, Transport};

/// A read this far (or more) past what has arrived of its block is sent
/// on its own (`Blob::direct`)...
const DIRECT_DEPTH: u64 = 64 * 1024;
/// ... while at most this many fetches run (the block's own among them:
/// the connections `Transport::warm` keeps ready, less one), or at least
/// DIRECT_DEEP past it beside other readers' misses only, fewer than the
/// connections warmed for them (`Blob::read_at`) ...
const DIRECT_BESIDE: usize = 2;
/// (Half a block at the default block size: a read this deep would wait
/// for 512 KiB more at one connection's rate, 26 ms at 20 MB/s.)
const DIRECT_DEEP: u64 = 512 * 1024;
/// ... and when it asks for at most this many bytes. It brings
/// DIRECT_SPAN bytes from the read's page on (kept in `State::side`).
const DIRECT_MAX: u64 = 64 * 1024;
const DIRECT_SPAN: u64 = 64 * 1024;

/// How long a blob's redirect location is used before the registry is
/// asked again: within what CDNs' and object stores' signed URLs last
/// (ten minutes or more, as a rule); one that fails sooner is dropped at
/// once (`Fetch::relocate`).
const LOCATED_FOR: Duration = Duration::from_secs(300);

/// How a blob is read.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    pub cache_dir: Option<std::path::PathBuf>,
    pub block: usize,
    /// `block=` was given (see `Options::block_given`).
    pub block_given: bool,
    pub cache_mem: usize,
    pub readahead: usize,
    pub verify: Verify,
    pub retries: u32,
    /// Where blocks evicted from memory go (no `cache_dir`).
    pub spill: Option<std::path::PathBuf>,
    pub fill: bool,
    /// `meta_prefetch=auto` (see `Meta`).
    pub meta_prefetch: bool,
    /// Range requests a sequential reader keeps in flight (None: auto).
    pub connections: Option<usize>,
    /// Bytes per Range request of parallel readahead.
    pub chunk: usize,
}

impl ReadConfig {
    pub fn from_options(o: &Options) -> ReadConfig {
        ReadConfig {
            cache_dir: o.cache_dir.clone(),
            block: o.block,
            block_given: o.block_given,
            cache_mem: o.cache_mem,
            readahead: o.readahead,
            verify: o.verify,
            retries: o.retries,
            spill: o.spill.dir(),
            fill: o.fill,
            meta_prefetch: o.meta_prefetch,
            connections: o.connections,
            chunk: o.chunk,
        }
    }
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig::from_options(&Options::default())
    }
}

/// Counters of one open blob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes_fetched: u64,
    pub requests: u64,
    pub retries: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub bytes_served: u64,
    /// Reads served from the on-disk cache or the spill file.
    pub disk_hits: u64,
}

/// What one blob's readers and fetches share, under its lock.
pub(super) struct State {
    /// The memory tier.
    pub(super) mem: Memory,
    pub(super) fetches: Fetches,
    pub(super) planner: Planner,
    /// The registry answered a ranged GET with the whole blob.
    pub(super) no_ranges: bool,
    /// Set once the digest check failed: every read fails after that.
    pub(super) poisoned: Option<Error>,
    pub(super) stats: Stats,
    /// Readers waiting for a block that is arriving, whose read ends
    /// inside it: the offset up to which its bytes must have arrived to
    /// serve each (`Inner::early`). A delivery that crosses one wakes the
    /// readers; others do not (a reader of whole blocks waits for the
    /// block, not for each piece of it).
    pub(super) early_needs: Vec<u64>,
    /// The bytes the last direct read brought (`Blob::direct`), from
    /// the offset given.
    pub(super) side: Option<(u64, Vec<u8>)>,
    /// Where a GET of the blob was redirected (a CDN, object storage),
    /// and since when: Range requests go there directly for
    /// `LOCATED_FOR`, rather than pay the registry's round trip and then
    /// the redirect's on each.
    pub(super) located: Option<(String, Instant)>,
    /// A miss of a reader at random has had the registry's connections
    /// warmed (`Blob::read_at`).
    pub(super) warmed: bool,
    pub(super) meta: Meta,
}

/// `meta_prefetch=auto`, from a far registry: where the walk of an EROFS
/// image's first two directory levels stands (see `erofs`), which the
/// reads that follow the image's first one carry on.
pub(super) enum Meta {
    /// Not walked: the first block is coming (or not asked for yet).
    Unread,
    /// The blocks the walk named that are still to be fetched, in the
    /// order a walk needs them: the reads top up their fetches to as many
    /// as the connections, counting everyone's (`Blob::meta_prefetch`).
    Queue(std::collections::VecDeque<u64>),
    Done,
}

pub(super) struct Inner {
    pub(super) st: Mutex<State>,
    pub(super) cond: Condvar,
    pub(super) chain: Mutex<Chain>,
    /// Where the running hash stands (`Chain::next`), readable under the
    /// state lock; u64::MAX when nothing is being hashed.
    pub(super) hashed_to: AtomicU64,
    pub(super) size: u64,
    pub(super) block: u64,
    /// The readahead window, in blocks.
    pub(super) window: u64,
    pub(super) digest: Digest,
    /// The disk tier: cache_dir, or a spill file.
    pub(super) disk: Option<DiskCache>,
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for news of a fetch; wakes up now and then to notice a fork.
    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cond
            .wait_timeout(st, std::time::Duration::from_millis(250))
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    pub(super) fn nblocks(&self) -> u64 {
        self.size.div_ceil(self.block)
    }

    /// The bytes of block `k` that `[off, end)` covers, copied into `out`
    /// from a fetch that is receiving the block and has received them
    /// already: a read of a few bytes of a block a long link is still
    /// bringing (the fetch starts at the block's first byte and one
    /// connection's rate brings the rest) need not wait for all of it.
    /// Those bytes are what the registry sent for that range, as a whole
    /// block's would be. Or from the bytes the last direct read brought
    /// (`State::side`). Not the blob's last block: a stream to the end
    /// holds it back until the digest has judged the blob.
    pub(super) fn early(
        &self,
        st: &State,
        k: u64,
        (off, end): (u64, u64),
        out: &mut [u8],
    ) -> Option<usize> {
        let bs = self.block;
        let blk_off = k * bs;
        if blk_off + bs >= self.size {
            return None;
        }
        let from = off.max(blk_off);
        let to = end.min(blk_off + bs);
        // What the last direct read brought, for any reader: one that
        // reads on from there in small steps is found sequential, and
        // would otherwise wait for the block.
        if let Some(n) = from_side(st, (from, to), out) {
            return Some(n);
        }
        let got = st
            .fetches
            .map
            .values()
            .find_map(|f| f.received(k, bs).filter(|b| blk_off + b.len() as u64 >= to))?;
        let n = (to - from) as usize;
        let at = (from - blk_off) as usize;
        out[..n].copy_from_slice(&got[at..at + n]);
        Some(n)
    }
}

/// The bytes `[from, to)` copied into `out` from what the last direct
/// read brought (`Blob::direct`), when they are all there.
fn from_side(st: &State, (from, to): (u64, u64), out: &mut [u8]) -> Option<usize> {
    let (at, bytes) = st.side.as_ref()?;
    if from < *at || to > at + bytes.len() as u64 {
        return None;
    }
    let n = (to - from) as usize;
    let i = (from - at) as usize;
    out[..n].copy_from_slice(&bytes[i..i + n]);
    Some(n)
}

pub struct Blob {
    pub(super) registry: Arc<Registry>,
    desc: BlobDesc,
    pub(super) url: String,
    cfg: ReadConfig,
    pub(super) inner: Arc<Inner>,
}

impl Blob {
    pub fn new(registry: Arc<Registry>, desc: BlobDesc, cfg: ReadConfig) -> Result<Blob> {
        let url = registry.blob_url(&desc.digest);
        let block = cfg.block as u64;
        let disk = match (&cfg.cache_dir, &cfg.spill) {
            (Some(dir), _) => Some(DiskCache::open(dir, &desc.digest, desc.size, block)?),
            // A blob the memory cache cannot hold spills evicted blocks
            // to a private file; without one they are fetched again.
            (None, Some(dir)) if desc.size > cfg.cache_mem as u64 => {
                DiskCache::spill(dir, &desc.digest, desc.size, block).ok()
            }
            _ => None,
        };
        // A complete blob in the disk cache was verified when it got there.
        let verify = cfg.verify != Verify::None && !disk.as_ref().is_some_and(|d| d.is_complete());
        let nblocks = desc.size.div_ceil(block);
        let fits = desc.size <= cfg.cache_mem as u64;
        let window = (cfg.readahead as u64).div_ceil(block).max(1);
        let planner = Planner::new(
            nblocks,
            (cfg.cache_mem as u64 / block / 2).max(1),
            disk.as_ref().is_some_and(|d| d.persistent()) || fits,
            disk.is_some() || fits,
            cfg.fill,
        )
        .parallel(
            cfg.connections,
            cfg.chunk as u64,
            window,
            // What the memory cache holds besides the blocks being read
            // and the spare buffers: the window, however fast the
            // network, stays within cache_mem.
            (cfg.cache_mem as u64 / block).saturating_sub(2 + POOL_MAX as u64),
            block,
        );
        let inner = Arc::new(Inner {
            st: Mutex::new(State {
                mem: Memory::new(cfg.cache_mem),
                fetches: Fetches::new(),
                planner,
                no_ranges: false,
                poisoned: None,
                early_needs: Vec::new(),
                side: None,
                located: None,
                warmed: false,
                meta: match cfg.meta_prefetch {
                    true => Meta::Unread,
                    false => Meta::Done,
                },
                stats: Stats::default(),
            }),
            cond: Condvar::new(),
            chain: Mutex::new(Chain {
                next: 0,
                hasher: verify.then(|| Hasher::new(desc.digest.algorithm())),
                verdict: None,
            }),
            hashed_to: AtomicU64::new(if verify { 0 } else { u64::MAX }),
            size: desc.size,
            block,
            window,
            digest: desc.digest.clone(),
            disk,
        });
        let blob = Blob {
            registry,
            desc,
            url,
            cfg,
            inner,
        };
        if blob.inner.disk.as_ref().is_some_and(|d| d.is_complete()) {
            return Ok(blob);
        }
        if blob.cfg.verify == Verify::Full {
            blob.verify_full()?;
        }
        Ok(blob)
    }

    pub fn desc(&self) -> &BlobDesc {
        &self.desc
    }

    pub fn size(&self) -> u64 {
        self.desc.size
    }

    pub fn stats(&self) -> Stats {
        let st = self.inner.lock();
        let mut s = st.stats;
        s.cache_hits = st.mem.cache.hits;
        s.cache_misses = st.mem.cache.misses;
        s
    }

    /// `verify=full`: the whole blob into the cache and checked before
    /// any byte is served.
    fn verify_full(&self) -> Result<()> {
        let kept = self.inner.disk.as_ref().is_some_and(|d| d.persistent());
        if self.desc.size as usize > self.cfg.cache_mem && !kept {
            return Err(Error::invalid(format!(
                "verify=full: the blob ({} bytes) does not fit cache_mem ({} bytes); raise cache_mem or give cache_dir",
                self.desc.size, self.cfg.cache_mem
            )));
        }
        let mut buf = vec![0u8; self.cfg.block];
        let mut off = 0;
        while off < self.desc.size {
            let n = self.read_at(&mut buf, off, true)?;
            if n == 0 {
                break;
            }
            off += n as u64;
        }
        match self.inner.verdict() {
            Some(v) => v,
            None if self.desc.size == 0 => {
                Digest::parse(self.desc.digest.as_str())?.verify(&[], "read blob")
            }
            None => Err(Error::new(
                libc::EIO,
                "verify=full: the blob was not read in order",
            )),
        }
        .map_err(|e| e.context("verify=full"))
    }

    /// Reads up to `buf.len()` bytes at `off`; fewer only at the end of
    /// the blob. `sequential` says the caller reads on from here (read(2)
    /// style), so readahead is worth starting.
    pub fn read_at(&self, buf: &mut [u8], off: u64, sequential: bool) -> Result<usize> {
        let inner = &self.inner;
        let size = inner.size;
        if off >= size || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(size - off) as usize;
        let end = off + len as u64;
        let bs = inner.block;
        let b0 = off / bs;
        let b1 = (end - 1) / bs;
        let mut st = inner.lock();
        if let Some(e) = &st.poisoned {
            return Err(e.clone());
        }
        let seq = st.planner.observe(off, len as u64, (b0, b1), sequential);
        let mut launches = Vec::new();
        self.plan_with(&mut st, &mut launches, |p, t| p.plan(t, b0, b1, seq));
        // The first miss of a reader at random (a filesystem, which then
        // follows its metadata) from a far registry: a connection for each
        // request it may have in flight, opened beside this one, so that
        // neither its misses while this block streams nor a walk's first
        // round of chunks pays one more round trip to open its own. Not
        // for a streaming reader, whose chunks open their connections at
        // once and would only race these.
        let mut warm = 0;
        if !seq && !st.warmed && !launches.is_empty() {
            st.warmed = true;
            warm = st.planner.parallel_connections(self.far());
        }
        if !matches!(st.meta, Meta::Done) {
            self.meta_prefetch(&mut st, &mut launches);
        }
        // Let paused readahead go on once the reader has moved its window
        // past the stream (the test `deliver` pauses on).
        let (hint, no_ranges) = (st.planner.hint, st.no_ranges);
        for f in st.fetches.map.values() {
            if f.readahead && !f.window_full(hint, inner.window, no_ranges, bs) {
                if let Some(t) = &f.transfer {
                    t.unpause();
                }
            }
        }
        let mut copied = 0usize;
        let mut k = b0;
        let mut missed = false;
        let mut tried_direct = false;
        while k <= b1 {
            if !launches.is_empty() {
                drop(st);
                self.launch(&launches);
                launches.clear();
                if warm > 1 {
                    self.registry.warm(warm as usize);
                    warm = 0;
                }
                st = inner.lock();
            }
            // Memory, then disk: the tiers answer, or a fetch must.
            let served;
            (st, served) = inner.serve(
                st,
                k,
                (off, end),
                &mut buf[copied..],
                sequential,
                &mut missed,
            );
            if let Served::Bytes(n) = served {
                copied += n;
                k += 1;
                missed = false;
                continue;
            }
            if let Some(n) = inner.early(&st, k, (off, end), &mut buf[copied..]) {
                copied += n;
                k += 1;
                missed = false;
                continue;
            }
            if !seq && !tried_direct && b0 == b1 {
                tried_direct = true;
                let got;
                (st, got) = self.direct(st, k, (off, end), &mut buf[copied..]);
                if let Some(n) = got {
                    copied += n;
                    k += 1;
                    missed = false;
                    continue;
                }
            }
            let blk_end = (k + 1) * inner.block;
            let need = (end < blk_end && blk_end < inner.size).then_some(end);
            st = self.await_block(st, k, b1, seq, need, &mut launches)?;
            if let Some(e) = &st.poisoned {
                return Err(e.clone());
            }
            if seq {
                // While a streaming reader waits, chunks ahead that end
                // are followed at once (not at its next read).
                self.plan_with(&mut st, &mut launches, |p, t| p.top_up(t, b1 + 1));
            }
        }
        // Forget finished fetches.
        st.fetches
            .map
            .retain(|_, f| !matches!(f.phase, Phase::Done));
        st.stats.bytes_served += copied as u64;
        inner.unlock_and_spill(st);
        if end == size && self.cfg.verify != Verify::None {
            self.check_end()?;
        }
        Ok(copied)
    }

    /// Runs `f` on the planner and the fetch table under the state lock;
    /// the fetches it starts are added to `launches`.
    fn plan_with(
        &self,
        st: &mut State,
        launches: &mut Vec<u64>,
        f: impl FnOnce(&mut Planner, &mut Table<'_>),
    ) {
        let State {
            planner,
            fetches,
            mem,
            no_ranges,
            ..
        } = st;
        f(
            planner,
            &mut Table {
                inner: &self.inner,
                mem,
                fetches,
                no_ranges: *no_ranges,
                rtt: self.registry.round_trip(),
                launches,
            },
        );
    }

    /// `meta_prefetch=auto`: once the first block (in memory, or as far
    /// as it has arrived) holds what `erofs::first_levels` needs, queues
    /// the blocks it names (at most half the memory cache) and starts
    /// them, to as many fetches running as a far registry gets
    /// connections. The reads that follow start the rest as others end.
    /// Not from a near registry, where a listing's round trips cost
    /// little and the bytes would be fetched for nothing by a reader of a
    /// few files; nor for a blob whose first block is neither here nor
    /// coming (no filesystem reads it first).
    fn meta_prefetch(&self, st: &mut State, launches: &mut Vec<u64>) {
        let inner = &self.inner;
        let bs = inner.block;
        if matches!(st.meta, Meta::Unread) {
            if !self.far() || st.no_ranges {
                st.meta = Meta::Done;
                return;
            }
            let first = bs.min(inner.size);
            let walk = if let Some(b) = st.mem.cache.peek(0) {
                erofs::first_levels(&b, first)
            } else {
                match st.fetches.map.values().find_map(|f| f.received(0, bs)) {
                    Some(head) => erofs::first_levels(head, first),
                    None => Walk::Nothing,
                }
            };
            st.meta = match walk {
                Walk::More => return,
                Walk::Nothing => Meta::Done,
                Walk::Wanted(offs) => {
                    let most = (self.cfg.cache_mem as u64 / bs / 2) as usize;
                    let mut blocks = std::collections::VecDeque::new();
                    for k in offs.into_iter().map(|o| o / bs).filter(|&k| k > 0) {
                        if blocks.len() < most && !blocks.contains(&k) {
                            blocks.push_back(k);
                        }
                    }
                    Meta::Queue(blocks)
                }
            };
        }
        let running = st.fetches.map.values().filter(|f| f.running()).count() as u64;
        let room = st
            .planner
            .parallel_connections(true)
            .saturating_sub(running);
        let Meta::Queue(mut queue) = std::mem::replace(&mut st.meta, Meta::Done) else {
            return;
        };
        self.plan_with(st, launches, |_, t| {
            let mut started = 0;
            while started < room {
                let Some(k) = queue.pop_front() else { break };
                if t.missing(k) {
                    t.fetch(k, k + 1, Want::Hint);
                    started += 1;
                }
            }
        });
        if !queue.is_empty() {
            st.meta = Meta::Queue(queue);
        }
    }

    /// Starts fetching the blob's first bytes before anyone reads them:
    /// flattening an image asks for the layers below the one it reads,
    /// so that each does not begin with a round trip of its own (and a
    /// small layer comes whole meanwhile). See `Planner::prefetch`; a
    /// no-op once the blob's first block is here or coming.
    pub fn prefetch(&self) {
        let mut st = self.inner.lock();
        if st.poisoned.is_some() {
            return;
        }
        let mut launches = Vec::new();
        self.plan_with(&mut st, &mut launches, |p, t| p.prefetch(t));
        drop(st);
        self.launch(&launches);
    }

    /// Block `k`, in no tier, from a fetch: a new one if none brings it;
    /// else waits for the one that does, resumes it after a transient
    /// failure (with backoff, up to `retries` times), or gives up.
    fn await_block<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        k: u64,
        b1: u64,
        seq: bool,
        need: Option<u64>,
        launches: &mut Vec<u64>,
    ) -> Result<MutexGuard<'a, State>> {
        let inner = &self.inner;
        let covering = st
            .fetches
            .covering(k, inner.block, inner.window, st.no_ranges);
        let Some(id) = covering else {
            let chunked = st.planner.chunked(st.no_ranges, self.far());
            let (from, to, want) = st.planner.refetch(k, b1, seq, chunked);
            launches.push(st.fetches.insert(from, to, want, inner.block, inner.size));
            return Ok(st);
        };
        let f = st.fetches.map.get_mut(&id).expect("covering fetch exists");
        if f.transfer.as_ref().is_some_and(|t| t.is_stale()) {
            // Left behind by a fork: what the parent had not yet
            // published is fetched again, from the first byte not in the
            // cache.
            f.transfer = None;
            f.partial.clear();
            f.tail = None;
            f.next_off = f.visible_off;
            f.phase = if f.next_off >= f.end_off {
                Phase::Done
            } else {
                Phase::Failed(crate::transport::forked())
            };
            return Ok(st);
        }
        if let Phase::Failed(e) = &f.phase {
            let e = e.clone();
            if f.restarting {
                st = inner.wait(st);
            } else if f.relocate {
                // It went to the blob's redirect location, which failed:
                // to the registry, at once.
                f.relocate = false;
                f.restarting = true;
                f.phase = Phase::Starting;
                st = self.restart(st, id, Duration::ZERO, false);
            } else if e.status() == Some(401) && !f.reauthed {
                // The token expired (or was revoked) while we read: once
                // more with a fresh one, at once.
                f.reauthed = true;
                f.restarting = true;
                f.phase = Phase::Starting;
                st = self.restart(st, id, Duration::ZERO, true);
            } else if e.is_retryable() && f.attempts < self.cfg.retries {
                let f = st.fetches.map.get_mut(&id).expect("covering fetch exists");
                let delay = backoff(f.attempts, e.retry_after());
                f.attempts += 1;
                f.restarting = true;
                f.phase = Phase::Starting;
                st.stats.retries += 1;
                st = self.restart(st, id, delay, false);
            } else {
                st.fetches.map.remove(&id);
                inner.cond.notify_all();
                if e.status() == Some(401) {
                    return Err(self.registry.needs_credentials(e));
                }
                return Err(e);
            }
        } else {
            if f.readahead {
                // A stream paused short of k must go on.
                if let Some(t) = &f.transfer {
                    t.unpause();
                }
                st.planner.hint = st.planner.hint.max(k);
            }
            st.early_needs.extend(need);
            st = inner.wait(st);
            if let Some(i) = need.and_then(|n| st.early_needs.iter().position(|&m| m == n)) {
                st.early_needs.swap_remove(i);
            }
        }
        Ok(st)
    }

    /// A small read deep in block `k`, which a fetch from a far registry
    /// has only begun to bring: its bytes in a Range request of their
    /// own, beside that fetch, on a connection kept ready (see
    /// `Transport::warm`). A connection brings a block at its own rate
    /// (and a new one, in slow start, more slowly still), so a read near
    /// the end of a 1 MiB block would wait for most of the block after
    /// the round trip; this way it waits about the round trip. The fetch
    /// still brings the block for the cache. Only where few fetches are
    /// running (else no connection is likely to be free, and a new one
    /// costs more than the wait), or, for a read half a block or more
    /// deep, where the others are the misses of other readers at random
    /// and fewer than the connections warmed for them (several threads'
    /// misses, each of which would otherwise wait for most of its block);
    /// None when not tried or it failed: the caller waits for the block
    /// as usual. Hinted fetches (`Blob::meta_prefetch`) do not count:
    /// they run on connections of their own.
    fn direct<'a>(
        &'a self,
        st: MutexGuard<'a, State>,
        k: u64,
        (off, end): (u64, u64),
        out: &mut [u8],
    ) -> (MutexGuard<'a, State>, Option<usize>) {
        let inner = &self.inner;
        let bs = inner.block;
        let to = end.min((k * bs + bs).min(inner.size));
        if let Some(n) = from_side(&st, (off, to), out) {
            // (The blob's last block, which `Inner::early` leaves alone.)
            return (st, Some(n));
        }
        let running = || st.fetches.map.values().filter(|f| f.running());
        let depth = st
            .fetches
            .covering(k, bs, inner.window, st.no_ranges)
            .and_then(|id| st.fetches.map.get(&id))
            .map_or(0, |f| off.saturating_sub(f.next_off));
        // Beside other readers' misses only (no readahead, chunks or fill,
        // which keep the link busy and would only be slowed).
        let misses_only = || running().all(|f| !(f.readahead || f.ahead || f.fill));
        let n = running().filter(|f| !f.hint).count();
        let room = n <= DIRECT_BESIDE
            || (depth >= DIRECT_DEEP
                && st.warmed
                && (n as u64) < st.planner.parallel_connections(true)
                && misses_only());
        if depth < DIRECT_DEPTH || !room || st.no_ranges || !self.far() || to - off > DIRECT_MAX {
            return (st, None);
        }
        // From the read's page on, DIRECT_SPAN bytes (within the block):
        // the reads that follow it nearby are served from them too.
        let at = off - off % 4096;
        let stop = (at + DIRECT_SPAN)
            .max(to)
            .min((k * bs + bs).min(inner.size));
        let (mut req, located) = self.blob_get(&st);
        drop(st);
        req.range = Some((at, Some(stop - 1)));
        req.max_body = Some(stop - at);
        let mut bytes = vec![0u8; (stop - at) as usize];
        let got = self.direct_get(&req, &mut bytes);
        let mut st = inner.lock();
        st.stats.requests += 1;
        if got.is_none() {
            if located {
                st.located = None;
            }
            return (st, None);
        }
        st.stats.bytes_fetched += stop - at;
        let from = (off - at) as usize;
        let n = (to - off) as usize;
        out[..n].copy_from_slice(&bytes[from..from + n]);
        st.side = Some((at, bytes));
        (st, Some(n))
    }

    /// A GET of the blob: to where it was redirected lately (without the
    /// registry's credentials when that is another host), else to the
    /// registry, following redirects. Returns it and whether it goes to
    /// the redirect location.
    pub(super) fn blob_get(&self, st: &State) -> (Request, bool) {
        let fresh = st
            .located
            .as_ref()
            .filter(|(_, t)| t.elapsed() < LOCATED_FOR);
        let url = fresh.map_or(&self.url, |(u, _)| u);
        let mut req = Request::get("read blob", url.clone());
        req.follow = true;
        req.anonymous = Transport::origin(url) != Transport::origin(&self.url);
        (req, fresh.is_some())
    }

    /// Sends `req` (one attempt: on any failure the caller waits for the
    /// block instead) and fills `out` from its 206 answer.
    fn direct_get(&self, req: &Request, out: &mut [u8]) -> Option<usize> {
        let mut t = self.registry.begin_to(req, &mut || None).ok()?.ok()?;
        let (status, _) = t.wait_headers().ok()?;
        if status != 206 {
            return None;
        }
        let mut got = 0;
        while got < out.len() {
            match t.read(&mut out[got..]) {
                Ok(0) | Err(_) => return None,
                Ok(n) => got += n,
            }
        }
        // To its end, so that its connection goes back to the pool.
        t.finish().ok()?;
        Some(got)
    }

    /// Sends fetch `id` (marked restarting) again after `delay`, with a
    /// fresh token if asked, and lets the readers waiting on it know.
    fn restart<'a>(
        &'a self,
        st: MutexGuard<'a, State>,
        id: u64,
        delay: Duration,
        fresh_token: bool,
    ) -> MutexGuard<'a, State> {
        drop(st);
        if fresh_token {
            self.registry.forget_token();
        }
        std::thread::sleep(delay);
        self.launch(&[id]);
        let mut st = self.inner.lock();
        if let Some(f) = st.fetches.map.get_mut(&id) {
            f.restarting = false;
        }
        self.inner.cond.notify_all();
        st
    }

    /// The registry is a long round trip away (`planner::FAR`).
    fn far(&self) -> bool {
        is_far(self.registry.round_trip())
    }

    /// The read that reached the end: the running hash's verdict, if the
    /// whole blob went through it. Blocks are hashed before they become
    /// visible, so when the chain reached the end the verdict is there.
    fn check_end(&self) -> Result<()> {
        match self.inner.verdict() {
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for Blob {
    fn drop(&mut self) {
        // Cancel what is in flight before the registry goes.
        let fetches: Vec<_> = self
            .inner
            .lock()
            .fetches
            .map
            .drain()
            .map(|(_, f)| f)
            .collect();
        drop(fetches);
    }
}
