//! What a vfile reads: a blob as it is, a layer decompressed, or a whole
//! image flattened into one tar of its root filesystem; and a local tar
//! index in front of a layer's tar (`tarindex=`).

use std::io::{self, Read};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fetch::blob::{Blob, ReadConfig, Stats};
use crate::layer::decompress::{self, Compression};
use crate::layer::gzran::Zinfo;
use crate::layer::seekable::GzipView;
use crate::layer::stream::{to_io, StreamView};
use crate::registry::{BlobDesc, Registry};

/// A blob read in order from the start, as `io::Read` (on the stream
/// thread: verified as it streams, like any sequential reader).
pub struct BlobReader {
    blob: Arc<Blob>,
    pos: u64,
}

impl BlobReader {
    pub fn new(blob: Arc<Blob>) -> BlobReader {
        BlobReader { blob, pos: 0 }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.blob.read_at(buf, self.pos, true).map_err(to_io)?;
        self.pos += n as u64;
        Ok(n)
    }
}

pub enum Source {
    /// The blob's own bytes.
    Blob(Arc<Blob>),
    /// A derived stream (decompressed, flattened) of these blobs.
    View(Box<View>),
    /// A gzip layer's uncompressed bytes, with random access.
    Gzip(Box<GzipView>),
    /// A local tar index followed by a layer's uncompressed tar: the one
    /// device erofs-utils' `oci.tarindex=` mount makes.
    Indexed(Box<Indexed>),
}

pub struct Indexed {
    index: std::fs::File,
    index_len: u64,
    tar: Source,
}

impl Indexed {
    fn read_at(&self, buf: &mut [u8], off: u64, sequential: bool) -> Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        if off < self.index_len {
            done = buf.len().min((self.index_len - off) as usize);
            self.index
                .read_exact_at(&mut buf[..done], off)
                .map_err(|e| {
                    Error::new(libc::EIO, format!("tarindex: cannot read at {off}: {e}"))
                })?;
        }
        if done < buf.len() {
            let at = off + done as u64 - self.index_len;
            done += self.tar.read_at(&mut buf[done..], at, sequential)?;
        }
        Ok(done)
    }
}

/// `tar` behind the tar index in the file at `path` (`tarindex=`).
pub fn indexed(path: &std::path::Path, tar: Source) -> Result<Source> {
    let index = std::fs::File::open(path).map_err(|e| {
        Error::new(
            libc::ENOENT,
            format!("tarindex: cannot open {}: {e}", path.display()),
        )
    })?;
    let index_len = index
        .metadata()
        .map_err(|e| Error::new(libc::EIO, format!("tarindex: {}: {e}", path.display())))?
        .len();
    Ok(Source::Indexed(Box::new(Indexed {
        index,
        index_len,
        tar,
    })))
}

pub struct View {
    view: StreamView,
    blobs: Vec<Arc<Blob>>,
    /// What the getters report: the layer, or (flatten) the image.
    desc: BlobDesc,
}

impl Source {
    pub fn read_at(&self, buf: &mut [u8], off: u64, sequential: bool) -> Result<usize> {
        match self {
            Source::Blob(b) => b.read_at(buf, off, sequential),
            Source::View(v) => v.view.read_at(buf, off),
            Source::Gzip(g) => g.read_at(buf, off),
            Source::Indexed(x) => x.read_at(buf, off, sequential),
        }
    }

    /// The size of what is read: for a derived stream, known after one
    /// pass (this makes one if needed).
    pub fn size(&self) -> Result<u64> {
        match self {
            Source::Blob(b) => Ok(b.size()),
            Source::View(v) => v.view.size(),
            Source::Gzip(g) => g.size(),
            Source::Indexed(x) => Ok(x.index_len + x.tar.size()?),
        }
    }

    pub fn desc(&self) -> &BlobDesc {
        match self {
            Source::Blob(b) => b.desc(),
            Source::View(v) => &v.desc,
            Source::Gzip(g) => g.blob().desc(),
            Source::Indexed(x) => x.tar.desc(),
        }
    }

