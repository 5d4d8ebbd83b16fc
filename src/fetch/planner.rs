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
//!   read-around growing for a reader that keeps missing; where readahead
//!   goes parallel, a run of several blocks is split into up to
//!   `connections` Range requests in flight at once.
//! - The background fill: once random reads have asked for a quarter of
//!   the blob's blocks, the rest in one stream; where readahead goes
//!   parallel, in as many streams as connections, each over a part, and
//!   as many times sooner (a quarter divided by the connections, counted
//!   in misses: round trips are what the fill saves).
//! - Parallel readahead (`connections=` above 1): a read(2) reader gets
//!   its window ahead as chunks of `chunk=` bytes, each a Range request of
//!   its own, up to `connections` in flight, so that several TCP
//!   connections share a long link (one gets a fraction of it, and CDNs
//!   and object stores cap each); they are delivered in order to the
//!   reader and the running hash through the block cache. The window is
//!   then at least `connections` chunks, within the memory cache. A pread
//!   reader gets chunks too once it moves forward, found sequential or
//!   reading on through the blocks in order (a filesystem walking its
//!   metadata, each read not quite continuing the last): its window is
//!   thirty-two times the run it has followed plus sixteen blocks, shared
//!   among the connections.
//! - Prefetch (`Blob::prefetch`): the first block of a blob nobody reads
//!   yet, or on a long link a round of one-block chunks, one per
//!   connection (flattening asks for the layers below the one it reads).
//!
//! The planner decides; the fetch table (`Blocks`) carries it out, and
//! tells it which blocks are missing (in no tier, brought by no fetch).

use crate::options::DEFAULT_CONNECTIONS;

/// What a planned fetch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    /// An open-ended stream ahead of a sequential reader; `ramp`: of a
    /// pread reader (its window grows as it follows).
    Readahead { ramp: bool },
    /// One chunk of a parallel readahead window.
    Ahead,
    /// The blocks a random read misses.
    Range,
    /// The rest of the blob, in the background.
    Fill,
    /// Blocks a filesystem is likely to read next (`Blob::meta_prefetch`).
    Hint,
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
    /// Chunks of parallel readahead being fetched now that end past block
    /// `from`, less those nearly done; `strict`: every one running.
    fn ahead_in_flight(&self, from: u64, strict: bool) -> u64;
    /// The registry's round trip has been measured long (`FAR`).
    fn far(&self) -> bool;
    /// The block the running hash stands in, while it runs.
    fn hash_block(&self) -> Option<u64>;
    /// Starts a fetch of blocks `[from, to)`; a readahead stream first
    /// makes room (see `Fetches::drop_readahead`).
    fn fetch(&mut self, from: u64, to: u64, want: Want);
}

/// Fetches blocks `[from, to)` (not empty) as `parts` contiguous fetches
/// of about equal length, each on a connection of its own.
fn fetch_parts(blocks: &mut impl Blocks, from: u64, to: u64, parts: u64, want: Want) {
    let each = (to - from).div_ceil(parts.max(1));
    let mut a = from;
    while a < to {
        blocks.fetch(a, (a + each).min(to), want);
        a += each;
    }
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
    /// The run of blocks a reader moves forward through (each read in the
    /// block where the last one ended, or the next): where it began, and
    /// the last read's last block.
    run_start: u64,
    run_end: u64,
    /// Reads in that run.
    run_reads: u32,
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
    /// Chunks of parallel readahead in flight at most (1: one stream).
    connections: u64,
    /// `connections=auto`: chunks only where the round trip is long.
    auto: bool,
    /// Blocks per chunk.
    chunk: u64,
    /// Blocks parallel readahead keeps planned ahead of the reader.
    ahead_window: u64,
    /// The registry refused a request while others ran (a 429): no more
    /// than `connections` at once from then on, not even while one ends.
    refused: bool,
}

/// A round trip from which `connections=auto` goes parallel (as the
/// registry session measures it: the quickest answer to any of its
/// requests, from sent to first byte, the least server time included):
/// above what loopback and a LAN take, with room for a busy machine (the
/// test registry's `GET /v2/` on a loaded 2-core loopback: 0.3 to 1.6
/// ms, its manifest GET up to 11 ms), below any WAN (a same-region cloud
/// registry is 1 to 2 ms away, and one connection gets its link there).
pub(super) const FAR: std::time::Duration = std::time::Duration::from_millis(5);

