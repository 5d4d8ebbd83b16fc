//! The spill file of hidden hard-link targets.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::{context, copy_exact};

/// Content of hidden files, for hard links of the same layer that turn up
/// later: one unlinked temporary file, emptied at the end of each layer.
pub(super) struct Spill {
    pub(super) dir: PathBuf,
    pub(super) file: Option<BufWriter<File>>,
    pub(super) len: u64,
}

impl Spill {
    pub(super) fn new(dir: PathBuf) -> Self {
        Spill {
            dir,
            file: None,
            len: 0,
        }
    }

    /// Appends exactly `n` bytes of `src`; returns their offset.
    pub(super) fn put(&mut self, src: &mut dyn Read, n: u64) -> io::Result<u64> {
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

    pub(super) fn reader(&mut self, off: u64, n: u64) -> io::Result<SpillReader<'_>> {
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

    pub(super) fn reset(&mut self) -> io::Result<()> {
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

pub(super) struct SpillReader<'a> {
    pub(super) file: &'a File,
    pub(super) off: u64,
    pub(super) left: u64,
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
