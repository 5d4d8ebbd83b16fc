//! Fetches: the Range GETs that bring a blob's missing blocks, and the
//! I/O thread's end of each (`BlockSink`), which cuts the body into
//! blocks as it arrives and publishes them, hashed, into the memory tier.
//!
//! A readahead stream pauses once it has run its window ahead of the
//! reader, and stops where it runs into blocks already here. A fetch that
//! fails with a transient error is resumed from the exact byte where it
//! stopped (see `Blob::read_at`); each attempt has a generation, and
//! deliveries of superseded attempts are refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::blob::{Blob, Inner, State};
use super::cache::Block;
use super::planner::{is_far, Blocks, Want};
use super::store::Memory;
use crate::error::{Error, Result};
use crate::transport::{BodyTarget, Job, Poster, Request, Transfer};

#[derive(Debug)]
pub(super) enum Phase {
    Starting,
    Running,
    Done,
    Failed(Error),
}

pub(super) struct Fetch {
    /// Attempt number; deliveries of superseded attempts are refused.
    pub(super) gen: u64,
    /// Offset of the next byte this fetch will receive.
    pub(super) next_off: u64,
    /// End (exclusive) of what it fetches.
    pub(super) end_off: u64,
    /// Blocks before this offset are in the cache (or were): the fetch
    /// still brings those from here on, some maybe being hashed.
    pub(super) visible_off: u64,
    /// The received part of the block `next_off` is in.
    pub(super) partial: Vec<u8>,
    /// The blob's last block, held back until the transfer has ended
    /// cleanly (a body longer than the descriptor says must not pass).
    pub(super) tail: Option<Block>,
    /// Open-ended, paced by the readahead window.
    pub(super) readahead: bool,
    /// The background fill of the rest of the blob.
    pub(super) fill: bool,
    /// A chunk of parallel readahead.
    pub(super) ahead: bool,
    /// Blocks a filesystem is likely to read next, fetched before it
    /// asks (`Want::Hint`): on a connection of its own (`Request::fresh`),
    /// and not counted against a miss's direct request (`Blob::direct`).
    pub(super) hint: bool,
    /// First block asked for.
    pub(super) start: u64,
    /// A readahead stream of a pread reader (found sequential by its
    /// offsets): its window starts small and grows as the reader follows
    /// (read(2) streams get the whole window at once).
    pub(super) ramp: bool,
    pub(super) transfer: Option<Transfer>,
    pub(super) phase: Phase,
    pub(super) attempts: u32,
    pub(super) restarting: bool,
    /// A 401 made this fetch ask for a fresh token once already.
    pub(super) reauthed: bool,
    /// When this attempt's first bytes came, and from which offset: its
    /// rate so far.
    pub(super) began: Option<(Instant, u64)>,
    /// This attempt went to where the blob's URL was redirected, and
    /// failed: sent again at once to the registry (not an attempt).
    pub(super) relocate: bool,
}

impl Fetch {
    /// It is sending or receiving (not done, not failed).
    pub(super) fn running(&self) -> bool {
        matches!(self.phase, Phase::Starting | Phase::Running)
    }

    /// The bytes of block `k` it has received so far, from the block's
    /// first byte, while it is receiving that block.
    pub(super) fn received(&self, k: u64, bs: u64) -> Option<&[u8]> {
        let here = self.next_off / bs == k
            && self.partial.len() as u64 == self.next_off - k * bs
            && !matches!(self.phase, Phase::Done);
        here.then_some(&self.partial[..])
    }

    /// Its rest comes within `rtt` at the rate it has had (known once
    /// 256 KiB are in): the next request should go now, so that its round
    /// trip overlaps this one's end (a chunk of 1 MiB at one connection's
    /// 20 MB/s, 30 ms away, would otherwise leave its connection idle a
    /// third of the time).
    pub(super) fn ends_within(&self, rtt: Duration) -> bool {
        match self.began {
            Some((t, at)) if self.next_off >= at + (256 << 10) => {
                let rate = (self.next_off - at) as f64 / t.elapsed().as_secs_f64().max(1e-6);
                let left = self.end_off.saturating_sub(self.next_off);
                (left as f64) < rate * rtt.as_secs_f64()
            }
            _ => false,
        }
    }

