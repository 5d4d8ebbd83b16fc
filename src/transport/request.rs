//! One HTTP request as the callers describe it (method, URL, headers,
//! range, TLS, timeouts), the response a small request returns whole, and
//! the curl easy handle a request becomes.

use std::sync::Arc;
use std::time::Duration;

use curl::easy::{Easy2, HttpVersion, List};

use super::receive::Sink;
use crate::error::Error;

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
    /// Sent without the registry's credentials: the URL is on another
    /// host (a CDN's, that a blob GET was redirected to).
    pub anonymous: bool,
    /// On a connection of its own, not one waiting in the pool: a
    /// speculative fetch leaves those to the reads that wait.
    pub fresh: bool,
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
            anonymous: false,
            fresh: false,
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
pub struct Headers(pub(super) Vec<(String, String)>);

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
    /// From the request sent to the answer's first byte (a round trip and
    /// the server's time, no connection set-up), when curl timed it.
    pub wait: Option<Duration>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

pub(super) fn configure(
    sink: Sink,
    req: &Request,
) -> std::result::Result<Easy2<Sink>, curl::Error> {
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
    easy.fresh_connect(req.fresh)?;
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