    pub fn stats(&self) -> Stats {
        match self {
            Source::Blob(b) => b.stats(),
            Source::Gzip(g) => g.blob().stats(),
            Source::Indexed(x) => x.tar.stats(),
            Source::View(v) => {
                let mut s = Stats::default();
                for b in &v.blobs {
                    let t = b.stats();
                    s.bytes_fetched += t.bytes_fetched;
                    s.requests += t.requests;
                    s.retries += t.retries;
                    s.cache_hits += t.cache_hits;
                    s.cache_misses += t.cache_misses;
                    s.bytes_served += t.bytes_served;
                    s.disk_hits += t.disk_hits;
                }
                s
            }
        }
    }
}

/// One layer's uncompressed bytes: a gzip layer with random access
/// through checkpoints (`zinfo`, else those `cache_dir` kept, else made
/// on a pass ahead of the readers), a plain tar as the blob itself, a
/// zstd layer decompressed on the stream thread (spooled once a reader
/// goes back).
pub fn decompressed(
    registry: Arc<Registry>,
    desc: BlobDesc,
    mut cfg: ReadConfig,
    zinfo: Option<Zinfo>,
) -> Result<Source> {
    let named = decompress::from_media_type(&desc.media_type);
    if named == Some(Compression::Gzip) && !cfg.block_given {
        cfg.block = crate::layer::seekable::SPAN_BLOCK;
    }
    let blob = Arc::new(Blob::new(registry, desc.clone(), cfg.clone())?);
    let c = match named {
        Some(c) => c,
        None => {
            let mut first = [0u8; decompress::SNIFF_LEN];
            let n = blob.read_at(&mut first, 0, false)?;
            decompress::sniff(&first[..n])
        }
    };
    if zinfo.is_some() && c != Compression::Gzip {
        return Err(Error::invalid(format!(
            "zinfo: the layer {} is not gzip ({})",
            desc.digest, desc.media_type
        )));
    }
    match c {
        Compression::Gzip => Ok(Source::Gzip(Box::new(GzipView::new(
            blob,
            zinfo,
            cfg.cache_dir.as_deref(),
            cfg.cache_mem,
        )))),
        Compression::None => Ok(Source::Blob(blob)),
        Compression::Zstd => {
            let b = blob.clone();
            // zstd has no seekable frames (unless its producer wrote
            // them): reads behind come from the decompressed copy
            // spooled in the spill directory.
            let producer: crate::layer::stream::Producer =
                Arc::new(move |out: &mut dyn io::Write| {
                    let mut r = decompress::decoder(Compression::Zstd, BlobReader::new(b.clone()));
                    io::copy(&mut r, out).map(|_| ())
                });
            let view = StreamView::spooled(producer, cfg.spill.as_deref());
            Ok(Source::View(Box::new(View {
                view,
                blobs: vec![blob],
                desc,
            })))
        }
    }
}

/// Layers below the one being flattened whose first bytes are fetched
/// meanwhile (`Blob::prefetch`).
const PREFETCH_LAYERS: usize = 2;

/// The whole image: its layers decompressed and merged, top layer first,
/// with whiteouts applied.
pub fn flattened(
    registry: Arc<Registry>,
    layers: Vec<BlobDesc>,
    cfg: ReadConfig,
    image: BlobDesc,
) -> Result<Source> {
    if layers.is_empty() {
        return Err(Error::protocol("flatten: the image has no layers"));
    }
    let blobs: Vec<Arc<Blob>> = layers
        .iter()
        .map(|d| Blob::new(registry.clone(), d.clone(), cfg.clone()).map(Arc::new))
        .collect::<Result<_>>()?;
    let bs = blobs.clone();
    let view = StreamView::spooled(
        Arc::new(move |out: &mut dyn io::Write| {
            let top_down = (0..bs.len()).rev().map(|i| {
                // The layers below start coming while this one is read, as
                // registry clients pull several layers at once (containerd:
                // three): each would otherwise begin with a round trip.
                for below in bs[..i].iter().rev().take(PREFETCH_LAYERS) {
                    below.prefetch();
                }
                let b = &bs[i];
                let mt = b.desc().media_type.clone();
                decompress::layer_decoder(&mt, BlobReader::new(b.clone()))
            });
            crate::layer::flatten::flatten(top_down, out).map(|_| ())
        }),
        cfg.spill.as_deref(),
    );
    Ok(Source::View(Box::new(View {
        view,
        blobs,
        desc: image,
    })))
}