    /// Blocks this readahead stream may run ahead of the reader at `hint`.
    fn ahead(&self, hint: u64, window: u64) -> u64 {
        match self.ramp {
            true => (hint.saturating_sub(self.start) + 2).min(window),
            false => window,
        }
    }

    /// A readahead stream (over a server that honours ranges) that has
    /// run its window ahead of the reader at `hint`: it pauses there.
    pub(super) fn window_full(&self, hint: u64, window: u64, no_ranges: bool, bs: u64) -> bool {
        self.readahead && !no_ranges && self.next_off / bs > hint + self.ahead(hint, window)
    }
}

/// The live fetches of one blob, by id.
pub(super) struct Fetches {
    pub(super) map: HashMap<u64, Fetch>,
    next_id: u64,
}

impl Fetches {
    pub(super) fn new() -> Fetches {
        Fetches {
            map: HashMap::new(),
            next_id: 1,
        }
    }

    /// Is block `k` being brought by a live fetch a reader may wait for?
    /// Returns its id. A readahead stream counts only for the window ahead
    /// of where it stands; the background fill never does: a reader's
    /// miss is fetched on its own rather than wait behind the fill (which
    /// then skips what is here).
    pub(super) fn covering(&self, k: u64, bs: u64, window: u64, no_ranges: bool) -> Option<u64> {
        self.map
            .iter()
            .filter(|(_, f)| !matches!(f.phase, Phase::Done) && !f.fill)
            .filter(|(_, f)| {
                let first = f.visible_off / bs;
                let end = f.end_off.div_ceil(bs);
                k >= first && k < end && (!f.readahead || no_ranges || k <= first + window)
            })
            .map(|(id, _)| *id)
            .next()
    }

    /// A new fetch of blocks `[from, to)` of a blob of `size` bytes.
    pub(super) fn insert(&mut self, from: u64, to: u64, want: Want, bs: u64, size: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let (readahead, ramp) = match want {
            Want::Readahead { ramp } => (true, ramp),
            _ => (false, false),
        };
        self.map.insert(
            id,
            Fetch {
                gen: 0,
                next_off: from * bs,
                end_off: (to * bs).min(size),
                visible_off: from * bs,
                partial: Vec::new(),
                tail: None,
                readahead,
                fill: want == Want::Fill,
                ahead: want == Want::Ahead,
                hint: want == Want::Hint,
                start: from,
                ramp,
                transfer: None,
                phase: Phase::Starting,
                attempts: 0,
                restarting: false,
                reauthed: false,
                began: None,
                relocate: false,
            },
        );
        id
    }

    /// Makes room for a new readahead stream starting at block `start`:
    /// streams behind it go (of no use to a reader moving forward, a tar
    /// reader skipping file bodies, say), and at most two run at once
    /// (say, two sequential readers): the oldest goes.
    pub(super) fn drop_readahead(&mut self, start: u64, bs: u64) {
        self.map.retain(|_, f| {
            !f.readahead || (!matches!(f.phase, Phase::Done) && f.visible_off / bs >= start)
        });
        let live: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, f)| f.readahead)
            .map(|(id, _)| *id)
            .collect();
        if live.len() >= 2 {
            if let Some(oldest) = live.iter().min() {
                self.map.remove(oldest);
            }
        }
    }
}

