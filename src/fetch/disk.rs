//! The optional on-disk cache (`cache_dir=`), content-addressed by digest.
//!
//! - `DIR/blobs/<alg>/<hex>`: complete blobs, promoted there only once
//!   every byte is present and the file hashes to its digest.
//! - `DIR/partial/<alg>/<hex>.<block>.data` (a sparse file of the blob's
//!   size) and `.map` (one byte per block: 1 = present): blocks fetched
//!   so far, reused across opens and processes.
//!
//! Concurrency: blocks are written with pwrite at their own offsets
//! (every writer writes the same bytes: the content is addressed by its
//! digest), and the map is updated under an exclusive flock; promotion is
//! an atomic rename. Several processes may use one directory at once.
//!
//! The same type also serves as the *spill file* of one open blob (the
//! `spill=` option): an unlinked temporary file that holds the blocks the
//! memory cache evicts, gone with the last descriptor, never promoted.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};

pub struct DiskCache {
    /// `cache_dir=` (shared, kept) rather than a private spill file.
    persistent: bool,
    digest: Digest,
    size: u64,
    block: u64,
    complete: PathBuf,
    data_path: PathBuf,
    map_path: PathBuf,
    inner: Mutex<Files>,
}

struct Files {
    /// The complete blob, once there.
    whole: Option<Arc<File>>,
    data: Option<Arc<File>>,
    map: Option<File>,
    present: Vec<u8>,
    promoted: bool,
}

