//! A gzip layer's uncompressed bytes with random access.
//!
//! The layer is cut into spans at checkpoints (`gzran`). They come from a
//! zinfo file (`zinfo=`, or the one `cache_dir` keeps for the blob), or
//! else from a sequential pass that a worker thread runs ahead of the
//! readers: it inflates the blob in order, verified as it streams, and
//! hands each span it makes to the cache. A read inside a known span is
//! served from the cache of inflated spans (within `cache_mem`), or
//! inflates that one span from its checkpoint on the reader's thread
//! (its compressed bytes fetched as one read of the blob); a read past
//! what the pass has reached waits for it. Once the pass has ended, its
//! checkpoints go to `cache_dir` (a zinfo, version 2) for the next open.
//!
//! A checkpoint read from a file is checked before its window is used:
//! inflating the span before it must end exactly at its position, bits
//! and window, so a zinfo of another blob, or a damaged one, is an error
//! and never wrong bytes.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::fetch::blob::Blob;
use crate::layer::gzran::{inflate_span, Builder, Checkpoint, Span, Zinfo, DEFAULT_SPAN, WINDOW};
use crate::layer::image::BlobReader;

/// Cache block size of a gzip layer's blob read this way (unless
/// `block=` says otherwise). Its reads are the compressed bytes of whole
/// spans (about 4 MiB each), so blocks need not bring read-around for
/// small reads, as 1 MiB ones do for a filesystem's preads; smaller ones
/// waste less at a span's two ends and let a span's fetch on a long link
/// go as equal parts, one per connection (in 1 MiB blocks, 9 blocks over 8
/// connections made one part of 2 MiB, and each connection has its own
/// rate: a lazy mount's first file through the WAN model took 0.23-0.25 s
/// instead of 0.19-0.22).
pub const SPAN_BLOCK: usize = 256 << 10;

/// Inflated spans, least recently used first out, within a byte budget.
struct Spans {
    map: std::collections::HashMap<usize, (Arc<Vec<u8>>, u64)>,
    tick: u64,
    bytes: usize,
    cap: usize,
}

impl Spans {
    fn get(&mut self, i: usize) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let t = self.tick;
        self.map.get_mut(&i).map(|e| {
            e.1 = t;
            e.0.clone()
        })
    }

    fn insert(&mut self, i: usize, data: Arc<Vec<u8>>) {
        self.tick += 1;
        self.bytes += data.len();
        if let Some((old, _)) = self.map.insert(i, (data, self.tick)) {
            self.bytes -= old.len();
        }
        while self.bytes > self.cap && self.map.len() > 1 {
            let oldest = self
                .map
                .iter()
                .filter(|(k, _)| **k != i)
                .min_by_key(|(_, e)| e.1)
                .map(|(k, _)| *k);
            match oldest.and_then(|k| self.map.remove(&k)) {
                Some((d, _)) => self.bytes -= d.len(),
                None => break,
            }
        }
    }
}

struct Build {
    /// The process whose thread runs the pass (none runs after a fork).
    pid: u32,
    running: bool,
    /// Output the readers want the pass to have reached.
    want: u64,
    cancel: bool,
    thread: Option<JoinHandle<()>>,
}

struct State {
    points: Vec<Checkpoint>,
    /// points[i]'s window is known to be the output before it.
    checked: Vec<bool>,
    /// No more checkpoints will come.
    complete: bool,
    /// The uncompressed size, once the last span has been inflated.
    end: Option<u64>,
    spans: Spans,
    build: Build,
    /// The pass failed (a digest, CRC or data error): every read fails.
    error: Option<Error>,
    /// The span a reader inflated last.
    last_inflated: Option<usize>,
    /// Spans readers are inflating now.
    inflating: std::collections::HashSet<usize>,
}

