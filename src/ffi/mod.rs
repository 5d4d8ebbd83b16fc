//! The C boundary: exported functions, the vfile ops tables, errno
//! returns and error messages. Every exported body runs inside
//! `guard::guard`, so no panic crosses into C.

pub mod abi;
pub mod guard;

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;
use std::sync::Mutex;

use crate::error::Error;
use crate::layer::image::Source;
use abi::{erofs_vfile, erofs_vfile_u, erofs_vfops, Vf};
use guard::{fail, guard, set_last_error};

const MAGIC: u64 = 0x6f63_695f_7265_6721; // "oci_reg!"

/// What a vfile's payload points to.
struct Handle {
    magic: u64,
    blob: Source,
    /// The offset read() and lseek() share, as a file descriptor's.
    offset: Mutex<u64>,
    digest: CString,
    media_type: CString,
}

#[cfg(not(feature = "erofs-abi-108"))]
static OPS_CALLER: erofs_vfops =
    abi::ops_table(op_read, op_pread, op_lseek, op_fstat, oci_registry_close);
#[cfg(not(feature = "erofs-abi-108"))]
static OPS_OWNED: erofs_vfops =
    abi::ops_table(op_read, op_pread, op_lseek, op_fstat, close_oci_registry);
#[cfg(feature = "erofs-abi-108")]
static OPS_CALLER: erofs_vfops = abi::ops_table(op_read, op_pread, op_lseek, op_fstat);
#[cfg(feature = "erofs-abi-108")]
static OPS_OWNED: erofs_vfops = abi::ops_table(op_read, op_pread, op_lseek, op_fstat);

fn ops_ptr(owned: bool) -> *mut erofs_vfops {
    let t: &'static erofs_vfops = if owned { &OPS_OWNED } else { &OPS_CALLER };
    t as *const erofs_vfops as *mut erofs_vfops
}

fn new_handle(blob: Source) -> *mut Handle {
    let digest = CString::new(blob.desc().digest.as_str()).unwrap_or_default();
    let media_type = CString::new(blob.desc().media_type.as_str()).unwrap_or_default();
    Box::into_raw(Box::new(Handle {
        magic: MAGIC,
        blob,
        offset: Mutex::new(0),
        digest,
        media_type,
    }))
}

fn vfile_value(owned: bool, h: *mut Handle) -> erofs_vfile {
    let mut payload = [0u8; 16];
    payload[..8].copy_from_slice(&(h as usize as u64).to_ne_bytes());
    erofs_vfile {
        ops: ops_ptr(owned),
        u: erofs_vfile_u { payload },
    }
}

/// The handle behind `vf`: -EINVAL for NULL or a vfile that is not ours,
/// -EBADF after close.
///
/// # Safety
/// `vf` is NULL or points to a readable `struct erofs_vfile`.
unsafe fn handle<'a>(vf: *const erofs_vfile) -> Result<&'a Handle, Error> {
    if vf.is_null() {
        return Err(Error::invalid("NULL vfile"));
    }
    let v = &*vf;
    if v.ops != ops_ptr(false) && v.ops != ops_ptr(true) {
        return Err(Error::invalid("not a vfile opened by liboci_registry"));
    }
    let raw = u64::from_ne_bytes(v.u.payload[..8].try_into().unwrap_or([0; 8])) as usize;
    if raw == 0 {
        return Err(Error::new(libc::EBADF, "vfile is closed"));
    }
    let h = &*(raw as *const Handle);
    if h.magic != MAGIC {
        return Err(Error::new(libc::EBADF, "vfile is closed or corrupted"));
    }
    Ok(h)
}

fn set_errno(e: i32) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// # Safety
/// `s` is NULL or a NUL-terminated string.
unsafe fn c_str<'a>(s: *const c_char, what: &str) -> Result<Option<&'a str>, Error> {
    if s.is_null() {
        return Ok(None);
    }
    CStr::from_ptr(s)
        .to_str()
        .map(Some)
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// open_oci_registry() - open a registry blob named by an original-grammar URL
/// @url: `<scheme>://<host>[:port]/v2/library/<repo>/[arch-<a>/][os-<o>/][digest-<n>]`
///       (n is the 1-based layer number; defaults amd64, linux, 1) or
///       `<scheme>://<host>[:port]/v2/library/<repo>/blobs/<digest>`.
///       The tag is `latest`.
///
/// Return: a vfile allocated by the library, to release with
/// close_oci_registry(); NULL with errno set on any failure, and the
/// reason in oci_registry_last_error().
///
/// # Safety
/// `url` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn open_oci_registry(url: *const c_char) -> *mut erofs_vfile {
    let out = guard(Err(libc::EIO), || {
        let r = (|| {
            let url = c_str(url, "URL")?.ok_or_else(|| Error::invalid("NULL URL"))?;
            crate::open_legacy_url(url)
        })();
        match r {
            Ok(blob) => {
                let h = new_handle(blob);
                Ok(Box::into_raw(Box::new(vfile_value(true, h))))
            }
            Err(e) => Err(-fail(&e)),
        }
    });
    match out {
        Ok(vf) => vf,
        Err(errno) => {
            set_errno(errno);
            ptr::null_mut()
        }
    }
}

