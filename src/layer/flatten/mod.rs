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
//! Input: ustar, GNU and PAX tars, read by the streaming reader of `tar_read`
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

mod entry;
mod merge;
mod path;
mod spill;
mod tar_read;
mod tar_write;
#[cfg(test)]
mod tests;

use std::io::{self, Read, Write};
use std::path::PathBuf;

use merge::Flattener;
pub use path::normalize;

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
