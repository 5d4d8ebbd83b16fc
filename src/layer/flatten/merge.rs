//! The layer merge: which entries of which layer survive (whiteouts,
//! opaque directories, shadowing), and hard links kept extractable (see
//! the module documentation of `flatten`).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};

use super::entry::{parse, Kind, Meta};
use super::path::{join, normalize, parents, split};
use super::spill::Spill;
use super::tar_read::{RawEntry, TarReader};
use super::tar_write::TarWriter;
use super::{context, Options, Stats};

pub(super) const TAKEN: u8 = 1;
pub(super) const CUT: u8 = 2;
pub(super) const DIR: u8 = 4;
/// A directory entry was written for the path.
pub(super) const WROTE: u8 = 8;

pub(super) const WHITEOUT: &[u8] = b".wh.";
pub(super) const OPAQUE: &[u8] = b".wh..wh..opq";

/// What a hard link to some path of the current layer would get.
#[derive(Debug)]
pub(super) enum Src {
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
pub(super) struct Waiting {
    pub(super) path: Vec<u8>,
    /// The link entry's own metadata, for its header.
    pub(super) meta: Meta,
}

pub(super) struct Flattener<W: Write> {
    pub(super) out: TarWriter<W>,
    pub(super) spill: Spill,
    /// TAKEN | CUT | DIR per normalised path (the root is "").
    pub(super) state: HashMap<Vec<u8>, u8>,
    /// Links of upper layers by the path of their target.
    pub(super) waiting: HashMap<Vec<u8>, Vec<Waiting>>,
    /// This layer's entries: path -> index into `slots`; several paths
    /// share a slot when they are one inode.
    pub(super) layer: HashMap<Vec<u8>, usize>,
    /// The paths of `layer` that are directories (the others are
    /// non-directories, a hard link to a directory or to nothing too).
    pub(super) layer_dirs: HashSet<Vec<u8>>,
    pub(super) slots: Vec<Src>,
    /// This layer's whiteouts and opaque markers, applied at its end.
    pub(super) marks: Vec<(Vec<u8>, u8)>,
    /// Links of this layer waiting for lower layers, from its end on.
    pub(super) new_waiting: HashMap<Vec<u8>, Vec<Waiting>>,
    pub(super) stats: Stats,
}

impl<W: Write> Flattener<W> {
    pub(super) fn new(options: &Options, out: W) -> Self {
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
            layer_dirs: HashSet::new(),
            slots: Vec::new(),
            marks: Vec::new(),
            new_waiting: HashMap::new(),
            stats: Stats::default(),
        }
    }

    pub(super) fn layer<R: Read>(&mut self, r: R) -> io::Result<()> {
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

    pub(super) fn end_layer(&mut self) -> io::Result<()> {
        // Links waiting for a path that this layer deleted, or put below
        // a non-directory, name nothing: no lower layer can satisfy them.
        // Links of this layer only see its whiteouts (which act before
        // its entries); links from above see its entries too.
        if !self.waiting.is_empty() || !self.new_waiting.is_empty() {
            let mut marks: HashMap<&[u8], u8> = HashMap::new();
            for (p, f) in &self.marks {
                *marks.entry(p.as_slice()).or_insert(0) |= *f;
            }
            let (layer, dirs) = (&self.layer, &self.layer_dirs);
            let deleted = |t: &[u8]| {
                marks.get(t).is_some_and(|&f| f & TAKEN != 0)
                    || marks.get(&b""[..]).is_some_and(|&f| f & CUT != 0)
                    || parents(t).any(|p| marks.get(p).is_some_and(|&f| f & CUT != 0))
            };
            // Any non-directory entry, a hard link that names a directory
            // or nothing (dropped as dangling) included: the path holds no
            // directory of this layer's, so nothing lower lives below it.
            let under_non_dir =
                |t: &[u8]| parents(t).any(|p| layer.contains_key(p) && !dirs.contains(p));
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
        self.layer_dirs.clear();
        self.slots.clear();
        self.spill.reset()
    }

    pub(super) fn finish(mut self) -> io::Result<Stats> {
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

    pub(super) fn entry(&mut self, raw: &RawEntry, e: &mut dyn Read) -> io::Result<()> {
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
                self.layer_dirs.insert(path.clone());
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
    pub(super) fn hide_non_dir(&mut self, path: &[u8]) {
        self.stats.hidden += 1;
        if !self.below_cut(path) {
            self.marks.push((path.to_vec(), CUT));
        }
    }

    /// Records a whiteout or opaque marker at `path` for the end of the
    /// layer.
    pub(super) fn whiteout(&mut self, path: &[u8]) {
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
    pub(super) fn hidden(&self, path: &[u8], is_dir: bool) -> bool {
        if let Some(&f) = self.state.get(path) {
            if f & TAKEN != 0 || (f & DIR != 0 && !is_dir) {
                return true;
            }
        }
        self.below_cut(path)
    }

    /// Is one of `path`'s parent directories (the root included) `CUT`?
    pub(super) fn below_cut(&self, path: &[u8]) -> bool {
        if path.is_empty() {
            return false;
        }
        let cut = |p: &[u8]| self.state.get(p).is_some_and(|&f| f & CUT != 0);
        cut(b"") || parents(path).any(cut)
    }

    /// Decides `path` for lower layers.
    pub(super) fn take(&mut self, path: &[u8], flags: u8) {
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
    pub(super) fn mark_parents(&mut self, path: &[u8]) {
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

    pub(super) fn new_slot(&mut self, src: Src) -> usize {
        self.slots.push(src);
        self.slots.len() - 1
    }

    pub(super) fn slot(&mut self, path: &[u8], src: Src) -> usize {
        let s = self.new_slot(src);
        self.layer.insert(path.to_vec(), s);
        s
    }

    /// Writes (or defers) hard links to the inode of slot `s`.
    pub(super) fn link_to(&mut self, s: usize, links: Vec<Waiting>) -> io::Result<()> {
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
