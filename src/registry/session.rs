//! A registry session for one repository: the `/v2/` ping, authenticated
//! requests (re-authenticating once on a 401), manifests, and resolving a
//! reference plus options to one blob's descriptor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::options::Target;
use crate::registry::auth::Auth;
use crate::registry::credentials::{self, Credentials};
use crate::registry::manifest::{self, Document};
use crate::registry::platform::Platform;
use crate::registry::reference::{Reference, Scheme};
use crate::transport::{
    BodyTarget, Headers, Request, Response, Timeouts, TlsOptions, Transfer, Transport,
};

/// The blob an open vfile reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDesc {
    pub digest: Digest,
    pub size: u64,
    /// As the manifest gives it; empty for `blob=`.
    pub media_type: String,
}

/// How to talk to a registry: retries of transient failures, timeouts,
/// TLS settings and credentials.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub retries: u32,
    pub timeouts: Timeouts,
    pub tls: Option<Arc<TlsOptions>>,
    /// Plain http.
    pub insecure: bool,
    /// Credentials given as options; None means "look them up".
    pub creds: Option<Credentials>,
}

impl Policy {
    /// A request with this policy's timeouts and TLS settings.
    pub fn request(&self, step: &'static str, url: impl Into<String>) -> Request {
        let mut r = Request::get(step, url);
        r.timeouts = self.timeouts;
        r.tls = self.tls.clone();
        r
    }
}

/// Connections opened to a registry beside the first request's (once per
/// process): a lazy reader's dependent misses each find one ready while
/// the block before still streams on its own.
const WARM_CONNECTIONS: usize = 2;

/// The request that opens a warm connection: the API version check, which
/// every registry answers (200, or 401 before credentials) with a few
/// bytes; it carries no credentials.
fn warm_request(policy: &Policy, base: &str) -> Request {
    let mut r = policy.request("open a connection", format!("{base}/v2/"));
    r.max_body = Some(64 * 1024);
    r
}

/// Wait before retry `attempt` (0-based): exponential from 100 ms with
/// jitter, capped at 10 s; at least what the server's Retry-After asked
/// (itself capped at 60 s).
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let base = 100u64 << attempt.min(7);
    let capped = base.min(10_000);
    // Cheap jitter from the clock: 50% .. 100% of the delay.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let jittered = capped / 2 + (nanos % (capped / 2 + 1));
    let d = Duration::from_millis(jittered);
    match retry_after {
        Some(r) => d.max(r.min(Duration::from_secs(60))),
        None => d,
    }
}

pub struct Registry {
    /// What the first request (a manifest GET, sent instead of a `/v2/`
    /// ping) got, for `manifest` to take: (URL, the response or the error
    /// its status stands for).
    probe: Mutex<Option<(String, Result<Response>)>>,
    policy: Policy,
    /// `https://host:port`
    base: String,
    repository: String,
    scope: String,
    auth: Auth,
    /// The shortest time one of its requests took to be answered, in
    /// microseconds (u64::MAX: none yet): about a round trip.
    answer_us: AtomicU64,
}

/// Loopback registries found to speak TLS.
static TLS_HOSTS: once_cell::sync::Lazy<Mutex<std::collections::HashSet<String>>> =
    once_cell::sync::Lazy::new(|| Mutex::new(std::collections::HashSet::new()));

fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.starts_with("::1]"),
        None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
    };
    name == "localhost" || name.starts_with("127.")
}

/// A manifest GET: the full Accept list, the size cap, room for it all.
fn manifest_request(mut req: Request) -> Request {
    req.headers.push(manifest::accept_header());
    req.max_body = Some(manifest::MAX_MANIFEST_BYTES);
    req.buffer = manifest::MAX_MANIFEST_BYTES as usize + 1;
    req
}

/// What a registry answers to a manifest GET, whatever the manifest (a TLS
/// server spoken to in plain http answers 400 instead).
fn is_registry_answer(status: u32) -> bool {
    matches!(status, 200..=299 | 401 | 404)
}

