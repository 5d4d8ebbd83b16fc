//! HTTP transport: one I/O thread owns one curl multi handle and runs
//! every transfer; callers talk to it over a channel and wait on the
//! transfer's shared state.
//!
//! A transfer's 2xx body goes either to a `BodyTarget` (blob reads: the
//! block cache, which pauses the transfer at its readahead window) or
//! into the transfer's own bounded buffer (manifests, tokens); a full
//! buffer pauses the transfer (`WriteError::Pause`) until the reader has
//! drained half of it. Work a target hands on (hashing, publishing
//! blocks) runs on the post thread, so the I/O thread keeps receiving.

mod fork;
mod io;
mod receive;
mod request;
mod transfer;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use curl::easy::Easy2;
use curl::multi::MultiWaker;
use once_cell::sync::Lazy;

use crate::error::{Error, Result};
use fork::{fork_child, fork_parent, fork_prepare, ATFORK, FORK_GATE};
use io::io_thread;
pub use receive::{parse_content_range_start, parse_retry_after};
use receive::{Shared, Sink, State};
use request::configure;
pub use request::{Headers, Method, Request, Response, Timeouts, TlsOptions};
pub use transfer::{forked, Transfer};

/// Where a 2xx body goes when it is not buffered in the transfer: called
/// on the I/O thread, in order.
pub trait BodyTarget: Send {
    /// Takes body bytes. `Ok(false)` pauses the transfer, with nothing of
    /// `data` taken; it is offered again once the transfer is resumed.
    /// `Err` aborts the transfer with that error.
    fn deliver(&mut self, data: &[u8]) -> Result<bool>;
    /// The transfer ended: `Ok` for a complete 2xx body, else why not.
    fn finished(&mut self, outcome: &Result<()>);
    /// The final answer's status is in (after redirects), before any of
    /// its body.
    fn answered(&mut self, _status: u32) {}
    /// A 2xx answer came from `url`, where redirects from the request's
    /// own URL led (told before `answered`).
    fn redirected(&mut self, _url: &str) {}
}

enum Cmd {
    Start(usize, Box<Easy2<Sink>>),
    Unpause(usize),
    Cancel(usize),
    Shutdown,
}

/// The process's transport: one I/O thread, shared by every open blob,
/// started with the first and stopped with the last.
pub struct Transport {
    tx: Mutex<Sender<Cmd>>,
    waker: MultiWaker,
    thread: Mutex<Option<JoinHandle<()>>>,
    dead: Arc<AtomicBool>,
    post_tx: Mutex<Option<Sender<Job>>>,
    post_thread: Mutex<Option<JoinHandle<()>>>,
    /// How many connections `warm` has opened to each host.
    warmed: Mutex<HashMap<String, usize>>,
}

/// Work the I/O thread hands on (hashing, publishing blocks), run in
/// order on the post thread so that the I/O thread keeps receiving.
pub type Job = Box<dyn FnOnce() + Send>;

/// Where an I/O-side callback posts its jobs.
#[derive(Clone)]
pub struct Poster(Sender<Job>);

impl Poster {
    pub fn post(&self, job: Job) {
        if let Err(e) = self.0.send(job) {
            // The post thread is gone (shutting down): run it here.
            (e.0)();
        }
    }
}

/// The process's transport and the process it belongs to: after a
/// fork() the child has no I/O thread, so it gets a transport of its own.
type Current = Option<(u32, Arc<Transport>)>;
static CURRENT: Lazy<Mutex<Current>> = Lazy::new(|| Mutex::new(None));
static NEXT_TOKEN: AtomicUsize = AtomicUsize::new(1);