impl Files {
    /// Under the map's lock: marks block `mark` stored (if any), then
    /// takes in the marks every process has made. A map that cannot be
    /// read adds nothing.
    fn sync_map(&mut self, mark: Option<u64>) {
        let Some(map) = &self.map else { return };
        let mut bytes = vec![0u8; self.present.len()];
        {
            let _l = Flock::exclusive(map);
            if let Some(idx) = mark {
                let _ = map.write_all_at(&[1], idx);
            }
            if map.read_at(&mut bytes, 0).is_err() {
                return;
            }
        }
        for (p, b) in self.present.iter_mut().zip(bytes) {
            *p |= b;
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(
        e.raw_os_error().unwrap_or(libc::EIO),
        format!("cache_dir: {what} {}: {e}", path.display()),
    )
}

struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(f: &'a File) -> Flock<'a> {
        // SAFETY: flock on a descriptor we own; released in Drop.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        Flock(f)
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl DiskCache {
    pub fn open(dir: &Path, digest: &Digest, size: u64, block: u64) -> Result<DiskCache> {
        let (alg, hex) = digest
            .as_str()
            .split_once(':')
            .unwrap_or(("sha256", digest.as_str()));
        let blobs = dir.join("blobs").join(alg);
        let partial = dir.join("partial").join(alg);
        for d in [&blobs, &partial] {
            fs::create_dir_all(d).map_err(|e| io_err("cannot create", d, e))?;
        }
        let complete = blobs.join(hex);
        let data_path = partial.join(format!("{hex}.{block}.data"));
        let map_path = partial.join(format!("{hex}.{block}.map"));
        let nblocks = size.div_ceil(block) as usize;
        let cache = DiskCache {
            persistent: true,
            digest: digest.clone(),
            size,
            block,
            complete,
            data_path,
            map_path,
            inner: Mutex::new(Files {
                whole: None,
                data: None,
                map: None,
                present: vec![0; nblocks],
                promoted: false,
            }),
        };
        cache.refresh()?;
        // Every block there but never promoted (their writers ended, or
        // the last block came from another process): promote now.
        cache.promote_held();
        Ok(cache)
    }

    /// A private spill file for a blob of `size` bytes in `dir`: created
    /// unlinked (O_TMPFILE, or created and removed at once), so nothing is
    /// left behind whatever happens to the process.
    pub fn spill(dir: &Path, digest: &Digest, size: u64, block: u64) -> Result<DiskCache> {
        let data = tmpfile(dir).map_err(|e| io_err("cannot create a spill file in", dir, e))?;
        Ok(DiskCache {
            persistent: false,
            digest: digest.clone(),
            size,
            block,
            complete: PathBuf::new(),
            data_path: PathBuf::new(),
            map_path: PathBuf::new(),
            inner: Mutex::new(Files {
                whole: None,
                data: Some(Arc::new(data)),
                map: None,
                present: vec![0; size.div_ceil(block) as usize],
                promoted: false,
            }),
        })
    }

    /// A `cache_dir=` cache (not a spill file).
    pub fn persistent(&self) -> bool {
        self.persistent
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Files> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks again at what is on disk (another process may have added).
    fn refresh(&self) -> Result<()> {
        let mut f = self.lock();
        if f.whole.is_some() || !self.persistent {
            return Ok(());
        }
        if self.adopt_complete(&mut f) {
            return Ok(());
        }
        if f.data.is_none() {
            let data = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.data_path)
                .map_err(|e| io_err("cannot open", &self.data_path, e))?;
            let map = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.map_path)
                .map_err(|e| io_err("cannot open", &self.map_path, e))?;
            f.data = Some(Arc::new(data));
            f.map = Some(map);
        }
        f.sync_map(None);
        Ok(())
    }

    /// The complete blob, if a process has promoted it: taken as the file
    /// to read from.
    fn adopt_complete(&self, f: &mut Files) -> bool {
        let Ok(file) = File::open(&self.complete) else {
            return false;
        };
        if file.metadata().map(|m| m.len()).ok() != Some(self.size) {
            return false;
        }
        f.whole = Some(Arc::new(file));
        true
    }

    /// Block `idx` if the disk has it.
    pub fn read_block(&self, idx: u64) -> Option<Vec<u8>> {
        let len = self.block.min(self.size - idx * self.block) as usize;
        let present = {
            let f = self.lock();
            f.whole.is_some() || f.present.get(idx as usize) == Some(&1)
        };
        if !present {
            // Another process may have fetched it meanwhile.
            self.refresh().ok()?;
            let f = self.lock();
            if f.whole.is_none() && f.present.get(idx as usize) != Some(&1) {
                return None;
            }
        }
        let f = self.lock();
        let file = f.whole.as_ref().or(f.data.as_ref())?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, idx * self.block).ok()?;
        Some(buf)
    }

    /// Reads `buf.len()` bytes at blob offset `off`, all in one block the
    /// file has; false if it has not.
    pub fn read_into(&self, off: u64, buf: &mut [u8]) -> bool {
        let f = self.lock();
        let idx = off / self.block;
        if f.whole.is_none() && f.present.get(idx as usize) != Some(&1) {
            return false;
        }
        let Some(file) = f.whole.as_ref().or(f.data.as_ref()).cloned() else {
            return false;
        };
        // Reads of the file need no lock of ours.
        drop(f);
        file.read_exact_at(buf, off).is_ok()
    }

    pub fn has(&self, idx: u64) -> bool {
        let f = self.lock();
        f.whole.is_some() || f.present.get(idx as usize) == Some(&1)
    }

    /// Stores a fetched block; true if the file did not have it.
    pub fn write_block(&self, idx: u64, data: &[u8]) -> bool {
        let mut f = self.lock();
        if f.whole.is_some() || f.present.get(idx as usize) == Some(&1) {
            return false;
        }
        let Some(file) = f.data.as_ref() else {
            return false;
        };
        if file.write_all_at(data, idx * self.block).is_err() {
            return false;
        }
        // With the marks other processes made meanwhile, so that
        // `promote_if_complete` sees the blob complete without reading
        // the map again.
        f.sync_map(Some(idx));
        if let Some(p) = f.present.get_mut(idx as usize) {
            *p = 1;
        }
        true
    }

    /// When every block is there (from this process or others, as the
    /// map read when this process last stored a block says): hashes the
    /// data file and, if it matches the digest, moves it to `blobs/`
    /// (atomically).
    pub fn promote_if_complete(&self) {
        if self.persistent {
            self.promote_held();
        }
    }

    /// `promote_if_complete` on what the map said when last read (by
    /// `refresh` or `write_block`).
    fn promote_held(&self) {
        let mut f = self.lock();
        if f.whole.is_some() || f.promoted || f.present.iter().any(|p| *p != 1) {
            return;
        }
        f.promoted = true;
        // Another process that stored the last block may have promoted
        // it already: nothing to hash.
        if self.adopt_complete(&mut f) {
            return;
        }
        let Some(file) = f.data.clone() else { return };
        let mut h = Hasher::new(self.digest.algorithm());
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < self.size {
            let n = ((self.size - off) as usize).min(buf.len());
            if file.read_exact_at(&mut buf[..n], off).is_err() {
                return;
            }
            h.update(&buf[..n]);
            off += n as u64;
        }
        if h.finish() != self.digest {
            // Not what it should be: start over, here too (its blocks
            // are fetched again, into new files).
            let _ = fs::remove_file(&self.data_path);
            let _ = fs::remove_file(&self.map_path);
            f.data = None;
            f.map = None;
            f.present.fill(0);
            return;
        }
        let _ = file.sync_data();
        if fs::rename(&self.data_path, &self.complete).is_ok() {
            let _ = fs::remove_file(&self.map_path);
            f.whole = File::open(&self.complete).ok().map(Arc::new);
        }
    }

    pub fn is_complete(&self) -> bool {
        self.lock().whole.is_some()
    }
}

/// Where spill files go by default: `$TMPDIR`, else `/var/tmp` (a disk,
/// not a tmpfs, by convention: spill files can be as big as a blob).
pub(crate) fn default_tmp_dir() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

/// An unlinked read-write file in `dir` (mode 0600): the spill files of
/// blobs and of `flatten`.
pub(crate) fn tmpfile(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    let tmp = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    if let Ok(f) = tmp {
        return Ok(f);
    }
    // Filesystems without O_TMPFILE: a fresh name, removed at once.
    static N: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..16 {
        let name = dir.join(format!(
            ".oci-registry-spill.{}.{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&name)
        {
            Ok(f) => {
                fs::remove_file(&name)?;
                return Ok(f);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EEXIST)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn blocks_persist_and_promote() {
        let dir = std::env::temp_dir().join(format!("oci-disk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(Algorithm::Sha256, &data);
        let a = DiskCache::open(&dir, &d, data.len() as u64, 4096).unwrap();
        assert!(a.read_block(0).is_none());
        a.write_block(1, &data[4096..8192]);
        // A second opener (another process, say) sees the block.
        let b = DiskCache::open(&dir, &d, data.len() as u64, 4096).unwrap();
        assert_eq!(b.read_block(1).unwrap(), &data[4096..8192]);
        b.write_block(0, &data[..4096]);
        b.write_block(2, &data[8192..]);
        b.promote_if_complete();
        assert!(b.is_complete());
        let c = DiskCache::open(&dir, &d, data.len() as u64, 4096).unwrap();
        assert!(c.is_complete());
        assert_eq!(c.read_block(2).unwrap(), &data[8192..]);
        // A wrong blob is never promoted.
        let wrong = Digest::of(Algorithm::Sha256, b"other");
        let w = DiskCache::open(&dir, &wrong, 4, 4096).unwrap();
        w.write_block(0, b"evil");
        w.promote_if_complete();
        assert!(!w.is_complete());
        // ... and what it had is not served: fetched again.
        assert!(!w.has(0) && w.read_block(0).is_none());
        assert!(w.write_block(0, b"good"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn complete_partial_promoted_on_open() {
        let dir = std::env::temp_dir().join(format!("oci-disk-open-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i as u8) ^ 0x5a).collect();
        let d = Digest::of(Algorithm::Sha256, &data);
        // Two writers, the last block first; neither promotes.
        let a = DiskCache::open(&dir, &d, data.len() as u64, 4096).unwrap();
        let b = DiskCache::open(&dir, &d, data.len() as u64, 4096).unwrap();
        assert!(a.write_block(2, &data[8192..]));
        assert!(b.write_block(0, &data[..4096]));
        assert!(b.write_block(1, &data[4096..8192]));
        assert!(!b.write_block(1, &data[4096..8192]));
        assert!(!a.is_complete() && !b.is_complete());
        // The next opener finds every block and promotes.
        let c = DiskCache::open(&dir, &d, data.len() as u64, 4096).unwrap();
        assert!(c.is_complete());
        let hex = d.as_str().split_once(':').unwrap().1;
        assert_eq!(fs::read(dir.join("blobs/sha256").join(hex)).unwrap(), data);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn last_block_of_another_process_promotes() {
        let dir = std::env::temp_dir().join(format!("oci-disk-last-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i as u8).wrapping_mul(7)).collect();
        let d = Digest::of(Algorithm::Sha256, &data);
        let a = DiskCache::open(&dir, &d, data.len() as u64, 4096).unwrap();
        let b = DiskCache::open(&dir, &d, data.len() as u64, 4096).unwrap();
        // b opened before a stored anything: what a stores, b learns when
        // it stores a block of its own, and the blob is complete with b's.
        assert!(a.write_block(0, &data[..4096]));
        assert!(a.write_block(2, &data[8192..]));
        assert!(b.write_block(1, &data[4096..8192]));
        b.promote_if_complete();
        assert!(b.is_complete());
        // a, whose map never saw block 1, finds the blob promoted when it
        // looks for block 1.
        assert!(!a.is_complete());
        assert_eq!(a.read_block(1).unwrap(), &data[4096..8192]);
        assert!(a.is_complete());
        let hex = d.as_str().split_once(':').unwrap().1;
        assert_eq!(fs::read(dir.join("blobs/sha256").join(hex)).unwrap(), data);
        assert!(!dir
            .join("partial/sha256")
            .join(format!("{hex}.4096.map"))
            .exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn spill_file_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("oci-spill-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(Algorithm::Sha256, &data);
        let s = DiskCache::spill(&dir, &d, data.len() as u64, 4096).unwrap();
        assert!(!s.persistent() && !s.has(1) && s.read_block(1).is_none());
        s.write_block(1, &data[4096..8192]);
        s.write_block(2, &data[8192..]);
        assert_eq!(s.read_block(1).unwrap(), &data[4096..8192]);
        assert_eq!(s.read_block(2).unwrap(), &data[8192..]);
        assert!(!s.has(0));
        s.promote_if_complete();
        assert!(!s.is_complete());
        // No name in the directory, now or after.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        drop(s);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&dir);
    }
}