impl Registry {
    /// Talks to the registry for the first time and learns how to
    /// authenticate. There is no `/v2/` ping: the first request is the
    /// manifest of `r`, which the caller asks for next anyway (as
    /// containerd's resolver does): a 401 teaches the challenge, any other
    /// registry answer is kept for `manifest`. With no scheme given,
    /// https is used, except on loopback: there plain http is tried first
    /// (as go-containerregistry does for localhost; a TLS probe costs a CA
    /// store load, tens of milliseconds), then https when the server did
    /// not answer as a registry over http (a TLS server answers 400), and
    /// the host is remembered as one that speaks TLS. TLS options (`ca=`,
    /// `cert=`, `tls_verify=0`) say the registry speaks TLS: https first.
    pub fn connect(r: &Reference, policy: &Policy) -> Result<Registry> {
        let transport = Transport::get()?;
        let creds = match &policy.creds {
            Some(c) => Some(c.clone()),
            None => credentials::lookup(
                &r.registry,
                &r.repository,
                &credentials::Env::from_process(),
            )?,
        };
        let schemes: &[&str] = match (r.scheme, policy.insecure) {
            (_, true) | (Scheme::Http, _) => &["http"],
            (Scheme::Https, _) => &["https"],
            (Scheme::Auto, _) if is_loopback(&r.registry) => {
                let tls = policy.tls.is_some()
                    || TLS_HOSTS
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains(&r.registry);
                match tls {
                    true => &["https", "http"],
                    false => &["http", "https"],
                }
            }
            (Scheme::Auto, _) => &["https"],
        };
        let mut last = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = format!("{scheme}://{}", r.registry);
            let req = manifest_request(policy.request(
                "fetch manifest",
                format!("{base}/v2/{}/manifests/{}", r.repository, r.manifest_ref()),
            ));
            let more = i + 1 < schemes.len();
            if i == 0 {
                transport.warm(&base, &warm_request(policy, &base), WARM_CONNECTIONS);
            }
            let sent = Instant::now();
            match fetch_retrying(&transport, &req, policy.retries) {
                Err(e) if more && (e.is_tls_handshake() || *scheme == "http") => {
                    last = Some(e);
                    continue;
                }
                Ok(resp) if more && *scheme == "http" && !is_registry_answer(resp.status) => {
                    last = Some(req.error_for(&resp));
                    continue;
                }
                Err(e) if *scheme == "https" && e.is_tls_handshake() && last.is_some() => {
                    // Neither spoke: what plain http said is the news.
                    return Err(last.unwrap_or(e));
                }
                Err(e) => {
                    let e = tls_hint(e, policy);
                    let no_cert = !policy.tls.as_ref().is_some_and(|t| t.cert.is_some());
                    if *scheme == "https" && e.errno() == libc::ECONNRESET && no_cert {
                        return Err(e.context(
                            "the TLS connection was closed (if the registry wants a client certificate, pass the cert= and key= options)",
                        ));
                    }
                    return Err(e);
                }
                Ok(resp) => {
                    if r.scheme == Scheme::Auto && is_loopback(&r.registry) {
                        let mut tls = TLS_HOSTS.lock().unwrap_or_else(|e| e.into_inner());
                        if *scheme == "https" {
                            tls.insert(r.registry.clone());
                        } else {
                            tls.remove(&r.registry);
                        }
                    }
                    let reg = Registry {
                        probe: Mutex::new(None),
                        policy: policy.clone(),
                        auth: Auth::new(
                            &base,
                            &r.repository,
                            creds.clone(),
                            policy.request("get token", ""),
                        ),
                        base,
                        scope: format!("repository:{}:pull", r.repository),
                        repository: r.repository.clone(),
                        answer_us: AtomicU64::new(u64::MAX),
                    };
                    // curl's own timing where it has one: the warm
                    // connections (and a loaded machine) can hold up this
                    // first answer's connection set-up, not the answer.
                    reg.answered_in(resp.wait.unwrap_or_else(|| sent.elapsed()));
                    reg.take_probe(&transport, &req, resp, creds.is_some())?;
                    return Ok(reg);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::new(libc::EIO, "no scheme to try")))
    }

