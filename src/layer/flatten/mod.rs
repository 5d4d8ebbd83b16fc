//! Flattening: the layers of an image merged into one tar of the root
//! filesystem they make, in one streaming pass.
//!
//! # How
//!
//! Like `crane export`, layers are read top-down (last layer of the
//! manifest first) and an entry is written when no upper layer decided its
//! path already. Per path the flattener remembers three facts:
//!
//! - `TAKEN`: an upper layer (or an earlier entry of the same layer) had
//!   this path, or deleted it: lower entries at the path are dropped;
//! - `CUT`: everything below the path in lower layers is gone: set by a
//!   non-directory at the path (even one that an upper layer shadows in
//!   turn: a directory above it is a new one), by a whiteout `.wh.name`
//!   (which also sets `TAKEN`) and by an opaque marker `.wh..wh..opq` in
//!   the directory;
//! - `DIR`: the path is a directory in the result because an upper entry
//!   lives below it: a lower non-directory at the path is dropped, a lower
//!   directory still gives its metadata.
//!
//! An entry survives when its own path is neither `TAKEN` nor (for a
//! non-directory) `DIR`, and none of its parent directories, the root
//! included, is `CUT`. Whiteouts and opaque markers only act on lower
//! layers (OCI image spec), so a layer's markers are applied when the layer
//! ends. Inside one layer the first entry for a path wins (as in crane);
//! later duplicates are dropped. No `.wh.` entry is ever written, nor
//! anything below a directory whose name starts with `.wh.`.
//!
//! Paths are normalised: `.` components and empty ones (leading `/`,
//! trailing `/`, `//`) are dropped and `..` removes the component before
//! it; an entry whose path climbs above the root is dropped. Symlink
//! targets are kept byte for byte.
//!
//! Upper entries come out before lower ones, so a file of an upper layer
//! may precede the entry of its parent directory: tar implementations
//! create missing parents and apply a later directory entry's metadata.
//! A directory that exists (as the parent of an entry or of a whiteout)
//! but has no entry in any layer gets one at the end of the stream (mode
//! 0755, owner 0:0, mtime 0), so that every directory of the result has
//! an entry.
//!
//! # Hard links
//!
//! A hard link of layer N means the inode its target had in the
//! filesystem of layers 1..=N at that point of layer N's tar: the target's
//! entry earlier in layer N, else the target in the layers below. It never
//! means a version from a layer above N. The output is made extractable by
//! writing every hard link after its target, or, when the target's version
//! is not in the output (replaced or deleted by an upper layer), by writing
//! the first link as a regular file (a copy of the target: its content,
//! mode, owner, xattrs) and any further link to the same inode as a hard
//! link to that copy:
//!
//! - target earlier in the same layer and written out: a hard link to it,
//!   at once;
//! - target earlier in the same layer but hidden: its content was spilled
//!   to a temporary file when it went by (every hidden non-empty regular
//!   file is, as nothing tells whether a later entry links to it; the file
//!   is truncated at the end of each layer, so it holds at most one
//!   layer's hidden data), and the link becomes a copy from there;
//! - target not (yet) in the layer: the link waits for the first entry at
//!   the target's path in a lower layer. When that entry is written out,
//!   the waiting links follow it as hard links; when it is hidden, its data
//!   streams straight into the first waiting link, and the others link to
//!   that. A link to a link is followed to the inode it names.
//!
//! A link whose target never shows up, is a directory, or was deleted
//! (or turned into a directory, or put below a non-directory) by a layer
//! between the link's and the target's, is dropped and counted in
//! `Stats::dangling_links`: it could not be extracted.
//!
//! # Memory
//!
//! The path set grows with the number of entries; file contents stream
//! through a bounded buffer. Hidden hard-link targets go to a spill file
//! where blobs spill theirs (`$TMPDIR`, else `/var/tmp`), or in
//! `Options::temp_dir`.
//!
//! # Formats
//!
//! Input: ustar, GNU and PAX tars, read by the streaming reader below
//! (the `tar` crate decodes header fields). PAX records are split by their
//! length prefix, so binary values (xattrs such as `security.capability`
//! or IMA signatures often hold a newline byte) come through intact; PAX
//! `size` covers files past 8 GiB; a PAX global header applies to the
//! entries after it; GNU long names and link names, base-256 numbers and
//! GNU (old-style) sparse files are understood. Blank numeric fields read
//! as 0, as in Go's archive/tar, which wrote most layers.
//!
//! Output: POSIX ustar headers (a long path split into prefix and name
//! where it can be), with a PAX extended header when a value does not fit
//! (longer paths and link targets, sizes past 8 GiB, ids past 2097151,
//! times past 2242, user and group names past 32 bytes). The PAX records
//! in effect for each input entry other than `path`, `linkpath` and
//! `size` (xattrs as `SCHILY.xattr.*`, ACLs, sub-second times, ...) are
//! copied to it. GNU volume labels and unknown entry types are dropped;
//! GNU sparse files are written out expanded (GNU's PAX sparse formats
//! pass through as they are, their data unexpanded).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Tuning of `flatten_with`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where the spill file for hidden hard-link targets goes (created only
    /// when needed, unlinked at once); default `$TMPDIR`, else `/var/tmp`,
    /// as for the spill files of blobs.
    pub temp_dir: Option<PathBuf>,
}

