//! Random access into a gzip stream: checkpoints in the AWS SOCI zinfo
//! layout that erofs-utils (`mkfs.erofs --gzinfo`, `lib/gzran.c`) writes
//! and reads, made on a sequential pass and used to inflate one span
//! from the middle of the stream.
//!
//! A checkpoint is a place where a deflate block ends (or a gzip member's
//! deflate data starts): the compressed offset `input` of the first byte
//! not wholly consumed, the `bits` (0-7) of the byte before it still to be
//! decoded, the uncompressed offset `output`, and the 32 KiB of output
//! before it (the window later blocks may refer back to). A span is the
//! output between two checkpoints. The zinfo file is a 12-byte header
//! (`le32 have`, `le64 span`) and `have` entries of `le64 in`, `le64 out`,
//! `u8 bits` and the window; version 1 leaves out the first checkpoint
//! (10 bytes into the stream, output 0).
//!
//! The inflating is zlib's own (the system libz, as libcurl and
//! erofs-utils link it): raw deflate resumed with `inflatePrime` and
//! `inflateSetDictionary`, block ends found with `Z_BLOCK`.

use std::io::Read;
use std::sync::Arc;

use libz_sys as z;

use crate::error::{Error, Result};

/// Bytes of history a deflate stream may refer back to.
pub const WINDOW: usize = 32 * 1024;
/// Output between checkpoints (erofs-utils' and SOCI's span).
pub const DEFAULT_SPAN: u64 = 4 << 20;
const HEADER_LEN: usize = 12;
/// One zinfo entry: in, out, bits, window.
pub const ENTRY_LEN: usize = 17 + WINDOW;
/// A zinfo bigger than this is refused (a 2 TiB layer at 4 MiB spans).
const MAX_ENTRIES: u64 = 1 << 19;

#[derive(Clone)]
pub struct Checkpoint {
    /// Compressed offset of the first byte not wholly consumed.
    pub input: u64,
    /// Bits of the byte at `input - 1` not yet decoded (0 to 7).
    pub bits: u8,
    /// Uncompressed offset.
    pub output: u64,
    /// The `WINDOW` bytes of output before `output` (zeros before the start).
    pub window: Arc<[u8]>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cp(in {}:{}, out {})",
            self.input, self.bits, self.output
        )
    }
}

impl Checkpoint {
    /// Where inflating from here starts reading.
    pub fn start(&self) -> u64 {
        self.input - u64::from(self.bits != 0)
    }
}

/// A gzip stream's checkpoints.
#[derive(Clone, Debug)]
pub struct Zinfo {
    pub span: u64,
    pub points: Vec<Checkpoint>,
}

fn zinfo_err(what: impl std::fmt::Display) -> Error {
    Error::new(libc::EINVAL, format!("zinfo: {what}"))
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))
}

impl Zinfo {
    /// Reads a zinfo file (version 1 or 2, told apart by size as
    /// erofs-utils does) and checks that its checkpoints are in order.
    pub fn parse(data: &[u8]) -> Result<Zinfo> {
        if data.len() < HEADER_LEN {
            return Err(zinfo_err(format!(
                "{} bytes is shorter than its header",
                data.len()
            )));
        }
        let have = u64::from(u32::from_le_bytes(data[..4].try_into().unwrap_or([0; 4])));
        let span = le64(&data[4..]);
        if have == 0 || have > MAX_ENTRIES {
            return Err(zinfo_err(format!("{have} checkpoints")));
        }
        let v2 = HEADER_LEN as u64 + have * ENTRY_LEN as u64;
        let (mut points, stored) = if data.len() as u64 == v2 {
            (Vec::new(), have)
        } else if data.len() as u64 == v2 - ENTRY_LEN as u64 {
            // Version 1: the first checkpoint, after a 10-byte gzip
            // header, is implied.
            let first = Checkpoint {
                input: 10,
                bits: 0,
                output: 0,
                window: Arc::from(vec![0u8; WINDOW]),
            };
            (vec![first], have - 1)
        } else {
            return Err(zinfo_err(format!(
                "{} bytes fits neither version 1 nor 2 with {have} checkpoints",
                data.len()
            )));
        };
        for e in data[HEADER_LEN..]
            .chunks_exact(ENTRY_LEN)
            .take(stored as usize)
        {
            points.push(Checkpoint {
                input: le64(e),
                output: le64(&e[8..]),
                bits: e[16],
                window: Arc::from(&e[17..]),
            });
        }
        let z = Zinfo { span, points };
        z.check()?;
        Ok(z)
    }

