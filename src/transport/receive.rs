//! The I/O thread's side of one transfer: the curl handler that takes the
//! response's headers and body (into the transfer's bounded buffer or a
//! `BodyTarget`), pauses when the reader is behind, and records how the
//! transfer ended.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use curl::easy::{Easy2, Handler, WriteError};
use once_cell::sync::Lazy;

use super::request::{Headers, Method};
use super::BodyTarget;
use crate::error::{Error, Result};

/// Largest error body kept for a message.
pub(super) const MAX_ERROR_BODY: usize = 64 * 1024;
/// Most response header lines and bytes accepted per response.
pub(super) const MAX_HEADER_LINES: usize = 256;
pub(super) const MAX_HEADER_BYTES: usize = 256 * 1024;

pub(super) struct State {
    pub(super) status: u32,
    pub(super) headers: Headers,
    pub(super) header_bytes: usize,
    /// The headers of the response that carries the body are in.
    pub(super) final_headers: bool,
    pub(super) data: VecDeque<u8>,
    pub(super) cap: usize,
    pub(super) paused: bool,
    pub(super) unpause_asked: bool,
    /// Unpause was asked for while the target was deciding to pause (not
    /// paused yet): it tries once more instead of pausing.
    pub(super) wake_early: bool,
    pub(super) err_body: Vec<u8>,
    pub(super) done: Option<Result<()>>,
    /// The reader went away: abort on the next callback.
    pub(super) closed: bool,
    /// From the request sent to the answer's first byte, as curl timed it
    /// (connection and TLS set-up left out); set when the transfer ends.
    pub(super) wait: Option<Duration>,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) cond: Condvar,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked while holding
        // it; the state itself stays consistent enough to report errors.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The curl handler, owned by the I/O thread.
pub(super) struct Sink {
    pub(super) shared: Arc<Shared>,
    pub(super) follow: bool,
    pub(super) has_location: bool,
    /// The URL the request stands at after the redirects followed so far
    /// (None: one went to a relative path this does not resolve).
    pub(super) at: Option<String>,
    pub(super) range_start: u64,
    /// Bytes still to drop: a server that ignored our Range header.
    pub(super) skip: u64,
    pub(super) received: u64,
    pub(super) max_body: Option<u64>,
    pub(super) failure: Option<Error>,
    pub(super) target: Option<Box<dyn BodyTarget>>,
    pub(super) method: Method,
    pub(super) url: String,
    pub(super) step: &'static str,
}

impl Sink {
    pub(super) fn fail(&mut self, err: Error) {
        if self.failure.is_none() {
            self.failure = Some(err);
        }
    }

    pub(super) fn end_of_headers(&mut self, st: &mut State) {
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

/// Where a redirect from `url` to `location` goes: an absolute URL, one
/// without its scheme, or an absolute path on `url`'s origin (None for a
/// relative path).
fn resolve(url: &str, location: &str) -> Option<String> {
    let scheme = &url[..url.find("://")?];
    if location.starts_with("http://") || location.starts_with("https://") {
        Some(location.to_string())
    } else if let Some(rest) = location.strip_prefix("//") {
        Some(format!("{scheme}://{rest}"))
    } else if location.starts_with('/') {
        Some(format!("{}{location}", origin(url)))
    } else {
        None
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
pub fn parse_content_range_start(v: &str) -> Option<u64> {
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
            if self.has_location && self.follow && (300..400).contains(&st.status) {
                // The redirect is being followed: the request is there now.
                self.at = st
                    .headers
                    .get("location")
                    .and_then(|l| resolve(self.at.as_deref()?, l));
            }
            st.status = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            st.headers.0.clear();
            self.has_location = false;
        } else if line.is_empty() {
            self.end_of_headers(&mut st);
            let answered = st.final_headers.then_some(st.status);
            drop(st);
            shared.cond.notify_all();
            // Without the transfer's lock: the target takes its own.
            if let (Some(status), Some(t)) = (answered, self.target.as_mut()) {
                if let Some(at) = self.at.as_ref().filter(|at| **at != self.url) {
                    if (200..300).contains(&status) {
                        t.redirected(at);
                    }
                }
                t.answered(status);
            }
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

/// What ends a transfer: the Sink's own failure, curl's error, or the
/// body checks (length, digest).
pub(super) fn outcome(sink: &mut Sink, res: std::result::Result<(), curl::Error>) -> Result<()> {
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

/// The shortest wait (`State::wait`) each origin (`scheme://host[:port]`)
/// has answered in, in this process: about its round trip, without the
/// server time one request or another may add.
static WAITS: Lazy<Mutex<HashMap<String, Duration>>> = Lazy::new(Default::default);

/// The origin of `url`: its scheme and authority.
pub(super) fn origin(url: &str) -> &str {
    let rest = url.find("://").map_or(0, |i| i + 3);
    let end = url[rest..].find('/').map_or(url.len(), |i| rest + i);
    &url[..end]
}

/// The shortest wait for an answer from `origin` (`scheme://host[:port]`)
/// seen so far.
pub(super) fn shortest_wait(origin: &str) -> Option<Duration> {
    WAITS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(origin)
        .copied()
}

fn note_wait(url: &str, wait: Duration) {
    let mut w = WAITS.lock().unwrap_or_else(|e| e.into_inner());
    match w.get_mut(origin(url)) {
        Some(d) => *d = (*d).min(wait),
        None => {
            w.insert(origin(url).to_string(), wait);
        }
    }
}

pub(super) fn finish_transfer(easy: &mut Easy2<Sink>, res: std::result::Result<(), curl::Error>) {
    let wait = match (easy.pretransfer_time(), easy.starttransfer_time()) {
        (Ok(sent), Ok(first)) if first > sent => Some(first - sent),
        _ => None,
    };
    if let (Some(w), Ok(Some(url))) = (wait, easy.effective_url()) {
        note_wait(url, w);
    }
    let sink = easy.get_mut();
    let out = outcome(sink, res);
    if let Some(t) = sink.target.as_mut() {
        t.finished(&out);
    }
    let shared = sink.shared.clone();
    let mut st = shared.lock();
    st.wait = wait;
    st.done = Some(out);
    st.paused = false;
    drop(st);
    shared.cond.notify_all();
}

pub(super) fn fail_shared(shared: &Shared, err: Error) {
    let mut st = shared.lock();
    if st.done.is_none() {
        st.done = Some(Err(err));
    }
    drop(st);
    shared.cond.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets() {
        let u = "https://r.example/v2/a/blobs/sha256:1";
        assert_eq!(
            resolve(u, "https://cdn.example/x?sig=1").as_deref(),
            Some("https://cdn.example/x?sig=1")
        );
        assert_eq!(
            resolve(u, "//cdn.example/x").as_deref(),
            Some("https://cdn.example/x")
        );
        assert_eq!(
            resolve(u, "/other/path").as_deref(),
            Some("https://r.example/other/path")
        );
        assert_eq!(resolve(u, "relative"), None);
    }

    #[test]
    fn origin_of_a_url() {
        assert_eq!(
            origin("https://r.example:5000/v2/a/blobs/x"),
            "https://r.example:5000"
        );
        assert_eq!(origin("http://127.0.0.1:1"), "http://127.0.0.1:1");
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range_start("bytes 100-199/1000"), Some(100));
        assert_eq!(parse_content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(parse_content_range_start("items 1-2/3"), None);
    }
}