/// Frees the state behind `vf` and, for a vfile from open_oci_registry(),
/// the vfile itself. Safe on NULL and on a vfile already closed by
/// oci_registry_close().
unsafe fn release(vf: Vf) {
    if vf.is_null() {
        return;
    }
    let v = &mut *vf;
    let owned = v.ops == ops_ptr(true);
    if !owned && v.ops != ops_ptr(false) {
        set_last_error("close: not a vfile opened by liboci_registry");
        return;
    }
    let raw = u64::from_ne_bytes(v.u.payload[..8].try_into().unwrap_or([0; 8])) as usize;
    if raw != 0 {
        let h = raw as *mut Handle;
        if (*h).magic == MAGIC {
            (*h).magic = 0;
            drop(Box::from_raw(h));
        }
        v.u.payload = [0; 16];
    }
    if owned {
        drop(Box::from_raw(vf));
    }
}

/// close_oci_registry() - release a vfile from open_oci_registry()
/// @vf: the vfile, or NULL (a no-op)
///
/// The vfile is freed: do not use it afterwards.
///
/// # Safety
/// `vf` is NULL or a vfile this library opened and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn close_oci_registry(vf: *mut erofs_vfile) {
    guard((), || release(vf))
}

/// oci_registry_open() - open a registry blob into a caller-owned vfile
/// @vf: the vfile to fill; written only on success
/// @ref: an image reference: `alpine`, `docker.io/library/alpine:3.20`,
///       `localhost:5000/a/b/c:tag`, `host/repo@sha256:...`,
///       `host/repo:tag@sha256:...` (normalised as docker does)
/// @options: NULL or comma-separated `key[=value]` items (README.md lists
///       them all): `platform=os/arch[/variant]` (default: the host's),
///       `layer=N` (0-based, default 0) or `blob=sha256:...`, `flatten`,
///       `decompress=auto|none`, `zinfo=FILE`, `tarindex=FILE`,
///       `verify=stream|full|none`, `block=`,
///       `cache_mem=`, `readahead=`, `connections=`, `chunk=`,
///       `cache_dir=`, `spill=`, `fill=`, `meta_prefetch=`,
///       `retries=`, `connect_timeout=`,
///       `low_speed_limit=`, `low_speed_time=`, `username=`, `password=`,
///       `auth=`, `ca=`, `tls_verify=0`, `cert=`, `key=`, `mirror=`,
///       `insecure` (plain http only; loopback registries are tried over
///       plain http first, then https, unless TLS options are given)
///
/// The blob is streamed: the first read returns once its first bytes
/// arrive, and memory stays bounded (`cache_mem`) whatever the blob's
/// size. Reads go through a cache of aligned blocks (`block=`, 1M); a
/// sequential reader gets readahead (`readahead=`, 8M; from a registry a
/// long round trip away, 8 Range requests of 4M in flight at once on
/// connections of their own: `connections=`, `chunk=`), random misses are
/// fetched with Range requests, adjacent ones together, several threads'
/// misses in flight at once. A blob bigger than `cache_mem` spills blocks
/// evicted from memory to a private unlinked file (`spill=`, in $TMPDIR or
/// /var/tmp; `spill=none` refetches them instead), and once random reads
/// have asked for a quarter of its blocks the rest is fetched in the
/// background in one stream (from a far registry: one per connection, once
/// they have made as many misses as a quarter of the blocks divided by the
/// connections; `fill=none` turns that off). An EROFS image from a far
/// registry has the blocks of its first two directory levels, named by
/// its first block, fetched as soon as that block is read
/// (`meta_prefetch=none` turns that off). Transient failures (dropped connections,
/// 5xx, 429) are retried (`retries=`, 4) and resumed from the byte where
/// they stopped.
///
/// Verification (`verify=`): by default bytes read in order from byte 0
/// are hashed as they arrive (off the caller's thread) and the read that
/// reaches the end of the blob fails with -EBADMSG on a digest or size
/// mismatch (as does every read after it); bytes served by isolated
/// preads are not verified. `verify=full` fetches and checks the whole
/// blob at open (it must fit `cache_mem`); `verify=none` hashes nothing.
///
/// `decompress=auto` presents a layer's uncompressed tar. A gzip layer is
/// read at random through checkpoints every 4 MiB of output (SOCI /
/// erofs-utils zinfo): from `zinfo=FILE` (`mkfs.erofs --gzinfo`), else
/// those `cache_dir` kept, else made by a pass that a worker thread runs
/// ahead of the readers; a read inflates one span at most, and inflated
/// spans are cached. A zinfo that does not fit the blob fails reads with
/// -EBADMSG, never other bytes. `tarindex=FILE` puts a local tar index
/// (`mkfs.erofs --tar=i`) in front of the tar: one EROFS device, as
/// mount.erofs's oci.tarindex= builds it. A plain tar layer is the blob
/// itself. A zstd layer, and `flatten` (the whole image as one merged
/// tar, whiteouts applied), are produced on a worker thread: read and
/// forward lseek cost nothing extra; the first read behind the current
/// offset restarts the stream once and SEEK_END/fstat produce it to the
/// end, after which what is produced is kept in a private file in the
/// spill directory and reads behind come from there (`spill=none`:
/// every read behind restarts the stream).
///
/// Which bytes are verified before they are served: the blob's own bytes
/// as `verify=` says; a gzip layer's uncompressed bytes come from the
/// pass, which reads the blob in order and checks every member's CRC-32
/// and the digest at its end (a mismatch fails every later read), or
/// from spans inflated at random, whose compressed bytes are checked
/// against the digest only once the whole blob has been read (the fill,
/// or `verify=full` at open).
///
/// Threads: pread may be called on one vfile from several threads at
/// once; read and lseek share one offset, as on a file descriptor. A
/// vfile stays usable in the child of fork() (the child restarts what
/// was in flight).
///
/// Return: 0, or a negative errno (-EINVAL bad arguments, -ENOENT no such
/// repository, tag, digest or platform, -ERANGE layer out of range,
/// -EACCES credentials needed, -ECONNREFUSED ...) with the reason in
/// oci_registry_last_error().
///
/// # Safety
/// `vf` is NULL or writable; `ref` and `options` are NULL or
/// NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn oci_registry_open(
    vf: *mut erofs_vfile,
    r#ref: *const c_char,
    options: *const c_char,
) -> c_int {
    guard(-libc::EIO, || {
        let r = (|| {
            if vf.is_null() {
                return Err(Error::invalid("NULL vfile"));
            }
            let reference =
                c_str(r#ref, "reference")?.ok_or_else(|| Error::invalid("NULL reference"))?;
            let options = c_str(options, "options")?;
            crate::open_reference(reference, options)
        })();
        match r {
            Ok(blob) => {
                let h = new_handle(blob);
                ptr::write(vf, vfile_value(false, h));
                0
            }
            Err(e) => fail(&e),
        }
    })
}

/// oci_registry_close() - release a vfile filled by oci_registry_open()
/// @vf: the vfile, or NULL (a no-op)
///
/// This is also the `close` op of the erofs-utils 1.9 layout, so
/// erofs_io_close() releases it. Closing twice is a no-op; other calls
/// on a closed vfile return -EBADF.
///
/// # Safety
/// `vf` is NULL or a vfile this library filled.
#[no_mangle]
pub unsafe extern "C" fn oci_registry_close(vf: *mut erofs_vfile) {
    guard((), || release(vf))
}

/// oci_registry_last_error() - why this thread's last failing call failed
///
/// Return: a message naming the step, the URL, the HTTP status and the
/// registry's own error text; never a credential. The string belongs to
/// the library and stays valid until the next failing call on this
/// thread; it is empty when nothing has failed.
#[no_mangle]
pub extern "C" fn oci_registry_last_error() -> *const c_char {
    guard(ptr::null(), guard::last_error_ptr)
}

/// oci_registry_erofs_abi() - the erofs_vfops layout this build fills
///
/// Return: 109 for erofs-utils 1.9.x, 108 for 1.8.x.
#[no_mangle]
pub extern "C" fn oci_registry_erofs_abi() -> c_int {
    abi::EROFS_ABI
}

fn clamp_len(len: usize) -> usize {
    len.min(isize::MAX as usize)
}

/// What read and pread share: the handle and buffer checks, the byte count
/// or the negative errno.
///
/// # Safety
/// `vf` is NULL or a vfile; `buf` is valid for `len` bytes.
unsafe fn read_into(
    vf: *mut erofs_vfile,
    buf: *mut c_void,
    len: usize,
    what: &str,
    read: impl FnOnce(&Handle, &mut [u8]) -> Result<usize, Error>,
) -> isize {
    let h = match handle(vf) {
        Ok(h) => h,
        Err(e) => return fail(&e) as isize,
    };
    if buf.is_null() && len > 0 {
        return fail(&Error::invalid(format!("{what}: NULL buffer"))) as isize;
    }
    if len == 0 {
        return 0;
    }
    let out = std::slice::from_raw_parts_mut(buf as *mut u8, clamp_len(len));
    match read(h, out) {
        Ok(n) => n as isize,
        Err(e) => fail(&e) as isize,
    }
}

/// oci_registry_read() - read at the vfile's offset and advance it
/// @vf: an open vfile
/// @buf: destination
/// @len: bytes wanted
///
/// read() and lseek() share one offset, as on a file descriptor; reads
/// on one vfile from several threads are serialised.
///
/// Return: bytes read (short only at the end of the blob), 0 at or past
/// the end, or a negative errno.
///
/// # Safety
/// `buf` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn oci_registry_read(
    vf: *mut erofs_vfile,
    buf: *mut c_void,
    len: usize,
) -> libc::ssize_t {
    guard(-libc::EIO as isize, || {
        read_into(vf, buf, len, "read", |h, out| {
            let mut off = h.offset.lock().unwrap_or_else(|e| e.into_inner());
            let n = h.blob.read_at(out, *off, true)?;
            *off += n as u64;
            Ok(n)
        })
    })
}

