//! A 200 MiB file streams through `flatten` in bounded memory. Its own
//! test binary, because it counts the heap of the whole process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use oci_registry::layer::flatten::flatten;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SIZE: u64 = 200 << 20;
/// A prime period, so that a shifted or repeated block shows.
const PERIOD: usize = 65_521;

fn pattern() -> Vec<u8> {
    (0..2 * PERIOD)
        .map(|i| {
            ((i % PERIOD) as u32)
                .wrapping_mul(2_654_435_761)
                .to_be_bytes()[0]
        })
        .collect()
}

/// A layer tar with one `SIZE`-byte file, generated as it is read.
struct BigLayer {
    header: [u8; 512],
    pattern: Vec<u8>,
    pos: u64,
}

impl BigLayer {
    fn new(name: &str) -> Self {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(SIZE);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        BigLayer {
            header: *h.as_bytes(),
            pattern: pattern(),
            pos: 0,
        }
    }
}

impl Read for BigLayer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // header, content, end-of-archive blocks (SIZE is block aligned)
        let total = 512 + SIZE + 1024;
        if self.pos >= total || buf.is_empty() {
            return Ok(0);
        }
        let n = if self.pos < 512 {
            let at = self.pos as usize;
            let n = buf.len().min(512 - at);
            buf[..n].copy_from_slice(&self.header[at..at + n]);
            n
        } else if self.pos < 512 + SIZE {
            let off = self.pos - 512;
            let at = (off % PERIOD as u64) as usize;
            let n = buf.len().min(PERIOD).min((SIZE - off) as usize);
            buf[..n].copy_from_slice(&self.pattern[at..at + n]);
            n
        } else {
            let n = buf.len().min((total - self.pos) as usize);
            buf[..n].fill(0);
            n
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// Checks the output as it goes by: a header naming `big.bin` (after
/// the small upper layer's entry), the pattern, and zeros to the end.
struct Check {
    pattern: Vec<u8>,
    pos: u64,
    /// Where the big file's content starts in the output.
    data_at: u64,
    header: Vec<u8>,
}

impl Write for Check {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let n = if self.pos < self.data_at {
                let n = rest.len().min((self.data_at - self.pos) as usize);
                self.header.extend_from_slice(&rest[..n]);
                n
            } else if self.pos < self.data_at + SIZE {
                let off = self.pos - self.data_at;
                let at = (off % PERIOD as u64) as usize;
                let n = rest
                    .len()
                    .min(PERIOD)
                    .min((self.data_at + SIZE - self.pos) as usize);
                assert!(
                    rest[..n] == self.pattern[at..at + n],
                    "content differs at {off}"
                );
                n
            } else {
                assert!(rest.iter().all(|&b| b == 0), "garbage after the content");
                rest.len()
            };
            self.pos += n as u64;
            rest = &rest[n..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_200_mib_file_streams_in_bounded_memory() {
    let mut upper = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(5);
    h.set_mode(0o644);
    upper.append_data(&mut h, "small", &b"small"[..]).unwrap();
    let upper = upper.into_inner().unwrap();

    let mut check = Check {
        pattern: pattern(),
        pos: 0,
        // small: header and one block; big.bin: its header
        data_at: 3 * 512,
        header: Vec::new(),
    };
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);

    let layers: Vec<io::Result<Box<dyn Read>>> = vec![
        Ok(Box::new(io::Cursor::new(upper))),
        Ok(Box::new(BigLayer::new("big.bin"))),
    ];
    let stats = flatten(layers.into_iter(), &mut check).unwrap();

    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert_eq!(check.pos, 3 * 512 + SIZE + 1024);
    assert_eq!(&check.header[1024..1031], b"big.bin");
    assert_eq!(stats.data_bytes, SIZE + 5);
    assert_eq!(stats.spilled_bytes, 0);
    eprintln!("peak heap growth while flattening 200 MiB: {peak} bytes");
    assert!(peak < 4 << 20, "peak heap growth {peak} bytes");
}
