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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::fetch::cache::{Block, BlockCache};
use crate::fetch::disk::DiskCache;
use crate::options::{Options, Verify};
use crate::registry::{backoff, BlobDesc, Registry};
use crate::transport::{BodyTarget, Job, Poster, Request, Transfer};

/// How a blob is read.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    pub cache_dir: Option<std::path::PathBuf>,
    pub block: usize,
    pub cache_mem: usize,
    pub readahead: usize,
    pub verify: Verify,
    pub retries: u32,
    /// Where blocks evicted from memory go (no `cache_dir`).
    pub spill: Option<std::path::PathBuf>,
    pub fill: bool,
}

impl ReadConfig {
    pub fn from_options(o: &Options) -> ReadConfig {
        ReadConfig {
            cache_dir: o.cache_dir.clone(),
            block: o.block,
            cache_mem: o.cache_mem,
            readahead: o.readahead,
            verify: o.verify,
            retries: o.retries,
            spill: o.spill.dir(),
            fill: o.fill,
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

#[derive(Debug)]
enum Phase {
    Starting,
    Running,
    Done,
    Failed(Error),
}

impl Fetch {
    /// Blocks this readahead stream may run ahead of the reader at `hint`.
    fn ahead(&self, hint: u64, window: u64) -> u64 {
        match self.ramp {
            true => (hint.saturating_sub(self.start) + 2).min(window),
            false => window,
        }
    }

    /// A readahead stream (over a server that honours ranges) that has
    /// run its window ahead of the reader at `hint`: it pauses there.
    fn window_full(&self, hint: u64, window: u64, no_ranges: bool, bs: u64) -> bool {
        self.readahead && !no_ranges && self.next_off / bs > hint + self.ahead(hint, window)
    }
}

struct Fetch {
    /// Attempt number; deliveries of superseded attempts are refused.
    gen: u64,
    /// Offset of the next byte this fetch will receive.
    next_off: u64,
    /// End (exclusive) of what it fetches.
    end_off: u64,
    /// Blocks before this offset are in the cache (or were): the fetch
    /// still brings those from here on, some maybe being hashed.
    visible_off: u64,
    /// The received part of the block `next_off` is in.
    partial: Vec<u8>,
    /// The blob's last block, held back until the transfer has ended
    /// cleanly (a body longer than the descriptor says must not pass).
    tail: Option<Block>,
    /// Open-ended, paced by the readahead window.
    readahead: bool,
    /// The background fill of the rest of the blob.
    fill: bool,
    /// First block asked for.
    start: u64,
    /// A readahead stream of a pread reader (found sequential by its
    /// offsets): its window starts small and grows as the reader follows
    /// (read(2) streams get the whole window at once).
    ramp: bool,
    transfer: Option<Transfer>,
    phase: Phase,
    attempts: u32,
    restarting: bool,
}

/// The running hash over the blob's prefix `[0, next)`.
struct Chain {
    next: u64,
    hasher: Option<Hasher>,
    verdict: Option<Result<()>>,
}

struct State {
    cache: BlockCache,
    fetches: HashMap<u64, Fetch>,
    next_id: u64,
    /// End of the last read, to spot sequential access.
    seq_end: u64,
    /// Preads in a row that continued the previous one.
    seq_streak: u32,
    /// Runs fetched for random (not sequential) reads so far.
    random_misses: u64,
    /// Blocks those runs asked for.
    random_blocks: u64,
    /// The background fill has been started.
    filling: bool,
    /// Readahead started now is for a pread reader (see `Fetch::ramp`).
    ramp_next: bool,
    /// Blocks the memory cache let go, to be written to the spill file
    /// (if any) outside the lock, then reused.
    evicted: Vec<(u64, Block)>,
    /// The block a sequential reader is at: readahead runs to here plus
    /// the window, then pauses.
    hint: u64,
    /// The registry answered a ranged GET with the whole blob.
    no_ranges: bool,
    /// Set once the digest check failed: every read fails after that.
    poisoned: Option<Error>,
    /// Spare block buffers (no page faults for fresh memory).
    pool: Vec<Vec<u8>>,
    stats: Stats,
}

struct Inner {
    st: Mutex<State>,
    cond: Condvar,
    chain: Mutex<Chain>,
    /// Where the running hash stands (`Chain::next`), readable under the
    /// state lock; u64::MAX when nothing is being hashed.
    hashed_to: AtomicU64,
    size: u64,
    block: u64,
    window: u64,
    digest: Digest,
    disk: Option<DiskCache>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for news of a fetch; wakes up now and then to notice a fork.
    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cond
            .wait_timeout(st, std::time::Duration::from_millis(250))
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    fn nblocks(&self) -> u64 {
        self.size.div_ceil(self.block)
    }

    /// Offers a block to the running hash; the hash also takes the cached
    /// blocks that follow it.
    fn offer_hash(&self, idx: u64, data: &Block) {
        let mut ch = self.chain.lock().unwrap_or_else(|e| e.into_inner());
        if ch.hasher.is_none() || ch.next != idx * self.block {
            return;
        }
        let mut block = data.clone();
        loop {
            if let Some(h) = ch.hasher.as_mut() {
                h.update(&block);
            }
            ch.next += block.len() as u64;
            self.hashed_to.store(ch.next, Ordering::Relaxed);
            if ch.next >= self.size {
                self.hashed_to.store(u64::MAX, Ordering::Relaxed);
                let got = ch.hasher.take().map(Hasher::finish);
                let verdict = match got {
                    Some(got) if got == self.digest => Ok(()),
                    Some(got) => Err(Error::new(
                        libc::EBADMSG,
                        format!(
                            "read blob: digest mismatch: expected {}, got {got}",
                            self.digest
                        ),
                    )),
                    None => Ok(()),
                };
                if let Err(e) = &verdict {
                    self.lock().poisoned = Some(e.clone());
                }
                ch.verdict = Some(verdict);
                return;
            }
            let next = ch.next / self.block;
            match self.lock().cache.peek(next) {
                Some(b) => block = b,
                None => return,
            }
        }
    }
}

/// The I/O thread's end of one fetch attempt.
struct BlockSink {
    inner: Arc<Inner>,
    id: u64,
    gen: u64,
    /// Hashing and publishing run on the post thread, in order, so that
    /// the I/O thread goes on receiving.
    poster: Option<Poster>,
}

fn cancelled() -> Error {
    Error::new(libc::ECANCELED, "fetch superseded")
}

/// Most spare block buffers a blob keeps for reuse.
const POOL_MAX: usize = 16;

impl Inner {
    /// Publishes blocks a fetch completed: hashed first (a reader that
    /// sees the last block then also sees the verdict), then into the
    /// cache, except the blob's last block of a fetch to the end, held
    /// back until the transfer has ended cleanly.
    fn publish(&self, id: u64, gen: u64, blocks: Vec<(u64, Block)>, reached_end: bool) {
        let kept = self.disk.as_ref().filter(|d| d.persistent());
        for (idx, b) in &blocks {
            self.offer_hash(*idx, b);
            if let Some(d) = kept {
                d.write_block(*idx, b);
            }
        }
        if reached_end {
            if let Some(d) = kept {
                d.promote_if_complete();
            }
        }
        let bs = self.block;
        let last = self.nblocks() - 1;
        let mut st = self.lock();
        let (to_eof, fill) = st
            .fetches
            .get(&id)
            .map_or((false, false), |f| (f.end_off == self.size, f.fill));
        let mut visible = None;
        let mut tail = None;
        for (idx, b) in blocks {
            if idx == last && to_eof {
                tail = Some(b);
                continue;
            }
            visible = Some(idx * bs + b.len() as u64);
            if !fill {
                st.keep(idx, b, false);
            } else if !st.cache.contains(idx) && !self.disk.as_ref().is_some_and(|d| d.has(idx)) {
                // Nobody asked for it yet: in passing to the spill file.
                st.keep(idx, b, true);
            }
        }
        if let Some(f) = st.fetches.get_mut(&id) {
            if let Some(v) = visible {
                f.visible_off = f.visible_off.max(v);
            }
            if f.fill {
                if let Some(t) = &f.transfer {
                    t.unpause();
                }
            }
            if tail.is_some() {
                f.tail = tail;
            }
            if reached_end && !to_eof && f.gen == gen {
                // A one-off range: complete without waiting for the end.
                f.phase = Phase::Done;
            }
        }
        self.unlock_and_spill(st);
        self.cond.notify_all();
    }

    /// Lets go of the lock, then writes the blocks the memory cache
    /// evicted to the spill file and keeps their buffers for reuse.
    fn unlock_and_spill(&self, mut st: MutexGuard<'_, State>) {
        let gone = std::mem::take(&mut st.evicted);
        drop(st);
        if gone.is_empty() {
            return;
        }
        if let Some(d) = self.disk.as_ref().filter(|d| !d.persistent()) {
            for (idx, b) in &gone {
                d.write_block(*idx, b);
            }
        }
        self.lock().recycle(gone.into_iter().map(|(_, b)| b));
    }

    /// The outcome of a fetch attempt.
    fn conclude(&self, id: u64, gen: u64, outcome: Result<()>) {
        let mut st = self.lock();
        let State {
            fetches,
            cache,
            evicted,
            ..
        } = &mut *st;
        if let Some(f) = fetches.get_mut(&id) {
            if f.gen == gen && !matches!(f.phase, Phase::Done) {
                let all_in = f.next_off == f.end_off;
                let accept = match &outcome {
                    Ok(()) => all_in,
                    // Every byte is here; the digest will judge them.
                    Err(e) => all_in && f.tail.is_some() && e.is_retryable(),
                };
                if accept {
                    if let Some(t) = f.tail.take() {
                        evicted.extend(cache.insert(self.nblocks() - 1, t));
                    }
                    f.visible_off = f.end_off;
                    f.phase = Phase::Done;
                } else {
                    if all_in && f.tail.take().is_some() {
                        // Fetch the held-back last block again on a retry.
                        f.next_off = (self.nblocks() - 1) * self.block;
                        f.partial.clear();
                    }
                    f.phase = Phase::Failed(match outcome {
                        Err(e) => e,
                        Ok(()) => Error::new(
                            libc::ECONNRESET,
                            format!(
                                "read blob {}: the body ended at byte {} of {}",
                                self.digest, f.next_off, f.end_off
                            ),
                        ),
                    });
                }
            }
        }
        self.unlock_and_spill(st);
        self.cond.notify_all();
    }
}

impl State {
    /// Puts a block in the memory cache (`cold`: as the first to go);
    /// what that evicts waits for `unlock_and_spill`.
    fn keep(&mut self, idx: u64, b: Block, cold: bool) {
        let gone = if cold {
            self.cache.insert_cold(idx, b)
        } else {
            self.cache.insert(idx, b)
        };
        self.evicted.extend(gone);
    }

    /// Keeps buffers of blocks nobody holds any more, for reuse.
    fn recycle(&mut self, blocks: impl IntoIterator<Item = Block>) {
        for b in blocks {
            if self.pool.len() >= POOL_MAX {
                break;
            }
            if let Ok(mut v) = Arc::try_unwrap(b) {
                v.clear();
                self.pool.push(v);
            }
        }
    }
}

impl BlockSink {
    fn run(&self, job: Job) {
        match &self.poster {
            Some(p) => p.post(job),
            None => job(),
        }
    }
}

impl BodyTarget for BlockSink {
    fn deliver(&mut self, data: &[u8]) -> Result<bool> {
        let inner = &self.inner;
        let bs = inner.block;
        let mut st = inner.lock();
        let hint = st.hint;
        let no_ranges = st.no_ranges;
        let State {
            fetches,
            stats,
            pool,
            cache,
            ..
        } = &mut *st;
        let f = match fetches.get_mut(&self.id) {
            Some(f) if f.gen == self.gen => f,
            _ => return Err(cancelled()),
        };
        if f.window_full(hint, inner.window, no_ranges, bs) {
            return Ok(false);
        }
        // The fill runs at the pace its blocks are published (hashed,
        // spilled), not faster: memory stays within the window.
        if f.fill && f.next_off.saturating_sub(f.visible_off) > (inner.window / 2).max(2) * bs {
            return Ok(false);
        }
        // A readahead stream that runs into blocks already here (another
        // stream or random reads brought them) stops rather than fetching
        // them again; a reader past them starts a new one where needed.
        let last = inner.nblocks() - 1;
        let here = |k: u64| cache.contains(k) || inner.disk.as_ref().is_some_and(|d| d.has(k));
        let mut stop = false;
        let mut d = data;
        let remaining = f.end_off - f.next_off;
        if d.len() as u64 > remaining {
            if f.end_off == inner.size {
                return Err(Error::new(
                    libc::EBADMSG,
                    format!(
                        "read blob {}: the body is longer than the {} bytes its descriptor says",
                        inner.digest, inner.size
                    ),
                ));
            }
            // A server that ignored our Range: keep what was asked for.
            d = &d[..remaining as usize];
        }
        let mut done_blocks = Vec::new();
        let before = d.len();
        while !d.is_empty() {
            let idx = f.next_off / bs;
            if f.readahead
                && !no_ranges
                && f.partial.is_empty()
                && f.next_off == idx * bs
                && here(idx)
                && (idx == last || here(idx + 1))
            {
                stop = true;
                break;
            }
            let blk_end = ((idx + 1) * bs).min(inner.size);
            let take = ((blk_end - f.next_off) as usize).min(d.len());
            if f.partial.capacity() == 0 {
                f.partial = pool
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(bs as usize));
            }
            f.partial.extend_from_slice(&d[..take]);
            f.next_off += take as u64;
            d = &d[take..];
            if f.next_off == blk_end {
                let full = std::mem::take(&mut f.partial);
                done_blocks.push((idx, Arc::new(full) as Block));
            }
        }
        let used = before - d.len();
        stats.bytes_fetched += used as u64;
        if stop {
            f.end_off = f.next_off;
            f.visible_off = f.visible_off.min(f.end_off);
            f.phase = Phase::Done;
        }
        let reached_end = f.next_off == f.end_off && !stop;
        drop(st);
        if !done_blocks.is_empty() || reached_end {
            let (inner, id, gen) = (self.inner.clone(), self.id, self.gen);
            self.run(Box::new(move || {
                inner.publish(id, gen, done_blocks, reached_end)
            }));
        }
        if data.len() > used {
            // Stop the transfer: we have all we asked for (or the rest is
            // here already).
            return Err(cancelled());
        }
        Ok(true)
    }

    fn finished(&mut self, outcome: &Result<()>) {
        let (inner, id, gen, outcome) = (self.inner.clone(), self.id, self.gen, outcome.clone());
        self.run(Box::new(move || inner.conclude(id, gen, outcome)));
    }
}

pub struct Blob {
    registry: Arc<Registry>,
    desc: BlobDesc,
    url: String,
    cfg: ReadConfig,
    inner: Arc<Inner>,
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
        let inner = Arc::new(Inner {
            st: Mutex::new(State {
                cache: BlockCache::new(cfg.cache_mem),
                fetches: HashMap::new(),
                next_id: 1,
                seq_end: u64::MAX,
                seq_streak: 0,
                random_misses: 0,
                random_blocks: 0,
                filling: false,
                ramp_next: false,
                evicted: Vec::new(),
                hint: 0,
                no_ranges: false,
                poisoned: None,
                pool: Vec::new(),
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
            window: (cfg.readahead as u64).div_ceil(block).max(1),
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
        s.cache_hits = st.cache.hits;
        s.cache_misses = st.cache.misses;
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
        let ch = self.inner.chain.lock().unwrap_or_else(|e| e.into_inner());
        match &ch.verdict {
            Some(v) => v.clone(),
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

    /// Is block `k` being brought by a live fetch? Returns its id.
    fn covering(&self, st: &State, k: u64) -> Option<u64> {
        let bs = self.inner.block;
        st.fetches
            .iter()
            .filter(|(_, f)| !matches!(f.phase, Phase::Done))
            .filter(|(_, f)| {
                let first = f.visible_off / bs;
                let end = f.end_off.div_ceil(bs);
                k >= first
                    && k < end
                    && (!(f.readahead || f.fill) || st.no_ranges || k <= first + self.inner.window)
            })
            .map(|(id, _)| *id)
            .next()
    }

    fn new_fetch(&self, st: &mut State, start_block: u64, end_block: u64, readahead: bool) -> u64 {
        let bs = self.inner.block;
        let id = st.next_id;
        st.next_id += 1;

        st.fetches.insert(
            id,
            Fetch {
                gen: 0,
                next_off: start_block * bs,
                end_off: (end_block * bs).min(self.inner.size),
                visible_off: start_block * bs,
                partial: Vec::new(),
                tail: None,
                readahead,
                fill: false,
                start: start_block,
                ramp: readahead && st.ramp_next,
                transfer: None,
                phase: Phase::Starting,
                attempts: 0,
                restarting: false,
            },
        );
        id
    }

    /// Sends (or resends, from where it stopped) the request of fetch
    /// `id`. Called without the state lock.
    fn launch(&self, id: u64) {
        let inner = &self.inner;
        let (from, to, readahead) = {
            let mut st = inner.lock();
            let Some(f) = st.fetches.get_mut(&id) else {
                return;
            };
            // Resume at the start of the partial block's missing bytes.
            (f.next_off, f.end_off, f.readahead)
        };
        let mut req = Request::get("read blob", self.url.clone());
        req.follow = true;
        let open_end = readahead && to == inner.size;
        if from > 0 || !open_end {
            req.range = Some((from, if open_end { None } else { Some(to - 1) }));
        }
        let poster = self.registry.transport().ok().and_then(|t| t.poster());
        let mut make = || -> Option<Box<dyn BodyTarget>> {
            let mut st = inner.lock();
            let State { fetches, stats, .. } = &mut *st;
            let f = fetches.get_mut(&id)?;
            // A new attempt: what the previous one said no longer counts.
            f.gen += 1;
            f.phase = Phase::Starting;
            stats.requests += 1;
            Some(Box::new(BlockSink {
                inner: inner.clone(),
                id,
                gen: f.gen,
                poster: poster.clone(),
            }))
        };
        let res = self.registry.start_to(&req, &mut make);
        let mut st = inner.lock();
        match res {
            Ok((mut t, status, _)) => {
                if status == 200 && from > 0 {
                    st.no_ranges = true;
                }
                let err = (!(200..300).contains(&status)).then(|| t.status_error(status));
                if let Some(f) = st.fetches.get_mut(&id) {
                    if let Some(e) = err {
                        f.phase = Phase::Failed(e);
                    } else if matches!(f.phase, Phase::Starting) {
                        f.phase = Phase::Running;
                    }
                    f.transfer = Some(t);
                }
            }
            Err(e) => {
                if let Some(f) = st.fetches.get_mut(&id) {
                    f.phase = Phase::Failed(e);
                }
            }
        }
        drop(st);
        inner.cond.notify_all();
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
        let bs = inner.block;
        let b0 = off / bs;
        let b1 = (off + len as u64 - 1) / bs;
        let mut st = inner.lock();
        if let Some(e) = &st.poisoned {
            return Err(e.clone());
        }
        // read() is sequential; preads are once three in a row continued
        // each other (a single pread at 0 or two adjacent ones, as a
        // filesystem reads a superblock, are not a stream).
        if off == st.seq_end {
            st.seq_streak += 1;
        } else {
            st.seq_streak = 0;
        }
        let seq = sequential || st.seq_streak >= 2;
        st.seq_end = off + len as u64;
        if seq {
            st.hint = b1;
        }
        st.ramp_next = !sequential;
        let mut launches = self.plan(&mut st, b0, b1, seq);
        // Let paused readahead go on once the reader has moved its window
        // past the stream (the test `deliver` pauses on).
        let (hint, no_ranges) = (st.hint, st.no_ranges);
        for f in st.fetches.values() {
            if f.readahead && !f.window_full(hint, inner.window, no_ranges, bs) {
                if let Some(t) = &f.transfer {
                    t.unpause();
                }
            }
        }
        let mut copied = 0usize;
        let mut k = b0;
        let mut missed = u64::MAX;
        while k <= b1 {
            if !launches.is_empty() {
                drop(st);
                for id in launches.drain(..) {
                    self.launch(id);
                }
                st = inner.lock();
            }
            if let Some(b) = st.cache.get(k) {
                st.cache.hits += 1;
                let blk_off = k * bs;
                let from = (off.max(blk_off) - blk_off) as usize;
                let to = ((off + len as u64).min(blk_off + b.len() as u64) - blk_off) as usize;
                // Copy without the lock: the I/O side goes on meanwhile.
                drop(st);
                buf[copied..copied + (to - from)].copy_from_slice(&b[from..to]);
                copied += to - from;
                let finished_block = to == b.len();
                drop(b);
                st = inner.lock();
                if sequential && finished_block {
                    // Drop-behind: a streaming reader is done with it, so
                    // streaming costs the readahead window, not the cache.
                    if let Some(old) = st.cache.remove(k) {
                        st.recycle([old]);
                    }
                }
                if missed == k {
                    st.cache.hits -= 1;
                }
                k += 1;
                continue;
            }
            if missed != k {
                missed = k;
                st.cache.misses += 1;
            }
            if let Some(d) = inner.disk.as_ref().filter(|d| d.has(k)) {
                if !d.persistent() || d.is_complete() {
                    // Read just the bytes wanted from the file (its page
                    // cache is the cache): a spill file, or a complete
                    // blob of cache_dir, verified when it got there.
                    let blk_off = k * bs;
                    let from = off.max(blk_off);
                    let to = (off + len as u64).min((blk_off + bs).min(size));
                    let n = (to - from) as usize;
                    drop(st);
                    let ok = d.read_into(from, &mut buf[copied..copied + n]);
                    st = inner.lock();
                    if ok {
                        st.stats.disk_hits += 1;
                        copied += n;
                        k += 1;
                        continue;
                    }
                }
                drop(st);
                let got = d.read_block(k).map(|v| Arc::new(v) as Block);
                if let Some(b) = &got {
                    inner.offer_hash(k, b);
                }
                st = inner.lock();
                if let Some(b) = got {
                    st.stats.disk_hits += 1;
                    st.keep(k, b, false);
                    continue;
                }
            }
            match self.covering(&st, k) {
                None => {
                    let end = if seq {
                        inner.nblocks()
                    } else {
                        (b1 + 1).min(k + self.max_run())
                    };
                    let id = self.new_fetch(&mut st, k, end, seq);
                    launches.push(id);
                }
                Some(id) => {
                    let f = st.fetches.get_mut(&id).expect("covering fetch exists");
                    if f.transfer.as_ref().is_some_and(|t| t.is_stale()) {
                        // Left behind by a fork: what the parent had not
                        // yet published is fetched again, from the first
                        // byte not in the cache.
                        f.transfer = None;
                        f.partial.clear();
                        f.tail = None;
                        f.next_off = f.visible_off;
                        f.phase = if f.next_off >= f.end_off {
                            Phase::Done
                        } else {
                            Phase::Failed(crate::transport::forked())
                        };
                        continue;
                    }
                    if let Phase::Failed(e) = &f.phase {
                        let e = e.clone();
                        if f.restarting {
                            st = inner.wait(st);
                        } else if e.is_retryable() && f.attempts < self.cfg.retries {
                            let delay = backoff(f.attempts, e.retry_after());
                            f.attempts += 1;
                            f.restarting = true;
                            f.phase = Phase::Starting;
                            st.stats.retries += 1;
                            drop(st);
                            std::thread::sleep(delay);
                            self.launch(id);
                            st = inner.lock();
                            if let Some(f) = st.fetches.get_mut(&id) {
                                f.restarting = false;
                            }
                            inner.cond.notify_all();
                        } else {
                            st.fetches.remove(&id);
                            inner.cond.notify_all();
                            return Err(e);
                        }
                    } else {
                        if f.readahead || f.fill {
                            // A stream paused short of k must go on.
                            if let Some(t) = &f.transfer {
                                t.unpause();
                            }
                        }
                        if f.readahead {
                            st.hint = st.hint.max(k);
                        }
                        st = inner.wait(st);
                    }
                }
            }
            if let Some(e) = &st.poisoned {
                return Err(e.clone());
            }
        }
        // Forget finished fetches.
        st.fetches.retain(|_, f| !matches!(f.phase, Phase::Done));
        st.stats.bytes_served += copied as u64;
        inner.unlock_and_spill(st);
        if off + len as u64 == size && self.cfg.verify != Verify::None {
            self.check_end()?;
        }
        Ok(copied)
    }

    /// Starts fetches for the missing blocks of `b0..=b1` (adjacent ones
    /// together) and, for a sequential reader, readahead past them.
    fn plan(&self, st: &mut State, b0: u64, b1: u64, seq: bool) -> Vec<u64> {
        let nblocks = self.inner.nblocks();
        let mut launches = Vec::new();
        let mut k = b0;
        let mut planned = 0;
        let on_disk = |k: u64| self.inner.disk.as_ref().is_some_and(|d| d.has(k));
        let missing = |st: &State, k: u64| {
            !st.cache.contains(k) && !on_disk(k) && self.covering(st, k).is_none()
        };
        while k <= b1 {
            if !missing(st, k) {
                k += 1;
                continue;
            }
            if seq || st.no_ranges {
                self.drop_readahead(st, k);
                launches.push(self.new_fetch(st, k, nblocks, true));
                return launches;
            }
            // At most half the cache in flight for one read, or blocks
            // would push each other out before they are copied; the read
            // loop fetches the rest as it goes.
            if planned >= self.max_run() {
                break;
            }
            let mut e = k;
            while e < b1 && missing(st, e + 1) && planned + (e + 1 - k) < self.max_run() {
                e += 1;
            }
            // Read-around: a reader that keeps missing at random gets
            // bigger aligned units per request (the round trip, not the
            // bytes, is what costs): 1 block, then 2 after 16 such misses,
            // then 4 after 32.
            // Only where what is fetched stays (the blob fits the memory
            // cache, or there is a cache_dir): else bigger units would
            // push out more than they bring. (A spill file keeps blocks
            // too, but a reader of scattered metadata, a filesystem being
            // listed, would pay for neighbours it never reads.)
            let keeps = self.inner.disk.as_ref().is_some_and(|d| d.persistent())
                || self.inner.size <= self.cfg.cache_mem as u64;
            let unit = if keeps {
                1u64 << (st.random_misses / 16).min(2)
            } else {
                1
            };
            let mut lo = k;
            let mut hi = e + 1;
            if unit > 1 {
                let base = k - k % unit;
                while lo > base && missing(st, lo - 1) {
                    lo -= 1;
                }
                while hi < (base + unit).min(nblocks)
                    && missing(st, hi)
                    && planned + (hi - lo) < self.max_run()
                {
                    hi += 1;
                }
            }
            st.random_misses += 1;
            st.random_blocks += hi - lo;
            launches.push(self.new_fetch(st, lo, hi, false));
            planned += hi - lo;
            k = e + 1;
            launches.extend(self.maybe_fill(st));
        }
        if seq && b1 + 1 < nblocks && missing(st, b1 + 1) {
            self.drop_readahead(st, b1 + 1);
            launches.push(self.new_fetch(st, b1 + 1, nblocks, true));
        }
        launches
    }

    /// Background fill: once random reads have asked for a quarter of
    /// the blob's blocks, the rest is likely wanted too, and one streaming
    /// GET of it costs less than the round trips of its blocks one by one
    /// (as stargz/SOCI snapshotters fetch whole layers in the background).
    /// Only where the blocks stay (the memory cache holds the blob, or a
    /// spill file or cache_dir takes what it evicts). It starts where the
    /// running hash stands, so the whole blob ends up verified.
    fn maybe_fill(&self, st: &mut State) -> Option<u64> {
        let inner = &self.inner;
        let n = inner.nblocks();
        let holds = inner.disk.is_some() || inner.size <= self.cfg.cache_mem as u64;
        if !self.cfg.fill
            || st.filling
            || st.no_ranges
            || !holds
            || n < 8
            || st.random_blocks * 4 < n
        {
            return None;
        }
        st.filling = true;
        let have = |k: u64| st.cache.contains(k) || inner.disk.as_ref().is_some_and(|d| d.has(k));
        let start = match inner.hashed_to.load(Ordering::Relaxed) {
            u64::MAX => (0..n).find(|k| !have(*k))?,
            at => at / inner.block,
        };
        let id = self.new_fetch(st, start, n, false);
        if let Some(f) = st.fetches.get_mut(&id) {
            f.fill = true;
        }
        Some(id)
    }

    /// Most blocks one read fetches at once: half the cache.
    fn max_run(&self) -> u64 {
        (self.cfg.cache_mem as u64 / self.inner.block / 2).max(1)
    }

    /// Makes room for a new readahead stream: at most two run at once
    /// (say, two sequential readers); the oldest goes.
    fn drop_readahead(&self, st: &mut State, start: u64) {
        // Readahead behind the new start is of no use to a reader moving
        // forward (a tar reader skipping file bodies, say).
        let bs = self.inner.block;
        st.fetches.retain(|_, f| {
            !f.readahead || (!matches!(f.phase, Phase::Done) && f.visible_off / bs >= start)
        });
        self.inner.cond.notify_all();
        let live: Vec<u64> = st
            .fetches
            .iter()
            .filter(|(_, f)| f.readahead)
            .map(|(id, _)| *id)
            .collect();
        if live.len() >= 2 {
            if let Some(oldest) = live.iter().min() {
                st.fetches.remove(oldest);
                self.inner.cond.notify_all();
            }
        }
    }

    /// The read that reached the end: the running hash's verdict, if the
    /// whole blob went through it. Blocks are hashed before they become
    /// visible, so when the chain reached the end the verdict is there.
    fn check_end(&self) -> Result<()> {
        let ch = self.inner.chain.lock().unwrap_or_else(|e| e.into_inner());
        match &ch.verdict {
            Some(Err(e)) => Err(e.clone()),
            _ => Ok(()),
        }
    }
}

impl Drop for Blob {
    fn drop(&mut self) {
        // Cancel what is in flight before the registry goes.
        let fetches: Vec<Fetch> = self.inner.lock().fetches.drain().map(|(_, f)| f).collect();
        drop(fetches);
    }
}