/// oci_registry_pread() - read at @offset without moving the vfile's offset
/// @vf: an open vfile
/// @buf: destination
/// @len: bytes wanted
/// @offset: where to read
///
/// Safe to call on one vfile from several threads at once.
///
/// Return: bytes read (short only at the end of the blob), 0 at or past
/// the end, or a negative errno.
///
/// # Safety
/// `buf` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn oci_registry_pread(
    vf: *mut erofs_vfile,
    buf: *mut c_void,
    len: usize,
    offset: u64,
) -> libc::ssize_t {
    guard(-libc::EIO as isize, || {
        read_into(vf, buf, len, "pread", |h, out| {
            h.blob.read_at(out, offset, false)
        })
    })
}

/// oci_registry_lseek() - move the offset read() uses
/// @vf: an open vfile
/// @offset: the new offset (SEEK_SET), or a signed delta (SEEK_CUR,
///          SEEK_END) passed as two's complement
/// @whence: SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA or SEEK_HOLE
///
/// Seeking past the end is allowed; reads there return 0.
///
/// Return: the new offset, or -EINVAL for an unknown @whence or a
/// negative result (-ENXIO for SEEK_DATA/SEEK_HOLE at or past the end).
///
/// # Safety
/// `vf` is NULL or a vfile.
#[no_mangle]
pub unsafe extern "C" fn oci_registry_lseek(
    vf: *mut erofs_vfile,
    offset: u64,
    whence: c_int,
) -> libc::off_t {
    guard(-libc::EIO as libc::off_t, || {
        let h = match handle(vf) {
            Ok(h) => h,
            Err(e) => return fail(&e) as libc::off_t,
        };
        let mut off = h.offset.lock().unwrap_or_else(|e| e.into_inner());
        // The size only when needed: for a derived stream it costs a pass.
        let size = || h.blob.size().map(|s| s as i128);
        let delta = offset as i64 as i128;
        let new = match whence {
            libc::SEEK_SET => offset as i128,
            libc::SEEK_CUR => *off as i128 + delta,
            libc::SEEK_END => match size() {
                Ok(s) => s + delta,
                Err(e) => return fail(&e) as libc::off_t,
            },
            libc::SEEK_DATA | libc::SEEK_HOLE => {
                let size = match size() {
                    Ok(s) => s,
                    Err(e) => return fail(&e) as libc::off_t,
                };
                let at = offset as i128;
                if at < 0 || at >= size || offset > i64::MAX as u64 {
                    return fail(&Error::new(
                        libc::ENXIO,
                        "lseek: offset is at or past the end",
                    )) as libc::off_t;
                }
                if whence == libc::SEEK_DATA {
                    at
                } else {
                    size
                }
            }
            _ => {
                return fail(&Error::invalid(format!("lseek: unknown whence {whence}")))
                    as libc::off_t
            }
        };
        if new < 0 || new > i64::MAX as i128 {
            return fail(&Error::invalid(format!(
                "lseek: resulting offset {new} is out of range"
            ))) as libc::off_t;
        }
        *off = new as u64;
        new as libc::off_t
    })
}

