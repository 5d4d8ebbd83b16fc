//! Reading one blob: a sequential stream with a bounded readahead buffer
//! (a short forward jump skips within it, a far one starts a new ranged
//! stream), and one-off Range requests for random reads.
//!
//! A stream that starts at byte 0 is hashed as it arrives (on the I/O
//! thread); the read that reaches the end of the blob waits for the
//! transfer to finish and fails with EBADMSG when the digest or the size
//! is wrong, instead of reporting EOF.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::registry::{BlobDesc, Registry};
use crate::transport::{Request, Transfer};

/// Readahead buffer of a sequential stream.
pub const DEFAULT_BUFFER: usize = 8 << 20;
/// A forward jump up to this far is skipped within the open stream.
const SKIP_WINDOW: u64 = 2 << 20;

struct Seq {
    stream: Option<Transfer>,
    /// Offset of the next byte the stream yields.
    pos: u64,
    /// End of the last read served (to spot sequential preads).
    last_end: u64,
}

pub struct Blob {
    registry: Arc<Registry>,
    desc: BlobDesc,
    url: String,
    buffer: usize,
    seq: Mutex<Seq>,
}

impl Blob {
    pub fn new(registry: Arc<Registry>, desc: BlobDesc) -> Blob {
        let url = registry.blob_url(&desc.digest);
        Blob {
            registry,
            desc,
            url,
            buffer: DEFAULT_BUFFER,
            seq: Mutex::new(Seq {
                stream: None,
                pos: 0,
                last_end: u64::MAX,
            }),
        }
    }

    pub fn desc(&self) -> &BlobDesc {
        &self.desc
    }

    pub fn size(&self) -> u64 {
        self.desc.size
    }

    fn request(&self, start: u64, end: Option<u64>) -> Request {
        let mut req = Request::get("read blob", self.url.clone());
        req.follow = true;
        if start > 0 || end.is_some() {
            req.range = Some((start, end));
        }
        req
    }

    fn open_stream(&self, start: u64) -> Result<Transfer> {
        let mut req = self.request(start, None);
        req.buffer = self.buffer;
        req.expect_len = Some(self.desc.size - start);
        if start == 0 {
            req.verify = Some(self.desc.digest.clone());
        }
        let (mut t, status, _) = self.registry.start(&req)?;
        if status != 200 && status != 206 {
            return Err(t.status_error(status));
        }
        Ok(t)
    }

    /// Reads up to `buf.len()` bytes at `off`; fewer only at the end of
    /// the blob. `sequential` says the caller reads on from here (read(2)
    /// style), so a stream is worth starting.
    pub fn read_at(&self, buf: &mut [u8], off: u64, sequential: bool) -> Result<usize> {
        let size = self.desc.size;
        if off >= size || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(size - off) as usize;
        let buf = &mut buf[..len];
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        let near = seq.stream.is_some() && off >= seq.pos && off - seq.pos <= SKIP_WINDOW;
        if !near {
            if sequential || off == seq.last_end || (off == 0 && seq.stream.is_none()) {
                seq.stream = None;
                seq.stream = Some(self.open_stream(off)?);
                seq.pos = off;
            } else {
                drop(seq);
                return self.read_range(buf, off);
            }
        }
        let res = self.read_stream(&mut seq, buf, off);
        if res.is_err() {
            seq.stream = None;
        }
        res
    }

    fn read_stream(&self, seq: &mut Seq, buf: &mut [u8], off: u64) -> Result<usize> {
        let size = self.desc.size;
        let Seq { stream, pos, .. } = seq;
        let t = stream.as_mut().expect("stream is open");
        if off > *pos {
            let skipped = t.skip(off - *pos)?;
            *pos += skipped;
            if *pos != off {
                return Err(self.short(*pos));
            }
        }
        let mut got = 0;
        while got < buf.len() {
            let n = t.read(&mut buf[got..])?;
            if n == 0 {
                return Err(self.short(*pos));
            }
            got += n;
            *pos += n as u64;
        }
        if *pos == size {
            // The end: the transfer's verdict (length, digest) decides.
            t.finish()?;
            *stream = None;
        }
        seq.last_end = off + got as u64;
        Ok(got)
    }

    fn short(&self, at: u64) -> Error {
        Error::new(
            libc::EIO,
            format!(
                "read blob {}: the body ended at byte {at} of {}",
                self.desc.digest, self.desc.size
            ),
        )
    }

    /// One Range request for exactly `buf`.
    fn read_range(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        let end = off + buf.len() as u64 - 1;
        let mut req = self.request(off, Some(end));
        req.buffer = buf.len().max(64 * 1024);
        let (mut t, status, _) = self.registry.start(&req)?;
        if status != 200 && status != 206 {
            return Err(t.status_error(status));
        }
        let mut got = 0;
        while got < buf.len() {
            let n = t.read(&mut buf[got..])?;
            if n == 0 {
                return Err(self.short(off + got as u64));
            }
            got += n;
        }
        if status == 206 {
            // Let it end by itself, so that the connection is kept.
            t.finish()?;
        }
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        seq.last_end = off + got as u64;
        Ok(got)
    }
}
