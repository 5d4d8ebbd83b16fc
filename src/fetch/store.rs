//! The tiers that hold a blob's blocks, behind one question: "block k,
//! please". Memory first (the block cache, under the blob's lock), then
//! the disk (the private spill file, or `cache_dir`). The reader asks
//! `Inner::serve` once per block; only when no tier has it does it turn
//! to the fetches.
//!
//! Blocks the memory cache lets go wait in `Memory::evicted` until the
//! lock is released (`unlock_and_spill`), then go to the spill file, and
//! their buffers are kept for reuse.

use std::sync::{Arc, MutexGuard};

use super::blob::{Inner, State};
use super::cache::{Block, BlockCache};

/// Most spare block buffers a blob keeps for reuse.
pub(super) const POOL_MAX: usize = 16;

/// The memory tier and what passes through it.
pub(super) struct Memory {
    pub(super) cache: BlockCache,
    /// Blocks the cache let go, to be written to the spill file (if any)
    /// outside the lock, then reused.
    pub(super) evicted: Vec<(u64, Block)>,
    /// Spare block buffers (no page faults for fresh memory).
    pub(super) pool: Vec<Vec<u8>>,
}

impl Memory {
    pub(super) fn new(cap: usize) -> Memory {
        Memory {
            cache: BlockCache::new(cap),
            evicted: Vec::new(),
            pool: Vec::new(),
        }
    }

    /// Puts a block in the memory cache (`cold`: as the first to go);
    /// what that evicts waits for `unlock_and_spill`.
    pub(super) fn keep(&mut self, idx: u64, b: Block, cold: bool) {
        let gone = if cold {
            self.cache.insert_cold(idx, b)
        } else {
            self.cache.insert(idx, b)
        };
        self.evicted.extend(gone);
    }

    /// Keeps buffers of blocks nobody holds any more, for reuse.
    pub(super) fn recycle(&mut self, blocks: impl IntoIterator<Item = Block>) {
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

/// What a read of one block's part got from the tiers.
pub(super) enum Served {
    /// This many bytes were copied.
    Bytes(usize),
    /// No tier has the block: a fetch must bring it.
    Absent,
}

impl Inner {
    /// Is block `k` in a tier (memory or disk)?
    pub(super) fn holds(&self, mem: &Memory, k: u64) -> bool {
        mem.cache.contains(k) || self.on_disk(k)
    }

    pub(super) fn on_disk(&self, k: u64) -> bool {
        self.disk.as_ref().is_some_and(|d| d.has(k))
    }

    /// Copies the bytes of block `k` that `[off, end)` covers into `out`
    /// from the first tier that has the block. `missed`: this block was
    /// already counted as a miss of the memory cache (it is counted once,
    /// and a block that arrives after a miss is no hit). `drop_behind`: a
    /// streaming reader is done with a block it read to its end, so it
    /// leaves memory at once (streaming costs the readahead window, not
    /// the cache).
    pub(super) fn serve<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        k: u64,
        (off, end): (u64, u64),
        out: &mut [u8],
        drop_behind: bool,
        missed: &mut bool,
    ) -> (MutexGuard<'a, State>, Served) {
        let bs = self.block;
        let blk_off = k * bs;
        loop {
            if let Some(b) = st.mem.cache.get(k) {
                if !*missed {
                    st.mem.cache.hits += 1;
                }
                let from = (off.max(blk_off) - blk_off) as usize;
                let to = (end.min(blk_off + b.len() as u64) - blk_off) as usize;
                // Copy without the lock: the I/O side goes on meanwhile.
                drop(st);
                out[..to - from].copy_from_slice(&b[from..to]);
                let finished_block = to == b.len();
                drop(b);
                st = self.lock();
                if drop_behind && finished_block {
                    if let Some(old) = st.mem.cache.remove(k) {
                        st.mem.recycle([old]);
                    }
                }
                return (st, Served::Bytes(to - from));
            }
            if !*missed {
                *missed = true;
                st.mem.cache.misses += 1;
            }
            let Some(d) = self.disk.as_ref().filter(|d| d.has(k)) else {
                return (st, Served::Absent);
            };
            if !d.persistent() || d.is_complete() {
                // Read just the bytes wanted from the file (its page cache
                // is the cache): a spill file, or a complete blob of
                // cache_dir, verified when it got there.
                let from = off.max(blk_off);
                let to = end.min((blk_off + bs).min(self.size));
                let n = (to - from) as usize;
                drop(st);
                let ok = d.read_into(from, &mut out[..n]);
                st = self.lock();
                if ok {
                    st.stats.disk_hits += 1;
                    return (st, Served::Bytes(n));
                }
            }
            // A block of a partial cache_dir: into memory (and through the
            // running hash), then served from there.
            drop(st);
            let got = d.read_block(k).map(|v| Arc::new(v) as Block);
            if let Some(b) = &got {
                self.offer_hash(k, b);
            }
            st = self.lock();
            match got {
                Some(b) => {
                    st.stats.disk_hits += 1;
                    st.mem.keep(k, b, false);
                }
                None => return (st, Served::Absent),
            }
        }
    }

    /// Lets go of the lock, then writes the blocks the memory cache
    /// evicted to the spill file and keeps their buffers for reuse.
    pub(super) fn unlock_and_spill(&self, mut st: MutexGuard<'_, State>) {
        let gone = std::mem::take(&mut st.mem.evicted);
        drop(st);
        if gone.is_empty() {
            return;
        }
        if let Some(d) = self.disk.as_ref().filter(|d| !d.persistent()) {
            for (idx, b) in &gone {
                d.write_block(*idx, b);
            }
        }
        self.lock().mem.recycle(gone.into_iter().map(|(_, b)| b));
    }
}