/// What a flattening did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Layers read.
    pub layers: u64,
    /// Entries read, whiteouts included (PAX and GNU long-name headers are
    /// part of the entry they describe).
    pub entries_read: u64,
    /// Entries written (PAX extended headers not counted).
    pub entries_written: u64,
    /// Whiteouts and opaque-directory markers read.
    pub whiteouts: u64,
    /// Entries dropped because an upper layer replaced or deleted them, or
    /// because an earlier entry of their layer had the same path.
    pub hidden: u64,
    /// Entries dropped for an unsafe path, an unsupported type or a
    /// reserved `.wh..wh.` name.
    pub skipped: u64,
    /// Hard links written as hard links.
    pub hardlinks: u64,
    /// Hard links written as regular files (copies of a hidden target).
    pub materialized_links: u64,
    /// Hard links dropped: their target never appeared or is a directory.
    pub dangling_links: u64,
    /// Bytes of file content written.
    pub data_bytes: u64,
    /// Bytes of hidden files copied to the spill file.
    pub spilled_bytes: u64,
    /// Directories that exist (parents of other entries, or holding a
    /// whiteout) but have no entry in any layer, written at the end with
    /// mode 0755, owner 0:0 and mtime 0.
    pub implied_dirs: u64,
}

/// Merges the layers of an image into one tar stream of the root
/// filesystem, written to `out` with its end-of-archive blocks.
///
/// `layers_top_down` yields each layer's uncompressed tar, last layer of
/// the manifest first; each is opened only when the one above it is done,
/// and read to its end (so a digest-checking or decompressing reader sees
/// its whole stream). `out` is buffered here; pass `&mut w` to keep `w`.
pub fn flatten<W: Write>(
    layers_top_down: impl Iterator<Item = io::Result<Box<dyn Read>>>,
    out: W,
) -> io::Result<Stats> {
    flatten_with(&Options::default(), layers_top_down, out)
}

