//! Image references (`alpine`, `host:5000/a/b:tag@sha256:…`) and the
//! original 2024 URL grammar (`http://host/v2/library/<repo>/…`).

use crate::digest::check_digest;
use crate::error::{Error, Result};

/// Longest reference or URL we accept, in bytes.
pub const MAX_REFERENCE_LEN: usize = 4096;
/// Longest repository name (the distribution spec's limit).
pub const MAX_NAME_LEN: usize = 255;

/// How to reach a registry: explicit scheme or "decide for me".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
    /// Not stated: https, or plain http on loopback when the server does
    /// not speak TLS (as docker does for localhost).
    Auto,
}

/// A normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Host name as written, with port (`docker.io` becomes
    /// `registry-1.docker.io`).
    pub registry: String,
    /// Repository path, e.g. `library/alpine`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub scheme: Scheme,
}

impl Reference {
    /// What to ask `/manifests/` for: the digest when there is one.
    pub fn manifest_ref(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d,
            (None, Some(t)) => t,
            (None, None) => "latest",
        }
    }

    /// Parses an ordinary image reference, normalised the way docker and
    /// containerd do.
    pub fn parse(input: &str) -> Result<Reference> {
        if input.is_empty() {
            return Err(Error::invalid("empty image reference"));
        }
        if input.len() > MAX_REFERENCE_LEN {
            return Err(Error::invalid(format!(
                "image reference is longer than {MAX_REFERENCE_LEN} bytes"
            )));
        }
        if input.contains("://") {
            return Err(Error::invalid(format!(
                "invalid image reference '{input}': a reference has no scheme (use the 'insecure' option for plain http)"
            )));
        }
        let bad = |why: &str| Error::invalid(format!("invalid image reference '{input}': {why}"));
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                check_digest(d).map_err(|e| bad(e.message()))?;
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                check_tag(t).map_err(|e| bad(e.message()))?;
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(bad("no repository name"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        check_domain(&domain).map_err(|e| bad(e.message()))?;
        let (registry, repository) = if is_docker_hub(&domain) {
            let repo = if path.contains('/') {
                path
            } else {
                format!("library/{path}")
            };
            ("registry-1.docker.io".to_string(), repo)
        } else {
            (domain, path)
        };
        check_repository(&repository).map_err(|e| bad(e.message()))?;
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
            scheme: Scheme::Auto,
        })
    }
}

/// What the original URL grammar asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyUrl {
    pub reference: Reference,
    /// `blobs/<digest>`: this blob directly.
    pub blob: Option<String>,
    pub os: String,
    pub arch: String,
    /// 0-based layer index (the URL's `digest-<n>` is 1-based).
    pub layer: usize,
}

