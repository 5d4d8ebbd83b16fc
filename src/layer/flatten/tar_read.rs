//! The streaming reader of input tars: ustar, GNU and PAX, with PAX
//! records split by their length prefix, global headers, GNU long names
//! and (old-style) sparse files.

use std::io::{self, Read};

pub(super) const BLOCK: usize = 512;
/// Largest value of an octal field of `width` bytes (with its NUL).
pub(super) const fn octal_max(width: usize) -> u64 {
    (1u64 << (3 * (width as u32 - 1))) - 1
}

/// Most bytes of one PAX extended header or GNU long name kept in memory.
pub(super) const MAX_EXTENSION: u64 = 16 << 20;

/// One entry of an input tar: its header block with the extensions in
/// front of it applied.
pub(super) struct RawEntry {
    pub(super) header: [u8; BLOCK],
    /// From PAX `path`, a GNU long name or the header (ustar prefix too).
    pub(super) path: Vec<u8>,
    /// From PAX `linkpath`, a GNU long link name or the header.
    pub(super) link: Vec<u8>,
    /// Content bytes as the entry's reader yields them (a GNU sparse file
    /// expanded).
    pub(super) size: u64,
    /// PAX records in effect: the archive's global ones overridden by the
    /// entry's own; records with an empty value are dropped.
    pub(super) pax: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A streaming reader of one tar archive. `next_entry` moves to the next
/// entry; reading the `TarReader` yields that entry's content.
///
/// PAX records are parsed by their length prefix, so values may hold any
/// byte (binary xattrs often have a newline). Handled: PAX local and
/// global headers, GNU long names and link names, base-256 numbers, GNU
/// (old) sparse files, and headers whose checksum was computed with signed
/// bytes.
pub(super) struct TarReader<R: Read> {
    pub(super) r: io::BufReader<R>,
    pub(super) globals: Vec<(Vec<u8>, Vec<u8>)>,
    /// Stored bytes of the current entry not read yet, and its padding.
    pub(super) left: u64,
    pub(super) pad: u64,
    pub(super) sparse: Option<Sparse>,
    pub(super) ended: bool,
}

/// Where a GNU sparse entry's stored chunks go in the expanded file.
pub(super) struct Sparse {
    /// (offset, length) of the chunks still ahead.
    pub(super) chunks: std::collections::VecDeque<(u64, u64)>,
    pub(super) pos: u64,
    pub(super) real_size: u64,
}

pub(super) fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<R: Read> TarReader<R> {
    pub(super) fn new(r: R) -> Self {
        TarReader {
            r: io::BufReader::with_capacity(128 * 1024, r),
            globals: Vec::new(),
            left: 0,
            pad: 0,
            sparse: None,
            ended: false,
        }
    }

    /// The next entry, or `None` at the end of the archive (a zero block,
    /// or the end of the stream between entries).
    pub(super) fn next_entry(&mut self) -> io::Result<Option<RawEntry>> {
        if self.ended {
            return Ok(None);
        }
        self.skip(self.left + self.pad)?;
        self.left = 0;
        self.pad = 0;
        self.sparse = None;
        let mut local: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut long_name = None;
        let mut long_link = None;
        let mut extensions = false;
        loop {
            let mut block = [0u8; BLOCK];
            if !read_block(&mut self.r, &mut block)? || block.iter().all(|&b| b == 0) {
                if extensions {
                    return Err(invalid("archive ends after an extended header"));
                }
                self.ended = true;
                return Ok(None);
            }
            verify_checksum(&block)?;
            let h = tar::Header::from_byte_slice(&block);
            let stored = blank_is_zero(&h.as_old().size, h.entry_size())?;
            let ty = h.entry_type().as_byte();
            if matches!(ty, b'x' | b'g' | b'L' | b'K') {
                if stored > MAX_EXTENSION {
                    return Err(invalid(format!("extended header of {stored} bytes")));
                }
                let mut data = vec![0u8; stored as usize];
                self.r.read_exact(&mut data)?;
                self.skip(padding(stored))?;
                match ty {
                    b'x' => merge(&mut local, parse_pax(&data)?),
                    b'g' => merge(&mut self.globals, parse_pax(&data)?),
                    b'L' => long_name = Some(until_nul(data)),
                    _ => long_link = Some(until_nul(data)),
                }
                extensions = true;
                continue;
            }

            let mut pax = self.globals.clone();
            merge(&mut pax, local);
            pax.retain(|(_, v)| !v.is_empty());
            let record = |key: &[u8]| pax.iter().find(|(k, _)| k == key).map(|(_, v)| v.to_vec());
            let path = record(b"path")
                .or(long_name)
                .unwrap_or_else(|| h.path_bytes().into_owned());
            let link = record(b"linkpath")
                .or(long_link)
                .or_else(|| h.link_name_bytes().map(|l| l.into_owned()))
                .unwrap_or_default();
            let stored = match record(b"size") {
                Some(v) => pax_number(b"size", &v)?,
                None => stored,
            };
            let size = if ty == b'S' {
                let sparse = self.sparse_map(h, stored)?;
                let real = sparse.real_size;
                self.sparse = Some(sparse);
                real
            } else {
                stored
            };
            self.left = stored;
            self.pad = padding(stored);
            return Ok(Some(RawEntry {
                header: block,
                path,
                link,
                size,
                pax,
            }));
        }
    }

    /// The chunk map of a GNU sparse entry (in its header and the extension
    /// blocks after it), checked against the stored size.
    pub(super) fn sparse_map(&mut self, h: &tar::Header, stored: u64) -> io::Result<Sparse> {
        let gnu = h
            .as_gnu()
            .ok_or_else(|| invalid("sparse entry without a GNU header"))?;
        let mut chunks = std::collections::VecDeque::new();
        let mut add = |s: &tar::GnuSparseHeader| -> io::Result<()> {
            if !s.is_empty() {
                chunks.push_back((s.offset()?, s.length()?));
            }
            Ok(())
        };
        gnu.sparse.iter().try_for_each(&mut add)?;
        let mut extended = gnu.is_extended();
        while extended {
            let mut ext = tar::GnuExtSparseHeader::new();
            if !read_block(&mut self.r, ext.as_mut_bytes())? {
                return Err(invalid("archive ends in a sparse map"));
            }
            ext.sparse.iter().try_for_each(&mut add)?;
            extended = ext.is_extended();
        }
        let real_size = gnu.real_size()?;
        let mut end = 0u64;
        let mut total = 0u64;
        for &(off, len) in &chunks {
            let chunk_end = off
                .checked_add(len)
                .filter(|&e| off >= end && e <= real_size);
            end = chunk_end.ok_or_else(|| invalid("bad sparse map"))?;
            total += len;
        }
        if total != stored {
            return Err(invalid("sparse map does not match the stored size"));
        }
        Ok(Sparse {
            chunks,
            pos: 0,
            real_size,
        })
    }

    pub(super) fn skip(&mut self, n: u64) -> io::Result<()> {
        let got = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
        if got != n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ends inside an entry",
            ));
        }
        Ok(())
    }

    /// Reads the stream to its end.
    pub(super) fn drain(&mut self) -> io::Result<()> {
        io::copy(&mut self.r, &mut io::sink()).map(|_| ())
    }

    /// Up to `buf.len()` stored bytes of the current entry.
    pub(super) fn read_stored(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        let got = self.r.read(&mut buf[..n])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ends inside an entry",
            ));
        }
        self.left -= got as u64;
        Ok(got)
    }
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(sp) = &mut self.sparse else {
            return self.read_stored(buf);
        };
        while let Some(&(_, 0)) = sp.chunks.front() {
            sp.chunks.pop_front();
        }
        let (hole_end, data_len) = match sp.chunks.front() {
            Some(&(off, len)) => (off, len),
            None => (sp.real_size, 0),
        };
        let want = |n: u64| buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        if sp.pos < hole_end {
            let n = want(hole_end - sp.pos);
            buf[..n].fill(0);
            sp.pos += n as u64;
            return Ok(n);
        }
        if data_len == 0 {
            return Ok(0);
        }
        let n = want(data_len);
        let got = self.read_stored(&mut buf[..n])?;
        if let Some(sp) = &mut self.sparse {
            sp.pos += got as u64;
            if let Some(front) = sp.chunks.front_mut() {
                front.0 += got as u64;
                front.1 -= got as u64;
            }
        }
        Ok(got)
    }
}