    /// The checks any zinfo must pass before a byte is inflated with it.
    fn check(&self) -> Result<()> {
        let first = &self.points[0];
        if first.output != 0 {
            return Err(zinfo_err("the first checkpoint is not at output 0"));
        }
        for (i, p) in self.points.iter().enumerate() {
            if p.bits > 7 || (p.bits != 0 && p.input == 0) {
                return Err(zinfo_err(format!(
                    "checkpoint {i}: bad bit count {}",
                    p.bits
                )));
            }
            if i > 0 {
                let q = &self.points[i - 1];
                if p.output <= q.output || p.input <= q.input {
                    return Err(zinfo_err(format!("checkpoint {i} is not after {}", i - 1)));
                }
            }
        }
        Ok(())
    }

    /// The version 2 file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.points.len() * ENTRY_LEN);
        v.extend_from_slice(&(self.points.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.span.to_le_bytes());
        for p in &self.points {
            v.extend_from_slice(&p.input.to_le_bytes());
            v.extend_from_slice(&p.output.to_le_bytes());
            v.push(p.bits);
            v.extend_from_slice(&p.window);
        }
        v
    }
}

/// zlib's allocator hooks (z_stream's are plain function pointers here).
unsafe extern "C" fn zalloc(_: z::voidpf, items: z::uInt, size: z::uInt) -> z::voidpf {
    libc::calloc(items as usize, size as usize)
}

unsafe extern "C" fn zfree(_: z::voidpf, p: z::voidpf) {
    libc::free(p)
}

/// One raw-deflate inflate state. Boxed: zlib keeps a pointer back to it.
struct Inflate {
    strm: Box<z::z_stream>,
}

struct Step {
    ret: i32,
    consumed: usize,
    produced: usize,
}

// The stream is only ever used by the thread that owns it.
unsafe impl Send for Inflate {}

