//! Layer decoders (`decompress::decoder`, `layer_decoder`) on arbitrary
//! streams: gzip, zstd, or sniffed from the first bytes. The first input
//! byte picks the decoder, the rest is the stream. It must not panic,
//! and:
//! - the stream is read to its end or to an error, in 64 KiB reads, and
//!   the heap in use (glibc's count: Rust's allocations and libzstd's
//!   alike) stays within a bound whatever the input asks for (zstd's
//!   window is capped at 128 MiB), so that a small input cannot make the
//!   library hold much memory; output beyond 64 MiB is not read;
//! - a plain stream (no compression) comes through unchanged.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use oci_registry::layer::decompress::{decoder, layer_decoder, Compression};

/// Heap bytes in use now: small blocks plus mmap()ed big ones.
fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 only reads glibc's allocator statistics.
    let mi = unsafe { libc::mallinfo2() };
    mi.uordblks + mi.hblkhd
}

/// Most heap the decoding may add: the 128 MiB zstd window, its buffers,
/// and ours.
const HEAP_BOUND: usize = 160 << 20;
const OUTPUT_CAP: u64 = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let base = heap_in_use();
    let mut r: Box<dyn Read> = match pick % 4 {
        0 => decoder(Compression::Gzip, body),
        1 => decoder(Compression::Zstd, body),
        2 => match layer_decoder("application/octet-stream", body) {
            Ok(r) => r,
            Err(_) => return,
        },
        _ => decoder(Compression::None, body),
    };
    let mut buf = vec![0u8; 64 << 10];
    let mut out = 0u64;
    let mut plain = Vec::new();
    let mut peak = 0;
    while out < OUTPUT_CAP {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if pick % 4 == 3 {
                    plain.extend_from_slice(&buf[..n]);
                }
                out += n as u64;
            }
        }
        peak = peak.max(heap_in_use().saturating_sub(base));
    }
    assert!(
        peak <= HEAP_BOUND,
        "{} input bytes made the decoder hold {peak} heap bytes",
        body.len()
    );
    if pick % 4 == 3 {
        assert_eq!(plain, body, "a plain stream changed");
    }
});