/// oci_registry_blob_size() - size of the open blob in bytes
/// @vf: an open vfile
///
/// Return: the size, or a negative errno.
///
/// # Safety
/// `vf` is NULL or a vfile.
#[no_mangle]
pub unsafe extern "C" fn oci_registry_blob_size(vf: *const erofs_vfile) -> i64 {
    guard(-libc::EIO as i64, || match handle(vf) {
        Ok(h) => match h.blob.size() {
            Ok(s) => s as i64,
            Err(e) => fail(&e) as i64,
        },
        Err(e) => fail(&e) as i64,
    })
}

/// oci_registry_blob_digest() - digest of the open blob (`sha256:...`)
/// @vf: an open vfile
///
/// Return: a string owned by @vf, valid until it is closed; NULL on error.
///
/// # Safety
/// `vf` is NULL or a vfile.
#[no_mangle]
pub unsafe extern "C" fn oci_registry_blob_digest(vf: *const erofs_vfile) -> *const c_char {
    guard(ptr::null(), || match handle(vf) {
        Ok(h) => h.digest.as_ptr(),
        Err(e) => {
            fail(&e);
            ptr::null()
        }
    })
}

/// oci_registry_blob_media_type() - media type the manifest gives the blob
/// @vf: an open vfile
///
/// Return: a string owned by @vf (empty when opened with `blob=`); NULL
/// on error.
///
/// # Safety
/// `vf` is NULL or a vfile.
#[no_mangle]
pub unsafe extern "C" fn oci_registry_blob_media_type(vf: *const erofs_vfile) -> *const c_char {
    guard(ptr::null(), || match handle(vf) {
        Ok(h) => h.media_type.as_ptr(),
        Err(e) => {
            fail(&e);
            ptr::null()
        }
    })
}