    /// The first response: a challenge is learnt (the manifest is then
    /// asked for again with credentials), a success is kept for `manifest`.
    /// A refusal without a challenge (some registries hide private
    /// repositories behind a 403 or 404) is, when there are credentials,
    /// followed by a `/v2/` ping to learn how to use them; else it is
    /// kept for `manifest` to report.
    fn take_probe(
        &self,
        transport: &Arc<Transport>,
        req: &Request,
        resp: Response,
        creds: bool,
    ) -> Result<()> {
        let mut resp = resp;
        if !resp.is_success() && resp.status != 401 && creds {
            let mut ping = self
                .policy
                .request("ping registry", format!("{}/v2/", self.base));
            ping.max_body = Some(64 * 1024);
            let ping = fetch_retrying(transport, &ping, self.policy.retries)?;
            if ping.status != 401 {
                return Ok(());
            }
            resp = ping;
        }
        if resp.status == 401 {
            return self
                .auth
                .learn(resp.headers.get_all("www-authenticate"))
                .map_err(|e| e.context("fetch manifest"));
        }
        let kept = match resp.is_success() {
            true => Ok(resp),
            false => Err(req.error_for(&resp)),
        };
        *self.probe.lock().unwrap_or_else(|e| e.into_inner()) = Some((req.url.clone(), kept));
        Ok(())
    }

    /// The process's transport (a new one after a fork).
    pub fn transport(&self) -> Result<Arc<Transport>> {
        Transport::get()
    }

    /// Has `n` warm connections to the registry opened in this process,
    /// beside the few of the first open (`Transport::warm`): for a reader
    /// that will have that many requests in flight at once.
    pub fn warm(&self, n: usize) {
        if let Ok(t) = self.transport() {
            t.warm(&self.base, &warm_request(&self.policy, &self.base), n);
        }
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{kind}/{reference}", self.base, self.repository)
    }

    /// Starts `req` with credentials; on a 401 learns the challenge,
    /// renews the token and tries once more; retries transient failures
    /// (connection errors, 5xx, 429 after its Retry-After) with backoff.
    /// Returns the transfer with its final status and headers.
    pub fn start(&self, req: &Request) -> Result<(Transfer, u32, Headers)> {
        self.start_to(req, &mut || None)
    }

    /// As `start`, with each attempt's 2xx body going to a fresh target.
    pub fn start_to(
        &self,
        req: &Request,
        target: &mut dyn FnMut() -> Option<Box<dyn BodyTarget>>,
    ) -> Result<(Transfer, u32, Headers)> {
        let sent = Instant::now();
        let first = self.begin_to(req, target)?;
        let answer = self.settle_to(req, target, first)?;
        self.answered_in(sent.elapsed());
        Ok(answer)
    }