impl LegacyUrl {
    /// `<scheme>://<host>[:port]/v2/library/<repo>/[arch-<a>/][os-<o>/][digest-<n>]`
    /// or `<scheme>://<host>[:port]/v2/library/<repo>/blobs/<digest>`.
    pub fn parse(url: &str) -> Result<LegacyUrl> {
        if url.len() > MAX_REFERENCE_LEN {
            return Err(Error::invalid(format!(
                "URL is longer than {MAX_REFERENCE_LEN} bytes"
            )));
        }
        let bad = |why: &str| {
            Error::invalid(format!(
                "invalid registry URL '{}': {why}",
                crate::error::redact_url(url)
            ))
        };
        // Checked first, in one fixed order, so that what is refused and
        // its message do not depend on the user info (what redact_url
        // drops: after "://", up to the last '@' before the first '/').
        if let Some((_, rest)) = url.split_once("://") {
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            if authority.contains('@') {
                return Err(bad("credentials in the URL are not supported"));
            }
        }
        if url.contains(['?', '#']) {
            return Err(bad("a query or fragment is not part of the grammar"));
        }
        let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return Err(bad("expected http:// or https://"));
        };
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("missing /v2/library/<repo>/"))?;
        check_domain(host).map_err(|e| bad(e.message()))?;
        let path = path
            .strip_prefix("v2/library/")
            .ok_or_else(|| bad("path must start with /v2/library/"))?;
        let mut parts = path.split('/');
        let repo = parts.next().unwrap_or("");
        if repo.is_empty() {
            return Err(bad("missing repository name"));
        }
        let repository = format!("library/{repo}");
        check_repository(&repository).map_err(|e| bad(e.message()))?;
        let rest: Vec<&str> = parts.collect();
        // A trailing '/' leaves one empty part: allowed.
        let rest: Vec<&str> = match rest.split_last() {
            Some((&"", init)) => init.to_vec(),
            _ => rest,
        };
        let registry = if is_docker_hub(host) {
            "registry-1.docker.io".to_string()
        } else {
            host.to_string()
        };
        let mut out = LegacyUrl {
            reference: Reference {
                registry,
                repository,
                tag: Some("latest".to_string()),
                digest: None,
                scheme,
            },
            blob: None,
            os: "linux".to_string(),
            arch: "amd64".to_string(),
            layer: 0,
        };
        if rest.first() == Some(&"blobs") {
            if rest.len() != 2 {
                return Err(bad("expected blobs/<digest>"));
            }
            check_digest(rest[1]).map_err(|e| bad(e.message()))?;
            out.blob = Some(rest[1].to_string());
            return Ok(out);
        }
        let mut seen_digest = false;
        for part in rest {
            if seen_digest {
                return Err(bad("nothing may follow digest-<n>"));
            }
            if let Some(a) = part.strip_prefix("arch-") {
                if a.is_empty() || !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(bad("bad arch-<a>"));
                }
                out.arch = a.to_string();
            } else if let Some(o) = part.strip_prefix("os-") {
                if o.is_empty() || !o.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(bad("bad os-<o>"));
                }
                out.os = o.to_string();
            } else if let Some(n) = part.strip_prefix("digest-") {
                let n: usize = n
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1 && *n <= 1_000_000)
                    .ok_or_else(|| bad("digest-<n> takes a layer number from 1"))?;
                out.layer = n - 1;
                seen_digest = true;
            } else {
                return Err(bad(&format!("unknown path element '{part}'")));
            }
        }
        Ok(out)
    }
}

fn is_docker_hub(domain: &str) -> bool {
    matches!(
        domain,
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
    )
}

fn check_tag(t: &str) -> Result<()> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("bad tag '{t}'")))
    }
}

fn check_domain(d: &str) -> Result<()> {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| Error::invalid(format!("bad registry host '{d}'")))?;
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(Error::invalid(format!("bad registry host '{d}'")));
        }
        (
            None,
            p.strip_prefix(':')
                .map(Some)
                .unwrap_or(if p.is_empty() { None } else { Some("x") }),
        )
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(h) = host {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(Error::invalid(format!("bad registry host '{d}'")));
        }
    }
    if let Some(p) = port {
        if p.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
            return Err(Error::invalid(format!("bad port in '{d}'")));
        }
    }
    Ok(())
}

