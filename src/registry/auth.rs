//! Registry authentication: `WWW-Authenticate` challenges (RFC 7235) and
//! Bearer tokens from the realm the registry names, cached per scope.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

use crate::error::{json_object, redact_url, Error, Result};
use crate::registry::credentials::{base64_encode, Credentials, Secret};
use crate::transport::{Request, Transport};

/// Largest token response accepted.
const MAX_TOKEN_BODY: u64 = 1 << 20;
/// Shortest lifetime assumed for a token.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// One challenge: a scheme (lower-cased) and its parameters (names
/// lower-cased, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Parses every challenge of one `WWW-Authenticate` value: several
/// challenges, quoted or bare parameters, escapes and commas in quotes.
pub fn parse_challenges(value: &str) -> Vec<Challenge> {
    let b = value.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> String {
        let s = *i;
        while *i < b.len() && is_tchar(b[*i]) {
            *i += 1;
        }
        String::from_utf8_lossy(&b[s..*i]).into_owned()
    };
    while i < b.len() {
        skip_ws(&mut i);
        while i < b.len() && (b[i] == b',' || b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        let scheme = token(&mut i);
        if scheme.is_empty() {
            // Garbage: skip a byte and go on.
            i += 1;
            continue;
        }
        let mut ch = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
        };
        loop {
            skip_ws(&mut i);
            while i < b.len() && b[i] == b',' {
                i += 1;
                skip_ws(&mut i);
            }
            let start = i;
            let name = token(&mut i);
            if name.is_empty() {
                break;
            }
            let after_name = i;
            skip_ws(&mut i);
            if i < b.len() && b[i] == b'=' {
                // token68 (`abc==`) or a parameter.
                let mut j = i;
                while j < b.len() && b[j] == b'=' {
                    j += 1;
                }
                let mut k = j;
                while k < b.len() && (b[k] == b' ' || b[k] == b'\t') {
                    k += 1;
                }
                let token68 = j - i > 1 || k >= b.len() || b[k] == b',';
                if token68 && (j - i > 1 || ch.params.is_empty()) {
                    ch.params
                        .push(("token68".into(), format!("{name}{}", &value[i..j])));
                    i = j;
                    continue;
                }
                i += 1;
                skip_ws(&mut i);
                let v = if i < b.len() && b[i] == b'"' {
                    i += 1;
                    let mut v = Vec::new();
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' && i + 1 < b.len() {
                            i += 1;
                        }
                        v.push(b[i]);
                        i += 1;
                    }
                    // The closing quote, if there is one.
                    i = (i + 1).min(b.len());
                    String::from_utf8_lossy(&v).into_owned()
                } else {
                    // Lenient: a bare value runs to the next comma or
                    // blank (URLs are not tokens, yet some send them so).
                    let s = i;
                    while i < b.len() && !matches!(b[i], b',' | b' ' | b'\t') {
                        i += 1;
                    }
                    String::from_utf8_lossy(&b[s..i]).into_owned()
                };
                ch.params.push((name.to_ascii_lowercase(), v));
            } else {
                // A bare token after a scheme: the start of the next
                // challenge, unless it is this one's first item.
                let _ = after_name;
                i = start;
                break;
            }
        }
        out.push(ch);
    }
    out
}

/// `application/x-www-form-urlencoded`-safe percent encoding.
pub fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// How the registry wants to be talked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Clone, Debug)]
/// A Bearer token and when it stops being used.
pub struct Token {
    pub value: Secret,
    pub expires: Instant,
}

/// Tokens of the whole process, per (realm, service, scope, identity):
/// every vfile of one image shares them.
static TOKENS: Lazy<Mutex<HashMap<String, Token>>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// Authentication state of one registry connection.
pub struct Auth {
    registry_url: String,
    repository: String,
    creds: Option<Credentials>,
    /// Who we are in the token cache key (never the secret itself).
    identity: String,
    scheme: Mutex<Scheme>,
    /// Timeouts and TLS settings for token requests.
    template: Request,
}