impl Inflate {
    fn raw() -> Result<Inflate> {
        let mut strm = Box::new(z::z_stream {
            next_in: std::ptr::null_mut(),
            avail_in: 0,
            total_in: 0,
            next_out: std::ptr::null_mut(),
            avail_out: 0,
            total_out: 0,
            msg: std::ptr::null_mut(),
            state: std::ptr::null_mut(),
            zalloc,
            zfree,
            opaque: std::ptr::null_mut(),
            data_type: 0,
            adler: 0,
            reserved: 0,
        });
        let ret = unsafe {
            z::inflateInit2_(
                &mut *strm,
                -15,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        if ret != z::Z_OK {
            return Err(Error::new(
                libc::ENOMEM,
                "gzip: cannot start zlib's inflate",
            ));
        }
        Ok(Inflate { strm })
    }

    fn reset(&mut self) {
        unsafe { z::inflateReset(&mut *self.strm) };
    }

    /// Resumes at a checkpoint: its partial byte and its window.
    fn resume(&mut self, cp: &Checkpoint, first_byte: u8) -> Result<()> {
        let b = cp.bits as i32;
        if b != 0
            && unsafe { z::inflatePrime(&mut *self.strm, b, (first_byte >> (8 - b)) as i32) }
                != z::Z_OK
        {
            return Err(zinfo_err("inflatePrime refused the checkpoint"));
        }
        let r = unsafe {
            z::inflateSetDictionary(&mut *self.strm, cp.window.as_ptr(), cp.window.len() as u32)
        };
        if r != z::Z_OK {
            return Err(zinfo_err("inflateSetDictionary refused the window"));
        }
        Ok(())
    }

    fn run(&mut self, input: &[u8], out: &mut [u8], flush: i32) -> Step {
        // SAFETY: `out` is `out.len()` writable bytes.
        unsafe { self.run_raw(input, out.as_mut_ptr(), out.len(), flush) }
    }

    /// As `run`, into the spare capacity of `out` (`room` bytes, reserved
    /// first), which grows by what inflate wrote. Nothing is zero-filled
    /// first: a span is inflated in many calls (one per deflate block,
    /// with Z_BLOCK), and filling the rest of a 4 MiB span before each
    /// cost more than inflating it.
    fn run_into(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize, flush: i32) -> Step {
        out.reserve(room);
        let len = out.len();
        // SAFETY: `reserve` left at least `room` bytes of capacity past
        // `len`, and inflate writes only within the room it is given.
        let s = unsafe { self.run_raw(input, out.as_mut_ptr().add(len), room, flush) };
        // SAFETY: inflate wrote the `produced` bytes from `len` on.
        unsafe { out.set_len(len + s.produced) };
        s
    }

    /// # Safety
    /// `out` must be valid for writes of `room` bytes.
    unsafe fn run_raw(&mut self, input: &[u8], out: *mut u8, room: usize, flush: i32) -> Step {
        let ai = input.len().min(u32::MAX as usize);
        let ao = room.min(u32::MAX as usize);
        self.strm.next_in = input.as_ptr() as *mut u8;
        self.strm.avail_in = ai as u32;
        self.strm.next_out = out;
        self.strm.avail_out = ao as u32;
        let ret = unsafe { z::inflate(&mut *self.strm, flush) };
        let s = Step {
            ret,
            consumed: ai - self.strm.avail_in as usize,
            produced: ao - self.strm.avail_out as usize,
        };
        self.strm.next_in = std::ptr::null_mut();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        s
    }

    /// Unused bits in the last byte taken, and whether inflate stopped
    /// at a block boundary that is not the member's last block.
    fn at_block_end(&self) -> (u8, bool) {
        let t = self.strm.data_type;
        ((t & 7) as u8, t & 128 != 0 && t & 64 == 0)
    }
}

impl Drop for Inflate {
    fn drop(&mut self) {
        unsafe { z::inflateEnd(&mut *self.strm) };
    }
}

fn data_err(what: impl std::fmt::Display) -> Error {
    Error::new(libc::EIO, format!("gzip: {what}"))
}

/// The length of the gzip member header at the front of `b`: Ok(None)
/// when `b` ends inside it, an error when `b` is not a gzip header.
pub fn header_len(b: &[u8]) -> Result<Option<usize>> {
    if b.len() < 10 {
        return if b.iter().zip([0x1f, 0x8b, 8]).all(|(x, y)| *x == y) {
            Ok(None)
        } else {
            Err(data_err("not a gzip member header"))
        };
    }
    if b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 || b[3] & 0xe0 != 0 {
        return Err(data_err("not a gzip member header"));
    }
    let flags = b[3];
    let mut n = 10;
    if flags & 4 != 0 {
        if b.len() < n + 2 {
            return Ok(None);
        }
        n += 2 + u16::from_le_bytes([b[n], b[n + 1]]) as usize;
    }
    for bit in [8, 16] {
        if flags & bit != 0 {
            match b.get(n..).and_then(|r| r.iter().position(|c| *c == 0)) {
                Some(z) => n += z + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 2 != 0 {
        n += 2;
    }
    Ok((b.len() >= n).then_some(n))
}

/// The last `WINDOW` bytes of `prev` followed by `data`.
fn next_window(prev: &[u8], data: &[u8]) -> Arc<[u8]> {
    if data.len() >= WINDOW {
        return Arc::from(&data[data.len() - WINDOW..]);
    }
    let mut w = Vec::with_capacity(WINDOW);
    w.extend_from_slice(&prev[data.len()..]);
    w.extend_from_slice(data);
    Arc::from(w)
}

/// One span inflated from its checkpoint.
pub struct Span {
    pub data: Vec<u8>,
    /// How many of the span's last bytes were found equal to the end of
    /// the next checkpoint's window: `min(WINDOW, tail)`, where `tail` is
    /// the output since the last gzip member started in the span (0 when
    /// the span ends with its member: nothing to compare).
    pub window_checked: usize,
}

/// Inflates the span that starts at `cp`: up to `next` (whose position,
/// length and window must match what inflating finds), or, with no
/// `next`, to the end of the stream. `src` holds the compressed bytes
/// from `cp.start()`: up to `next.input` (one byte more where there is
/// one), or to the end of the blob.
pub fn inflate_span(src: &[u8], cp: &Checkpoint, next: Option<&Checkpoint>) -> Result<Span> {
    let base = cp.start();
    let mismatch = |what: String| {
        Error::new(
            libc::EBADMSG,
            format!(
                "gzip index does not match the blob (span at output {}): {what}",
                cp.output
            ),
        )
    };
    let mut inf = Inflate::raw()?;
    let mut pos = 0usize;
    if cp.bits != 0 {
        let b = *src
            .first()
            .ok_or_else(|| mismatch("no compressed bytes".into()))?;
        inf.resume(cp, b)?;
        pos = 1;
    } else {
        inf.resume(cp, 0)?;
    }
    let want = next.map(|n| (n.output - cp.output) as usize);
    let mut out: Vec<u8> = Vec::with_capacity(want.unwrap_or(DEFAULT_SPAN as usize));
    let mut member_start = 0usize;
    // Skips a member's trailer and the next member's header; false at
    // the end of the input.
    let next_member = |pos: &mut usize, inf: &mut Inflate| -> Result<bool> {
        if src.len() < *pos + 8 {
            return Err(mismatch("the stream ends inside a gzip trailer".into()));
        }
        *pos += 8;
        if *pos == src.len() {
            return Ok(false);
        }
        match header_len(&src[*pos..]).map_err(|e| mismatch(e.message().to_string()))? {
            Some(h) => *pos += h,
            None => return Err(mismatch("the stream ends inside a gzip header".into())),
        }
        inf.reset();
        Ok(true)
    };
    loop {
        let room = match want {
            Some(w) if out.len() == w => break,
            Some(w) => w - out.len(),
            None => 1 << 20,
        };
        // Z_BLOCK: never decode past a block end into the next block's
        // header, so that the position at the last byte is a block end.
        let s = inf.run_into(&src[pos..], &mut out, room, z::Z_BLOCK);
        pos += s.consumed;
        match s.ret {
            z::Z_OK | z::Z_BUF_ERROR if s.consumed + s.produced > 0 => {}
            z::Z_OK | z::Z_BUF_ERROR => {
                return Err(mismatch(format!(
                    "the compressed bytes end after {} of {} bytes of output",
                    out.len(),
                    want.map_or("?".to_string(), |w| w.to_string())
                )))
            }
            z::Z_STREAM_END => {
                if want == Some(out.len()) {
                    // The span ends with its member: the next checkpoint
                    // is past the next member's header.
                    let n = next.expect("want implies next");
                    if !next_member(&mut pos, &mut inf)?
                        || base + pos as u64 != n.input
                        || n.bits != 0
                    {
                        return Err(mismatch(format!(
                            "the member ends at {}, not at the next checkpoint",
                            base + pos as u64
                        )));
                    }
                    return Ok(Span {
                        data: out,
                        window_checked: 0,
                    });
                }
                if !next_member(&mut pos, &mut inf)? {
                    if want.is_some() {
                        return Err(mismatch(
                            "the stream ends before the next checkpoint".into(),
                        ));
                    }
                    return Ok(Span {
                        data: out,
                        window_checked: 0,
                    });
                }
                member_start = out.len();
            }
            r => return Err(mismatch(format!("zlib error {r}"))),
        }
    }
    let n = next.expect("the loop breaks only with a next checkpoint");
    // The next checkpoint must be a block end exactly here. Where the
    // last call stopped inside the block (its output full before the
    // end-of-block code), one more decodes that code and stops; a call
    // at a block end would go on into the next block (zlib skips the
    // Z_BLOCK stop on entry), so none is made there.
    let (mut bits, mut at_end) = inf.at_block_end();
    let mut ret = z::Z_OK;
    if !at_end {
        let mut spare = [0u8; 1];
        let s = inf.run(&src[pos..], &mut spare, z::Z_BLOCK);
        pos += s.consumed;
        if s.produced != 0 {
            return Err(mismatch(
                "the span is longer than its checkpoints say".into(),
            ));
        }
        (bits, at_end) = inf.at_block_end();
        ret = s.ret;
    }
    let here_ok = if ret == z::Z_STREAM_END {
        next_member(&mut pos, &mut inf)? && base + pos as u64 == n.input && n.bits == 0
    } else {
        at_end && base + pos as u64 == n.input && bits == n.bits
    };
    if !here_ok {
        return Err(mismatch(format!(
            "no block ends at the next checkpoint (in {}:{})",
            n.input, n.bits
        )));
    }
    let t = (out.len() - member_start).min(WINDOW);
    if ret != z::Z_STREAM_END && out[out.len() - t..] != n.window[WINDOW - t..] {
        return Err(mismatch(
            "the next checkpoint's window is not the output before it".into(),
        ));
    }
    let checked = if ret == z::Z_STREAM_END { 0 } else { t };
    Ok(Span {
        data: out,
        window_checked: checked,
    })
}

/// The sequential pass: inflates a whole gzip stream (every member, each
/// checked against its CRC-32 and length) and places a checkpoint after
/// each member's header and at the first block end more than `span`
/// bytes of output after the last one: the places erofs-utils' builder
/// chooses, so that the same blob gives the same checkpoints.
pub struct Builder<R: Read> {
    r: R,
    inf: Inflate,
    buf: Vec<u8>,
    /// buf[lo..hi] is read but not yet consumed.
    lo: usize,
    hi: usize,
    /// Compressed bytes consumed, and output produced, so far.
    totin: u64,
    totout: u64,
    span: u64,
    last: Checkpoint,
    window: Arc<[u8]>,
    crc: u32,
    member_len: u32,
    ended: bool,
}

/// What `Builder::next_span` made: the output since the last checkpoint,
/// and the checkpoint that ends it (None at the end of the stream).
pub struct Made {
    pub data: Vec<u8>,
    pub next: Option<Checkpoint>,
}

impl<R: Read> Builder<R> {
    /// Reads the first member's header; the first checkpoint is `first()`.
    pub fn new(r: R, span: u64) -> Result<Builder<R>> {
        let mut b = Builder {
            r,
            inf: Inflate::raw()?,
            buf: vec![0; 256 << 10],
            lo: 0,
            hi: 0,
            totin: 0,
            totout: 0,
            span,
            last: Checkpoint {
                input: 0,
                bits: 0,
                output: 0,
                window: Arc::from(vec![0u8; WINDOW]),
            },
            window: Arc::from(vec![0u8; WINDOW]),
            crc: 0,
            member_len: 0,
            ended: false,
        };
        if !b.header()? {
            return Err(data_err("the stream is empty"));
        }
        b.last.input = b.totin;
        Ok(b)
    }

    pub fn first(&self) -> Checkpoint {
        self.last.clone()
    }

    /// Reads more input when none is left; false at its end.
    fn fill(&mut self) -> Result<bool> {
        if self.lo < self.hi {
            return Ok(true);
        }
        let n = loop {
            match self.r.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(crate::layer::stream::io_error(e)),
            }
        };
        self.lo = 0;
        self.hi = n;
        Ok(n > 0)
    }

    /// Consumes a member header; false at the end of the input.
    fn header(&mut self) -> Result<bool> {
        if !self.fill()? {
            return Ok(false);
        }
        loop {
            if let Some(h) = header_len(&self.buf[self.lo..self.hi])? {
                self.lo += h;
                self.totin += h as u64;
                self.crc = 0;
                self.member_len = 0;
                self.inf.reset();
                return Ok(true);
            }
            // A header split across reads (rare: long names): keep it.
            let keep = self.hi - self.lo;
            if keep >= self.buf.len() / 2 {
                return Err(data_err("a gzip header longer than 128 KiB"));
            }
            self.buf.copy_within(self.lo..self.hi, 0);
            let n = self
                .r
                .read(&mut self.buf[keep..])
                .map_err(crate::layer::stream::io_error)?;
            if n == 0 {
                return Err(data_err("the stream ends inside a gzip header"));
            }
            self.lo = 0;
            self.hi = keep + n;
        }
    }

    /// Reads the 8-byte trailer and checks it.
    fn trailer(&mut self) -> Result<()> {
        let mut t = [0u8; 8];
        for b in t.iter_mut() {
            if !self.fill()? {
                return Err(data_err("the stream ends inside a gzip trailer"));
            }
            *b = self.buf[self.lo];
            self.lo += 1;
        }
        self.totin += 8;
        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let len = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        if crc != self.crc || len != self.member_len {
            return Err(Error::new(
                libc::EBADMSG,
                "gzip: a member's CRC-32 or length does not match its data",
            ));
        }
        Ok(())
    }

    fn checkpoint(&mut self, bits: u8, span: &[u8]) -> Checkpoint {
        self.window = next_window(&self.window, span);
        let cp = Checkpoint {
            input: self.totin,
            bits,
            output: self.totout,
            window: self.window.clone(),
        };
        self.last = cp.clone();
        cp
    }

    /// Inflates on to the next checkpoint (or the end); None once the
    /// end has been returned.
    pub fn next_span(&mut self) -> Result<Option<Made>> {
        if self.ended {
            return Ok(None);
        }
        let mut data: Vec<u8> = Vec::with_capacity(self.span as usize + (64 << 10));
        loop {
            if !self.fill()? {
                return Err(data_err("the stream ends inside a deflate stream"));
            }
            let len = data.len();
            let room = (64 << 10).max(data.capacity() - len);
            let s = self
                .inf
                .run_into(&self.buf[self.lo..self.hi], &mut data, room, z::Z_BLOCK);
            self.lo += s.consumed;
            self.totin += s.consumed as u64;
            self.totout += s.produced as u64;
            self.member_len = self.member_len.wrapping_add(s.produced as u32);
            self.crc = zlib_rs::crc32::crc32(self.crc, &data[len..]);
            match s.ret {
                z::Z_OK | z::Z_BUF_ERROR => {
                    let (bits, at_end) = self.inf.at_block_end();
                    if at_end && self.totout - self.last.output > self.span {
                        let cp = self.checkpoint(bits, &data);
                        return Ok(Some(Made {
                            data,
                            next: Some(cp),
                        }));
                    }
                }
                z::Z_STREAM_END => {
                    self.trailer()?;
                    if !self.header()? {
                        self.ended = true;
                        self.window = next_window(&self.window, &data);
                        return Ok(Some(Made { data, next: None }));
                    }
                    let cp = self.checkpoint(0, &data);
                    return Ok(Some(Made {
                        data,
                        next: Some(cp),
                    }));
                }
                z::Z_NEED_DICT | z::Z_DATA_ERROR => {
                    return Err(Error::new(libc::EBADMSG, "gzip: corrupt deflate data"))
                }
                r => return Err(data_err(format!("zlib error {r}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if i % 5 == 0 {
                    (x >> 24) as u8
                } else {
                    b'a' + ((i / 3) % 17) as u8
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Every checkpoint and span of `gz`, from the sequential pass.
    fn build(gz: &[u8], span: u64) -> (Zinfo, Vec<Vec<u8>>) {
        let mut b = Builder::new(gz, span).unwrap();
        let mut points = vec![b.first()];
        let mut spans = Vec::new();
        while let Some(m) = b.next_span().unwrap() {
            spans.push(m.data);
            points.extend(m.next);
        }
        (Zinfo { span, points }, spans)
    }

    fn span_src<'a>(gz: &'a [u8], z: &Zinfo, i: usize) -> &'a [u8] {
        let from = z.points[i].start() as usize;
        let to = match z.points.get(i + 1) {
            Some(n) => (n.input as usize + 1).min(gz.len()),
            None => gz.len(),
        };
        &gz[from..to]
    }

    #[test]
    fn spans_inflate_from_their_checkpoints() {
        let data = sample(3 << 20, 7);
        for (level, span) in [(6, 256 << 10), (4, 100_000), (9, 1 << 20)] {
            let gz = gzip(&data, level);
            let (z, spans) = build(&gz, span);
            assert!(z.points.len() > 2, "level {level}: {:?}", z.points);
            assert_eq!(spans.concat(), data);
            // Round trip through the file format.
            let z = Zinfo::parse(&z.to_bytes()).unwrap();
            for (i, want) in spans.iter().enumerate() {
                let s =
                    inflate_span(span_src(&gz, &z, i), &z.points[i], z.points.get(i + 1)).unwrap();
                assert_eq!(&s.data, want, "level {level} span {i}");
                if i + 1 < z.points.len() {
                    assert_eq!(s.window_checked, WINDOW);
                }
            }
        }
    }

    #[test]
    fn members_get_checkpoints_and_crc_is_checked() {
        let (a, b, c) = (sample(300_000, 1), sample(10, 2), sample(200_000, 3));
        let mut gz = gzip(&a, 6);
        gz.extend(gzip(&b, 6));
        gz.extend(gzip(&c, 6));
        let (z, spans) = build(&gz, 1 << 30);
        let outs: Vec<u64> = z.points.iter().map(|p| p.output).collect();
        assert_eq!(outs, vec![0, 300_000, 300_010]);
        assert_eq!(spans.concat(), [a, b, c].concat());
        for (i, want) in spans.iter().enumerate() {
            let s = inflate_span(span_src(&gz, &z, i), &z.points[i], z.points.get(i + 1)).unwrap();
            assert_eq!(&s.data, want);
        }
        // The last span without its checkpoints in between crosses members.
        let s = inflate_span(&gz[z.points[0].start() as usize..], &z.points[0], None).unwrap();
        assert_eq!(s.data, spans.concat());
        // A flipped CRC byte fails the pass.
        let mut bad = gzip(&sample(1000, 4), 6);
        let n = bad.len();
        bad[n - 7] ^= 1;
        let mut bld = Builder::new(&bad[..], 1 << 20).unwrap();
        assert_eq!(bld.next_span().err().unwrap().errno(), libc::EBADMSG);
    }

    #[test]
    fn a_wrong_index_is_an_error_never_wrong_bytes() {
        let data = sample(2 << 20, 9);
        let gz = gzip(&data, 6);
        let (z, _) = build(&gz, 256 << 10);
        let other = gzip(&sample(2 << 20, 10), 6);
        let (zo, _) = build(&other, 256 << 10);
        // Another blob's checkpoints.
        for i in 1..zo.points.len().min(z.points.len()) - 1 {
            let r = inflate_span(span_src(&gz, &zo, i), &zo.points[i], zo.points.get(i + 1));
            assert!(r.is_err(), "span {i}");
        }
        // A moved offset, bit count or output offset.
        for tweak in 0..3 {
            let mut n = z.points[2].clone();
            match tweak {
                0 => n.input += 1,
                1 => n.bits = (n.bits + 1) % 8,
                _ => n.output += 1,
            }
            let r = inflate_span(span_src(&gz, &z, 1), &z.points[1], Some(&n));
            assert_eq!(r.err().unwrap().errno(), libc::EBADMSG, "tweak {tweak}");
        }
        // A changed window byte of the next checkpoint.
        let mut n = z.points[2].clone();
        let mut w = n.window.to_vec();
        w[WINDOW - 100] ^= 1;
        n.window = Arc::from(w);
        assert!(inflate_span(span_src(&gz, &z, 1), &z.points[1], Some(&n)).is_err());
    }

    #[test]
    fn zinfo_files() {
        let gz = gzip(&sample(1 << 20, 5), 6);
        let (z, _) = build(&gz, 128 << 10);
        let v2 = z.to_bytes();
        assert_eq!(v2.len(), 12 + z.points.len() * ENTRY_LEN);
        // Version 1 drops the first entry and keeps the count.
        let mut v1 = v2[..12].to_vec();
        v1.extend_from_slice(&v2[12 + ENTRY_LEN..]);
        let z1 = Zinfo::parse(&v1).unwrap();
        assert_eq!(z1.points.len(), z.points.len());
        assert_eq!((z1.points[0].input, z1.points[0].output), (10, 0));
        for bad in [&v2[..11], &v2[..v2.len() - 1], &[0u8; 12][..]] {
            assert_eq!(Zinfo::parse(bad).unwrap_err().errno(), libc::EINVAL);
        }
        // Out of order.
        let mut swapped = z.clone();
        swapped.points.swap(1, 2);
        assert!(Zinfo::parse(&swapped.to_bytes()).is_err());
    }

    #[test]
    fn headers() {
        let gz = gzip(b"x", 6);
        assert_eq!(header_len(&gz).unwrap(), Some(10));
        assert_eq!(header_len(&gz[..5]).unwrap(), None);
        assert!(header_len(b"PK\x03\x04zip").is_err());
        // FEXTRA, FNAME, FCOMMENT and FHCRC.
        let h = b"\x1f\x8b\x08\x1e\0\0\0\0\0\x03\x02\0ab" as &[u8];
        let mut full = h.to_vec();
        full.extend(b"name\0comment\0\x12\x34rest");
        assert_eq!(header_len(&full).unwrap(), Some(full.len() - 4));
        assert_eq!(header_len(&full[..16]).unwrap(), None);
    }
}
