//! A derived byte stream (a decompressed layer, a flattened image) read as
//! a file.
//!
//! A producer writes the stream on a worker thread (so the caller's thread
//! spends no CPU on decompression or merging) into a bounded queue of
//! chunks; reads take from the queue. Reading in order and seeking forward
//! cost nothing extra. A read behind the current position is served from
//! the last chunk when it is there, and otherwise restarts the producer
//! from the beginning. With a spool (a private unlinked file in the spill
//! directory), that first restart, or a question for the size, turns
//! spooling on: from then on every chunk taken off the queue is also
//! written there and reads behind are served from it, so that random
//! reads cost one more pass of the producer in all, and a reader that
//! only goes forward writes nothing. The size is known once the stream
//! has been produced to its end (asking for it earlier produces it to
//! the end once).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// Writes the whole stream into its argument; called once per run.
pub type Producer = Arc<dyn Fn(&mut dyn Write) -> io::Result<()> + Send + Sync>;

/// Bytes per queued chunk, and chunks queued ahead of the reader.
const CHUNK: usize = 1 << 20;
const QUEUE: usize = 8;

enum Msg {
    Data(Arc<Vec<u8>>),
    End(io::Result<()>),
}

struct ChunkWriter {
    tx: SyncSender<Msg>,
    buf: Vec<u8>,
    cancel: Arc<AtomicBool>,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "reader gone"));
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(Msg::Data(Arc::new(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "reader gone"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Run {
    /// The process whose thread produces this run (see fork()).
    pid: u32,
    rx: Receiver<Msg>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The chunk being read, and where it starts in the stream.
    chunk: Option<(u64, Arc<Vec<u8>>)>,
    /// Offset of the first byte not yet taken off the queue.
    next: u64,
    ended: Option<Result<()>>,
}

impl Run {
    fn start(producer: &Producer) -> Result<Run> {
        let (tx, rx) = sync_channel(QUEUE);
        let cancel = Arc::new(AtomicBool::new(false));
        let p = producer.clone();
        let c = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("oci-registry-stream".into())
            .spawn(move || {
                let mut w = ChunkWriter {
                    tx: tx.clone(),
                    buf: Vec::with_capacity(CHUNK),
                    cancel: c,
                };
                let res = p(&mut w).and_then(|()| w.flush_chunk());
                let _ = tx.send(Msg::End(res));
            })
            .map_err(|e| Error::new(libc::EAGAIN, format!("cannot start a stream thread: {e}")))?;
        Ok(Run {
            pid: std::process::id(),
            rx,
            cancel,
            thread: Some(thread),
            chunk: None,
            next: 0,
            ended: None,
        })
    }

    /// The next chunk, or None at the end.
    fn advance(&mut self) -> Result<Option<()>> {
        if let Some(e) = &self.ended {
            return e.clone().map(|()| None);
        }
        match self.rx.recv() {
            Ok(Msg::Data(c)) => {
                let start = self.next;
                self.next += c.len() as u64;
                self.chunk = Some((start, c));
                Ok(Some(()))
            }
            Ok(Msg::End(r)) => {
                let r = r.map_err(io_error);
                self.ended = Some(r.clone());
                r.map(|()| None)
            }
            Err(_) => {
                let e = Error::new(libc::EIO, "stream: the producer thread stopped");
                self.ended = Some(Err(e.clone()));
                Err(e)
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            // Made before a fork: its thread lives in the parent only.
            if let Some(t) = self.thread.take() {
                std::mem::forget(t);
            }
            return;
        }
        self.cancel.store(true, Ordering::Relaxed);
        // Drain so that a producer blocked on a full queue sees the end.
        while self.rx.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            // Keep draining until the producer has noticed and ended.
            loop {
                if t.is_finished() {
                    let _ = t.join();
                    break;
                }
                while self.rx.try_recv().is_ok() {}
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

/// Maps a producer's io::Error back to ours, keeping the errno of an
/// error that came from a blob read.
pub fn io_error(e: io::Error) -> Error {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        return inner.clone();
    }
    Error::new(libc::EIO, format!("stream: {e}"))
}

/// Wraps one of our errors for an io::Read/io::Write interface.
pub fn to_io(e: Error) -> io::Error {
    io::Error::other(e)
}

struct State {
    run: Option<Run>,
    size: Option<u64>,
    restarts: u64,
    /// Chunks go to the spool (a reader went back, or asked the size).
    spooling: bool,
    /// Bytes `[0, spooled)` of the stream are in the spool.
    spooled: u64,
}

pub struct StreamView {
    producer: Producer,
    state: Mutex<State>,
    spool: Option<std::fs::File>,
}

impl StreamView {
    pub fn new(producer: Producer) -> StreamView {
        StreamView {
            producer,
            state: Mutex::new(State {
                run: None,
                size: None,
                restarts: 0,
                spooling: false,
                spooled: 0,
            }),
            spool: None,
        }
    }

    /// As `new`, keeping what was produced in a private file in `dir`
    /// (none where it cannot be made: reads behind then restart).
    pub fn spooled(producer: Producer, dir: Option<&std::path::Path>) -> StreamView {
        let mut v = StreamView::new(producer);
        v.spool = dir.and_then(|d| crate::fetch::disk::tmpfile(d).ok());
        v
    }

    /// Takes the run's current chunk into the spool, where it continues
    /// what is there.
    fn spool_chunk(&self, st: &mut State) {
        use std::os::unix::fs::FileExt;
        let (Some(f), Some(run), true) = (&self.spool, &st.run, st.spooling) else {
            return;
        };
        if let Some((start, c)) = &run.chunk {
            if *start == st.spooled && f.write_all_at(c, *start).is_ok() {
                st.spooled += c.len() as u64;
            }
        }
    }

    /// How many times the producer was started over (for the stats).
    pub fn restarts(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restarts
    }

    /// The stream's size: produced once to the end if not yet known (on
    /// the readers' run, into the spool, where there is one).
    pub fn size(&self) -> Result<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = st.size {
            return Ok(s);
        }
        if self.spool.is_some() {
            if !st.run.as_ref().is_some_and(|r| r.pid == std::process::id()) {
                st.run = None;
                st.run = Some(Run::start(&self.producer)?);
            }
            st.spooling = true;
            self.spool_chunk(&mut st);
            while st.run.as_mut().expect("a run").advance()?.is_some() {
                self.spool_chunk(&mut st);
            }
            let size = st.run.as_ref().expect("a run").next;
            st.size = Some(size);
            return Ok(size);
        }
        drop(st);
        let mut run = Run::start(&self.producer)?;
        while run.advance()?.is_some() {}
        let size = run.next;
        self.state.lock().unwrap_or_else(|e| e.into_inner()).size = Some(size);
        Ok(size)
    }

    /// The size if it is already known.
    pub fn known_size(&self) -> Option<u64> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).size
    }

    /// Reads up to `buf.len()` bytes at `off`; fewer only at the end.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.size.is_some_and(|s| off >= s) || buf.is_empty() {
            return Ok(0);
        }
        if off < st.spooled {
            if let Some(f) = &self.spool {
                use std::os::unix::fs::FileExt;
                let n = buf.len().min((st.spooled - off) as usize);
                f.read_exact_at(&mut buf[..n], off)
                    .map_err(|e| Error::new(libc::EIO, format!("stream: the spool: {e}")))?;
                return Ok(n);
            }
        }
        let behind = match &st.run {
            None => true,
            // Left behind by a fork: produce it again in this process.
            Some(r) if r.pid != std::process::id() => true,
            Some(r) => match &r.chunk {
                Some((start, _)) => off < *start,
                None => off < r.next,
            },
        };
        if behind {
            if st.run.is_some() {
                st.restarts += 1;
                st.spooling = true;
            }
            st.run = None;
            st.run = Some(Run::start(&self.producer)?);
        }
        let mut copied = 0;
        let mut at = off;
        let mut size = None;
        self.spool_chunk(&mut st);
        {
            let st = &mut *st;
            while copied < buf.len() {
                let run = st.run.as_mut().expect("a run");
                let have = match &run.chunk {
                    Some((start, c)) if at >= *start && at < start + c.len() as u64 => {
                        let from = (at - start) as usize;
                        let n = (c.len() - from).min(buf.len() - copied);
                        buf[copied..copied + n].copy_from_slice(&c[from..from + n]);
                        copied += n;
                        at += n as u64;
                        true
                    }
                    _ => false,
                };
                if have {
                    continue;
                }
                match run.advance() {
                    Ok(Some(())) => self.spool_chunk(st),
                    Ok(None) => {
                        size = Some(run.next);
                        break;
                    }
                    Err(e) => {
                        if copied > 0 {
                            break;
                        }
                        return Err(e);
                    }
                }
            }
        }
        if size.is_some() {
            st.size = size;
        }
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(i: u64) -> u8 {
        (i.wrapping_mul(2654435761) >> 13) as u8
    }

    fn view(len: u64) -> StreamView {
        StreamView::new(Arc::new(move |w: &mut dyn Write| {
            let mut buf = vec![0u8; 7777];
            let mut i = 0u64;
            while i < len {
                let n = (len - i).min(buf.len() as u64) as usize;
                for (k, b) in buf[..n].iter_mut().enumerate() {
                    *b = pattern(i + k as u64);
                }
                w.write_all(&buf[..n])?;
                i += n as u64;
            }
            Ok(())
        }))
    }

    #[test]
    fn sequential_forward_and_backward() {
        let len = 5 * CHUNK as u64 + 123;
        let v = view(len);
        let mut buf = vec![0u8; 10_000];
        // In order.
        let mut off = 0;
        while off < 3 * CHUNK as u64 {
            let n = v.read_at(&mut buf, off).unwrap();
            assert_eq!(n, buf.len());
            assert!(buf
                .iter()
                .enumerate()
                .all(|(k, b)| *b == pattern(off + k as u64)));
            off += n as u64;
        }
        // Forward jump, then a little back (same chunk), then far back.
        for at in [4 * CHUNK as u64 + 5, 4 * CHUNK as u64 + 1, 17] {
            let n = v.read_at(&mut buf[..100], at).unwrap();
            assert_eq!(n, 100);
            assert!(buf[..100]
                .iter()
                .enumerate()
                .all(|(k, b)| *b == pattern(at + k as u64)));
        }
        assert_eq!(v.restarts(), 1);
        // The end: short, then 0.
        let n = v.read_at(&mut buf, len - 50).unwrap();
        assert_eq!(n, 50);
        assert_eq!(v.read_at(&mut buf, len).unwrap(), 0);
        assert_eq!(v.size().unwrap(), len);
    }

    /// `view(len)` with a spool in the temporary directory.
    fn spooled_view(len: u64) -> StreamView {
        let mut v = view(len);
        v.spool = crate::fetch::disk::tmpfile(&std::env::temp_dir()).ok();
        assert!(v.spool.is_some());
        v
    }

    /// `b` holds the stream's bytes from `at`.
    fn check(b: &[u8], at: u64) -> bool {
        b.iter()
            .enumerate()
            .all(|(k, x)| *x == pattern(at + k as u64))
    }

    #[test]
    fn a_spool_serves_reads_behind() {
        let len = 6 * CHUNK as u64 + 77;
        let v = spooled_view(len);
        let mut buf = vec![0u8; 3000];
        // Forward only: nothing spooled.
        for at in [0, 2 * CHUNK as u64, 4 * CHUNK as u64 + 9] {
            assert_eq!(v.read_at(&mut buf, at).unwrap(), buf.len());
            assert!(check(&buf, at));
        }
        assert_eq!(v.state.lock().unwrap().spooled, 0);
        // The first read behind restarts once; the rest come from the
        // spool, wherever they are.
        for at in [
            5,
            5 * CHUNK as u64 + 3,
            17,
            3 * CHUNK as u64 - 100,
            1,
            len - 10,
        ] {
            let n = v.read_at(&mut buf, at).unwrap();
            assert_eq!(n as u64, (len - at).min(buf.len() as u64));
            assert!(check(&buf[..n], at), "at {at}");
        }
        assert_eq!(v.restarts(), 1);
        assert_eq!(v.size().unwrap(), len);
    }

    #[test]
    fn size_into_the_spool_then_any_read() {
        let len = 4 * CHUNK as u64 + 5;
        let v = spooled_view(len);
        assert_eq!(v.size().unwrap(), len);
        let mut buf = vec![0u8; 100];
        for at in [3 * CHUNK as u64, 0, len - 5] {
            let n = v.read_at(&mut buf, at).unwrap();
            assert_eq!(n as u64, (len - at).min(100));
            assert!(check(&buf[..n], at));
        }
        assert_eq!(v.restarts(), 0);
    }

    #[test]
    fn size_first() {
        let v = view(3 * CHUNK as u64 + 1);
        assert_eq!(v.size().unwrap(), 3 * CHUNK as u64 + 1);
        let mut b = [0u8; 4];
        assert_eq!(v.read_at(&mut b, 3 * CHUNK as u64 + 1).unwrap(), 0);
    }

    #[test]
    fn errors_keep_their_errno() {
        let v = StreamView::new(Arc::new(|w: &mut dyn Write| {
            w.write_all(b"abc")?;
            Err(to_io(Error::new(libc::EBADMSG, "bad digest")))
        }));
        let mut b = [0u8; 16];
        // The bytes before the failure, then the failure.
        assert_eq!(v.read_at(&mut b, 0).unwrap_or(0), 0);
        let e = v.read_at(&mut b, 0).unwrap_err();
        assert_eq!(e.errno(), libc::EBADMSG);
    }

    #[test]
    fn dropping_a_running_view_stops_its_thread() {
        let v = view(64 * CHUNK as u64);
        let mut b = [0u8; 16];
        v.read_at(&mut b, 0).unwrap();
        drop(v);
    }
}
