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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use curl::easy::{Easy2, Handler, HttpVersion, List, WriteError};
use curl::multi::{Easy2Handle, Multi, MultiWaker};
use once_cell::sync::Lazy;

use crate::error::{Error, Result};

/// Largest error body kept for a message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Most response header lines and bytes accepted per response.
const MAX_HEADER_LINES: usize = 256;
const MAX_HEADER_BYTES: usize = 256 * 1024;
const USER_AGENT: &str = concat!("liboci_registry/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// A form POST (OAuth2 token requests).
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
        }
    }
}

/// TLS settings of a registry: extra CA, verification, client cert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// A PEM file of CA certificates trusted besides the system's.
    pub ca: Option<std::path::PathBuf>,
    /// `tls_verify=0`: no peer or host verification (asked for only).
    pub insecure_skip_verify: bool,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

/// Connect timeout and low-speed abort; there is no whole-transfer cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Abort when the transfer stays below this many bytes/s ...
    pub low_speed_limit: u32,
    /// ... for this long (a paused transfer is not judged).
    pub low_speed_time: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            low_speed_limit: 1024,
            low_speed_time: Duration::from_secs(30),
        }
    }
}

/// Where a 2xx body goes when it is not buffered in the transfer: called
/// on the I/O thread, in order.
pub trait BodyTarget: Send {
    /// Takes body bytes. `Ok(false)` pauses the transfer, with nothing of
    /// `data` taken; it is offered again once the transfer is resumed.
    /// `Err` aborts the transfer with that error.
    fn deliver(&mut self, data: &[u8]) -> Result<bool>;
    /// The transfer ended: `Ok` for a complete 2xx body, else why not.
    fn finished(&mut self, outcome: &Result<()>);
}

/// One HTTP request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: String,
    /// Extra header lines, `Name: value`.
    pub headers: Vec<String>,
    /// Byte range: first byte and optional last byte (inclusive).
    pub range: Option<(u64, Option<u64>)>,
    /// Follow redirects (blob GETs: object storage and CDNs).
    pub follow: bool,
    /// Body bytes buffered before the transfer pauses.
    pub buffer: usize,
    /// A 2xx body longer than this is an error.
    pub max_body: Option<u64>,
    /// What the request is for, for messages ("fetch manifest").
    pub step: &'static str,
    pub timeouts: Timeouts,
    pub tls: Option<Arc<TlsOptions>>,
    /// A form body (with `Method::Post`).
    pub body: Option<Vec<u8>>,
    /// The Authorization header line, kept apart so that it is wiped.
    pub auth: Option<crate::registry::credentials::Secret>,
}

impl Request {
    pub fn get(step: &'static str, url: impl Into<String>) -> Request {
        Request {
            method: Method::Get,
            url: url.into(),
            headers: Vec::new(),
            range: None,
            follow: false,
            buffer: 1 << 20,
            max_body: None,
            step,
            timeouts: Timeouts::default(),
            tls: None,
            body: None,
            auth: None,
        }
    }

    pub fn head(step: &'static str, url: impl Into<String>) -> Request {
        Request {
            method: Method::Head,
            ..Request::get(step, url)
        }
    }

    /// The error a non-2xx answer to this request stands for.
    pub fn error_for(&self, resp: &Response) -> Error {
        Error::http(
            self.step,
            self.method.as_str(),
            &self.url,
            resp.status,
            &resp.body,
        )
    }
}

/// Response headers, names lower-cased.
#[derive(Debug, Clone, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A whole small response.
#[derive(Debug)]
pub struct Response {
    pub status: u32,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

struct State {
    status: u32,
    headers: Headers,
    header_bytes: usize,
    /// The headers of the response that carries the body are in.
    final_headers: bool,
    data: VecDeque<u8>,
    cap: usize,
    paused: bool,
    unpause_asked: bool,
    /// Unpause was asked for while the target was deciding to pause (not
    /// paused yet): it tries once more instead of pausing.
    wake_early: bool,
    err_body: Vec<u8>,
    done: Option<Result<()>>,
    /// The reader went away: abort on the next callback.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked while holding
        // it; the state itself stays consistent enough to report errors.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The curl handler, owned by the I/O thread.
struct Sink {
    shared: Arc<Shared>,
    follow: bool,
    has_location: bool,
    range_start: u64,
    /// Bytes still to drop: a server that ignored our Range header.
    skip: u64,
    received: u64,
    max_body: Option<u64>,
    failure: Option<Error>,
    target: Option<Box<dyn BodyTarget>>,
    method: Method,
    url: String,
    step: &'static str,
}

impl Sink {
    fn fail(&mut self, err: Error) {
        if self.failure.is_none() {
            self.failure = Some(err);
        }
    }