struct Shared {
    st: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct GzipView {
    blob: Arc<Blob>,
    span: u64,
    shared: Arc<Shared>,
    /// Where the pass leaves its checkpoints (`cache_dir`).
    save_to: Option<PathBuf>,
}

/// `cache_dir`'s zinfo of a blob.
fn cached_zinfo(cache_dir: &std::path::Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    cache_dir.join("zinfo").join(alg).join(hex)
}

impl GzipView {
    /// `zinfo`: checkpoints from a file (unchecked until used). Without
    /// one, those `cache_dir` kept, else the pass makes them.
    pub fn new(
        blob: Arc<Blob>,
        zinfo: Option<Zinfo>,
        cache_dir: Option<&std::path::Path>,
        cache_mem: usize,
    ) -> GzipView {
        let save_to = cache_dir.map(|d| cached_zinfo(d, blob.desc().digest.as_str()));
        let zinfo = zinfo.or_else(|| {
            let data = std::fs::read(save_to.as_ref()?).ok()?;
            Zinfo::parse(&data).ok()
        });
        let span = zinfo.as_ref().map_or(DEFAULT_SPAN, |z| z.span.max(1));
        let (points, complete) = match zinfo {
            Some(z) => (z.points, true),
            None => (Vec::new(), false),
        };
        // The first checkpoint's window is never used (nothing is before
        // output 0).
        let checked = (0..points.len()).map(|i| i == 0).collect();
        let cap = (cache_mem / 2).max(3 * span as usize);
        GzipView {
            blob,
            span,
            save_to: if complete { None } else { save_to },
            shared: Arc::new(Shared {
                st: Mutex::new(State {
                    points,
                    checked,
                    complete,
                    end: None,
                    spans: Spans {
                        map: Default::default(),
                        tick: 0,
                        bytes: 0,
                        cap,
                    },
                    build: Build {
                        pid: 0,
                        running: false,
                        want: 0,
                        cancel: false,
                        thread: None,
                    },
                    error: None,
                    last_inflated: None,
                    inflating: Default::default(),
                }),
                cv: Condvar::new(),
            }),
        }
    }

    pub fn blob(&self) -> &Arc<Blob> {
        &self.blob
    }

    /// The uncompressed size: the last span inflated (with every
    /// checkpoint known), else the pass run to its end.
    pub fn size(&self) -> Result<u64> {
        let last = {
            let mut st = self.shared.lock();
            loop {
                if let Some(e) = &st.error {
                    return Err(e.clone());
                }
                if let Some(end) = st.end {
                    return Ok(end);
                }
                if st.complete {
                    break st.points.len() - 1;
                }
                st.build.want = u64::MAX;
                st = self.wait_for_pass(st)?;
            }
        };
        self.span_data(last)?;
        Ok(self.shared.lock().end.unwrap_or(0))
    }