    /// Takes note of a request answered in `took`.
    fn answered_in(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128 - 1) as u64;
        self.answer_us.fetch_min(us, Ordering::Relaxed);
    }

    /// About a round trip to the registry: the shortest time one of its
    /// requests took to be answered (curl's timing of any request to its
    /// origin, the warm connections' `GET /v2/` among them, or this
    /// session's own from sending to the answer); None before any answer.
    pub fn round_trip(&self) -> Option<Duration> {
        let own = match self.answer_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        };
        own.into_iter()
            .chain(Transport::shortest_wait(&self.base))
            .min()
    }

    /// The first half of `start_to`: sends one attempt of `req` and returns
    /// at once, so that a caller can have several requests in flight
    /// before it waits for their answers (`settle_to`). The outer error
    /// (no transport, no token) is final; the inner one is the attempt's.
    pub fn begin_to(
        &self,
        req: &Request,
        target: &mut dyn FnMut() -> Option<Box<dyn BodyTarget>>,
    ) -> Result<Result<Transfer>> {
        let mut r = req.clone();
        r.timeouts = self.policy.timeouts;
        r.tls = self.policy.tls.clone();
        let transport = self.transport()?;
        if !r.anonymous {
            r.auth = self.auth.header(&transport, &self.scope)?;
        }
        Ok(transport.start_transfer_to(&r, target()))
    }

    /// The second half of `start_to`: waits for the answer to an attempt
    /// `begin_to` sent; authenticates again once on a 401, retries
    /// connection errors and retryable statuses with backoff (each a new
    /// attempt); any other status is the caller's to judge.
    pub fn settle_to(
        &self,
        req: &Request,
        target: &mut dyn FnMut() -> Option<Box<dyn BodyTarget>>,
        mut started: Result<Transfer>,
    ) -> Result<(Transfer, u32, Headers)> {
        let mut reauthed = false;
        let mut attempt = 0;
        loop {
            let answered = started.and_then(|t| t.wait_headers().map(|(s, h)| (t, s, h)));
            let (mut t, status, headers) = match answered {
                Ok(v) => v,
                Err(e) if e.is_retryable() && attempt < self.policy.retries => {
                    std::thread::sleep(backoff(attempt, None));
                    attempt += 1;
                    started = self.begin_to(req, target)?;
                    continue;
                }
                Err(e) => return Err(tls_hint(e, &self.policy)),
            };
            if status == 401 {
                let err = t.status_error(status);
                if !reauthed {
                    reauthed = true;
                    self.auth.invalidate(&self.scope);
                    if self.auth.learn(headers.get_all("www-authenticate")).is_ok() {
                        started = self.begin_to(req, target)?;
                        continue;
                    }
                }
                return Err(self.needs_credentials(err));
            }
            if !(200..300).contains(&status) {
                let err = t.status_error(status).with_retry_after(
                    headers
                        .get("retry-after")
                        .and_then(crate::transport::parse_retry_after),
                );
                if err.is_retryable() && attempt < self.policy.retries {
                    std::thread::sleep(backoff(attempt, err.retry_after()));
                    attempt += 1;
                    started = self.begin_to(req, target)?;
                    continue;
                }
                // Statuses are the caller's to judge.
                return Ok((t, status, headers));
            }
            return Ok((t, status, headers));
        }
    }

    /// The token scope and the auth header for a request, for callers
    /// that restart transfers themselves.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Drops the token of this repository, so that the next request gets
    /// a fresh one (a request was refused with 401: it expired, or was
    /// revoked).
    pub fn forget_token(&self) {
        self.auth.invalidate(&self.scope);
    }

    /// A 401 that a fresh token did not cure, with what would.
    pub fn needs_credentials(&self, err: Error) -> Error {
        let what = if self.auth.has_credentials() {
            "the credentials were refused"
        } else {
            "credentials are needed"
        };
        Error::new(
            libc::EACCES,
            format!(
                "{what} for repository '{}' at {}: {}",
                self.repository,
                crate::error::redact_url(&self.base),
                err.message()
            ),
        )
    }

    /// GETs a manifest or index by tag or digest, and checks it against
    /// the digest it was asked by (or the registry's
    /// `Docker-Content-Digest` for a tag).
    pub fn manifest(&self, reference: &str) -> Result<Document> {
        let url = self.url("manifests", reference);
        let probe = {
            let mut p = self.probe.lock().unwrap_or_else(|e| e.into_inner());
            match p.take() {
                Some((u, resp)) if u == url => Some(resp),
                _ => None,
            }
        };
        let (headers, body) = match probe {
            Some(Ok(resp)) => (resp.headers, resp.body),
            Some(Err(e)) => return Err(e),
            None => self.fetch_manifest(&url)?,
        };
        let what = format!("fetch manifest {}", crate::error::redact_url(&url));
        if reference.contains(':') {
            Digest::parse(reference)?.verify(&body, &what)?;
        } else if let Some(d) = headers
            .get("docker-content-digest")
            .and_then(|d| Digest::parse(d.trim()).ok())
        {
            d.verify(&body, &what)?;
        }
        manifest::parse(headers.get("content-type"), &body).map_err(|e| e.context(&what))
    }

    fn fetch_manifest(&self, url: &str) -> Result<(Headers, Vec<u8>)> {
        let req = manifest_request(Request::get("fetch manifest", url.to_string()));
        let (mut t, status, headers) = self.start(&req)?;
        if !(200..300).contains(&status) {
            return Err(t.status_error(status));
        }
        t.finish()?;
        let mut body = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = t.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Ok((headers, body))
    }

    /// The size of a blob, by HEAD.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let req = Request::head("stat blob", self.url("blobs", digest.as_str()));
        let mut req = req;
        req.follow = true;
        let (mut t, status, headers) = self.start(&req)?;
        if !(200..300).contains(&status) {
            return Err(t.status_error(status));
        }
        t.finish()?;
        headers
            .get("content-length")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Error::protocol(format!("stat blob {digest}: no Content-Length")))
    }

    pub fn blob_url(&self, digest: &Digest) -> String {
        self.url("blobs", digest.as_str())
    }

    /// The layers of the image `r` names, for `platform` when it is an
    /// index, in manifest order (bottom first).
    pub fn layers(&self, r: &Reference, platform: &Platform) -> Result<Vec<BlobDesc>> {
        let layers = match self.manifest(r.manifest_ref())? {
            Document::Image(layers) => layers,
            Document::Index(entries) => {
                let d = manifest::select_platform(&entries, platform)?;
                Digest::parse(&d.digest)
                    .map_err(|e| Error::protocol(format!("index entry: {}", e.message())))?;
                match self.manifest(&d.digest)? {
                    Document::Image(layers) => layers,
                    Document::Index(_) => {
                        return Err(Error::protocol(format!(
                            "index entry {} for {platform} is itself an index",
                            d.digest
                        )))
                    }
                }
            }
        };
        layers
            .iter()
            .map(|l| {
                let digest = Digest::parse(&l.digest)
                    .map_err(|e| Error::protocol(format!("layer descriptor: {}", e.message())))?;
                Ok(BlobDesc {
                    digest,
                    size: l.size,
                    media_type: l.media_type.clone(),
                })
            })
            .collect()
    }

    /// The blob a reference and its options name.
    pub fn resolve(&self, r: &Reference, target: &Target, platform: &Platform) -> Result<BlobDesc> {
        if let Target::Blob(d) = target {
            let digest = Digest::parse(d)?;
            let size = self.blob_size(&digest)?;
            return Ok(BlobDesc {
                digest,
                size,
                media_type: String::new(),
            });
        }
        let Target::Layer(n) = *target else {
            unreachable!()
        };
        let mut layers = self.layers(r, platform)?;
        if n >= layers.len() {
            return Err(Error::new(
                libc::ERANGE,
                format!(
                    "layer {n} is out of range: {}/{}:{} has {} layer{} for {platform}",
                    self.base
                        .split_once("://")
                        .map(|(_, h)| h)
                        .unwrap_or(&self.base),
                    self.repository,
                    r.manifest_ref(),
                    layers.len(),
                    if layers.len() == 1 { "" } else { "s" }
                ),
            ));
        }
        Ok(layers.swap_remove(n))
    }
}