/// `flatten` with options, for any reader type.
pub fn flatten_with<W: Write, R: Read>(
    options: &Options,
    layers_top_down: impl Iterator<Item = io::Result<R>>,
    out: W,
) -> io::Result<Stats> {
    let mut f = Flattener::new(options, out);
    for (i, layer) in layers_top_down.enumerate() {
        let what = format!("layer {i} from the top");
        let r = layer.map_err(|e| context(e, &what))?;
        f.layer(r).map_err(|e| context(e, &what))?;
    }
    f.finish()
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

const TAKEN: u8 = 1;
const CUT: u8 = 2;
const DIR: u8 = 4;
/// A directory entry was written for the path.
const WROTE: u8 = 8;

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// The kinds of entry that reach the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

impl Kind {
    fn typeflag(self) -> u8 {
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
struct Meta {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    uname: Vec<u8>,
    gname: Vec<u8>,
    dev_major: u32,
    dev_minor: u32,
    /// Symlink target, byte for byte; hard-link target as written.
    link: Vec<u8>,
    /// Content bytes (regular files only).
    size: u64,
    /// PAX records other than path, linkpath and size.
    pax: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What a hard link to some path of the current layer would get.
#[derive(Debug)]
enum Src {
    /// That inode is in the output at this path.
    Out(Vec<u8>),
    /// A hidden regular file whose content is in the spill file at `off`.
    Spilled { meta: Meta, off: u64 },
    /// A hidden entry without content (empty file, symlink, device, fifo).
    Bare(Meta),
    /// Whatever the lower layers have at this path.
    Lower(Vec<u8>),
    /// Nothing linkable (a directory, or a link that leads nowhere).
    Nothing,
}

/// A hard link waiting for its target to show up in a lower layer.
#[derive(Debug)]
struct Waiting {
    path: Vec<u8>,
    /// The link entry's own metadata, for its header.
    meta: Meta,
}

struct Flattener<W: Write> {
    out: TarWriter<W>,
    spill: Spill,
    /// TAKEN | CUT | DIR per normalised path (the root is "").
    state: HashMap<Vec<u8>, u8>,
    /// Links of upper layers by the path of their target.
    waiting: HashMap<Vec<u8>, Vec<Waiting>>,
    /// This layer's entries: path -> index into `slots`; several paths
    /// share a slot when they are one inode.
    layer: HashMap<Vec<u8>, usize>,
    slots: Vec<Src>,
    /// This layer's whiteouts and opaque markers, applied at its end.
    marks: Vec<(Vec<u8>, u8)>,
    /// Links of this layer waiting for lower layers, from its end on.
    new_waiting: HashMap<Vec<u8>, Vec<Waiting>>,
    stats: Stats,
}

impl<W: Write> Flattener<W> {
    fn new(options: &Options, out: W) -> Self {
        Flattener {
            out: TarWriter::new(out),
            spill: Spill::new(
                options
                    .temp_dir
                    .clone()
                    .unwrap_or_else(crate::fetch::disk::default_tmp_dir),
            ),
            state: HashMap::new(),
            waiting: HashMap::new(),
            layer: HashMap::new(),
            slots: Vec::new(),
            marks: Vec::new(),
            new_waiting: HashMap::new(),
            stats: Stats::default(),
        }
    }

    fn layer<R: Read>(&mut self, r: R) -> io::Result<()> {
        self.stats.layers += 1;
        let mut tar = TarReader::new(r);
        while let Some(raw) = tar.next_entry()? {
            self.entry(&raw, &mut tar)
                .map_err(|e| context(e, &String::from_utf8_lossy(&raw.path)))?;
        }
        // Read what follows the end-of-archive blocks, so that decoders
        // check their trailers and a verifying reader its digest.
        tar.drain()?;
        self.end_layer()
    }

    fn end_layer(&mut self) -> io::Result<()> {
        // Links waiting for a path that this layer deleted, or put below
        // a non-directory, name nothing: no lower layer can satisfy them.
        // Links of this layer only see its whiteouts (which act before
        // its entries); links from above see its entries too.
        if !self.waiting.is_empty() || !self.new_waiting.is_empty() {
            let mut marks: HashMap<&[u8], u8> = HashMap::new();
            for (p, f) in &self.marks {
                *marks.entry(p.as_slice()).or_insert(0) |= *f;
            }
            let (layer, slots) = (&self.layer, &self.slots);
            let deleted = |t: &[u8]| {
                marks.get(t).is_some_and(|&f| f & TAKEN != 0)
                    || marks.get(&b""[..]).is_some_and(|&f| f & CUT != 0)
                    || parents(t).any(|p| marks.get(p).is_some_and(|&f| f & CUT != 0))
            };
            let under_non_dir = |t: &[u8]| {
                parents(t).any(|p| {
                    layer
                        .get(p)
                        .is_some_and(|&s| !matches!(slots[s], Src::Nothing))
                })
            };
            let mut dangling = 0;
            self.waiting.retain(|t, links| {
                let dead = deleted(t) || under_non_dir(t);
                if dead {
                    dangling += links.len() as u64;
                }
                !dead
            });
            for (target, links) in self.new_waiting.drain() {
                if deleted(&target) {
                    dangling += links.len() as u64;
                } else {
                    self.waiting.entry(target).or_default().extend(links);
                }
            }
            self.stats.dangling_links += dangling;
        }
        for (path, flags) in self.marks.drain(..) {
            *self.state.entry(path).or_insert(0) |= flags;
        }
        self.layer.clear();
        self.slots.clear();
        self.spill.reset()
    }

    fn finish(mut self) -> io::Result<Stats> {
        self.stats.dangling_links += self.waiting.values().map(|w| w.len() as u64).sum::<u64>();
        let mut implied: Vec<&Vec<u8>> = self
            .state
            .iter()
            .filter(|&(_, &f)| f & DIR != 0 && f & WROTE == 0)
            .map(|(p, _)| p)
            .collect();
        implied.sort();
        let meta = Meta {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            uname: Vec::new(),
            gname: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            link: Vec::new(),
            size: 0,
            pax: Vec::new(),
        };
        for path in implied {
            self.out.entry(path, &meta, b"", None)?;
            self.stats.implied_dirs += 1;
        }
        self.stats.entries_written = self.out.entries;
        self.stats.data_bytes = self.out.data_bytes;
        self.out.finish()?;
        Ok(self.stats)
    }

    fn entry(&mut self, raw: &RawEntry, e: &mut dyn Read) -> io::Result<()> {
        self.stats.entries_read += 1;
        let Some((raw_path, meta)) = parse(raw)? else {
            self.stats.skipped += 1;
            return Ok(());
        };
        let Some(path) = normalize(&raw_path) else {
            self.stats.skipped += 1;
            return Ok(());
        };
        if !self.waiting.is_empty() {
            // A path below a waiting link's target: the target is a
            // directory from this layer up, so the link has no file.
            for p in parents(&path) {
                if let Some(links) = self.waiting.remove(p) {
                    self.stats.dangling_links += links.len() as u64;
                }
            }
        }
        let (dir, base) = split(&path);
        if dir.split(|&b| b == b'/').any(|c| c.starts_with(WHITEOUT)) {
            self.stats.skipped += 1;
            return Ok(());
        }
        if base.starts_with(WHITEOUT) {
            self.whiteout(&path);
            return Ok(());
        }
        if path.is_empty() && meta.kind != Kind::Dir {
            self.stats.skipped += 1;
            return Ok(());
        }
        if self.layer.contains_key(&path) {
            // A second entry for a path in one layer: the first stands.
            self.stats.hidden += 1;
            return Ok(());
        }
        let visible = !self.hidden(&path, meta.kind == Kind::Dir);
        let waiting = self.waiting.remove(&path).unwrap_or_default();
        match meta.kind {
            Kind::Dir => {
                let s = self.slot(&path, Src::Nothing);
                if visible {
                    self.take(&path, TAKEN | WROTE);
                    self.out.entry(&path, &meta, b"", None)?;
                } else {
                    self.stats.hidden += 1;
                }
                self.link_to(s, waiting)?;
            }
            Kind::Hardlink => {
                let s = match normalize(&meta.link) {
                    Some(t) => match self.layer.get(&t) {
                        Some(&s) => s,
                        None => self.new_slot(Src::Lower(t)),
                    },
                    None => self.new_slot(Src::Nothing),
                };
                self.layer.insert(path.clone(), s);
                if visible {
                    self.take(&path, TAKEN | CUT);
                    self.link_to(s, vec![Waiting { path, meta }])?;
                } else {
                    self.hide_non_dir(&path);
                }
                self.link_to(s, waiting)?;
            }
            _ => {
                let mut waiting = waiting.into_iter();
                let (s, rest) = if visible {
                    self.take(&path, TAKEN | CUT);
                    self.out.entry(&path, &meta, b"", Some(e))?;
                    (self.slot(&path, Src::Out(path.clone())), waiting)
                } else if let Some(first) = waiting.next() {
                    // A hidden target that upper links wait for: its
                    // content goes straight into the first of them.
                    self.hide_non_dir(&path);
                    self.stats.materialized_links += 1;
                    self.out.entry(&first.path, &meta, b"", Some(e))?;
                    (self.slot(&path, Src::Out(first.path)), waiting)
                } else {
                    self.hide_non_dir(&path);
                    let src = if meta.kind == Kind::File && meta.size > 0 {
                        let off = self.spill.put(e, meta.size)?;
                        self.stats.spilled_bytes += meta.size;
                        Src::Spilled { meta, off }
                    } else {
                        Src::Bare(meta)
                    };
                    (self.slot(&path, src), waiting)
                };
                self.link_to(s, rest.collect())?;
            }
        }
        Ok(())
    }

    /// A non-directory of this layer that an upper layer shadows still
    /// ends what lower layers had below its path: an upper directory at
    /// the path is a new one, not merged with theirs.
    fn hide_non_dir(&mut self, path: &[u8]) {
        self.stats.hidden += 1;
        if !self.below_cut(path) {
            self.marks.push((path.to_vec(), CUT));
        }
    }

    /// Records a whiteout or opaque marker at `path` for the end of the
    /// layer.
    fn whiteout(&mut self, path: &[u8]) {
        self.stats.whiteouts += 1;
        let (dir, base) = split(path);
        let (target, flags) = if base == OPAQUE {
            (dir.to_vec(), CUT)
        } else if base.starts_with(b".wh..wh.") {
            // Reserved (aufs metadata such as .wh..wh.plnk): not content.
            self.stats.skipped += 1;
            return;
        } else {
            let name = &base[WHITEOUT.len()..];
            if name.is_empty() || name == b"." || name == b".." {
                self.stats.skipped += 1;
                return;
            }
            (join(dir, name), TAKEN | CUT)
        };
        // The marker's directory and its parents are directories here,
        // unless an upper layer did away with them.
        if !self.below_cut(&target) {
            self.mark_parents(path);
        }
        self.marks.push((target, flags));
    }

    /// Is an entry at `path` of the current layer shadowed or deleted?
    fn hidden(&self, path: &[u8], is_dir: bool) -> bool {
        if let Some(&f) = self.state.get(path) {
            if f & TAKEN != 0 || (f & DIR != 0 && !is_dir) {
                return true;
            }
        }
        self.below_cut(path)
    }

    /// Is one of `path`'s parent directories (the root included) `CUT`?
    fn below_cut(&self, path: &[u8]) -> bool {
        if path.is_empty() {
            return false;
        }
        let cut = |p: &[u8]| self.state.get(p).is_some_and(|&f| f & CUT != 0);
        cut(b"") || parents(path).any(cut)
    }

    /// Decides `path` for lower layers.
    fn take(&mut self, path: &[u8], flags: u8) {
        match self.state.get_mut(path) {
            Some(f) => *f |= flags,
            None => {
                self.state.insert(path.to_vec(), flags);
            }
        }
        self.mark_parents(path);
    }

    /// Marks the parent directories of `path` as directories. A path with
    /// a flag already had its parents marked, so the walk stops there.
    fn mark_parents(&mut self, path: &[u8]) {
        for p in parents(path) {
            match self.state.get_mut(p) {
                Some(f) if *f & (DIR | TAKEN) != 0 => break,
                Some(f) => *f |= DIR,
                None => {
                    self.state.insert(p.to_vec(), DIR);
                }
            }
        }
    }

    fn new_slot(&mut self, src: Src) -> usize {
        self.slots.push(src);
        self.slots.len() - 1
    }

    fn slot(&mut self, path: &[u8], src: Src) -> usize {
        let s = self.new_slot(src);
        self.layer.insert(path.to_vec(), s);
        s
    }

    /// Writes (or defers) hard links to the inode of slot `s`.
    fn link_to(&mut self, s: usize, links: Vec<Waiting>) -> io::Result<()> {
        for link in links {
            match &self.slots[s] {
                Src::Out(target) => {
                    self.stats.hardlinks += 1;
                    let mut meta = link.meta;
                    meta.kind = Kind::Hardlink;
                    meta.size = 0;
                    self.out.entry(&link.path, &meta, target, None)?;
                }
                Src::Spilled { meta, off } => {
                    self.stats.materialized_links += 1;
                    let mut data = self.spill.reader(*off, meta.size)?;
                    self.out.entry(&link.path, meta, b"", Some(&mut data))?;
                    self.slots[s] = Src::Out(link.path);
                }
                Src::Bare(meta) => {
                    self.stats.materialized_links += 1;
                    self.out.entry(&link.path, meta, b"", None)?;
                    self.slots[s] = Src::Out(link.path);
                }
                Src::Lower(target) => {
                    self.new_waiting
                        .entry(target.clone())
                        .or_default()
                        .push(link);
                }
                Src::Nothing => self.stats.dangling_links += 1,
            }
        }
        Ok(())
    }
}

/// The raw path and metadata of an entry; `None` for entry types that
/// are no content (volume labels, unknown types).
fn parse(raw: &RawEntry) -> io::Result<Option<(Vec<u8>, Meta)>> {
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

/// A PAX number: decimal, for times with an optional fraction (dropped)
/// and sign (a time before 1970 becomes 0).
fn pax_number(key: &[u8], value: &[u8]) -> io::Result<u64> {
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
fn blank_is_zero<T: Default>(field: &[u8], parsed: io::Result<T>) -> io::Result<T> {
    match parsed {
        Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(T::default()),
        other => other,
    }
}

/// `path` with empty and `.` components dropped and `..` applied; `None`
/// when it climbs above the root. The root itself is "".
pub fn normalize(path: &[u8]) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            _ => parts.push(c),
        }
    }
    Some(parts.join(&b'/'))
}

/// (parent, last component) of a normalised path; the root's parent is "".
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// The parent directories of a normalised path, deepest first, the root
/// left out.
fn parents(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .rev()
        .filter(|&(_, &b)| b == b'/')
        .map(move |(i, _)| &path[..i])
}

/// Content of hidden files, for hard links of the same layer that turn up
/// later: one unlinked temporary file, emptied at the end of each layer.
struct Spill {
    dir: PathBuf,
    file: Option<BufWriter<File>>,
    len: u64,
}

impl Spill {
    fn new(dir: PathBuf) -> Self {
        Spill {
            dir,
            file: None,
            len: 0,
        }
    }

    /// Appends exactly `n` bytes of `src`; returns their offset.
    fn put(&mut self, src: &mut dyn Read, n: u64) -> io::Result<u64> {
        if self.file.is_none() {
            let f = crate::fetch::disk::tmpfile(&self.dir)
                .map_err(|e| context(e, &format!("spill file in {}", self.dir.display())))?;
            self.file = Some(BufWriter::with_capacity(256 * 1024, f));
        }
        if let Some(w) = &mut self.file {
            copy_exact(src, w, n)?;
        }
        let off = self.len;
        self.len += n;
        Ok(off)
    }

    fn reader(&mut self, off: u64, n: u64) -> io::Result<SpillReader<'_>> {
        let w = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("spill file missing"))?;
        w.flush()?;
        Ok(SpillReader {
            file: w.get_ref(),
            off,
            left: n,
        })
    }

    fn reset(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        if let Some(w) = &mut self.file {
            w.seek(SeekFrom::Start(0))?;
            w.get_ref().set_len(0)?;
        }
        self.len = 0;
        Ok(())
    }
}

struct SpillReader<'a> {
    file: &'a File,
    off: u64,
    left: u64,
}