    /// Reads up to `buf.len()` bytes at `off`; fewer only at the end.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.piece(&mut buf[done..], off + done as u64)? {
                0 => break,
                n => done += n,
            }
        }
        Ok(done)
    }

    /// Bytes at `off` from the one span that holds it.
    fn piece(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        let i = {
            let mut st = self.shared.lock();
            loop {
                if let Some(e) = &st.error {
                    return Err(e.clone());
                }
                if st.end.is_some_and(|e| off >= e) {
                    return Ok(0);
                }
                let i = st.points.partition_point(|p| p.output <= off);
                if i > 0 && (i < st.points.len() || st.complete) {
                    // Keep the pass ahead of a reader going in order.
                    if !st.complete {
                        st.build.want = st.build.want.max(off + 2 * self.span);
                        self.shared.cv.notify_all();
                    }
                    break i - 1;
                }
                st.build.want = st.build.want.max(off + 2 * self.span);
                st = self.wait_for_pass(st)?;
            }
        };
        let data = self.span_data(i)?;
        let from = self.shared.lock().points[i].output;
        let at = (off - from) as usize;
        if at >= data.len() {
            return Ok(0);
        }
        let n = buf.len().min(data.len() - at);
        buf[..n].copy_from_slice(&data[at..at + n]);
        Ok(n)
    }

    /// Starts the pass if it does not run in this process, then waits for
    /// it to make progress.
    fn wait_for_pass<'a>(&'a self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        let me = std::process::id();
        if !(st.build.running && st.build.pid == me) {
            if st.build.pid != me {
                // Made before a fork: its thread lives in the parent only.
                std::mem::forget(st.build.thread.take());
            } else if let Some(t) = st.build.thread.take() {
                let _ = t.join();
            }
            let (shared, blob, span) = (self.shared.clone(), self.blob.clone(), self.span);
            let save_to = self.save_to.clone();
            let t = std::thread::Builder::new()
                .name("oci-registry-gzip".into())
                .spawn(move || pass(shared, blob, span, save_to))
                .map_err(|e| {
                    Error::new(libc::EAGAIN, format!("cannot start a gzip thread: {e}"))
                })?;
            st.build.thread = Some(t);
            st.build.running = true;
            st.build.pid = me;
        }
        self.shared.cv.notify_all();
        Ok(self.shared.cv.wait(st).unwrap_or_else(|e| e.into_inner()))
    }

    /// Span `i` (its checkpoint and the next known, or the last one):
    /// from the cache, else inflated here.
    fn span_data(&self, i: usize) -> Result<Arc<Vec<u8>>> {
        let (cp, next, prev, sequential) = {
            let mut st = self.shared.lock();
            loop {
                if let Some(d) = st.spans.get(i) {
                    return Ok(d);
                }
                // Another reader inflates this span, or the one before
                // (which checks this one's window): wait for it.
                let busy = st.inflating.contains(&i)
                    || (!st.checked[i] && st.inflating.contains(&(i - 1)));
                if !busy {
                    break;
                }
                st = self.shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.inflating.insert(i);
            let prev = (!st.checked[i]).then(|| st.points[i - 1].clone());
            // A reader going on from the span inflated last: the blob's
            // readahead brings the next spans' bytes meanwhile.
            let sequential = i > 0 && st.last_inflated == Some(i - 1);
            (
                st.points[i].clone(),
                st.points.get(i + 1).cloned(),
                prev,
                sequential,
            )
        };
        let r = self.inflate_here(i, &cp, next.as_ref(), prev.as_ref(), sequential);
        let mut st = self.shared.lock();
        st.inflating.remove(&i);
        self.shared.cv.notify_all();
        drop(st);
        r
    }

    /// The work of `span_data` once span `i` is this reader's to inflate.
    fn inflate_here(
        &self,
        i: usize,
        cp: &Checkpoint,
        next: Option<&Checkpoint>,
        prev: Option<&Checkpoint>,
        sequential: bool,
    ) -> Result<Arc<Vec<u8>>> {
        // The compressed bytes of the span, and of the one before when it
        // must check this one's window, in one read (its parts fetched at
        // once).
        let from = prev.unwrap_or(cp).start();
        let src = self.fetch(from, next, sequential)?;
        let at = |c: &Checkpoint| &src[(c.start() - from) as usize..];
        if let Some(p) = prev {
            // The window of checkpoint i is what inflating span i-1 ends
            // with; that span is served only if its own window was
            // checked.
            let s = inflate_span(at(p), p, Some(cp))?;
            if !proves_next_window(&s) {
                // A span shorter than a window: the rest of the window is
                // the end of the one before, checked in turn.
                self.span_data(i - 1)?;
                let n = s.data.len();
                if cp.window[..WINDOW - n] != p.window[n..] {
                    return Err(Error::new(
                        libc::EBADMSG,
                        format!(
                            "gzip index does not match the blob: the window at output {}",
                            cp.output
                        ),
                    ));
                }
            }
            let mut st = self.shared.lock();
            st.checked[i] = true;
            if st.checked[i - 1] {
                st.spans.insert(i - 1, Arc::new(s.data));
            }
        }
        let s = inflate_span(at(cp), cp, next)?;
        let proves = proves_next_window(&s);
        let data = Arc::new(s.data);
        let mut st = self.shared.lock();
        st.last_inflated = Some(i);
        if next.is_none() {
            st.end = Some(cp.output + data.len() as u64);
        }
        if i + 1 < st.checked.len() && proves {
            st.checked[i + 1] = true;
        }
        st.spans.insert(i, data.clone());
        Ok(data)
    }

    /// The compressed bytes from `from` to the end of the span that
    /// `next` ends (one byte past its checkpoint), or to the blob's end.
    fn fetch(&self, from: u64, next: Option<&Checkpoint>, sequential: bool) -> Result<Vec<u8>> {
        let size = self.blob.size();
        let to = next.map_or(size, |n| (n.input + 1).min(size));
        if from >= to {
            return Err(Error::new(
                libc::EBADMSG,
                format!(
                    "gzip index does not match the blob: a checkpoint at {from} of {size} bytes"
                ),
            ));
        }
        let mut src = vec![0u8; (to - from) as usize];
        let mut got = 0;
        while got < src.len() {
            match self
                .blob
                .read_at(&mut src[got..], from + got as u64, sequential)?
            {
                0 => break,
                n => got += n,
            }
        }
        src.truncate(got);
        Ok(src)
    }
}

