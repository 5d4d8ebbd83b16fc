//! The panic guard every exported function runs in, and this thread's
//! last error message.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Error;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `msg` as this thread's last error.
pub fn set_last_error(msg: &str) {
    let clean: Vec<u8> = msg.bytes().filter(|b| *b != 0).collect();
    let c = CString::new(clean).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
}

/// Pointer to this thread's last error message; valid until the next
/// failing call on this thread.
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// Records `err` and returns its negative errno.
pub fn fail(err: &Error) -> i32 {
    set_last_error(err.message());
    -err.errno()
}

/// Runs `f`; a panic inside becomes `on_panic` plus a message, never an
/// unwind across the C boundary.
pub fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_last_error(&format!("internal error (panic): {what}"));
            on_panic
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn panics_become_values() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let v = guard(-5, || -> i32 { panic!("boom") });
        std::panic::set_hook(prev);
        assert_eq!(v, -5);
        let msg = unsafe { CStr::from_ptr(last_error_ptr()) };
        assert_eq!(msg.to_str().unwrap(), "internal error (panic): boom");
    }

    #[test]
    fn nul_bytes_are_dropped() {
        set_last_error("a\0b");
        let msg = unsafe { CStr::from_ptr(last_error_ptr()) };
        assert_eq!(msg.to_str().unwrap(), "ab");
    }
}