/// struct oci_registry_stats - counters of one open vfile
/// @bytes_fetched: blob bytes received from the network
/// @requests: HTTP requests made for blob data (retries included)
/// @retries: transient failures retried (resumed where they stopped)
/// @cache_hits: blocks served from the block cache
/// @cache_misses: blocks that had to be fetched (or waited for)
/// @bytes_served: bytes returned by read and pread
/// @disk_hits: reads served from the on-disk cache (`cache_dir=`) or the
///       spill file
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct oci_registry_stats {
    pub bytes_fetched: u64,
    pub requests: u64,
    pub retries: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub bytes_served: u64,
    pub disk_hits: u64,
}

/// oci_registry_stats() - what an open vfile has cost so far
/// @vf: an open vfile
/// @st: filled on success
///
/// Return: 0, or a negative errno (-EINVAL for NULL arguments or a vfile
/// that is not ours, -EBADF after close).
///
/// # Safety
/// `vf` is NULL or a vfile; `st` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn oci_registry_stats(
    vf: *const erofs_vfile,
    st: *mut oci_registry_stats,
) -> c_int {
    guard(-libc::EIO, || {
        let h = match handle(vf) {
            Ok(h) => h,
            Err(e) => return fail(&e),
        };
        if st.is_null() {
            return fail(&Error::invalid("stats: NULL output"));
        }
        let s = h.blob.stats();
        ptr::write(
            st,
            oci_registry_stats {
                bytes_fetched: s.bytes_fetched,
                requests: s.requests,
                retries: s.retries,
                cache_hits: s.cache_hits,
                cache_misses: s.cache_misses,
                bytes_served: s.bytes_served,
                disk_hits: s.disk_hits,
            },
        );
        0
    })
}

/// struct oci_registry_layer - one layer of an image
/// @digest: `sha256:...`
/// @size: its size in bytes, as the manifest says
/// @media_type: its media type (gzip, zstd or plain tar, OCI or Docker)
#[repr(C)]
pub struct oci_registry_layer {
    pub digest: *mut c_char,
    pub size: u64,
    pub media_type: *mut c_char,
}