    fn end_of_headers(&mut self, st: &mut State) {
        let status = st.status;
        if status < 200 || (self.follow && (300..400).contains(&status) && self.has_location) {
            return;
        }
        st.final_headers = true;
        if status == 200 && self.range_start > 0 {
            // The server ignored Range: stream from 0 and drop the head.
            self.skip = self.range_start;
        } else if status == 206 {
            let start = st
                .headers
                .get("content-range")
                .and_then(parse_content_range_start);
            if start != Some(self.range_start) {
                self.fail(Error::protocol(format!(
                    "{}: {} {}: HTTP 206 with Content-Range {:?}, expected start {}",
                    self.step,
                    self.method.as_str(),
                    crate::error::redact_url(&self.url),
                    st.headers.get("content-range").unwrap_or(""),
                    self.range_start
                )));
            }
        }
    }
}

/// `Retry-After` in seconds (an HTTP date is taken as "soon"), capped.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let secs = match v.parse::<u64>() {
        Ok(s) => s,
        Err(_) if !v.is_empty() => 1,
        Err(_) => return None,
    };
    Some(Duration::from_secs(secs.min(60)))
}

/// `bytes 100-199/1000` → 100.
fn parse_content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

impl Handler for Sink {
    fn header(&mut self, data: &[u8]) -> bool {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        st.header_bytes += data.len();
        if st.header_bytes > MAX_HEADER_BYTES || st.headers.0.len() > MAX_HEADER_LINES {
            drop(st);
            self.fail(Error::protocol(format!(
                "{}: {}: response headers exceed {MAX_HEADER_BYTES} bytes",
                self.step,
                crate::error::redact_url(&self.url)
            )));
            return false;
        }
        let line = String::from_utf8_lossy(data);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.starts_with("HTTP/") {
            st.status = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            st.headers.0.clear();
            self.has_location = false;
        } else if line.is_empty() {
            self.end_of_headers(&mut st);
            drop(st);
            shared.cond.notify_all();
        } else if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "location" {
                self.has_location = true;
            }
            st.headers.0.push((name, value.trim().to_string()));
        }
        true
    }

    fn write(&mut self, data: &[u8]) -> std::result::Result<usize, WriteError> {
        let mut st = self.shared.lock();
        if st.closed {
            return Ok(0);
        }
        if !(200..300).contains(&st.status) {
            let room = MAX_ERROR_BODY.saturating_sub(st.err_body.len());
            let take = room.min(data.len());
            st.err_body.extend_from_slice(&data[..take]);
            return Ok(data.len());
        }
        let skip = self.skip.min(data.len() as u64) as usize;
        let body = &data[skip..];
        if self.target.is_none() && !st.data.is_empty() && st.data.len() + body.len() > st.cap {
            st.paused = true;
            return Err(WriteError::Pause);
        }
        drop(st);
        let total = self.received + body.len() as u64;
        if let Some(limit) = self.max_body {
            if total > limit {
                self.fail(Error::new(
                    libc::EFBIG,
                    format!(
                        "{}: {} {}: response body is too large (more than {limit} bytes)",
                        self.step,
                        self.method.as_str(),
                        crate::error::redact_url(&self.url)
                    ),
                ));
                return Ok(0);
            }
        }
        if let Some(t) = self.target.as_mut() {
            loop {
                match t.deliver(body) {
                    Ok(true) => break,
                    Ok(false) => {
                        let mut st = self.shared.lock();
                        if std::mem::take(&mut st.wake_early) {
                            continue;
                        }
                        st.paused = true;
                        return Err(WriteError::Pause);
                    }
                    Err(e) => {
                        self.fail(e);
                        return Ok(0);
                    }
                }
            }
            self.skip -= skip as u64;
            self.received = total;
            return Ok(data.len());
        }
        self.skip -= skip as u64;
        self.received = total;
        let mut st = self.shared.lock();
        st.data.extend(body);
        drop(st);
        self.shared.cond.notify_all();
        Ok(data.len())
    }
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

/// Keeps fork() from happening while the I/O or post thread holds a lock
/// a child would need: pthread_atfork's prepare handler closes the gate
/// and waits until both are outside, between two rounds of work.
struct ForkGate {
    state: Mutex<(usize, bool)>,
    cond: Condvar,
}

struct Busy;

impl ForkGate {
    fn enter(&'static self) -> Busy {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.1 {
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.0 += 1;
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut st = FORK_GATE.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 -= 1;
        drop(st);
        FORK_GATE.cond.notify_all();
    }
}

static FORK_GATE: ForkGate = ForkGate {
    state: Mutex::new((0, false)),
    cond: Condvar::new(),
};

extern "C" fn fork_prepare() {
    let mut st = FORK_GATE.state.lock().unwrap_or_else(|e| e.into_inner());
    st.1 = true;
    while st.0 > 0 {
        st = FORK_GATE.cond.wait(st).unwrap_or_else(|e| e.into_inner());
    }
}

