//! The planner: from the offsets a reader asks for, what to fetch and how
//! far ahead.
//!
//! - Sequential access: read(2) is sequential; preads are once three in a
//!   row continued each other (a single pread at 0 or two adjacent ones,
//!   as a filesystem reads a superblock, are not a stream). A sequential
//!   reader gets one open-ended readahead stream that runs the window
//!   ahead of it (a pread reader's window starts at two blocks and grows
//!   as it follows, see `Fetch::ramp`).
//! - Random misses: one Range request per run of missing blocks (adjacent
//!   misses coalesced), at most half the memory cache per read, with
//!   read-around growing for a reader that keeps missing.
//! - The background fill: once random reads have asked for a quarter of
//!   the blob's blocks, the rest in one stream.
//!
//! The planner decides; the fetch table (`Blocks`) carries it out, and
//! tells it which blocks are missing (in no tier, brought by no fetch).

/// What a planned fetch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    /// An open-ended stream ahead of a sequential reader; `ramp`: of a
    /// pread reader (its window grows as it follows).
    Readahead { ramp: bool },
    /// The blocks a random read misses.
    Range,
    /// The rest of the blob, in the background.
    Fill,
}

/// What the planner needs to know of the blob's blocks and fetches, and
/// how it starts fetches.
pub(super) trait Blocks {
    /// No tier holds block `k` and no live fetch is bringing it.
    fn missing(&self, k: u64) -> bool;
    /// Block `k` is in memory or on disk.
    fn held(&self, k: u64) -> bool;
    /// The registry ignores Range: every fetch is a stream from 0.
    fn no_ranges(&self) -> bool;
    /// The block the running hash stands in, while it runs.
    fn hash_block(&self) -> Option<u64>;
    /// Starts a fetch of blocks `[from, to)`; a readahead stream first
    /// makes room (see `Fetches::drop_readahead`).
    fn fetch(&mut self, from: u64, to: u64, want: Want);
}

/// The reader's access pattern so far, and the blob's fixed shape.
pub(super) struct Planner {
    nblocks: u64,
    /// Most blocks one read fetches at once: half the memory cache.
    max_run: u64,
    /// What is fetched stays (the blob fits the memory cache, or there is
    /// a cache_dir): bigger read-around units pay off.
    keeps: bool,
    /// Blocks stay somewhere (memory, a spill file or cache_dir): the
    /// background fill may run.
    holds: bool,
    fill: bool,
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
    /// Readahead started now is for a pread reader.
    ramp_next: bool,
    /// The block a sequential reader is at: readahead runs to here plus
    /// the window, then pauses.
    pub(super) hint: u64,
}

impl Planner {
    pub(super) fn new(nblocks: u64, max_run: u64, keeps: bool, holds: bool, fill: bool) -> Self {
        Planner {
            nblocks,
            max_run,
            keeps,
            holds,
            fill,
            seq_end: u64::MAX,
            seq_streak: 0,
            random_misses: 0,
            random_blocks: 0,
            filling: false,
            ramp_next: false,
            hint: 0,
        }
    }

    /// Takes note of a read of `len` bytes at `off` (blocks up to `b1`);
    /// `sequential`: read(2) style. Returns whether the reader streams.
    pub(super) fn observe(&mut self, off: u64, len: u64, b1: u64, sequential: bool) -> bool {
        if off == self.seq_end {
            self.seq_streak += 1;
        } else {
            self.seq_streak = 0;
        }
        let seq = sequential || self.seq_streak >= 2;
        self.seq_end = off + len;
        if seq {
            self.hint = b1;
        }
        self.ramp_next = !sequential;
        seq
    }

    /// A readahead stream started now.
    fn readahead(&self) -> Want {
        Want::Readahead {
            ramp: self.ramp_next,
        }
    }

    /// The fetch for block `k` of a read of blocks up to `b1` that no
    /// fetch brings (it was not planned, or went before it was read): to
    /// the end for a streaming reader, else the rest of the read, at most
    /// `max_run` blocks.
    pub(super) fn refetch(&self, k: u64, b1: u64, seq: bool) -> (u64, u64, Want) {
        if seq {
            (k, self.nblocks, self.readahead())
        } else {
            (k, (b1 + 1).min(k + self.max_run), Want::Range)
        }
    }

    /// Starts fetches for the missing blocks of `b0..=b1` (adjacent ones
    /// together) and, for a sequential reader, readahead past them.
    pub(super) fn plan(&mut self, blocks: &mut impl Blocks, b0: u64, b1: u64, seq: bool) {
        let nblocks = self.nblocks;
        let mut k = b0;
        let mut planned = 0;
        while k <= b1 {
            if !blocks.missing(k) {
                k += 1;
                continue;
            }
            if seq || blocks.no_ranges() {
                blocks.fetch(k, nblocks, self.readahead());
                return;
            }
            // At most half the cache in flight for one read, or blocks
            // would push each other out before they are copied; the read
            // loop fetches the rest as it goes.
            if planned >= self.max_run {
                break;
            }
            let mut e = k;
            while e < b1 && blocks.missing(e + 1) && planned + (e + 1 - k) < self.max_run {
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
            let unit = if self.keeps {
                1u64 << (self.random_misses / 16).min(2)
            } else {
                1
            };
            let mut lo = k;
            let mut hi = e + 1;
            if unit > 1 {
                let base = k - k % unit;
                while lo > base && blocks.missing(lo - 1) {
                    lo -= 1;
                }
                while hi < (base + unit).min(nblocks)
                    && blocks.missing(hi)
                    && planned + (hi - lo) < self.max_run
                {
                    hi += 1;
                }
            }
            self.random_misses += 1;
            self.random_blocks += hi - lo;
            blocks.fetch(lo, hi, Want::Range);
            planned += hi - lo;
            k = e + 1;
            self.maybe_fill(blocks);
        }
        if seq && b1 + 1 < nblocks && blocks.missing(b1 + 1) {
            blocks.fetch(b1 + 1, nblocks, self.readahead());
        }
    }

    /// Background fill: once random reads have asked for a quarter of
    /// the blob's blocks, the rest is likely wanted too, and one streaming
    /// GET of it costs less than the round trips of its blocks one by one
    /// (as stargz/SOCI snapshotters fetch whole layers in the background).
    /// Only where the blocks stay (the memory cache holds the blob, or a
    /// spill file or cache_dir takes what it evicts). It starts where the
    /// running hash stands, so the whole blob ends up verified.
    fn maybe_fill(&mut self, blocks: &mut impl Blocks) {
        let n = self.nblocks;
        if !self.fill
            || self.filling
            || blocks.no_ranges()
            || !self.holds
            || n < 8
            || self.random_blocks * 4 < n
        {
            return;
        }
        self.filling = true;
        let start = match blocks.hash_block() {
            Some(k) => k,
            None => match (0..n).find(|k| !blocks.held(*k)) {
                Some(k) => k,
                None => return,
            },
        };
        blocks.fetch(start, n, Want::Fill);
    }
}
