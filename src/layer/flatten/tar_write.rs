//! The output tar: POSIX ustar headers, with a PAX extended header for
//! what does not fit.

use std::io::{self, BufWriter, Read, Write};

use super::copy_exact;
use super::entry::{Kind, Meta};
use super::path::split;
use super::tar_read::{octal_max, padding, BLOCK};

/// The output tar: ustar headers plus PAX extended headers when needed.
pub(super) struct TarWriter<W: Write> {
    pub(super) w: BufWriter<W>,
    pub(super) entries: u64,
    pub(super) data_bytes: u64,
}

impl<W: Write> TarWriter<W> {
    pub(super) fn new(w: W) -> Self {
        TarWriter {
            w: BufWriter::with_capacity(256 * 1024, w),
            entries: 0,
            data_bytes: 0,
        }
    }

    /// Writes one entry at normalised `path`: `hardlink` is the target of a
    /// hard link (a symlink's target comes from `meta`), `data` the
    /// content of a regular file (`meta.size` bytes).
    pub(super) fn entry(
        &mut self,
        path: &[u8],
        meta: &Meta,
        hardlink: &[u8],
        data: Option<&mut dyn Read>,
    ) -> io::Result<()> {
        let (headers, size) = encode_header(path, meta, hardlink);
        self.w.write_all(&headers)?;
        self.entries += 1;
        if size > 0 {
            let src = data.ok_or_else(|| io::Error::other("file content missing"))?;
            copy_exact(src, &mut self.w, size)?;
            self.pad(size)?;
            self.data_bytes += size;
        }
        Ok(())
    }

    pub(super) fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> io::Result<()> {
        self.w.write_all(&[0u8; 2 * BLOCK])?;
        self.w.flush()
    }
}

/// The header blocks of an entry (a PAX extended header first when
/// needed) and the size of its content.
pub(super) fn encode_header(path: &[u8], meta: &Meta, hardlink: &[u8]) -> (Vec<u8>, u64) {
    let name = match meta.kind {
        Kind::Dir if path.is_empty() => b"./".to_vec(),
        Kind::Dir => [path, b"/"].concat(),
        _ => path.to_vec(),
    };
    let link: &[u8] = match meta.kind {
        Kind::Hardlink => hardlink,
        Kind::Symlink => &meta.link,
        _ => b"",
    };
    let size = if meta.kind == Kind::File {
        meta.size
    } else {
        0
    };

    let mut h = [0u8; BLOCK];
    let mut pax = Vec::new();
    let has = |k: &[u8]| meta.pax.iter().any(|(key, _)| key == k);
    match ustar_split(&name) {
        Some((prefix, base)) => {
            h[345..345 + prefix.len()].copy_from_slice(prefix);
            h[..base.len()].copy_from_slice(base);
        }
        None => {
            pax_record(&mut pax, b"path", &name);
            h[..100].copy_from_slice(&name[..100]);
        }
    }
    if link.len() <= 100 {
        h[157..157 + link.len()].copy_from_slice(link);
    } else {
        pax_record(&mut pax, b"linkpath", link);
        h[157..257].copy_from_slice(&link[..100]);
    }
    let numbers: [(&[u8], u64, std::ops::Range<usize>); 4] = [
        (b"uid", meta.uid, 108..116),
        (b"gid", meta.gid, 116..124),
        (b"size", size, 124..136),
        (b"mtime", meta.mtime, 136..148),
    ];
    for (key, value, range) in numbers {
        let max = octal_max(range.len());
        if value > max && (key == b"size" || !has(key)) {
            pax_record(&mut pax, key, value.to_string().as_bytes());
        }
        octal(&mut h[range], value.min(max));
    }
    let names: [(&[u8], &[u8], usize); 2] =
        [(b"uname", &meta.uname, 265), (b"gname", &meta.gname, 297)];
    for (key, value, at) in names {
        if value.len() <= 32 {
            h[at..at + value.len()].copy_from_slice(value);
        } else {
            if !has(key) {
                pax_record(&mut pax, key, value);
            }
            h[at..at + 32].copy_from_slice(&value[..32]);
        }
    }
    octal(&mut h[100..108], u64::from(meta.mode));
    octal(
        &mut h[329..337],
        u64::from(meta.dev_major).min(octal_max(8)),
    );
    octal(
        &mut h[337..345],
        u64::from(meta.dev_minor).min(octal_max(8)),
    );
    h[156] = meta.kind.typeflag();
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    for (key, value) in &meta.pax {
        pax_record(&mut pax, key, value);
    }
    checksum(&mut h);

    let mut out = Vec::with_capacity(3 * BLOCK + pax.len());
    if !pax.is_empty() {
        let mut x = [0u8; BLOCK];
        let trimmed = name.strip_suffix(b"/").unwrap_or(&name);
        let (_, base) = split(trimmed);
        let mut xname = b"PaxHeaders/".to_vec();
        xname.extend_from_slice(&base[..base.len().min(100 - xname.len())]);
        x[..xname.len()].copy_from_slice(&xname);
        octal(&mut x[100..108], 0o644);
        octal(&mut x[108..116], 0);
        octal(&mut x[116..124], 0);
        octal(&mut x[124..136], pax.len() as u64);
        octal(&mut x[136..148], meta.mtime.min(octal_max(12)));
        x[156] = b'x';
        x[257..263].copy_from_slice(b"ustar\0");
        x[263..265].copy_from_slice(b"00");
        octal(&mut x[329..337], 0);
        octal(&mut x[337..345], 0);
        checksum(&mut x);
        out.extend_from_slice(&x);
        out.extend_from_slice(&pax);
        out.resize(out.len() + padding(pax.len() as u64) as usize, 0);
    }
    out.extend_from_slice(&h);
    (out, size)
}

/// (prefix, name) fields for a ustar header, or `None` when `path` needs
/// a PAX record.
pub(super) fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((b"", path));
    }
    // The name part is what follows a '/' (not the last byte) and gets at
    // most 100 bytes; the prefix before it at most 155.
    let i = path
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && i + 1 < path.len() && path.len() - i - 1 <= 100)
        .map(|(i, _)| i)
        .next()?;
    (i <= 155).then(|| (&path[..i], &path[i + 1..]))
}

/// Zero-padded octal with a trailing NUL, filling `field`.
pub(super) fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

pub(super) fn checksum(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
}

/// Appends one PAX record, `"<len> key=value\n"`, whose length counts
/// its own digits.
pub(super) fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}
