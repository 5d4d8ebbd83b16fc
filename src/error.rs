//! Errors of the core, and the one place that maps curl codes, HTTP
//! statuses and parse failures to errno values.

use std::fmt;
use std::time::Duration;

/// A failure: a negative-errno-to-be plus the message shown to C callers.
///
/// The message names the step that failed, the URL (never with
/// credentials), the HTTP status and the registry's own error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    errno: i32,
    msg: String,
    /// The final HTTP status, for a failed exchange.
    status: Option<u32>,
    /// What a 429/503 said about when to come back.
    retry_after: Option<Duration>,
    /// The TLS handshake failed (not the certificate): the server may not
    /// speak TLS at all.
    tls_handshake: bool,
}

impl Error {
    /// A failure with an explicit errno value (positive, as in `libc::E*`).
    pub fn new(errno: i32, msg: impl Into<String>) -> Self {
        Error {
            errno,
            msg: msg.into(),
            status: None,
            retry_after: None,
            tls_handshake: false,
        }
    }

    /// Bad input from the caller: a reference, URL or option string.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(libc::EINVAL, msg)
    }

    /// A server answer we cannot understand (bad JSON, missing fields).
    pub fn protocol(msg: impl Into<String>) -> Self {
        Self::new(libc::EPROTO, msg)
    }

    /// A failed HTTP exchange: `status` is the final HTTP status and
    /// `body` the registry's error body, whose `errors[].code/message`
    /// are quoted in the message.
    pub fn http(step: &str, method: &str, url: &str, status: u32, body: &[u8]) -> Self {
        let mut msg = format!("{step}: {method} {}: HTTP {status}", redact_url(url),);
        if let Some(text) = registry_error_text(body) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        let mut e = Self::new(errno_for_status(status), msg);
        e.status = Some(status);
        e
    }

    /// The same error, carrying a server's `Retry-After`.
    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    pub fn status(&self) -> Option<u32> {
        self.status
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Might the same request succeed later? Connection failures and
    /// resets, timeouts, 5xx and 429 may; 4xx, digest mismatches and bad
    /// input may not.
    pub fn is_retryable(&self) -> bool {
        match self.status {
            Some(s) => s == 429 || s == 408 || (500..600).contains(&s) && s != 501,
            // A refused connection or an unknown host fails fast.
            None => matches!(self.errno, libc::ECONNRESET | libc::ETIMEDOUT),
        }
    }

    /// A transfer that curl could not complete.
    pub fn curl(step: &str, method: &str, url: &str, err: &curl::Error) -> Self {
        let mut msg = format!(
            "{step}: {method} {}: {}",
            redact_url(url),
            err.description()
        );
        if let Some(extra) = err.extra_description() {
            msg.push_str(" (");
            msg.push_str(extra);
            msg.push(')');
        }
        let mut e = Self::new(errno_for_curl(err), msg);
        e.tls_handshake = err.is_ssl_connect_error();
        e
    }

    /// A TLS handshake failure (as when the server speaks plain http).
    pub fn is_tls_handshake(&self) -> bool {
        self.tls_handshake
    }

    /// Positive errno value.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    pub fn message(&self) -> &str {
        &self.msg
    }

    /// The same error with `prefix: ` in front of its message.
    pub fn context(mut self, prefix: &str) -> Self {
        self.msg = format!("{prefix}: {}", self.msg);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// errno for a final HTTP status that is not a success.
pub fn errno_for_status(status: u32) -> i32 {
    match status {
        400 => libc::EINVAL,
        401 | 403 => libc::EACCES,
        404 => libc::ENOENT,
        405 | 501 => libc::EOPNOTSUPP,
        408 | 504 => libc::ETIMEDOUT,
        413 => libc::EFBIG,
        416 => libc::ERANGE,
        429 => libc::EAGAIN,
        _ => libc::EIO,
    }
}

/// errno for a curl transfer error.
pub fn errno_for_curl(err: &curl::Error) -> i32 {
    if err.is_couldnt_resolve_host() || err.is_couldnt_resolve_proxy() {
        libc::EHOSTUNREACH
    } else if err.is_couldnt_connect() {
        libc::ECONNREFUSED
    } else if err.is_operation_timedout() {
        libc::ETIMEDOUT
    } else if err.is_ssl_connect_error()
        || err.is_peer_failed_verification()
        || err.is_ssl_certproblem()
        || err.is_ssl_cacert()
        || err.is_ssl_cacert_badfile()
    {
        libc::EPROTO
    } else if err.is_recv_error()
        || err.is_send_error()
        || err.is_partial_file()
        || err.is_got_nothing()
    {
        libc::ECONNRESET
    } else if err.is_too_many_redirects() {
        libc::ELOOP
    } else if err.is_aborted_by_callback() || err.is_write_error() {
        libc::ECANCELED
    } else {
        libc::EIO
    }
}

/// `code: message` pairs of a distribution-spec error body, if it is one.
pub fn registry_error_text(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Item>,
    }
    let parsed: Body = serde_json::from_slice(body).ok()?;
    let parts: Vec<String> = parsed
        .errors
        .iter()
        .take(4)
        .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
            (false, false) => format!("{}: {}", e.code, clip(&e.message, 200)),
            (false, true) => e.code.clone(),
            _ => clip(&e.message, 200),
        })
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("; "))
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A JSON object of untrusted bytes (a token answer, a credentials file)
/// as `T`; the error says what was wrong the way `json_error` does. Only
/// an object: serde would also fill a struct from an array of its fields
/// in order.
pub fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("not a JSON object".to_string());
    }
    serde_json::from_slice(bytes).map_err(|e| json_error(&e))
}

