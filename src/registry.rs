//! A registry session for one repository: the `/v2/` ping, authenticated
//! requests (re-authenticating once on a 401), manifests, and resolving a
//! reference plus options to one blob's descriptor.

use std::sync::Arc;

use crate::auth::Auth;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{self, Document};
use crate::options::Target;
use crate::platform::Platform;
use crate::reference::{Reference, Scheme};
use crate::transport::{Headers, Request, Response, Transfer, Transport};

/// The blob an open vfile reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDesc {
    pub digest: Digest,
    pub size: u64,
    /// As the manifest gives it; empty for `blob=`.
    pub media_type: String,
}

pub struct Registry {
    transport: Arc<Transport>,
    /// `https://host:port`
    base: String,
    repository: String,
    scope: String,
    auth: Auth,
}

fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.starts_with("::1]"),
        None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
    };
    name == "localhost" || name.starts_with("127.")
}

impl Registry {
    /// Pings `/v2/` and learns how to authenticate. With no scheme given,
    /// https is tried first; on loopback a server that does not speak TLS
    /// is then talked to over plain http, as docker does for localhost.
    pub fn connect(r: &Reference, insecure: bool) -> Result<Registry> {
        let transport = Transport::get()?;
        let schemes: &[&str] = match (r.scheme, insecure) {
            (_, true) | (Scheme::Http, _) => &["http"],
            (Scheme::Https, _) => &["https"],
            (Scheme::Auto, _) if is_loopback(&r.registry) => &["https", "http"],
            (Scheme::Auto, _) => &["https"],
        };
        let mut last = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = format!("{scheme}://{}", r.registry);
            let mut req = Request::get("ping registry", format!("{base}/v2/"));
            req.max_body = Some(64 * 1024);
            match transport.fetch(&req) {
                Err(e) if e.errno() == libc::EPROTO && i + 1 < schemes.len() => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
                Ok(resp) => {
                    let reg = Registry {
                        transport: transport.clone(),
                        auth: Auth::new(&base),
                        base,
                        scope: format!("repository:{}:pull", r.repository),
                        repository: r.repository.clone(),
                    };
                    reg.take_ping(&req.url, resp)?;
                    return Ok(reg);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::new(libc::EIO, "no scheme to try")))
    }

    fn take_ping(&self, url: &str, resp: Response) -> Result<()> {
        match resp.status {
            200..=299 => Ok(()),
            401 => self
                .auth
                .learn(resp.headers.get_all("www-authenticate"))
                .map_err(|e| e.context("ping registry")),
            // Some registries (and proxies) do not serve /v2/ itself.
            404 => Ok(()),
            s => Err(Error::http("ping registry", "GET", url, s, &resp.body)),
        }
    }

    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{kind}/{reference}", self.base, self.repository)
    }

    /// Starts `req` with credentials; on a 401 learns the challenge,
    /// renews the token and tries once more. Returns the transfer with
    /// its final status and headers.
    pub fn start(&self, req: &Request) -> Result<(Transfer, u32, Headers)> {
        for attempt in 0..2 {
            let mut r = req.clone();
            if let Some(h) = self.auth.header(&self.transport, &self.scope)? {
                r.headers.push(h);
            }
            let mut t = self.transport.start_transfer(&r)?;
            let (status, headers) = t.wait_headers()?;
            if status == 401 {
                let err = t.status_error(status);
                if attempt == 0 {
                    self.auth.invalidate(&self.scope);
                    let learned = self.auth.learn(headers.get_all("www-authenticate"));
                    if learned.is_ok() {
                        continue;
                    }
                }
                return Err(self.needs_credentials(err));
            }
            return Ok((t, status, headers));
        }
        unreachable!("the loop returns")
    }

    fn needs_credentials(&self, err: Error) -> Error {
        Error::new(
            libc::EACCES,
            format!(
                "credentials are needed for repository '{}' at {}: {}",
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
        let mut req = Request::get("fetch manifest", url.clone());
        req.headers.push(manifest::accept_header());
        req.max_body = Some(manifest::MAX_MANIFEST_BYTES);
        req.buffer = manifest::MAX_MANIFEST_BYTES as usize + 1;
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
        let layer = layers.get(n).ok_or_else(|| {
            Error::new(
                libc::ERANGE,
                format!(
                    "layer {n} is out of range: {}/{}:{} has {} layer{} for {platform}",
                    self.base,
                    self.repository,
                    r.manifest_ref(),
                    layers.len(),
                    if layers.len() == 1 { "" } else { "s" }
                ),
            )
        })?;
        let digest = Digest::parse(&layer.digest)
            .map_err(|e| Error::protocol(format!("layer descriptor: {}", e.message())))?;
        Ok(BlobDesc {
            digest,
            size: layer.size,
            media_type: layer.media_type.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
