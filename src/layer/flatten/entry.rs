//! One entry's metadata: the kinds of entry that reach the output, and
//! what an input header (with its PAX records and GNU extensions) says.

use std::io;

use super::tar_read::{blank_is_zero, pax_number, RawEntry};

/// The kinds of entry that reach the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

impl Kind {
    pub(super) fn typeflag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// One entry's metadata, as read.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    pub(super) kind: Kind,
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: u64,
    pub(super) uname: Vec<u8>,
    pub(super) gname: Vec<u8>,
    pub(super) dev_major: u32,
    pub(super) dev_minor: u32,
    /// Symlink target, byte for byte; hard-link target as written.
    pub(super) link: Vec<u8>,
    /// Content bytes (regular files only).
    pub(super) size: u64,
    /// PAX records other than path, linkpath and size.
    pub(super) pax: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The raw path and metadata of an entry; `None` for entry types that
/// are no content (volume labels, unknown types).
pub(super) fn parse(raw: &RawEntry) -> io::Result<Option<(Vec<u8>, Meta)>> {
    let h = tar::Header::from_byte_slice(&raw.header);
    let old = h.as_old();
    let record = |key: &[u8]| {
        raw.pax
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    };
    // GNU's PAX sparse formats keep the real name in GNU.sparse.name.
    let raw_path = record(b"GNU.sparse.name").unwrap_or(&raw.path).to_vec();
    let kind = match h.entry_type().as_byte() {
        // Old tars mark directories by a trailing slash only.
        b'0' | b'\0' | b'7' if raw_path.ends_with(b"/") => Kind::Dir,
        b'0' | b'\0' | b'7' | b'S' => Kind::File,
        b'1' => Kind::Hardlink,
        b'2' => Kind::Symlink,
        b'3' => Kind::Char,
        b'4' => Kind::Block,
        b'5' | b'D' => Kind::Dir,
        b'6' => Kind::Fifo,
        _ => return Ok(None),
    };
    let (dev_major, dev_minor) = match (kind, h.as_ustar()) {
        (Kind::Char | Kind::Block, Some(u)) => (
            blank_is_zero(&u.dev_major, h.device_major())?.unwrap_or(0),
            blank_is_zero(&u.dev_minor, h.device_minor())?.unwrap_or(0),
        ),
        (Kind::Char | Kind::Block, None) => (
            h.device_major()?.unwrap_or(0),
            h.device_minor()?.unwrap_or(0),
        ),
        _ => (0, 0),
    };
    let number = |key: &[u8], field: &[u8], parsed: io::Result<u64>| match record(key) {
        Some(v) => pax_number(key, v),
        None => blank_is_zero(field, parsed),
    };
    let name =
        |key: &[u8], field: Option<&[u8]>| record(key).or(field).unwrap_or_default().to_vec();
    let link = match kind {
        Kind::Symlink | Kind::Hardlink => raw.link.clone(),
        _ => Vec::new(),
    };
    Ok(Some((
        raw_path,
        Meta {
            kind,
            mode: blank_is_zero(&old.mode, h.mode())? & 0o7777,
            uid: number(b"uid", &old.uid, h.uid())?,
            gid: number(b"gid", &old.gid, h.gid())?,
            mtime: number(b"mtime", &old.mtime, h.mtime())?,
            uname: name(b"uname", h.username_bytes()),
            gname: name(b"gname", h.groupname_bytes()),
            dev_major,
            dev_minor,
            link,
            size: if kind == Kind::File { raw.size } else { 0 },
            pax: raw
                .pax
                .iter()
                .filter(|(k, _)| !matches!(k.as_slice(), b"path" | b"linkpath" | b"size"))
                .cloned()
                .collect(),
        },
    )))
}