/// The planner's view of one blob under its lock: which blocks are
/// missing, and the fetches it starts (to be launched once the lock is
/// released).
pub(super) struct Table<'a> {
    pub(super) inner: &'a Inner,
    pub(super) mem: &'a Memory,
    pub(super) fetches: &'a mut Fetches,
    pub(super) no_ranges: bool,
    /// The registry's round trip, as measured (`FAR` or longer: far).
    pub(super) rtt: Option<Duration>,
    pub(super) launches: &'a mut Vec<u64>,
}

impl Blocks for Table<'_> {
    fn missing(&self, k: u64) -> bool {
        let inner = self.inner;
        !inner.holds(self.mem, k)
            && self
                .fetches
                .covering(k, inner.block, inner.window, self.no_ranges)
                .is_none()
    }

    fn held(&self, k: u64) -> bool {
        self.inner.holds(self.mem, k)
    }

    fn no_ranges(&self) -> bool {
        self.no_ranges
    }

    fn far(&self) -> bool {
        is_far(self.rtt)
    }

    fn ahead_in_flight(&self, from: u64, strict: bool) -> u64 {
        let bs = self.inner.block;
        let past = from * bs;
        // A chunk with under a quarter left to come no longer counts: the
        // next one starts now, so that its request's round trip overlaps
        // the end of this one instead of leaving the connection idle.
        // (Strictly, every chunk running counts, wherever it ends.)
        // Nor does one whose rest comes within about a round trip
        // (`Fetch::ends_within`).
        let busy = |f: &Fetch| {
            let left = f.end_off - f.next_off.min(f.end_off);
            left > (f.end_off - f.start * bs) / 4 && !self.rtt.is_some_and(|r| f.ends_within(r))
        };
        self.fetches
            .map
            .values()
            .filter(|f| f.ahead && !matches!(f.phase, Phase::Done))
            .filter(|f| strict || (f.end_off > past && busy(f)))
            .count() as u64
    }

    fn hash_block(&self) -> Option<u64> {
        self.inner.hashed_to().map(|at| at / self.inner.block)
    }

    fn fetch(&mut self, from: u64, to: u64, want: Want) {
        let inner = self.inner;
        if matches!(want, Want::Readahead { .. }) {
            self.fetches.drop_readahead(from, inner.block);
            inner.cond.notify_all();
        }
        let id = self.fetches.insert(from, to, want, inner.block, inner.size);
        self.launches.push(id);
    }
}

/// The I/O thread's end of one fetch attempt.
struct BlockSink {
    inner: Arc<Inner>,
    id: u64,
    gen: u64,
    /// The first byte the request asked for.
    from: u64,
    /// The request went to the blob's redirect location (`State::located`).
    located: bool,
    /// Hashing and publishing run on the post thread, in order, so that
    /// the I/O thread goes on receiving.
    poster: Option<Poster>,
}

fn cancelled() -> Error {
    Error::new(libc::ECANCELED, "fetch superseded")
}