extern "C" fn fork_parent() {
    let mut st = FORK_GATE.state.lock().unwrap_or_else(|e| e.into_inner());
    st.1 = false;
    drop(st);
    FORK_GATE.cond.notify_all();
}

extern "C" fn fork_child() {
    // The child has no I/O or post thread: nobody is inside.
    let mut st = FORK_GATE.state.lock().unwrap_or_else(|e| e.into_inner());
    *st = (0, false);
}

static ATFORK: std::sync::Once = std::sync::Once::new();

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
            }),
            cond: Condvar::new(),
        });
        let range_start = req.range.map(|r| r.0).unwrap_or(0);
        let sink = Sink {
            shared: shared.clone(),
            follow: req.follow,
            has_location: false,
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
        })
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

fn configure(sink: Sink, req: &Request) -> std::result::Result<Easy2<Sink>, curl::Error> {
    let mut easy = Easy2::new(sink);
    easy.signal(false)?;
    easy.url(&req.url)?;
    easy.useragent(USER_AGENT)?;
    match req.method {
        Method::Get => easy.get(true)?,
        Method::Head => easy.nobody(true)?,
        Method::Post => {
            easy.post(true)?;
            easy.post_fields_copy(req.body.as_deref().unwrap_or(&[]))?;
        }
    }
    if let Some(tls) = &req.tls {
        if let Some(ca) = &tls.ca {
            easy.cainfo(ca)?;
            // Keep the system's CAs too.
            if std::path::Path::new("/etc/ssl/certs").is_dir() {
                easy.capath("/etc/ssl/certs")?;
            }
        }
        if tls.insecure_skip_verify {
            easy.ssl_verify_peer(false)?;
            easy.ssl_verify_host(false)?;
        }
        if let Some(cert) = &tls.cert {
            easy.ssl_cert(cert)?;
        }
        if let Some(key) = &tls.key {
            easy.ssl_key(key)?;
        }
    }
    let mut list = List::new();
    for h in &req.headers {
        list.append(h)?;
    }
    if let Some(a) = &req.auth {
        list.append(a.expose())?;
    }
    easy.http_headers(list)?;
    if let Some((start, end)) = req.range {
        match end {
            Some(end) => easy.range(&format!("{start}-{end}"))?,
            None => easy.range(&format!("{start}-"))?,
        }
    }
    easy.follow_location(req.follow)?;
    easy.max_redirections(10)?;
    easy.connect_timeout(req.timeouts.connect)?;
    if req.timeouts.low_speed_limit > 0 && !req.timeouts.low_speed_time.is_zero() {
        easy.low_speed_limit(req.timeouts.low_speed_limit)?;
        easy.low_speed_time(req.timeouts.low_speed_time)?;
    }
    easy.tcp_keepalive(true)?;
    easy.tcp_nodelay(true)?;
    easy.buffer_size(1024 * 1024)?;
    // HTTP/2 where the registry offers it over TLS; HTTP/1.1 otherwise.
    let _ = easy.http_version(HttpVersion::V2TLS);
    set_protocols(&mut easy);
    Ok(easy)
}

/// Only http and https, for the request and for every redirect.
fn set_protocols(easy: &mut Easy2<Sink>) {
    const CURLOPT_PROTOCOLS_STR: curl_sys::CURLoption = 10_000 + 318;
    const CURLOPT_REDIR_PROTOCOLS_STR: curl_sys::CURLoption = 10_000 + 319;
    let value = c"http,https";
    // SAFETY: both options take a NUL-terminated string that libcurl
    // copies; older libcurl ignores unknown options with an error code.
    unsafe {
        curl_sys::curl_easy_setopt(easy.raw(), CURLOPT_PROTOCOLS_STR, value.as_ptr());
        curl_sys::curl_easy_setopt(easy.raw(), CURLOPT_REDIR_PROTOCOLS_STR, value.as_ptr());
    }
}

/// A transfer in flight; dropping it cancels the transfer.
pub struct Transfer {
    shared: Arc<Shared>,
    pid: u32,
    token: usize,
    transport: Arc<Transport>,
    method: Method,
    url: String,
    step: &'static str,
    finished: bool,
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