/// Path components of lower-case alphanumerics joined by `.`, `_`, `__`
/// or runs of `-`, as the distribution spec says.
fn check_repository(r: &str) -> Result<()> {
    if r.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "repository name is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    for comp in r.split('/') {
        let b = comp.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let mut ok = !b.is_empty() && alnum(b[0]) && alnum(b[b.len() - 1]);
        let mut i = 0;
        while ok && i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            // A separator: '.', '_', '__' or one or more '-'.
            let start = i;
            if b[i] == b'-' {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            } else if b[i] == b'_' && i + 1 < b.len() && b[i + 1] == b'_' {
                i += 2;
            } else if b[i] == b'.' || b[i] == b'_' {
                i += 1;
            } else {
                ok = false;
            }
            if ok && (start == 0 || i >= b.len() || !alnum(b[i])) {
                ok = false;
            }
        }
        if !ok {
            return Err(Error::invalid(format!(
                "bad repository name component '{comp}' (lower-case letters, digits and . _ __ - separators)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_normalisation() {
        let a = r("alpine");
        assert_eq!(a.registry, "registry-1.docker.io");
        assert_eq!(a.repository, "library/alpine");
        assert_eq!(a.tag.as_deref(), Some("latest"));
        let b = r("docker.io/library/alpine:3.20");
        assert_eq!(b.registry, "registry-1.docker.io");
        assert_eq!(b.repository, "library/alpine");
        assert_eq!(b.tag.as_deref(), Some("3.20"));
        let c = r("index.docker.io/user/app");
        assert_eq!(c.repository, "user/app");
        assert_eq!(r("docker.io/alpine").repository, "library/alpine");
    }

    #[test]
    fn hosts_tags_digests() {
        let a = r("localhost:5000/a/b/c:tag");
        assert_eq!(a.registry, "localhost:5000");
        assert_eq!(a.repository, "a/b/c");
        assert_eq!(a.tag.as_deref(), Some("tag"));
        let b = r(&format!("host.example/repo@{D}"));
        assert_eq!(b.registry, "host.example");
        assert_eq!(b.tag, None);
        assert_eq!(b.manifest_ref(), D);
        let c = r(&format!("127.0.0.1:5000/repo:v1@{D}"));
        assert_eq!(c.tag.as_deref(), Some("v1"));
        assert_eq!(c.manifest_ref(), D);
        assert_eq!(r("localhost/x").registry, "localhost");
        // No dot, colon or localhost: a Docker Hub namespace, as docker says.
        assert_eq!(r("host/repo").registry, "registry-1.docker.io");
        assert_eq!(r("host/repo").repository, "host/repo");
        assert_eq!(r("[::1]:5000/x:y").registry, "[::1]:5000");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "Upper",
            "host:5000/Repo",
            "a//b",
            "a/b:",
            "a/b:-x",
            "a@sha256:12",
            "a@md5:00",
            "http://host/a",
            "host:99999/a",
            "a/-b",
            "a/b_",
            "a..b",
        ] {
            let e = Reference::parse(bad).expect_err(bad);
            assert_eq!(e.errno(), libc::EINVAL, "{bad}");
        }
    }

    #[test]
    fn legacy_grammar() {
        let u = LegacyUrl::parse("http://127.0.0.1:5000/v2/library/hello/").unwrap();
        assert_eq!(u.reference.repository, "library/hello");
        assert_eq!(u.reference.scheme, Scheme::Http);
        assert_eq!(
            (u.os.as_str(), u.arch.as_str(), u.layer),
            ("linux", "amd64", 0)
        );
        let u =
            LegacyUrl::parse("https://h/v2/library/hello/arch-arm64/os-linux/digest-2").unwrap();
        assert_eq!((u.arch.as_str(), u.layer), ("arm64", 1));
        assert_eq!(u.reference.scheme, Scheme::Https);
        let u = LegacyUrl::parse("http://h:1/v2/library/x").unwrap();
        assert_eq!(u.layer, 0);
        let u = LegacyUrl::parse(&format!("http://h/v2/library/x/blobs/{D}")).unwrap();
        assert_eq!(u.blob.as_deref(), Some(D));
        let u = LegacyUrl::parse("https://registry-1.docker.io/v2/library/ubuntu/").unwrap();
        assert_eq!(u.reference.registry, "registry-1.docker.io");
        for bad in [
            "ftp://h/v2/library/x/",
            "http://h/v2/x/",
            "http://h/v2/library/",
            "http://h/v2/library/x/digest-0",
            "http://h/v2/library/x/digest-a",
            "http://h/v2/library/x/bogus-1",
            "http://h/v2/library/x/blobs/sha256:zz",
            "http://h/v2/library/x/digest-1/arch-amd64",
            "http://u:p@h/v2/library/x/",
            "https://h/v2/library/x?token=SECRET123",
            "https://h/v2/library/x/foo?access_token=SECRET456",
        ] {
            let e = LegacyUrl::parse(bad).expect_err(bad);
            assert_eq!(e.errno(), libc::EINVAL, "{bad}");
            assert!(!e.message().contains("u:p"));
            assert!(!e.message().contains("SECRET"), "{}", e.message());
        }
    }

    /// The fuzz finding of legacy_url: a '?' inside the user info made the
    /// query check fire first, so the message depended on the credentials.
    #[test]
    fn legacy_credentials_are_judged_first() {
        let with_query = "https://dock?\0\0er.ioryisha25;:@bra/v2/library/x/";
        let plain = "https://xxxxxxxxxxxxxxxxxxxxxxxxxx@bra/v2/library/x/";
        for url in [
            with_query,
            plain,
            "https://a@b",
            "ftp://u:p@h/v2/library/x/",
        ] {
            let e = LegacyUrl::parse(url).expect_err(url);
            assert_eq!(e.errno(), libc::EINVAL, "{url}");
            assert!(
                e.message()
                    .contains("credentials in the URL are not supported"),
                "{url}: {}",
                e.message()
            );
        }
        let a = LegacyUrl::parse(with_query).unwrap_err();
        let b = LegacyUrl::parse(plain).unwrap_err();
        assert_eq!(a.message(), b.message());
    }
}