/// oci_registry_list_layers() - the layers of an image, bottom first
/// @ref: an image reference, as for oci_registry_open()
/// @options: NULL or options (`platform=`, credentials, TLS, ...)
/// @layers: set to an array the library allocates, on success
/// @count: set to its length, on success
///
/// Each layer then opens with oci_registry_open(vf, ref, "layer=N,...");
/// opens of one image share the connection pool and the tokens.
///
/// Return: 0, or a negative errno with the reason in
/// oci_registry_last_error(). Free the array with
/// oci_registry_free_layers().
///
/// # Safety
/// `ref` and `options` are NULL or NUL-terminated; `layers` and `count`
/// are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn oci_registry_list_layers(
    r#ref: *const c_char,
    options: *const c_char,
    layers: *mut *mut oci_registry_layer,
    count: *mut usize,
) -> c_int {
    guard(-libc::EIO, || {
        let r = (|| {
            if layers.is_null() || count.is_null() {
                return Err(Error::invalid("list_layers: NULL output"));
            }
            let reference =
                c_str(r#ref, "reference")?.ok_or_else(|| Error::invalid("NULL reference"))?;
            let options = c_str(options, "options")?;
            crate::list_layers(reference, options)
        })();
        match r {
            Ok(descs) => {
                let v: Vec<oci_registry_layer> = descs
                    .iter()
                    .map(|d| oci_registry_layer {
                        digest: CString::new(d.digest.as_str())
                            .unwrap_or_default()
                            .into_raw(),
                        size: d.size,
                        media_type: CString::new(d.media_type.as_str())
                            .unwrap_or_default()
                            .into_raw(),
                    })
                    .collect();
                let n = v.len();
                let arr = Box::into_raw(v.into_boxed_slice()) as *mut oci_registry_layer;
                ptr::write(layers, arr);
                ptr::write(count, n);
                0
            }
            Err(e) => fail(&e),
        }
    })
}

/// oci_registry_free_layers() - free what oci_registry_list_layers() gave
/// @layers: the array, or NULL (a no-op)
/// @count: its length
///
/// # Safety
/// `layers` and `count` are exactly what oci_registry_list_layers() set.
#[no_mangle]
pub unsafe extern "C" fn oci_registry_free_layers(layers: *mut oci_registry_layer, count: usize) {
    guard((), || {
        if layers.is_null() {
            return;
        }
        let arr = Box::from_raw(ptr::slice_from_raw_parts_mut(layers, count));
        for l in arr.iter() {
            if !l.digest.is_null() {
                drop(CString::from_raw(l.digest));
            }
            if !l.media_type.is_null() {
                drop(CString::from_raw(l.media_type));
            }
        }
    })
}

unsafe extern "C" fn op_read(vf: Vf, buf: *mut c_void, len: usize) -> isize {
    oci_registry_read(vf, buf, len)
}

#[cfg(not(feature = "erofs-abi-108"))]
unsafe extern "C" fn op_pread(vf: Vf, buf: *mut c_void, len: usize, offset: u64) -> isize {
    oci_registry_pread(vf, buf, len, offset)
}

#[cfg(feature = "erofs-abi-108")]
unsafe extern "C" fn op_pread(vf: Vf, buf: *mut c_void, offset: u64, len: usize) -> isize {
    oci_registry_pread(vf, buf, len, offset)
}

unsafe extern "C" fn op_lseek(vf: Vf, offset: u64, whence: c_int) -> libc::off_t {
    oci_registry_lseek(vf, offset, whence)
}

/// A regular, read-only file of the blob's size.
unsafe extern "C" fn op_fstat(vf: Vf, st: *mut libc::stat) -> c_int {
    guard(-libc::EIO, || {
        let h = match handle(vf) {
            Ok(h) => h,
            Err(e) => return fail(&e),
        };
        if st.is_null() {
            return fail(&Error::invalid("fstat: NULL stat buffer"));
        }
        let size = match h.blob.size() {
            Ok(s) => s,
            Err(e) => return fail(&e),
        };
        let mut s: libc::stat = std::mem::zeroed();
        s.st_mode = libc::S_IFREG | 0o444;
        s.st_nlink = 1;
        s.st_size = size as libc::off_t;
        s.st_blksize = 1 << 20;
        s.st_blocks = size.div_ceil(512) as libc::blkcnt_t;
        ptr::write(st, s);
        0
    })
}