    fn ask_unpause(&self, st: &mut State) {
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
    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
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
        if self.is_stale() {
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

/// The error of a transfer left behind in the parent of a fork.
pub fn forked() -> Error {
    Error::new(
        libc::ECONNRESET,
        "the process forked during the transfer; it is started again",
    )
}

/// What ends a transfer: the Sink's own failure, curl's error, or the
/// body checks (length, digest).
fn outcome(sink: &mut Sink, res: std::result::Result<(), curl::Error>) -> Result<()> {
    if let Some(f) = sink.failure.take() {
        return Err(f);
    }
    if let Err(e) = res {
        return Err(Error::curl(sink.step, sink.method.as_str(), &sink.url, &e));
    }
    let (status, retry_after, body) = {
        let st = sink.shared.lock();
        let after = st.headers.get("retry-after").and_then(parse_retry_after);
        (st.status, after, st.err_body.clone())
    };
    if !(200..300).contains(&status) {
        if sink.target.is_some() {
            return Err(
                Error::http(sink.step, sink.method.as_str(), &sink.url, status, &body)
                    .with_retry_after(retry_after),
            );
        }
        return Ok(());
    }
    Ok(())
}

fn finish_transfer(easy: &mut Easy2<Sink>, res: std::result::Result<(), curl::Error>) {
    let sink = easy.get_mut();
    let out = outcome(sink, res);
    if let Some(t) = sink.target.as_mut() {
        t.finished(&out);
    }
    let shared = sink.shared.clone();
    let mut st = shared.lock();
    st.done = Some(out);
    st.paused = false;
    drop(st);
    shared.cond.notify_all();
}

fn fail_shared(shared: &Shared, err: Error) {
    let mut st = shared.lock();
    if st.done.is_none() {
        st.done = Some(Err(err));
    }
    drop(st);
    shared.cond.notify_all();
}

fn io_thread(rx: Receiver<Cmd>, waker_tx: Sender<MultiWaker>, dead: Arc<AtomicBool>) {
    let multi = Multi::new();
    if waker_tx.send(multi.waker()).is_err() {
        return;
    }
    let mut handles: HashMap<usize, Easy2Handle<Sink>> = HashMap::new();
    let mut states: HashMap<usize, Arc<Shared>> = HashMap::new();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        io_loop(&multi, &rx, &mut handles, &mut states)
    }));
    dead.store(true, Ordering::Release);
    let why = match run {
        Ok(()) => "the I/O thread has stopped",
        Err(_) => "internal error: the I/O thread panicked",
    };
    // Easy handles go before the multi handle.
    for (_, h) in handles.drain() {
        let _ = multi.remove2(h);
    }
    for (_, s) in states.drain() {
        fail_shared(&s, Error::new(libc::EIO, why));
    }
    // Whatever is still queued is failed too.
    while let Ok(cmd) = rx.try_recv() {
        if let Cmd::Start(_, easy) = cmd {
            fail_shared(&easy.get_ref().shared, Error::new(libc::EIO, why));
        }
    }
    drop(multi);
}

fn io_loop(
    multi: &Multi,
    rx: &Receiver<Cmd>,
    handles: &mut HashMap<usize, Easy2Handle<Sink>>,
    states: &mut HashMap<usize, Arc<Shared>>,
) {
    loop {
        let _busy = FORK_GATE.enter();
        loop {
            match rx.try_recv() {
                Ok(Cmd::Start(token, easy)) => {
                    let shared = easy.get_ref().shared.clone();
                    match multi.add2(*easy) {
                        Ok(mut h) => {
                            let _ = h.set_token(token);
                            handles.insert(token, h);
                            states.insert(token, shared);
                        }
                        Err(e) => fail_shared(
                            &shared,
                            Error::new(libc::EIO, format!("cannot start transfer: {e}")),
                        ),
                    }
                }
                Ok(Cmd::Unpause(token)) => {
                    if let Some(h) = handles.get(&token) {
                        {
                            let mut st = h.get_ref().shared.lock();
                            st.paused = false;
                            st.unpause_asked = false;
                        }
                        let _ = h.unpause_write();
                    }
                }
                Ok(Cmd::Cancel(token)) => {
                    states.remove(&token);
                    if let Some(h) = handles.remove(&token) {
                        let _ = multi.remove2(h);
                    }
                }
                Ok(Cmd::Shutdown) | Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => break,
            }
        }
        if multi.perform().is_err() {
            return;
        }
        let mut finished = Vec::new();
        multi.messages(|m| {
            if let (Ok(token), Some(res)) = (m.token(), m.result()) {
                finished.push((token, res));
            }
        });
        for (token, res) in finished {
            states.remove(&token);
            if let Some(h) = handles.remove(&token) {
                if let Ok(mut easy) = multi.remove2(h) {
                    finish_transfer(&mut easy, res);
                }
            }
        }
        let wait = multi
            .get_timeout()
            .ok()
            .flatten()
            .unwrap_or(Duration::from_millis(500))
            .min(Duration::from_millis(500));
        // Wait outside the gate: a fork() may happen meanwhile.
        drop(_busy);
        if multi.poll(&mut [], wait).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range_start("bytes 100-199/1000"), Some(100));
        assert_eq!(parse_content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(parse_content_range_start("items 1-2/3"), None);
    }

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