impl Auth {
    pub fn new(
        registry_url: &str,
        repository: &str,
        creds: Option<Credentials>,
        template: Request,
    ) -> Auth {
        let identity = match &creds {
            None => "anonymous".to_string(),
            Some(c) => {
                let mut h = crate::digest::Hasher::new(crate::digest::Algorithm::Sha256);
                h.update(c.username.as_bytes());
                h.update(b"\0");
                h.update(c.password.expose().as_bytes());
                h.update(b"\0");
                h.update(
                    c.identity_token
                        .as_ref()
                        .map(|t| t.expose())
                        .unwrap_or("")
                        .as_bytes(),
                );
                h.finish().to_string()
            }
        };
        Auth {
            registry_url: registry_url.to_string(),
            repository: repository.to_string(),
            creds,
            identity,
            scheme: Mutex::new(Scheme::Anonymous),
            template,
        }
    }

    pub fn has_credentials(&self) -> bool {
        self.creds.is_some()
    }

    /// Takes what a 401's `WWW-Authenticate` headers say.
    pub fn learn<'a>(&self, values: impl Iterator<Item = &'a str>) -> Result<()> {
        let mut challenges = Vec::new();
        for v in values {
            challenges.extend(parse_challenges(v));
        }
        if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = b.param("realm").unwrap_or("").to_string();
            self.check_realm(&realm)?;
            let service = b.param("service").map(str::to_string);
            *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) =
                Scheme::Bearer { realm, service };
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            if self.creds.as_ref().is_some_and(|c| !c.username.is_empty()) {
                *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) = Scheme::Basic;
                return Ok(());
            }
            return Err(Error::new(
                libc::EACCES,
                format!(
                    "credentials are needed for repository '{}' at {}: it asks for Basic authentication, and no credentials were found (options username=/password=, auth.json, docker config)",
                    self.repository,
                    redact_url(&self.registry_url)
                ),
            ));
        }
        let names: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
        Err(Error::new(
            libc::EACCES,
            format!(
                "{} answered 401 without a usable challenge ({})",
                redact_url(&self.registry_url),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ))
    }

    fn check_realm(&self, realm: &str) -> Result<()> {
        let https = realm.starts_with("https://");
        if !(https || realm.starts_with("http://")) {
            return Err(Error::new(
                libc::EACCES,
                format!("token realm '{}' is not an http(s) URL", redact_url(realm)),
            ));
        }
        if self.registry_url.starts_with("https://") && !https {
            return Err(Error::new(
                libc::EACCES,
                format!(
                    "refusing plain-http token realm '{}' for https registry {}",
                    redact_url(realm),
                    redact_url(&self.registry_url)
                ),
            ));
        }
        Ok(())
    }

    pub fn is_anonymous(&self) -> bool {
        *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) == Scheme::Anonymous
    }

    fn cache_key(&self, realm: &str, service: Option<&str>, scope: &str) -> String {
        format!(
            "{realm}\n{}\n{scope}\n{}",
            service.unwrap_or(""),
            self.identity
        )
    }

    /// Forgets the token of `scope` (after a 401 with it).
    pub fn invalidate(&self, scope: &str) {
        let scheme = self
            .scheme
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Scheme::Bearer { realm, service } = scheme {
            let key = self.cache_key(&realm, service.as_deref(), scope);
            TOKENS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
    }

    /// The `Authorization` header line for a request within `scope`, if
    /// the registry wants one.
    pub fn header(&self, transport: &Arc<Transport>, scope: &str) -> Result<Option<Secret>> {
        let scheme = self
            .scheme
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match scheme {
            Scheme::Anonymous => Ok(None),
            Scheme::Basic => Ok(self.creds.as_ref().map(basic_header)),
            Scheme::Bearer { realm, service } => {
                let key = self.cache_key(&realm, service.as_deref(), scope);
                {
                    let mut cache = TOKENS.lock().unwrap_or_else(|e| e.into_inner());
                    let now = Instant::now();
                    cache.retain(|_, t| t.expires > now);
                    if let Some(t) = cache.get(&key) {
                        // Renew ahead of expiry.
                        if t.expires > now + Duration::from_secs(10) {
                            return Ok(Some(Secret::new(format!(
                                "Authorization: Bearer {}",
                                t.value.expose()
                            ))));
                        }
                    }
                }
                let t = self.fetch_token(transport, &realm, service.as_deref(), scope)?;
                let line = Secret::new(format!("Authorization: Bearer {}", t.value.expose()));
                TOKENS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, t);
                Ok(Some(line))
            }
        }
    }

    fn fetch_token(
        &self,
        transport: &Arc<Transport>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token> {
        let mut req = self.template.clone();
        req.step = "get token";
        req.max_body = Some(MAX_TOKEN_BODY);
        req.follow = false;
        req.buffer = MAX_TOKEN_BODY as usize + 1;
        let refresh = self.creds.as_ref().and_then(|c| c.identity_token.as_ref());
        if let Some(rt) = refresh {
            // OAuth2: POST the refresh (identity) token.
            let mut form = format!(
                "grant_type=refresh_token&refresh_token={}&client_id=liboci_registry",
                url_escape(rt.expose())
            );
            if let Some(s) = service {
                form.push_str(&format!("&service={}", url_escape(s)));
            }
            if !scope.is_empty() {
                form.push_str(&format!("&scope={}", url_escape(scope)));
            }
            req.method = crate::transport::Method::Post;
            req.url = realm.to_string();
            req.headers = vec!["Content-Type: application/x-www-form-urlencoded".to_string()];
            req.auth = None;
            req.body = Some(form.into_bytes());
        } else {
            let mut url = realm.to_string();
            let mut sep = if url.contains('?') { '&' } else { '?' };
            if let Some(s) = service {
                url.push_str(&format!("{sep}service={}", url_escape(s)));
                sep = '&';
            }
            if !scope.is_empty() {
                url.push_str(&format!("{sep}scope={}", url_escape(scope)));
            }
            req.method = crate::transport::Method::Get;
            req.url = url;
            req.headers = Vec::new();
            // The basic credentials are meant for this realm.
            req.auth = self
                .creds
                .as_ref()
                .filter(|c| !c.username.is_empty())
                .map(basic_header);
        }
        let resp = transport.fetch(&req);
        // The form held the refresh token: wipe it.
        if let Some(mut b) = req.body.take() {
            b.iter_mut()
                .for_each(|x| unsafe { std::ptr::write_volatile(x, 0) });
        }
        let resp = resp?;
        if !resp.is_success() {
            let who = match &self.creds {
                Some(c) => format!("the credentials from {}", c.source),
                None => "anonymous access: credentials are needed".to_string(),
            };
            let e = req.error_for(&resp);
            let errno = if matches!(resp.status, 401 | 403) {
                libc::EACCES
            } else {
                e.errno()
            };
            return Err(Error::new(
                errno,
                format!(
                    "token server refused {who} for repository '{}' at {}: {}",
                    self.repository,
                    redact_url(&self.registry_url),
                    e.message()
                ),
            ));
        }
        parse_token(&resp.body)
            .map_err(|e| e.context(&format!("get token from {}", redact_url(&req.url))))
    }
}

