//! `struct erofs_vfile` and `struct erofs_vfops` exactly as erofs-utils
//! lays them out: 1.9.x by default, 1.8.x with the `erofs-abi-108`
//! feature. The C text of these types is written into the header by
//! build.rs (guarded so that it yields to erofs-utils' own
//! `<erofs/io.h>`); the C harness checks both against the real headers.
#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_uint, c_void};

/// The union after `ops`: `{ u64 offset; int fd; }` or `u8 payload[16]`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct erofs_vfile_fd {
    pub offset: u64,
    pub fd: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union erofs_vfile_u {
    pub fd: erofs_vfile_fd,
    pub payload: [u8; 16],
}

#[repr(C)]
pub struct erofs_vfile {
    pub ops: *mut erofs_vfops,
    pub u: erofs_vfile_u,
}

pub type Vf = *mut erofs_vfile;

/// erofs-utils 1.9.x: `pread(vf, buf, len, offset)` … `close`.
#[cfg(not(feature = "erofs-abi-108"))]
#[repr(C)]
pub struct erofs_vfops {
    pub pread: Option<unsafe extern "C" fn(Vf, *mut c_void, usize, u64) -> isize>,
    pub pwrite: Option<unsafe extern "C" fn(Vf, *const c_void, u64, usize) -> isize>,
    pub pwritev: Option<unsafe extern "C" fn(Vf, *const libc::iovec, c_int, u64) -> isize>,
    pub fsync: Option<unsafe extern "C" fn(Vf) -> c_int>,
    pub fallocate: Option<unsafe extern "C" fn(Vf, u64, usize, bool) -> c_int>,
    pub ftruncate: Option<unsafe extern "C" fn(Vf, u64) -> c_int>,
    pub read: Option<unsafe extern "C" fn(Vf, *mut c_void, usize) -> isize>,
    pub write: Option<unsafe extern "C" fn(Vf, *mut c_void, usize) -> isize>,
    pub lseek: Option<unsafe extern "C" fn(Vf, u64, c_int) -> libc::off_t>,
    pub fstat: Option<unsafe extern "C" fn(Vf, *mut libc::stat) -> c_int>,
    pub sendfile: Option<unsafe extern "C" fn(Vf, Vf, *mut libc::off_t, usize) -> isize>,
    pub xcopy: Option<unsafe extern "C" fn(Vf, libc::off_t, Vf, c_uint, bool) -> c_int>,
    pub close: Option<unsafe extern "C" fn(Vf)>,
}

/// erofs-utils 1.8.0 – 1.8.6: `pread(vf, buf, offset, len)`, no close.
#[cfg(feature = "erofs-abi-108")]
#[repr(C)]
pub struct erofs_vfops {
    pub pread: Option<unsafe extern "C" fn(Vf, *mut c_void, u64, usize) -> isize>,
    pub pwrite: Option<unsafe extern "C" fn(Vf, *const c_void, u64, usize) -> isize>,
    pub fsync: Option<unsafe extern "C" fn(Vf) -> c_int>,
    pub fallocate: Option<unsafe extern "C" fn(Vf, u64, usize, bool) -> c_int>,
    pub ftruncate: Option<unsafe extern "C" fn(Vf, u64) -> c_int>,
    pub read: Option<unsafe extern "C" fn(Vf, *mut c_void, usize) -> isize>,
    pub lseek: Option<unsafe extern "C" fn(Vf, u64, c_int) -> libc::off_t>,
    pub fstat: Option<unsafe extern "C" fn(Vf, *mut libc::stat) -> c_int>,
    pub xcopy: Option<unsafe extern "C" fn(Vf, libc::off_t, Vf, c_uint, bool) -> c_int>,
}

/// The `EROFS_ABI` value of this build: 109 or 108.
#[cfg(not(feature = "erofs-abi-108"))]
pub const EROFS_ABI: i32 = 109;
#[cfg(feature = "erofs-abi-108")]
pub const EROFS_ABI: i32 = 108;

/// An ops table with our entry points; `close` is the release function
/// that fits how the vfile was allocated.
#[cfg(not(feature = "erofs-abi-108"))]
pub const fn ops_table(
    read: unsafe extern "C" fn(Vf, *mut c_void, usize) -> isize,
    pread: unsafe extern "C" fn(Vf, *mut c_void, usize, u64) -> isize,
    lseek: unsafe extern "C" fn(Vf, u64, c_int) -> libc::off_t,
    fstat: unsafe extern "C" fn(Vf, *mut libc::stat) -> c_int,
    close: unsafe extern "C" fn(Vf),
) -> erofs_vfops {
    erofs_vfops {
        pread: Some(pread),
        pwrite: None,
        pwritev: None,
        fsync: None,
        fallocate: None,
        ftruncate: None,
        read: Some(read),
        write: None,
        lseek: Some(lseek),
        fstat: Some(fstat),
        sendfile: None,
        xcopy: None,
        close: Some(close),
    }
}

#[cfg(feature = "erofs-abi-108")]
pub const fn ops_table(
    read: unsafe extern "C" fn(Vf, *mut c_void, usize) -> isize,
    pread: unsafe extern "C" fn(Vf, *mut c_void, u64, usize) -> isize,
    lseek: unsafe extern "C" fn(Vf, u64, c_int) -> libc::off_t,
    fstat: unsafe extern "C" fn(Vf, *mut libc::stat) -> c_int,
) -> erofs_vfops {
    erofs_vfops {
        pread: Some(pread),
        pwrite: None,
        fsync: None,
        fallocate: None,
        ftruncate: None,
        read: Some(read),
        lseek: Some(lseek),
        fstat: Some(fstat),
        xcopy: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn vfile_layout() {
        assert_eq!(size_of::<erofs_vfile>(), 24);
        assert_eq!(offset_of!(erofs_vfile, ops), 0);
        assert_eq!(offset_of!(erofs_vfile, u), 8);
        assert_eq!(size_of::<erofs_vfile_u>(), 16);
        assert_eq!(offset_of!(erofs_vfile_fd, fd), 8);
    }

    #[test]
    fn vfops_layout() {
        let p = size_of::<usize>();
        #[cfg(not(feature = "erofs-abi-108"))]
        {
            assert_eq!(size_of::<erofs_vfops>(), 13 * p);
            assert_eq!(offset_of!(erofs_vfops, read), 6 * p);
            assert_eq!(offset_of!(erofs_vfops, lseek), 8 * p);
            assert_eq!(offset_of!(erofs_vfops, close), 12 * p);
        }
        #[cfg(feature = "erofs-abi-108")]
        {
            assert_eq!(size_of::<erofs_vfops>(), 9 * p);
            assert_eq!(offset_of!(erofs_vfops, read), 5 * p);
            assert_eq!(offset_of!(erofs_vfops, lseek), 6 * p);
        }
    }
}
