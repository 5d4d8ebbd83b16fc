//! What a vfile reads: a blob as it is, a layer decompressed, or a whole
//! image flattened into one tar of its root filesystem.

use std::io::{self, Read};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fetch::blob::{Blob, ReadConfig, Stats};
use crate::layer::decompress;
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
        }
    }

    /// The size of what is read: for a derived stream, known after one
    /// pass (this makes one if needed).
    pub fn size(&self) -> Result<u64> {
        match self {
            Source::Blob(b) => Ok(b.size()),
            Source::View(v) => v.view.size(),
        }
    }

    pub fn desc(&self) -> &BlobDesc {
        match self {
            Source::Blob(b) => b.desc(),
            Source::View(v) => &v.desc,
        }
    }

    pub fn stats(&self) -> Stats {
        match self {
            Source::Blob(b) => b.stats(),
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

/// One layer, decompressed on the stream thread.
pub fn decompressed(registry: Arc<Registry>, desc: BlobDesc, cfg: ReadConfig) -> Result<Source> {
    let blob = Arc::new(Blob::new(registry, desc.clone(), cfg)?);
    let b = blob.clone();
    let mt = desc.media_type.clone();
    let view = StreamView::new(Arc::new(move |out: &mut dyn io::Write| {
        let mut r = decompress::layer_decoder(&mt, BlobReader::new(b.clone()))?;
        io::copy(&mut r, out).map(|_| ())
    }));
    Ok(Source::View(Box::new(View {
        view,
        blobs: vec![blob],
        desc,
    })))
}

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
    let view = StreamView::new(Arc::new(move |out: &mut dyn io::Write| {
        let top_down = bs.iter().rev().map(|b| {
            let mt = b.desc().media_type.clone();
            decompress::layer_decoder(&mt, BlobReader::new(b.clone()))
        });
        crate::layer::flatten::flatten(top_down, out).map(|_| ())
    }));
    Ok(Source::View(Box::new(View {
        view,
        blobs,
        desc: image,
    })))
}