/// A JSON parse error as a message can show it: its kind and position,
/// not serde_json's text, which quotes values of the input (a file or an
/// answer that holds secrets).
pub fn json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Eof => "JSON cut short",
        serde_json::error::Category::Data => "JSON of an unexpected shape",
        serde_json::error::Category::Io => "unreadable JSON",
    };
    format!("{what} at line {}, column {}", e.line(), e.column())
}

/// A URL fit for a message: user info dropped, and query values of
/// credential-like keys blanked.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            out = format!("{}{}", &out[..scheme_end + 3], &rest[at + 1..]);
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let cleaned: Vec<String> = query
            .split('&')
            .map(|kv| {
                let key = kv.split('=').next().unwrap_or("");
                let lower = key.to_ascii_lowercase();
                if [
                    "token",
                    "access_token",
                    "password",
                    "refresh_token",
                    "signature",
                    "x-amz-signature",
                    "x-amz-credential",
                    "x-amz-security-token",
                    "x-goog-signature",
                    "x-goog-credential",
                    "sig",
                    "verify",
                ]
                .iter()
                .any(|k| lower == *k)
                {
                    format!("{key}=REDACTED")
                } else {
                    kv.to_string()
                }
            })
            .collect();
        out = format!("{base}{}", cleaned.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert_eq!(errno_for_status(404), libc::ENOENT);
        assert_eq!(errno_for_status(401), libc::EACCES);
        assert_eq!(errno_for_status(503), libc::EIO);
        assert_eq!(errno_for_status(429), libc::EAGAIN);
    }

    #[test]
    fn registry_text() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(
            registry_error_text(body).as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown")
        );
        assert_eq!(registry_error_text(b"<html>"), None);
        let e = Error::http(
            "fetch manifest",
            "GET",
            "http://h/v2/x/manifests/y",
            404,
            body,
        );
        assert_eq!(e.errno(), libc::ENOENT);
        assert_eq!(
            e.message(),
            "fetch manifest: GET http://h/v2/x/manifests/y: HTTP 404: MANIFEST_UNKNOWN: manifest unknown"
        );
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("https://u:p@h:5000/v2/"), "https://h:5000/v2/");
        assert_eq!(
            redact_url("https://s3/b?X-Amz-Signature=abc&x=1"),
            "https://s3/b?X-Amz-Signature=REDACTED&x=1"
        );
        // CDN and object-store locations a blob GET is redirected to
        assert_eq!(
            redact_url("https://cdn/b?X-Amz-Security-Token=t&sig=s&verify=v&p=1"),
            "https://cdn/b?X-Amz-Security-Token=REDACTED&sig=REDACTED&verify=REDACTED&p=1"
        );
    }
}