/// Fills `block` from `r`: `false` when the stream ends before its first
/// byte, an error when it ends inside it.
pub(super) fn read_block(r: &mut impl Read, block: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < block.len() {
        match r.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "archive ends inside a header",
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Accepts the sum of the header's bytes as unsigned (POSIX) or signed
/// (some old tars) values, the checksum field counted as spaces.
pub(super) fn verify_checksum(block: &[u8; BLOCK]) -> io::Result<()> {
    let field = &block[148..156];
    let want = blank_is_zero(field, tar::Header::from_byte_slice(block).cksum())
        .map_err(|_| invalid("bad header checksum field"))?;
    let byte = |i: usize, b: u8| if (148..156).contains(&i) { b' ' } else { b };
    let unsigned: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| i64::from(byte(i, b)))
        .sum();
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| i64::from(byte(i, b) as i8))
        .sum();
    if i64::from(want) == unsigned || i64::from(want) == signed {
        Ok(())
    } else {
        Err(invalid("header checksum mismatch"))
    }
}

/// PAX records `"<len> key=value\n"`, by their length prefix.
pub(super) fn parse_pax(mut data: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bad = || invalid("malformed PAX record");
    let mut out = Vec::new();
    while !data.is_empty() && !data.iter().all(|&b| b == 0) {
        let sp = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let kv = &data[sp + 1..len - 1];
        let eq = kv.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        out.push((kv[..eq].to_vec(), kv[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// `records` over `dst`: a key already there takes the new value.
pub(super) fn merge(dst: &mut Vec<(Vec<u8>, Vec<u8>)>, records: Vec<(Vec<u8>, Vec<u8>)>) {
    for (k, v) in records {
        match dst.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v,
            None => dst.push((k, v)),
        }
    }
}

pub(super) fn until_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|&b| b == 0) {
        v.truncate(i);
    }
    v
}

pub(super) fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A PAX number: decimal, for times with an optional fraction (dropped)
/// and sign (a time before 1970 becomes 0).
pub(super) fn pax_number(key: &[u8], value: &[u8]) -> io::Result<u64> {
    let int = value.split(|&b| b == b'.').next().unwrap_or_default();
    if int.first() == Some(&b'-') && int[1..].iter().all(u8::is_ascii_digit) {
        return Ok(0);
    }
    std::str::from_utf8(int)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "PAX record {}={} is not a number",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(value)
                ),
            )
        })
}

/// A numeric header field that is all NULs or spaces reads as 0, as in
/// Go's archive/tar; anything else that does not parse is an error.
pub(super) fn blank_is_zero<T: Default>(field: &[u8], parsed: io::Result<T>) -> io::Result<T> {
    match parsed {
        Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(T::default()),
        other => other,
    }
}