impl Read for SpillReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.off)?;
        self.off += got as u64;
        self.left -= got as u64;
        Ok(got)
    }
}

/// Copies exactly `n` bytes; a source that ends early is an error.
fn copy_exact<W: Write + ?Sized>(src: &mut dyn Read, dst: &mut W, n: u64) -> io::Result<()> {
    let got = io::copy(&mut src.take(n), dst)?;
    if got != n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("entry content ends after {got} of {n} bytes"),
        ));
    }
    Ok(())
}

const BLOCK: usize = 512;
/// Largest value of an octal field of `width` bytes (with its NUL).
const fn octal_max(width: usize) -> u64 {
    (1u64 << (3 * (width as u32 - 1))) - 1
}

/// Most bytes of one PAX extended header or GNU long name kept in memory.
const MAX_EXTENSION: u64 = 16 << 20;

/// One entry of an input tar: its header block with the extensions in
/// front of it applied.
struct RawEntry {
    header: [u8; BLOCK],
    /// From PAX `path`, a GNU long name or the header (ustar prefix too).
    path: Vec<u8>,
    /// From PAX `linkpath`, a GNU long link name or the header.
    link: Vec<u8>,
    /// Content bytes as the entry's reader yields them (a GNU sparse file
    /// expanded).
    size: u64,
    /// PAX records in effect: the archive's global ones overridden by the
    /// entry's own; records with an empty value are dropped.
    pax: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A streaming reader of one tar archive. `next_entry` moves to the next
/// entry; reading the `TarReader` yields that entry's content.
///
/// PAX records are parsed by their length prefix, so values may hold any
/// byte (binary xattrs often have a newline). Handled: PAX local and
/// global headers, GNU long names and link names, base-256 numbers, GNU
/// (old) sparse files, and headers whose checksum was computed with signed
/// bytes.
struct TarReader<R: Read> {
    r: io::BufReader<R>,
    globals: Vec<(Vec<u8>, Vec<u8>)>,
    /// Stored bytes of the current entry not read yet, and its padding.
    left: u64,
    pad: u64,
    sparse: Option<Sparse>,
    ended: bool,
}

/// Where a GNU sparse entry's stored chunks go in the expanded file.
struct Sparse {
    /// (offset, length) of the chunks still ahead.
    chunks: std::collections::VecDeque<(u64, u64)>,
    pos: u64,
    real_size: u64,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<R: Read> TarReader<R> {
    fn new(r: R) -> Self {
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
    fn next_entry(&mut self) -> io::Result<Option<RawEntry>> {
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
    fn sparse_map(&mut self, h: &tar::Header, stored: u64) -> io::Result<Sparse> {
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

    fn skip(&mut self, n: u64) -> io::Result<()> {
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
    fn drain(&mut self) -> io::Result<()> {
        io::copy(&mut self.r, &mut io::sink()).map(|_| ())
    }

    /// Up to `buf.len()` stored bytes of the current entry.
    fn read_stored(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
fn read_block(r: &mut impl Read, block: &mut [u8]) -> io::Result<bool> {
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
fn verify_checksum(block: &[u8; BLOCK]) -> io::Result<()> {
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
fn parse_pax(mut data: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
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
fn merge(dst: &mut Vec<(Vec<u8>, Vec<u8>)>, records: Vec<(Vec<u8>, Vec<u8>)>) {
    for (k, v) in records {
        match dst.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v,
            None => dst.push((k, v)),
        }
    }
}

fn until_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|&b| b == 0) {
        v.truncate(i);
    }
    v
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The output tar: ustar headers plus PAX extended headers when needed.
struct TarWriter<W: Write> {
    w: BufWriter<W>,
    entries: u64,
    data_bytes: u64,
}

impl<W: Write> TarWriter<W> {
    fn new(w: W) -> Self {
        TarWriter {
            w: BufWriter::with_capacity(256 * 1024, w),
            entries: 0,
            data_bytes: 0,
        }
    }

    /// Writes one entry at normalised `path`: `hardlink` is the target of a
    /// hard link (a symlink's target comes from `meta`), `data` the
    /// content of a regular file (`meta.size` bytes).
    fn entry(
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

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.w.write_all(&[0u8; 2 * BLOCK])?;
        self.w.flush()
    }
}

/// The header blocks of an entry (a PAX extended header first when
/// needed) and the size of its content.
fn encode_header(path: &[u8], meta: &Meta, hardlink: &[u8]) -> (Vec<u8>, u64) {
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
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
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
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn checksum(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
}

/// Appends one PAX record, `"<len> key=value\n"`, whose length counts
/// its own digits.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn meta(kind: Kind) -> Meta {
        Meta {
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            uname: b"root".to_vec(),
            gname: b"root".to_vec(),
            dev_major: 0,
            dev_minor: 0,
            link: Vec::new(),
            size: 0,
            pax: Vec::new(),
        }
    }

    /// An archive of `(path, meta, content)` written by `TarWriter`.
    fn archive(entries: &[(&[u8], Meta, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = TarWriter::new(&mut out);
        for (path, m, data) in entries {
            let mut m = m.clone();
            m.size = data.len() as u64;
            let mut data: &[u8] = data;
            w.entry(path, &m, b"", Some(&mut data)).unwrap();
        }
        w.finish().unwrap();
        out
    }

    /// Every entry of `data` with its content.
    fn entries(data: &[u8]) -> io::Result<Vec<(RawEntry, Vec<u8>)>> {
        let mut r = TarReader::new(data);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut content = Vec::new();
            r.read_to_end(&mut content)?;
            out.push((e, content));
        }
        Ok(out)
    }

    fn record<'a>(e: &'a RawEntry, key: &str) -> Option<&'a [u8]> {
        e.pax
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn normalisation() {
        let n = |p: &str| normalize(p.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(n("./usr//bin/"), Some("usr/bin".into()));
        assert_eq!(n("/etc/passwd"), Some("etc/passwd".into()));
        assert_eq!(n("a/./b/../c"), Some("a/c".into()));
        assert_eq!(n("./"), Some("".into()));
        assert_eq!(n("."), Some("".into()));
        assert_eq!(n(""), Some("".into()));
        assert_eq!(n(".."), None);
        assert_eq!(n("a/../../b"), None);
        assert_eq!(n("..."), Some("...".into()));
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        let ps: Vec<&[u8]> = parents(b"a/b/c").collect();
        assert_eq!(ps, vec![&b"a/b"[..], &b"a"[..]]);
        assert_eq!(parents(b"a").count(), 0);
    }

    #[test]
    fn pax_records_round_trip_any_bytes() {
        let values: [&[u8]; 5] = [
            b"",
            b"x",
            b"line\nbreak = and \x00 nul",
            &[0xff; 200],
            &[b'9'; 95],
        ];
        let mut data = Vec::new();
        for (i, v) in values.iter().enumerate() {
            pax_record(&mut data, format!("SCHILY.xattr.user.k{i}").as_bytes(), v);
        }
        let parsed = parse_pax(&data).unwrap();
        assert_eq!(parsed.len(), values.len());
        for (i, (k, v)) in parsed.iter().enumerate() {
            assert_eq!(k, format!("SCHILY.xattr.user.k{i}").as_bytes());
            assert_eq!(v, values[i]);
        }
        // Lengths at the digit boundaries count their own digits.
        for n in 0..120 {
            let mut rec = Vec::new();
            pax_record(&mut rec, b"k", &vec![b'v'; n]);
            let len: usize =
                std::str::from_utf8(&rec[..rec.iter().position(|&b| b == b' ').unwrap()])
                    .unwrap()
                    .parse()
                    .unwrap();
            assert_eq!(len, rec.len(), "value of {n} bytes");
        }
        for bad in [
            &b"5 a=b\n"[..],
            b"x a=b\n",
            b"6 ab\nx",
            b"99 a=b\n",
            b"7 a=b\n",
        ] {
            assert!(
                parse_pax(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_pax(b"6 a=b\n\0\0\0").is_ok());
    }

    #[test]
    fn header_fields_that_do_not_fit_go_to_pax() {
        let exactly_100 = vec![b'a'; 100];
        let splittable = [vec![b'p'; 150], b"/".to_vec(), vec![b'n'; 100]].concat();
        let one_long_component = vec![b'z'; 150];
        let very_long = [vec![b'q'; 200], b"/".to_vec(), vec![b'r'; 200]].concat();
        let mut big = meta(Kind::File);
        big.uid = 3_000_000;
        big.gid = 5_000_000;
        big.mtime = 1 << 34;
        big.uname = vec![b'u'; 40];
        big.gname = vec![b'g'; 32];
        big.pax = vec![(b"SCHILY.xattr.user.nl".to_vec(), b"a\nb".to_vec())];
        let data = archive(&[
            (&exactly_100, meta(Kind::File), b"1"),
            (&splittable, meta(Kind::File), b"2"),
            (&one_long_component, meta(Kind::File), b"3"),
            (&very_long, big.clone(), b"4"),
            (b"", meta(Kind::Dir), b""),
            (b"d", meta(Kind::Dir), b""),
        ]);
        let got = entries(&data).unwrap();
        let paths: Vec<&[u8]> = got.iter().map(|(e, _)| e.path.as_slice()).collect();
        assert_eq!(
            paths,
            vec![
                &exactly_100[..],
                &splittable[..],
                &one_long_component[..],
                &very_long[..],
                b"./",
                b"d/"
            ]
        );
        // Only what does not fit in ustar went to PAX.
        assert!(got[0].0.pax.is_empty() && got[1].0.pax.is_empty());
        assert_eq!(record(&got[2].0, "path"), Some(&one_long_component[..]));
        let e = &got[3].0;
        let (_, m) = parse(e).unwrap().unwrap();
        assert_eq!(m.uid, 3_000_000);
        assert_eq!(m.gid, 5_000_000);
        assert_eq!(m.mtime, 1 << 34);
        assert_eq!(m.uname, vec![b'u'; 40]);
        assert_eq!(m.gname, vec![b'g'; 32]);
        assert_eq!(record(e, "SCHILY.xattr.user.nl"), Some(&b"a\nb"[..]));
        assert_eq!(got[3].1, b"4");

        // A size past the 11 octal digits of ustar.
        let mut huge = meta(Kind::File);
        huge.size = 10 << 30;
        let (headers, size) = encode_header(b"huge", &huge, b"");
        assert_eq!(size, 10 << 30);
        let mut r = TarReader::new(&headers[..]);
        assert_eq!(r.next_entry().unwrap().unwrap().size, 10 << 30);

        // GNU tar reads the same archive.
        if let Some(listing) = gnu_tar(&["-tv", "--numeric-owner"], &data) {
            let text = String::from_utf8_lossy(&listing);
            assert!(text.contains("3000000/5000000"), "{text}");
            assert!(
                text.contains(&String::from_utf8(very_long).unwrap()),
                "{text}"
            );
        }
    }

    /// Runs GNU tar with `args` on `input` (`-f -` added); `None` when
    /// there is no tar.
    fn gnu_tar(args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
        let mut child = Command::new("tar")
            .args(args)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(
            out.status.success(),
            "tar {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(out.stdout)
    }

    #[test]
    fn global_pax_headers_apply_to_later_entries() {
        let mut data = Vec::new();
        let mut recs = Vec::new();
        pax_record(&mut recs, b"uid", b"42");
        pax_record(&mut recs, b"comment", b"global");
        let mut g = meta(Kind::File);
        g.size = recs.len() as u64;
        let (mut head, _) = encode_header(b"global", &g, b"");
        head[156] = b'g';
        let mut block: [u8; BLOCK] = head[..BLOCK].try_into().unwrap();
        checksum(&mut block);
        data.extend_from_slice(&block);
        data.extend_from_slice(&recs);
        data.resize(data.len() + padding(recs.len() as u64) as usize, 0);
        let mut local = meta(Kind::File);
        local.pax = vec![(b"comment".to_vec(), Vec::new())];
        let rest = archive(&[(b"a", meta(Kind::File), b"a"), (b"b", local, b"b")]);
        data.extend_from_slice(&rest);

        let got = entries(&data).unwrap();
        assert_eq!(got.len(), 2);
        let (_, a) = parse(&got[0].0).unwrap().unwrap();
        assert_eq!(a.uid, 42);
        assert_eq!(record(&got[0].0, "comment"), Some(&b"global"[..]));
        // An empty local value deletes the global record.
        assert_eq!(record(&got[1].0, "comment"), None);
        assert_eq!(parse(&got[1].0).unwrap().unwrap().1.uid, 42);
    }

    #[test]
    fn checksums_signed_and_unsigned() {
        let mut m = meta(Kind::File);
        m.uname = vec![0xe9; 4];
        let (mut h, _) = encode_header(b"f", &m, b"");
        let block: &mut [u8; BLOCK] = (&mut h[..BLOCK]).try_into().unwrap();
        verify_checksum(block).unwrap();
        // The same header with a signed-byte sum, as some old tars wrote.
        block[148..156].fill(b' ');
        let signed: i64 = block.iter().map(|&b| i64::from(b as i8)).sum();
        octal(&mut block[148..155], signed as u64);
        verify_checksum(block).unwrap();
        block[0] ^= 1;
        assert!(verify_checksum(block).is_err());
    }

    #[test]
    fn truncated_archives_fail() {
        let data = archive(&[(b"a", meta(Kind::File), &[7u8; 1000])]);
        for cut in [100, 512, 700, 1024 + 100] {
            assert!(entries(&data[..cut]).is_err(), "cut at {cut}");
        }
        // Cut between entries: the archive just ends there.
        assert_eq!(entries(&data[..1536]).unwrap().len(), 1);
        // An extended header with nothing after it.
        let mut m = meta(Kind::File);
        m.pax = vec![(b"k".to_vec(), b"v".to_vec())];
        let (h, _) = encode_header(b"f", &m, b"");
        assert!(entries(&h[..1024]).is_err());
    }

    #[test]
    fn gnu_sparse_files_are_expanded() {
        let dir = std::env::temp_dir().join(format!("oci-flatten-sparse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = File::create(dir.join("sparse")).unwrap();
        f.set_len(1 << 20).unwrap();
        f.write_at(b"hello", 4096 * 3).unwrap();
        f.write_at(b"world", (1 << 20) - 5).unwrap();
        drop(f);
        let out = Command::new("tar")
            .args(["--format=gnu", "--sparse", "-cf", "-", "-C"])
            .arg(&dir)
            .arg("sparse")
            .output();
        std::fs::remove_dir_all(&dir).unwrap();
        let Ok(out) = out else {
            eprintln!("skipped: no tar");
            return;
        };
        assert!(out.status.success());
        let got = entries(&out.stdout).unwrap();
        let (e, content) = &got[0];
        let mut want = vec![0u8; 1 << 20];
        want[4096 * 3..4096 * 3 + 5].copy_from_slice(b"hello");
        want[(1 << 20) - 5..].copy_from_slice(b"world");
        assert_eq!(e.size, 1 << 20);
        assert!(content == &want, "sparse content differs");
        let sparse = tar::Header::from_byte_slice(&e.header)
            .entry_type()
            .as_byte()
            == b'S';
        eprintln!(
            "GNU tar wrote a {} entry",
            if sparse { "sparse" } else { "plain" }
        );

        // Through the flattener it comes out as a plain file.
        let mut flat = Vec::new();
        let layers = std::iter::once(Ok(&out.stdout[..]));
        flatten_with(&Options::default(), layers, &mut flat).unwrap();
        let got = entries(&flat).unwrap();
        assert_eq!(
            tar::Header::from_byte_slice(&got[0].0.header)
                .entry_type()
                .as_byte(),
            b'0'
        );
        assert!(got[0].1 == want);
    }
}
