//! The caller's handle on a transfer in flight: wait for its headers or
//! its end, read its body, resume it, cancel it by dropping it.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use super::receive::{Shared, State};
use super::request::{Headers, Method};
use super::{Cmd, Transport};
use crate::error::{Error, Result};

/// A transfer in flight; dropping it cancels the transfer.
pub struct Transfer {
    pub(super) shared: Arc<Shared>,
    pub(super) pid: u32,
    pub(super) token: usize,
    pub(super) transport: Arc<Transport>,
    pub(super) method: Method,
    pub(super) url: String,
    pub(super) step: &'static str,
    pub(super) finished: bool,
    /// Let run to its end with nobody reading (`detach`).
    pub(super) detached: bool,
}

impl Transfer {
    /// Waits for the final response's status and headers. A transfer
    /// error before them is returned as such.
    pub fn wait_headers(&self) -> Result<(u32, Headers)> {
        let mut st = self.shared.lock();
        loop {
            if st.final_headers || !st.data.is_empty() {
                return Ok((st.status, st.headers.clone()));
            }
            if let Some(done) = &st.done {
                done.clone()?;
                return Ok((st.status, st.headers.clone()));
            }
            st = self.wait(st)?;
        }
    }

    /// Waits for the end of the transfer and returns its outcome.
    pub fn finish(&mut self) -> Result<()> {
        let mut st = self.shared.lock();
        loop {
            if let Some(done) = &st.done {
                self.finished = true;
                return done.clone();
            }
            if st.paused {
                // Nobody will read more: let everything in.
                st.cap = usize::MAX;
                self.ask_unpause(&mut st);
            }
            st = self.wait(st)?;
        }
    }

    /// The error a non-2xx response stands for, once it has finished.
    pub fn status_error(&mut self, status: u32) -> Error {
        if let Err(e) = self.finish() {
            return e;
        }
        let body = self.shared.lock().err_body.clone();
        Error::http(self.step, self.method.as_str(), &self.url, status, &body)
    }

    pub(super) fn ask_unpause(&self, st: &mut State) {
        if st.paused && !st.unpause_asked {
            st.unpause_asked = true;
            self.transport.send(Cmd::Unpause(self.token));
        }
    }

    /// Made in another process (before a fork): nothing runs it here.
    pub fn is_stale(&self) -> bool {
        self.pid != std::process::id()
    }

    /// Waits on the transfer's state for a while; an error when the
    /// transfer belongs to the parent of a fork.
    pub(super) fn wait<'a>(&self, st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        if self.is_stale() {
            return Err(forked());
        }
        let (st, _) = self
            .shared
            .cond
            .wait_timeout(st, Duration::from_millis(250))
            .unwrap_or_else(|e| e.into_inner());
        Ok(st)
    }

    /// Resumes a transfer its target paused (or is about to pause: the
    /// target then asks once more).
    pub fn unpause(&self) {
        let mut st = self.shared.lock();
        if !st.paused {
            st.wake_early = true;
        }
        self.ask_unpause(&mut st);
    }

    /// Reads body bytes: blocks until some are there, returns 0 at the
    /// end of a successful body, and the transfer's error otherwise.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut st = self.shared.lock();
        loop {
            if !st.data.is_empty() {
                let n = buf.len().min(st.data.len());
                let (a, b) = st.data.as_slices();
                if n <= a.len() {
                    buf[..n].copy_from_slice(&a[..n]);
                } else {
                    buf[..a.len()].copy_from_slice(a);
                    buf[a.len()..n].copy_from_slice(&b[..n - a.len()]);
                }
                st.data.drain(..n);
                if st.data.len() <= st.cap / 2 {
                    self.ask_unpause(&mut st);
                }
                return Ok(n);
            }
            if let Some(done) = &st.done {
                self.finished = true;
                done.clone()?;
                return Ok(0);
            }
            self.ask_unpause(&mut st);
            st = self.wait(st)?;
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if self.is_stale() || self.detached {
            return;
        }
        let mut st = self.shared.lock();
        st.closed = true;
        let running = st.done.is_none();
        drop(st);
        if running && !self.finished {
            self.transport.send(Cmd::Cancel(self.token));
        }
    }
}

impl Transfer {
    /// Lets the transfer run to its end with nobody waiting for it: its
    /// connection then goes back to the pool (a small body, bounded by
    /// the request's `max_body`, is received and dropped).
    pub fn detach(mut self) {
        self.detached = true;
    }
}

/// The error of a transfer left behind in the parent of a fork.
pub fn forked() -> Error {
    Error::new(
        libc::ECONNRESET,
        "the process forked during the transfer; it is started again",
    )
}