/// A TLS failure says how to fix it.
fn tls_hint(e: Error, policy: &Policy) -> Error {
    if e.errno() != libc::EPROTO {
        return e;
    }
    let skip = policy.tls.as_ref().is_some_and(|t| t.insecure_skip_verify);
    if skip {
        e.context("warning: TLS verification is off (tls_verify=0)")
    } else {
        Error::new(
            e.errno(),
            format!(
                "{} (for a registry with a private CA, pass the ca=/path/to/ca.pem option)",
                e.message()
            ),
        )
    }
}

/// `transport.fetch` with retries of transient failures.
fn fetch_retrying(transport: &Arc<Transport>, req: &Request, retries: u32) -> Result<Response> {
    let mut attempt = 0;
    loop {
        let res = transport.fetch(req).and_then(|resp| {
            if resp.status == 429 || (500..600).contains(&resp.status) && resp.status != 501 {
                let after = resp
                    .headers
                    .get("retry-after")
                    .and_then(crate::transport::parse_retry_after);
                Err(req.error_for(&resp).with_retry_after(after))
            } else {
                Ok(resp)
            }
        });
        match res {
            Err(e) if e.is_retryable() && attempt < retries => {
                std::thread::sleep(backoff(attempt, e.retry_after()));
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        for a in 0..10 {
            let d = backoff(a, None);
            let cap = (100u64 << a.min(7)).min(10_000);
            assert!(
                d >= Duration::from_millis(cap / 2) && d <= Duration::from_millis(cap),
                "{a}: {d:?}"
            );
        }
        assert!(backoff(0, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        assert!(backoff(0, Some(Duration::from_secs(600))) <= Duration::from_secs(60));
    }

    #[test]
    fn loopback() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("127.1.2.3:80"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry-1.docker.io"));
        assert!(!is_loopback("128.0.0.1:5000"));
    }
}