/// Whether inflating a span checked all of the next checkpoint's window
/// that matters: a whole window's worth, or all of it since a gzip member
/// began inside the span (what lies before a member's start is never
/// referred to).
fn proves_next_window(s: &Span) -> bool {
    s.window_checked == WINDOW || s.window_checked < s.data.len().min(WINDOW)
}

/// The sequential pass, on its own thread: inflates the blob in order
/// (the blob verified as it streams), adding checkpoints and spans while
/// the readers want more.
fn pass(shared: Arc<Shared>, blob: Arc<Blob>, span: u64, save_to: Option<PathBuf>) {
    let r = (|| -> Result<()> {
        let mut b = Builder::new(BlobReader::new(blob), span)?;
        let mut i = 0usize;
        {
            let mut st = shared.lock();
            if st.points.is_empty() {
                st.points.push(b.first());
                st.checked.push(true);
            }
        }
        loop {
            {
                let mut st = shared.lock();
                while !st.build.cancel && st.build.want <= st.points[i].output {
                    st = shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if st.build.cancel {
                    return Ok(());
                }
            }
            let Some(made) = b.next_span()? else {
                return Ok(());
            };
            let mut st = shared.lock();
            let data = Arc::new(made.data);
            let len = data.len() as u64;
            st.spans.insert(i, data);
            match made.next {
                Some(cp) => {
                    if st.points.len() == i + 1 {
                        st.points.push(cp);
                        st.checked.push(true);
                    }
                    i += 1;
                }
                None => {
                    st.end = Some(st.points[i].output + len);
                    st.complete = true;
                    st.points.truncate(i + 1);
                    st.checked.truncate(i + 1);
                }
            }
            shared.cv.notify_all();
            if st.complete {
                let z = Zinfo {
                    span,
                    points: st.points.clone(),
                };
                drop(st);
                if let Some(p) = &save_to {
                    save(p, &z);
                }
                return Ok(());
            }
        }
    })();
    let mut st = shared.lock();
    if let Err(e) = r {
        if !st.build.cancel {
            st.error = Some(e);
        }
    }
    st.build.running = false;
    shared.cv.notify_all();
}

/// Writes a zinfo whole or not at all (a private file renamed into place).
fn save(path: &std::path::Path, z: &Zinfo) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!(".tmp.{}", std::process::id()));
    if std::fs::write(&tmp, z.to_bytes()).is_ok() && std::fs::rename(&tmp, path).is_ok() {
        return;
    }
    let _ = std::fs::remove_file(&tmp);
}

impl Drop for GzipView {
    fn drop(&mut self) {
        let t = {
            let mut st = self.shared.lock();
            st.build.cancel = true;
            self.shared.cv.notify_all();
            if st.build.pid != std::process::id() {
                std::mem::forget(st.build.thread.take());
                None
            } else {
                st.build.thread.take()
            }
        };
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}