impl Inner {
    /// Publishes blocks a fetch completed: hashed first (a reader that
    /// sees the last block then also sees the verdict), then into the
    /// cache, except the blob's last block of a fetch to the end, held
    /// back until the transfer has ended cleanly. The fetch that stores
    /// the last missing block of a `cache_dir=` promotes the blob,
    /// whichever part of the blob it carried (parallel chunks end in any
    /// order, and other processes fill the same directory), before its
    /// blocks become visible: a process that has read the blob to its end
    /// may exit at once, and leaves it promoted.
    fn publish(&self, id: u64, gen: u64, blocks: Vec<(u64, Block)>, reached_end: bool) {
        let kept = self.disk.as_ref().filter(|d| d.persistent());
        let mut stored = false;
        for (idx, b) in &blocks {
            self.offer_hash(*idx, b);
            if let Some(d) = kept {
                stored |= d.write_block(*idx, b);
            }
        }
        if stored {
            if let Some(d) = kept {
                d.promote_if_complete();
            }
        }
        let bs = self.block;
        let last = self.nblocks() - 1;
        let mut st = self.lock();
        let (to_eof, fill) = st
            .fetches
            .map
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
                st.mem.keep(idx, b, false);
            } else if !self.holds(&st.mem, idx) {
                // Nobody asked for it yet: in passing to the spill file.
                st.mem.keep(idx, b, true);
            }
        }
        if let Some(f) = st.fetches.map.get_mut(&id) {
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

    /// The outcome of a fetch attempt.
    fn conclude(&self, id: u64, gen: u64, outcome: Result<()>, located: bool) {
        let mut st = self.lock();
        // A CDN's signed URL expires, a CDN may refuse: the registry is
        // asked again (and may redirect somewhere new). Not for a transfer
        // we stopped ourselves.
        let relocate = located && matches!(&outcome, Err(e) if e.errno() != libc::ECANCELED);
        if relocate {
            st.located = None;
        }
        if let Err(e) = &outcome {
            if e.status() == Some(429) {
                // Counted when the refusal arrives, not when a reader
                // next looks: by then the others may have finished.
                let others = st
                    .fetches
                    .map
                    .iter()
                    .filter(|(other, _)| **other != id)
                    .filter(|(_, g)| g.running())
                    .count();
                st.planner.fewer_connections(others as u64);
            }
        }
        let State { fetches, mem, .. } = &mut *st;
        if let Some(f) = fetches.map.get_mut(&id) {
            if f.gen == gen && !matches!(f.phase, Phase::Done) {
                let all_in = f.next_off == f.end_off;
                let accept = match &outcome {
                    Ok(()) => all_in,
                    // Every byte is here; the digest will judge them.
                    Err(e) => all_in && f.tail.is_some() && e.is_retryable(),
                };
                if accept {
                    if let Some(t) = f.tail.take() {
                        mem.evicted.extend(mem.cache.insert(self.nblocks() - 1, t));
                    }
                    f.visible_off = f.end_off;
                    f.phase = Phase::Done;
                } else {
                    if all_in && f.tail.take().is_some() {
                        // Fetch the held-back last block again on a retry.
                        f.next_off = (self.nblocks() - 1) * self.block;
                        f.partial.clear();
                    }
                    f.relocate = relocate;
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
        let hint = st.planner.hint;
        let no_ranges = st.no_ranges;
        let State {
            fetches,
            stats,
            mem,
            early_needs,
            ..
        } = &mut *st;
        let f = match fetches.map.get_mut(&self.id) {
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
        let here = |k: u64| mem.cache.contains(k) || inner.on_disk(k);
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
        if f.began.is_none() {
            f.began = Some((Instant::now(), f.next_off));
        }
        let mut done_blocks = Vec::new();
        let before = d.len();
        let came = f.next_off;
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
                f.partial = mem
                    .pool
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
        let wake = early_needs.iter().any(|&n| n > came && n <= f.next_off);
        drop(st);
        if wake && done_blocks.is_empty() {
            // A reader wants bytes of the block now arriving.
            inner.cond.notify_all();
        }
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
        let located = self.located;
        self.run(Box::new(move || inner.conclude(id, gen, outcome, located)));
    }

    fn redirected(&mut self, url: &str) {
        // Later requests for the blob go there at once (see `located`).
        let mut st = self.inner.lock();
        if st
            .fetches
            .map
            .get(&self.id)
            .is_some_and(|f| f.gen == self.gen)
        {
            st.located = Some((url.to_string(), Instant::now()));
        }
    }

    fn answered(&mut self, status: u32) {
        if status == 200 && self.from > 0 {
            // The registry ignores Range (the whole blob comes, and the
            // transport drops its head): fetches become streams.
            self.inner.lock().no_ranges = true;
        }
    }
}

impl Blob {
    /// Sends (or resends, from where they stopped) the requests of the
    /// fetches `ids`, without waiting for their answers: the body goes to
    /// the fetch's `BlockSink`, a refusal ends the attempt (`conclude`), and
    /// the reader that needs the fetch's blocks judges it (`read_at`:
    /// retries, a fresh token on a 401). So a reader that plans several
    /// fetches has them all in flight at once, and never waits a round
    /// trip for one it does not need yet. Called without the state lock.
    pub(super) fn launch(&self, ids: &[u64]) {
        let poster = self.registry.transport().ok().and_then(|t| t.poster());
        for &id in ids {
            let Some((req, located)) = self.request_for(id) else {
                continue;
            };
            let from = req.range.map_or(0, |r| r.0);
            let started = self
                .registry
                .begin_to(&req, &mut || self.sink_for(id, from, located, &poster))
                .and_then(|r| r);
            let inner = &self.inner;
            let mut st = inner.lock();
            if let Some(f) = st.fetches.map.get_mut(&id) {
                match started {
                    Ok(t) => {
                        if matches!(f.phase, Phase::Starting) {
                            f.phase = Phase::Running;
                        }
                        f.transfer = Some(t);
                    }
                    Err(e) => f.phase = Phase::Failed(e),
                }
            }
            drop(st);
            inner.cond.notify_all();
        }
    }

    /// The request of fetch `id` from where it stands (the start of the
    /// partial block's missing bytes), and whether it goes to the blob's
    /// redirect location; None when the fetch is gone.
    fn request_for(&self, id: u64) -> Option<(Request, bool)> {
        let inner = &self.inner;
        let (from, to, readahead, hint, (mut req, located)) = {
            let st = inner.lock();
            let f = st.fetches.map.get(&id)?;
            (
                f.next_off,
                f.end_off,
                f.readahead,
                f.hint,
                self.blob_get(&st),
            )
        };
        req.fresh = hint;
        let open_end = readahead && to == inner.size;
        if from > 0 || !open_end {
            req.range = Some((from, if open_end { None } else { Some(to - 1) }));
        }
        Some((req, located))
    }

    /// The body target of a new attempt of fetch `id` (asking from byte
    /// `from`): what the previous attempt said no longer counts.
    fn sink_for(
        &self,
        id: u64,
        from: u64,
        located: bool,
        poster: &Option<Poster>,
    ) -> Option<Box<dyn BodyTarget>> {
        let inner = &self.inner;
        let mut st = inner.lock();
        let State { fetches, stats, .. } = &mut *st;
        let f = fetches.map.get_mut(&id)?;
        f.gen += 1;
        f.phase = Phase::Starting;
        f.began = None;
        stats.requests += 1;
        Some(Box::new(BlockSink {
            inner: inner.clone(),
            id,
            gen: f.gen,
            from,
            located,
            poster: poster.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch that has had `got` bytes in the last 100 ms, `left` to come.
    fn fetch_with(got: u64, left: u64) -> Fetch {
        let mut fs = Fetches::new();
        let id = fs.insert(0, 16, Want::Ahead, 1 << 20, 64 << 20);
        let mut f = fs.map.remove(&id).unwrap();
        let t = Instant::now()
            .checked_sub(Duration::from_millis(100))
            .unwrap();
        f.began = Some((t, 1 << 20));
        f.next_off = (1 << 20) + got;
        f.end_off = f.next_off + left;
        f
    }

    #[test]
    fn a_fetch_ends_within_a_round_trip_at_its_own_rate() {
        let rtt = Duration::from_millis(30);
        // 2 MB in 100 ms: 20 MB/s, 600 KB a round trip
        assert!(fetch_with(2_000_000, 500_000).ends_within(rtt));
        assert!(
            !fetch_with(2_000_000, 900_000).ends_within(rtt),
            "45 ms to come"
        );
        assert!(!fetch_with(2_000_000, 500_000).ends_within(Duration::from_millis(10)));
        // under 256 KiB in: its rate is not known yet
        assert!(!fetch_with(200_000, 1000).ends_within(rtt));
    }
}