/// `Authorization: Basic base64(user:password)`.
fn basic_header(c: &Credentials) -> Secret {
    let pair = Secret::new(format!("{}:{}", c.username, c.password.expose()));
    Secret::new(format!(
        "Authorization: Basic {}",
        base64_encode(pair.expose().as_bytes())
    ))
}

/// A token endpoint's answer (`token` or OAuth2's `access_token`, and
/// `expires_in`, capped at a day and at least `MIN_TOKEN_LIFETIME`).
pub fn parse_token(body: &[u8]) -> Result<Token> {
    #[derive(serde::Deserialize)]
    struct Body {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let b: Body =
        json_object(body).map_err(|e| Error::protocol(format!("bad token response: {e}")))?;
    let value = b
        .token
        .filter(|t| !t.is_empty())
        .or(b.access_token.filter(|t| !t.is_empty()))
        .map(Secret::new)
        .ok_or_else(|| Error::protocol("token response has neither 'token' nor 'access_token'"))?;
    if value
        .expose()
        .bytes()
        .any(|c| c.is_ascii_control() || c == b' ')
    {
        return Err(Error::protocol("token response holds a malformed token"));
    }
    let life = Duration::from_secs(b.expires_in.unwrap_or(60).min(86_400)).max(MIN_TOKEN_LIFETIME);
    Ok(Token {
        value,
        expires: Instant::now() + life,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/alpine:pull"));
    }

    #[test]
    fn several_challenges_quotes_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="a, \"quoted\" realm", BEARER realm=https://t/x?a=1 , service = svc, Negotiate abc=="#,
        );
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some(r#"a, "quoted" realm"#));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://t/x?a=1"));
        assert_eq!(c[1].param("service"), Some("svc"));
        assert_eq!(c[2].scheme, "negotiate");
        assert_eq!(c[2].param("token68"), Some("abc=="));
    }

    /// Headers as real registries send them.
    #[test]
    fn unclosed_quotes_do_not_panic() {
        for h in [
            r#"Bearer realm="x"#,
            r#"Basic realm="\"#,
            r#"Bearer realm=""#,
            "Bearer \"",
        ] {
            let _ = parse_challenges(h);
        }
        let c = parse_challenges(r#"Bearer realm="https://t/x"#);
        assert_eq!(c[0].param("realm"), Some("https://t/x"));
    }

    #[test]
    fn real_registries() {
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#,
                "bearer",
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
            ),
            (
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:user/image:pull""#,
                "bearer",
                "https://ghcr.io/token",
                Some("ghcr.io"),
            ),
            (
                r#"Bearer realm="https://quay.io/v2/auth",service="quay.io""#,
                "bearer",
                "https://quay.io/v2/auth",
                Some("quay.io"),
            ),
            (
                r#"Basic realm="https://123456789012.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com""#,
                "basic",
                "https://123456789012.dkr.ecr.us-east-1.amazonaws.com/",
                Some("ecr.amazonaws.com"),
            ),
            (
                r#"Bearer realm="https://harbor.example.com/service/token",service="harbor-registry""#,
                "bearer",
                "https://harbor.example.com/service/token",
                Some("harbor-registry"),
            ),
            (
                r#"Bearer realm="https://gitlab.com/jwt/auth",service="container_registry",scope="repository:group/project:pull",error="insufficient_scope""#,
                "bearer",
                "https://gitlab.com/jwt/auth",
                Some("container_registry"),
            ),
            (
                r#"Bearer realm="https://us-docker.pkg.dev/v2/token",service="us-docker.pkg.dev""#,
                "bearer",
                "https://us-docker.pkg.dev/v2/token",
                Some("us-docker.pkg.dev"),
            ),
        ];
        for (header, scheme, realm, service) in cases {
            let c = parse_challenges(header);
            assert_eq!(c.len(), 1, "{header}");
            assert_eq!(c[0].scheme, *scheme, "{header}");
            assert_eq!(c[0].param("realm"), Some(*realm), "{header}");
            assert_eq!(c[0].param("service"), *service, "{header}");
        }
        let gitlab = parse_challenges(cases[5].0);
        assert_eq!(gitlab[0].param("error"), Some("insufficient_scope"));
        assert_eq!(
            gitlab[0].param("scope"),
            Some("repository:group/project:pull")
        );
    }

    #[test]
    fn tokens() {
        let t = parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.value.expose(), "abc");
        let t = parse_token(br#"{"access_token":"xyz","expires_in":1}"#).unwrap();
        assert_eq!(t.value.expose(), "xyz");
        assert!(t.expires >= Instant::now() + Duration::from_secs(59));
        assert_eq!(parse_token(b"{}").unwrap_err().errno(), libc::EPROTO);
        assert_eq!(parse_token(b"nope").unwrap_err().errno(), libc::EPROTO);
        // An array of the fields in order is no token answer (serde alone
        // would take it: a fuzz finding).
        let e = parse_token(br#"["abc", null, 300]"#).unwrap_err();
        assert!(e.message().contains("not a JSON object"), "{e}");
        // A message never quotes what the answer held.
        let e =
            parse_token(br#"{"token":"s3cr3t-t0ken","expires_in":"s3cr3t-t0ken"}"#).unwrap_err();
        assert!(!e.message().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn realm_rules() {
        let a = Auth::new("https://r.example", "a/b", None, Request::get("t", ""));
        assert!(a
            .learn(std::iter::once(r#"Bearer realm="http://t/token""#))
            .is_err());
        assert!(a
            .learn(std::iter::once(r#"Bearer realm="file:///etc/passwd""#))
            .is_err());
        assert!(a
            .learn(std::iter::once(
                r#"Bearer realm="https://t/token",service="s""#
            ))
            .is_ok());
        assert!(!a.is_anonymous());
    }

    #[test]
    fn escape() {
        assert_eq!(
            url_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