/// A registry whose round trip (`None`: not measured yet) is `FAR` or
/// longer.
pub(super) fn is_far(rtt: Option<std::time::Duration>) -> bool {
    rtt.is_some_and(|d| d >= FAR)
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
            run_start: u64::MAX,
            run_end: u64::MAX - 1,
            run_reads: 0,
            random_misses: 0,
            random_blocks: 0,
            filling: false,
            ramp_next: false,
            hint: 0,
            connections: 1,
            auto: false,
            chunk: 1,
            ahead_window: 0,
            refused: false,
        }
    }

    /// Parallel readahead with `connections` chunks of `chunk` bytes in
    /// flight (None:
    /// `DEFAULT_CONNECTIONS`, once the round trip is long), for blocks of
    /// `bs` bytes: a window of twice the chunks in flight (so that a
    /// connection that finishes a chunk finds the next to fetch while the
    /// reader waits for an earlier one), at least `window` blocks and at
    /// most `room` (what the memory cache holds besides the blocks being
    /// read).
    pub(super) fn parallel(
        mut self,
        connections: Option<usize>,
        chunk: u64,
        window: u64,
        room: u64,
        bs: u64,
    ) -> Self {
        self.auto = connections.is_none();
        self.connections = connections.unwrap_or(DEFAULT_CONNECTIONS).max(1) as u64;
        self.chunk = chunk.div_ceil(bs).max(1);
        self.ahead_window = window
            .max(2 * self.connections * self.chunk)
            .min(room.max(1));
        self
    }

    /// Readahead for a reader now goes in parallel chunks: more than one
    /// connection, a registry that honours Range, and (`auto`) a long
    /// round trip (`far`): on a LAN one stream is as fast and costs less.
    /// A pread reader found sequential gets chunks too, within a window
    /// that grows as it follows (see `ahead`).
    pub(super) fn chunked(&self, no_ranges: bool, far: bool) -> bool {
        !no_ranges && self.several(far)
    }

    /// A registry refused a request (429) while `others` of ours were in
    /// flight: it allows about that many at once, so from now on no more
    /// than that (and fewer than before) go out together, strictly (a
    /// lone refusal is about the rate, not about parallelism: its
    /// Retry-After is enough).
    pub(super) fn fewer_connections(&mut self, others: u64) {
        if others >= 1 {
            self.refused = true;
            // At least one fewer: while one chunk ends, the next may have
            // started beside `connections` others.
            self.connections = others.min(self.connections - 1).max(1);
        }
    }

    /// How many requests a reader may have in flight at once: 1 unless
    /// `several`.
    pub(super) fn parallel_connections(&self, far: bool) -> u64 {
        match self.several(far) {
            true => self.connections,
            false => 1,
        }
    }

    /// More than one connection at once: asked for, or (`auto`) a long
    /// round trip.
    fn several(&self, far: bool) -> bool {
        self.connections > 1 && (far || !self.auto)
    }

    fn in_chunks(&self, blocks: &impl Blocks) -> bool {
        self.chunked(blocks.no_ranges(), blocks.far())
    }

    /// Plans the chunks of the window from block `from` that are missing,
    /// while fewer than `connections` are in flight.
    ///
    /// A pread reader's window grows with the run of blocks it has moved
    /// forward through: thirty-two times its length plus sixteen blocks, up to
    /// the whole window; its chunks are the window shared among the
    /// connections (at most `chunk`). A filesystem reading within one
    /// block is not fetched ahead; one that moves on into the next (a
    /// metadata area it walks, a file it streams) has every connection
    /// busy at once, as the link's round trip would otherwise stall it
    /// at each block.
    fn ahead(&mut self, blocks: &mut impl Blocks, from: u64) {
        let (window, chunk) = match self.ramp_next {
            true => {
                let run = self.run_end.saturating_sub(self.run_start);
                let w = run
                    .saturating_mul(32)
                    .saturating_add(16)
                    .min(self.ahead_window);
                (w, (w / self.connections).clamp(1, self.chunk))
            }
            false => (self.ahead_window, self.chunk),
        };
        let end = (from + window).min(self.nblocks);
        let mut in_flight = blocks.ahead_in_flight(from, self.refused);
        let mut k = from;
        while k < end && in_flight < self.connections {
            if !blocks.missing(k) {
                k += 1;
                continue;
            }
            // Toward the end of a blob (or all along one shorter than a
            // round of chunks: a 6 MiB layer in two chunks of 4 MiB would
            // get two connections' rate), the chunks shrink, so that
            // every connection has a share of what is left and they end
            // together, instead of the last chunks on a few connections.
            let tail = (self.nblocks - k).div_ceil(self.connections).max(1);
            let chunk_end = if tail < chunk {
                (k + tail).min(end)
            } else {
                ((k / chunk + 1) * chunk).min(end)
            };
            let mut e = k + 1;
            while e < chunk_end && blocks.missing(e) {
                e += 1;
            }
            blocks.fetch(k, e, Want::Ahead);
            in_flight += 1;
            k = e;
        }
    }

    /// Keeps the chunks ahead of a streaming reader in flight from block
    /// `from` on, while it waits for a block.
    pub(super) fn top_up(&mut self, blocks: &mut impl Blocks, from: u64) {
        if from < self.nblocks && self.in_chunks(blocks) {
            self.ahead(blocks, from);
        }
    }

    /// Fetches the first blocks of a blob nobody reads yet (the next
    /// layers of an image being flattened): block 0 where one connection
    /// carries the link, else a round of one-block chunks over the
    /// connections (a small layer comes whole, a big one has its start
    /// here when its reader comes, whose readahead then goes on past
    /// them). Nothing when block 0 is here or coming already.
    pub(super) fn prefetch(&mut self, blocks: &mut impl Blocks) {
        if self.nblocks == 0 || !blocks.missing(0) {
            return;
        }
        if self.in_chunks(blocks) {
            for k in 0..self.connections.min(self.nblocks) {
                if blocks.missing(k) {
                    blocks.fetch(k, k + 1, Want::Ahead);
                }
            }
        } else {
            blocks.fetch(0, 1, Want::Range);
        }
    }

    /// Takes note of a read of `len` bytes at `off` (blocks `b0..=b1`);
    /// `sequential`: read(2) style. Returns whether the reader streams.
    pub(super) fn observe(
        &mut self,
        off: u64,
        len: u64,
        (b0, b1): (u64, u64),
        sequential: bool,
    ) -> bool {
        if off == self.seq_end {
            self.seq_streak += 1;
        } else {
            self.seq_streak = 0;
        }
        // The run of blocks the reader moves forward through: a filesystem
        // walking its metadata reads in block order without each read
        // continuing the last one.
        if b0 < self.run_start || b0 > self.run_end.saturating_add(1) {
            self.run_start = b0;
            self.run_end = b1;
            self.run_reads = 0;
        }
        self.run_end = self.run_end.max(b1);
        self.run_reads = self.run_reads.saturating_add(1);
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
    pub(super) fn refetch(&self, k: u64, b1: u64, seq: bool, chunked: bool) -> (u64, u64, Want) {
        if seq && chunked {
            let chunk_end = ((k / self.chunk + 1) * self.chunk).min(self.nblocks);
            (k, chunk_end, Want::Ahead)
        } else if seq {
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
            if seq && self.in_chunks(blocks) {
                self.ahead(blocks, k);
                return;
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
            // Where one connection gets a fraction of the link, a long
            // miss goes as parts on connections of their own, as parallel
            // readahead's chunks do.
            let parts = if !blocks.no_ranges() && self.several(blocks.far()) {
                self.connections.min(hi - lo)
            } else {
                1
            };
            fetch_parts(blocks, lo, hi, parts, Want::Range);
            planned += hi - lo;
            k = e + 1;
            self.maybe_fill(blocks);
        }
        // Chunks ahead also for a reader moving forward block by block
        // (two blocks or more so far, in three reads or more) without
        // each read continuing the last one: a filesystem walking its
        // metadata. (One long read is not a run.)
        let forward = self.run_end > self.run_start && self.run_reads >= 3;
        if b1 + 1 < nblocks && self.in_chunks(blocks) && (seq || forward) {
            self.ahead(blocks, b1 + 1);
        } else if seq && b1 + 1 < nblocks && blocks.missing(b1 + 1) {
            blocks.fetch(b1 + 1, nblocks, self.readahead());
        }
    }

    /// Background fill: once random reads have asked for a quarter of
    /// the blob's blocks (from a far registry: made a quarter of its
    /// blocks divided by the connections in misses), the rest is likely
    /// wanted too, and one streaming GET of it costs less than the round
    /// trips of its blocks one by one (as stargz/SOCI snapshotters fetch
    /// whole layers in the background).
    /// Only where the blocks stay (the memory cache holds the blob, or a
    /// spill file or cache_dir takes what it evicts). It starts where the
    /// running hash stands, so the whole blob ends up verified.
    fn maybe_fill(&mut self, blocks: &mut impl Blocks) {
        let n = self.nblocks;
        // Where the fill goes as parallel parts (a far registry), it
        // brings the blob that many times faster than the misses, each a
        // round trip plus one connection's rate for its bytes: it pays
        // off that many times sooner, counted in round trips (a quarter
        // of the blocks divided by the connections, in misses).
        let asked = match self.several(blocks.far()) {
            true => (self.random_misses * self.connections).max(self.random_blocks),
            false => self.random_blocks,
        };
        if !self.fill || self.filling || blocks.no_ranges() || !self.holds || n < 8 || asked * 4 < n
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
        // Where parallel readahead would run, the fill does too: the rest
        // in as many contiguous parts as connections, each a stream of its
        // own (at least a chunk long).
        let parts = if self.several(blocks.far()) {
            ((n - start) / self.chunk).clamp(1, self.connections)
        } else {
            1
        };
        fetch_parts(blocks, start, n, parts, Want::Fill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of a blob with nothing held: what was fetched is not missing.
    struct Fake {
        far: bool,
        fetched: Vec<(u64, u64, Want)>,
    }

    impl Blocks for Fake {
        fn missing(&self, k: u64) -> bool {
            !self.fetched.iter().any(|&(a, b, _)| k >= a && k < b)
        }
        fn held(&self, _: u64) -> bool {
            false
        }
        fn no_ranges(&self) -> bool {
            false
        }
        fn ahead_in_flight(&self, from: u64, _: bool) -> u64 {
            let ahead = self.fetched.iter().filter(|f| f.2 == Want::Ahead);
            ahead.filter(|f| f.1 > from).count() as u64
        }
        fn far(&self) -> bool {
            self.far
        }
        fn hash_block(&self) -> Option<u64> {
            None
        }
        fn fetch(&mut self, from: u64, to: u64, want: Want) {
            self.fetched.push((from, to, want));
        }
    }

    /// A pread reader that walks blocks 100..=104 in order, two small
    /// reads per block that do not continue each other (a filesystem
    /// reading its metadata), with blocks of 1 MiB, 8 connections of
    /// 4-block chunks (`connections=auto`).
    fn walk(far: bool) -> Vec<(u64, u64, Want)> {
        const BS: u64 = 1 << 20;
        let mut p = Planner::new(1000, 64, true, true, false).parallel(None, 4 * BS, 8, 64, BS);
        let mut b = Fake {
            far,
            fetched: Vec::new(),
        };
        for k in 100..=104u64 {
            for off in [k * BS + 512, k * BS + 8192] {
                let seq = p.observe(off, 100, (k, k), false);
                p.plan(&mut b, k, k, seq);
            }
        }
        b.fetched
    }

    #[test]
    fn a_forward_walk_gets_a_growing_window_of_chunks_on_a_far_link() {
        let f = walk(true);
        let ahead: Vec<_> = f.iter().filter(|x| x.2 == Want::Ahead).collect();
        assert!(!ahead.is_empty(), "no chunks ahead: {f:?}");
        // at block 104 the run is 4 blocks long: 32 * 4 + 16 blocks ahead,
        // within the 64 blocks of the whole window
        let last = ahead.iter().map(|x| x.1).max().unwrap();
        assert!(
            last > 110 && last <= 105 + 64,
            "window ends at {last}: {f:?}"
        );
        // nothing fetched twice
        for k in 100..last {
            let n = f.iter().filter(|x| k >= x.0 && k < x.1).count();
            assert_eq!(n, 1, "block {k} in {n} fetches: {f:?}");
        }
    }

    /// Single-block random reads of a 106-block blob (8 connections):
    /// the fills they start.
    fn random_reads(far: bool, reads: &[u64]) -> Vec<(u64, u64, Want)> {
        const BS: u64 = 1 << 20;
        let mut p = Planner::new(106, 32, true, true, true).parallel(None, 4 * BS, 8, 64, BS);
        let mut b = Fake {
            far,
            fetched: Vec::new(),
        };
        for &k in reads {
            let seq = p.observe(k * BS + 100, 4096, (k, k), false);
            p.plan(&mut b, k, k, seq);
        }
        b.fetched
            .into_iter()
            .filter(|x| x.2 == Want::Fill)
            .collect()
    }

    #[test]
    fn the_fill_starts_after_fewer_misses_on_a_far_link() {
        // 106 blocks / 4 / 8 connections: the 4th miss starts the fill, as
        // one part per connection, over the whole blob
        assert!(random_reads(true, &[10, 50, 90]).is_empty());
        let fill = random_reads(true, &[10, 50, 90, 30]);
        assert_eq!(fill.len(), 8, "{fill:?}");
        assert_eq!((fill[0].0, fill[7].1), (0, 106), "{fill:?}");
        // near: a quarter of the blocks (27) first
        assert!(random_reads(false, &[10, 50, 90, 30, 70]).is_empty());
    }

    #[test]
    fn a_refusal_while_others_run_means_fewer_connections_for_good() {
        const BS: u64 = 1 << 20;
        let p = || Planner::new(100, 32, true, true, false).parallel(Some(4), 4 * BS, 16, 64, BS);
        // refused beside 3 others, or beside 4 (one chunk ending, the
        // next begun): 3 from now on, with no overlap
        for others in [3, 4, 9] {
            let mut q = p();
            q.fewer_connections(others);
            assert_eq!((q.connections, q.refused), (3, true), "{others} others");
        }
        let mut q = p();
        q.fewer_connections(2);
        q.fewer_connections(2);
        assert_eq!(q.connections, 1);
        q.fewer_connections(1);
        assert_eq!(q.connections, 1);
        // a lone refusal is about the rate: Retry-After, not fewer
        let mut q = p();
        q.fewer_connections(0);
        assert_eq!((q.connections, q.refused), (4, false));
    }

    #[test]
    fn the_same_walk_on_a_near_link_fetches_only_its_misses() {
        let f = walk(false);
        assert!(
            f.iter().all(|x| x.2 == Want::Range && x.1 == x.0 + 1),
            "{f:?}"
        );
        assert_eq!(f.len(), 5, "{f:?}");
    }

    /// A read(2) reader at block 0 of a blob of `nblocks` 1 MiB blocks, 8
    /// connections of 4-block chunks on a far link: the chunks planned.
    fn stream_start(nblocks: u64) -> Vec<(u64, u64, Want)> {
        const BS: u64 = 1 << 20;
        let mut p = Planner::new(nblocks, 32, false, true, false).parallel(None, 4 * BS, 8, 64, BS);
        let mut b = Fake {
            far: true,
            fetched: Vec::new(),
        };
        let seq = p.observe(0, 65536, (0, 0), true);
        p.plan(&mut b, 0, 0, seq);
        b.fetched
    }

    #[test]
    fn a_blob_shorter_than_a_round_of_chunks_is_shared_among_the_connections() {
        // 6 blocks: six 1-block chunks, not 4 + 2 on two connections
        let f = stream_start(6);
        assert_eq!(f.len(), 6, "{f:?}");
        assert!(
            f.iter().all(|x| x.1 == x.0 + 1 && x.2 == Want::Ahead),
            "{f:?}"
        );
        // 20 blocks: 8 chunks of 3 blocks or fewer, the first 8 connections'
        // worth, in order and without overlap
        let f = stream_start(20);
        assert_eq!(f.len(), 8, "{f:?}");
        assert!(f.iter().all(|x| x.1 - x.0 <= 3), "{f:?}");
        assert!(f.windows(2).all(|w| w[0].1 == w[1].0), "{f:?}");
        // a long blob keeps whole chunks at its start
        assert!(stream_start(1000).iter().all(|x| x.1 - x.0 == 4));
    }

    #[test]
    fn a_prefetch_asks_for_the_start_once() {
        const BS: u64 = 1 << 20;
        for (far, nblocks, want) in [
            (
                true,
                100,
                vec![
                    (0, 1),
                    (1, 2),
                    (2, 3),
                    (3, 4),
                    (4, 5),
                    (5, 6),
                    (6, 7),
                    (7, 8),
                ],
            ),
            (true, 3, vec![(0, 1), (1, 2), (2, 3)]),
            (false, 100, vec![(0, 1)]),
            (false, 0, vec![]),
        ] {
            let mut p =
                Planner::new(nblocks, 32, false, true, false).parallel(None, 4 * BS, 8, 64, BS);
            let mut b = Fake {
                far,
                fetched: Vec::new(),
            };
            p.prefetch(&mut b);
            p.prefetch(&mut b);
            let got: Vec<_> = b.fetched.iter().map(|x| (x.0, x.1)).collect();
            assert_eq!(got, want, "far {far}, {nblocks} blocks");
            let kind = if far { Want::Ahead } else { Want::Range };
            assert!(b.fetched.iter().all(|x| x.2 == kind), "{:?}", b.fetched);
        }
    }
}