impl Transport {
    /// The running transport, or a new one. It stays for the life of the
    /// process (connections, TLS sessions and the CA store are reused by
    /// every open), and is made anew in a forked child.
    pub fn get() -> Result<Arc<Transport>> {
        let pid = std::process::id();
        let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, t)) = cur.as_ref() {
            if *p == pid && !t.dead.load(Ordering::Acquire) {
                return Ok(t.clone());
            }
        }
        if let Some((p, old)) = cur.take() {
            if p != pid {
                // Its threads live in the parent only: never drop it here.
                std::mem::forget(old);
            }
        }
        ATFORK.call_once(|| {
            // SAFETY: the handlers are plain functions that only touch
            // FORK_GATE.
            unsafe {
                libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
            }
        });
        let t = Arc::new(Transport::start()?);
        *cur = Some((pid, t.clone()));
        Ok(t)
    }

    fn start() -> Result<Transport> {
        let (tx, rx) = channel();
        let (wtx, wrx) = channel();
        let dead = Arc::new(AtomicBool::new(false));
        let dead2 = dead.clone();
        let thread = std::thread::Builder::new()
            .name("oci-registry-io".into())
            .spawn(move || io_thread(rx, wtx, dead2))
            .map_err(|e| Error::new(libc::EAGAIN, format!("cannot start the I/O thread: {e}")))?;
        let waker = wrx
            .recv()
            .map_err(|_| Error::new(libc::EIO, "the I/O thread failed to start"))?;
        let (post_tx, post_rx) = channel::<Job>();
        let post_thread = std::thread::Builder::new()
            .name("oci-registry-post".into())
            .spawn(move || {
                while let Ok(job) = post_rx.recv() {
                    let _busy = FORK_GATE.enter();
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map_err(|e| Error::new(libc::EAGAIN, format!("cannot start the post thread: {e}")))?;
        Ok(Transport {
            tx: Mutex::new(tx),
            waker,
            thread: Mutex::new(Some(thread)),
            dead,
            post_tx: Mutex::new(Some(post_tx)),
            post_thread: Mutex::new(Some(post_thread)),
            warmed: Mutex::new(HashMap::new()),
        })
    }

    fn send(&self, cmd: Cmd) -> bool {
        let ok = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(cmd)
            .is_ok();
        let _ = self.waker.wakeup();
        ok
    }

    /// Starts a transfer; its body is read from the returned handle.
    pub fn start_transfer(self: &Arc<Self>, req: &Request) -> Result<Transfer> {
        self.start_transfer_to(req, None)
    }

    /// Starts a transfer whose 2xx body goes to `target` (or, with None,
    /// into the transfer's own buffer).
    pub fn start_transfer_to(
        self: &Arc<Self>,
        req: &Request,
        target: Option<Box<dyn BodyTarget>>,
    ) -> Result<Transfer> {
        if self.dead.load(Ordering::Acquire) {
            return Err(Error::new(libc::EIO, "the I/O thread has stopped"));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                status: 0,
                headers: Headers::default(),
                header_bytes: 0,
                final_headers: false,
                data: VecDeque::new(),
                cap: req.buffer.max(16 * 1024),
                paused: false,
                unpause_asked: false,
                wake_early: false,
                err_body: Vec::new(),
                done: None,
                closed: false,
                wait: None,
            }),
            cond: Condvar::new(),
        });
        let range_start = req.range.map(|r| r.0).unwrap_or(0);
        let sink = Sink {
            shared: shared.clone(),
            follow: req.follow,
            has_location: false,
            at: Some(req.url.clone()),
            range_start,
            skip: 0,
            received: 0,
            max_body: req.max_body,
            failure: None,
            target,
            method: req.method,
            url: req.url.clone(),
            step: req.step,
        };
        let easy = configure(sink, req)
            .map_err(|e| Error::curl(req.step, req.method.as_str(), &req.url, &e))?;
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        if !self.send(Cmd::Start(token, Box::new(easy))) {
            return Err(Error::new(libc::EIO, "the I/O thread has stopped"));
        }
        Ok(Transfer {
            shared,
            pid: std::process::id(),
            token,
            transport: self.clone(),
            method: req.method,
            url: req.url.clone(),
            step: req.step,
            finished: false,
            detached: false,
        })
    }

    /// Sends copies of `req` (a request with a small answer) without
    /// waiting for them, so that `n` have been sent to `host` in this
    /// process (none when as many were sent before): sent while the
    /// caller's own requests are in flight, each opens a connection of
    /// its own, and those wait in the pool. A reader far from the registry
    /// then does not pay a connection's set-up (one more round trip, and
    /// TLS's) on each of its first misses while the earlier ones still
    /// stream, nor on the first round of parallel chunks. Their answers,
    /// and their failures, are nobody's concern.
    pub fn warm(self: &Arc<Self>, host: &str, req: &Request, n: usize) {
        let more = {
            let mut warmed = self.warmed.lock().unwrap_or_else(|e| e.into_inner());
            let sent = warmed.entry(host.to_string()).or_insert(0);
            let more = n.saturating_sub(*sent);
            *sent += more;
            more
        };
        for _ in 0..more {
            if let Ok(t) = self.start_transfer(req) {
                t.detach();
            }
        }
    }

    /// The shortest time `origin` (`scheme://host[:port]`) has taken to
    /// answer a request in this process, as curl timed it from the
    /// request sent to the first byte back: a round trip and the least
    /// server time (a `GET /v2/` of `warm` costs the server nothing).
    pub fn shortest_wait(origin: &str) -> Option<Duration> {
        receive::shortest_wait(origin)
    }

    /// The origin (`scheme://host[:port]`) of `url`.
    pub fn origin(url: &str) -> &str {
        receive::origin(url)
    }

    /// Runs a request whose body is small, and returns it whole.
    pub fn fetch(self: &Arc<Self>, req: &Request) -> Result<Response> {
        let mut req = req.clone();
        let limit = req.max_body.unwrap_or(4 << 20) as usize;
        req.buffer = limit + 1;
        let mut t = self.start_transfer(&req)?;
        t.finish()?;
        let mut st = t.shared.lock();
        let status = st.status;
        let headers = std::mem::take(&mut st.headers);
        let body = if (200..300).contains(&status) {
            st.data.drain(..).collect()
        } else {
            std::mem::take(&mut st.err_body)
        };
        Ok(Response {
            status,
            headers,
            body,
            wait: st.wait,
        })
    }
}

impl Transport {
    /// A handle to post jobs to the post thread.
    pub fn poster(&self) -> Option<Poster> {
        self.post_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|t| Poster(t.clone()))
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.send(Cmd::Shutdown);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        // The I/O thread's handlers (and their posters) are gone: the post
        // thread drains its queue and ends.
        self.post_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = self
            .post_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_host_is_an_error_not_a_hang() {
        let t = Transport::get().unwrap();
        // Port 1 on loopback: nothing listens there.
        let e = t
            .fetch(&Request::get("test", "http://127.0.0.1:1/v2/"))
            .unwrap_err();
        assert_eq!(e.errno(), libc::ECONNREFUSED, "{e}");
        assert!(e.message().contains("http://127.0.0.1:1/v2/"), "{e}");
    }
}
