//! Where credentials come from, in order: the `username=`/`password=` or
//! `auth=` options; `$REGISTRY_AUTH_FILE`, then
//! `$XDG_RUNTIME_DIR/containers/auth.json` (podman, skopeo);
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (docker):
//! `auths` entries, then `credHelpers` for the registry, then
//! `credsStore`. Helpers run as `docker-credential-<name> get`.
//!
//! Secrets are zeroed when dropped and never printed.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{json_object, Error, Result};

/// A string that is zeroed when dropped and never shown.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // SAFETY: writing zero bytes keeps the String valid UTF-8; the
        // volatile writes keep the compiler from dropping them.
        unsafe {
            for b in self.0.as_bytes_mut() {
                std::ptr::write_volatile(b, 0);
            }
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
    /// An OAuth2 refresh token (docker's `identitytoken`).
    pub identity_token: Option<Secret>,
    /// Where they came from, for messages.
    pub source: String,
}

/// How long a credential helper may take.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest credentials file or helper answer read.
const MAX_FILE: u64 = 4 << 20;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim().bytes() {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|x| *x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits & 0xff) as u8);
        }
    }
    Some(out)
}

/// `user:pass` from a base64 `auth` value.
pub fn split_auth(b64: &str, source: &str) -> Result<(String, Secret)> {
    let raw = base64_decode(b64)
        .ok_or_else(|| Error::invalid(format!("{source}: 'auth' is not base64")))?;
    let s = String::from_utf8(raw)
        .map_err(|_| Error::invalid(format!("{source}: 'auth' is not UTF-8")))?;
    let secret = Secret::new(s);
    let (u, p) = secret
        .expose()
        .split_once(':')
        .ok_or_else(|| Error::invalid(format!("{source}: 'auth' is not user:password")))?;
    Ok((u.to_string(), Secret::new(p)))
}

/// The registry a config key names: scheme and path dropped, Docker Hub's
/// aliases made one. Returns (host, namespace path).
pub fn normalise_key(key: &str) -> (String, String) {
    let k = key.trim();
    let k = k.split_once("://").map(|(_, r)| r).unwrap_or(k);
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let host = host.to_ascii_lowercase();
    let host = match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    };
    // Docker Hub's legacy key carries /v1/; a path of v1 or v2 is no
    // namespace.
    let path = path.trim_matches('/');
    let path = if path == "v1" || path == "v2" || host == "docker.io" && path.starts_with("v1") {
        ""
    } else {
        path
    };
    (host, path.to_string())
}

/// The registry host as credential stores know it.
pub fn store_host(registry: &str) -> String {
    normalise_key(registry).0
}

/// The best key of `keys` for `host`/`repository`: same host, and the
/// longest namespace that contains the repository.
fn best_key<'a>(
    keys: impl Iterator<Item = &'a String>,
    host: &str,
    repository: &str,
) -> Option<&'a String> {
    keys.filter_map(|k| {
        let (h, path) = normalise_key(k);
        if h != host {
            return None;
        }
        let fits =
            path.is_empty() || repository == path || repository.starts_with(&format!("{path}/"));
        fits.then_some((path.len(), k))
    })
    .max_by_key(|(n, _)| *n)
    .map(|(_, k)| k)
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: std::collections::HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

fn read_config(path: &Path) -> Result<Option<Secret>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::new(
                libc::EACCES,
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    let mut text = String::new();
    f.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|e| Error::invalid(format!("cannot read {}: {e}", path.display())))?;
    Ok(Some(Secret::new(text)))
}

/// What one credentials file (docker's `config.json`, podman's
/// `auth.json`) holds for a registry host and repository.
#[derive(Debug, Default)]
pub struct InConfig {
    /// From the best `auths` entry: same host, the longest namespace that
    /// holds the repository.
    pub credentials: Option<Credentials>,
    /// The helper to ask otherwise: `credHelpers` for the host, else
    /// `credsStore`.
    pub helper: Option<String>,
}

/// Reads the text of a credentials file; `name` names it in messages
/// (which never hold a secret of it).
pub fn in_config(text: &str, name: &str, host: &str, repository: &str) -> Result<InConfig> {
    let cfg: ConfigFile =
        json_object(text.as_bytes()).map_err(|e| Error::invalid(format!("{name}: {e}")))?;
    let credentials = match best_key(cfg.auths.keys(), host, repository) {
        Some(k) => entry_credentials(&cfg.auths[k], format!("{name} ({k})"))?,
        None => None,
    };
    let helper = cfg
        .cred_helpers
        .iter()
        .find(|(k, _)| normalise_key(k).0 == host)
        .map(|(_, v)| v.clone())
        .or(cfg.creds_store)
        .filter(|h| !h.is_empty());
    Ok(InConfig {
        credentials,
        helper,
    })
}

fn entry_credentials(e: &AuthEntry, source: String) -> Result<Option<Credentials>> {
    let (username, password) = match (&e.auth, &e.username, &e.password) {
        (Some(a), _, _) if !a.is_empty() => split_auth(a, &source)?,
        (_, Some(u), Some(p)) => (u.clone(), Secret::new(p.clone())),
        _ => (String::new(), Secret::default()),
    };
    let identity_token = e
        .identitytoken
        .as_ref()
        .filter(|t| !t.is_empty())
        .map(|t| Secret::new(t.clone()));
    if username.is_empty() && password.is_empty() && identity_token.is_none() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username,
        password,
        identity_token,
        source,
    }))
}

/// The environment the lookup reads (a seam for tests).
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub registry_auth_file: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Env {
            registry_auth_file: var("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            docker_config: var("DOCKER_CONFIG"),
            home: var("HOME"),
        }
    }
}

/// Credentials for `registry` (host[:port]) and `repository`, from the
/// stores in order; None when no store has any.
pub fn lookup(registry: &str, repository: &str, env: &Env) -> Result<Option<Credentials>> {
    let host = store_host(registry);
    let mut files = Vec::new();
    if let Some(f) = &env.registry_auth_file {
        files.push(f.clone());
    }
    if let Some(d) = &env.xdg_runtime_dir {
        files.push(d.join("containers/auth.json"));
    }
    let read = |path: &Path| -> Result<Option<InConfig>> {
        match read_config(path)? {
            Some(text) => in_config(
                text.expose(),
                &path.display().to_string(),
                &host,
                repository,
            )
            .map(Some),
            None => Ok(None),
        }
    };
    for path in &files {
        if let Some(c) = read(path)?.and_then(|c| c.credentials) {
            return Ok(Some(c));
        }
    }
    let docker = match (&env.docker_config, &env.home) {
        (Some(d), _) => Some(d.join("config.json")),
        (None, Some(h)) => Some(h.join(".docker/config.json")),
        _ => None,
    };
    if let Some(cfg) = docker.as_deref().map(read).transpose()?.flatten() {
        if let Some(c) = cfg.credentials {
            return Ok(Some(c));
        }
        if let Some(h) = cfg.helper {
            return run_helper(&h, &host, HELPER_TIMEOUT);
        }
    }
    Ok(None)
}

/// The helper's stdin: the server name in an anonymous in-memory file,
/// not a pipe. A helper that exits without reading it (one that fails at
/// once) would make a write to a pipe raise SIGPIPE, which kills a C
/// program that has not ignored it.
fn helper_input(server: &str) -> Result<Stdio> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::io::FromRawFd;
    let fail = |e: std::io::Error| {
        Error::new(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("credential helper: cannot pass it the server name: {e}"),
        )
    };
    // SAFETY: a plain syscall; the descriptor it returns is ours alone.
    let fd = unsafe { libc::memfd_create(c"oci-registry-helper".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(server.as_bytes()).map_err(fail)?;
    f.seek(SeekFrom::Start(0)).map_err(fail)?;
    Ok(Stdio::from(f))
}

/// `docker-credential-<name> get` with the server on stdin.
pub fn run_helper(name: &str, host: &str, timeout: Duration) -> Result<Option<Credentials>> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Error::invalid(format!(
            "bad credential helper name '{name}'"
        )));
    }
    let program = format!("docker-credential-{name}");
    let server = if host == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(helper_input(&server)?)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::new(
                libc::EACCES,
                format!("credential helper {program}: cannot run it: {e}"),
            )
        })?;
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(MAX_FILE).read_to_end(&mut out);
        }
        out
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::new(
                    libc::ETIMEDOUT,
                    format!(
                        "credential helper {program} did not answer within {} s",
                        timeout.as_secs()
                    ),
                ));
            }
        }
    };
    let out = Secret::new(String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned());
    if !status.success() {
        let text = out.expose().trim();
        if text.contains("credentials not found") {
            return Ok(None);
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = (&mut e).take(4096).read_to_string(&mut err);
        }
        return Err(Error::new(
            libc::EACCES,
            format!(
                "credential helper {program} failed ({status}): {}",
                if text.is_empty() { err.trim() } else { text }
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
        ));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let a: Answer = serde_json::from_str(out.expose()).map_err(|_| {
        Error::protocol(format!(
            "credential helper {program}: its answer is not the expected JSON"
        ))
    })?;
    let secret = Secret::new(a.secret);
    let source = format!("credential helper {program}");
    if a.username == "<token>" {
        return Ok(Some(Credentials {
            username: String::new(),
            password: Secret::default(),
            identity_token: Some(secret),
            source,
        }));
    }
    Ok(Some(Credentials {
        username: a.username,
        password: secret,
        identity_token: None,
        source,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for s in ["", "a", "ab", "abc", "alice:s3cret-pass", "ü:ö"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert!(base64_decode("***").is_none());
    }

    #[test]
    fn keys() {
        assert_eq!(
            normalise_key("https://index.docker.io/v1/"),
            ("docker.io".into(), "".into())
        );
        assert_eq!(
            normalise_key("registry-1.docker.io"),
            ("docker.io".into(), "".into())
        );
        assert_eq!(
            normalise_key("http://Host:5000/ns/"),
            ("host:5000".into(), "ns".into())
        );
        let keys = [
            "quay.io".to_string(),
            "quay.io/team".to_string(),
            "quay.io/team/app".to_string(),
        ];
        assert_eq!(
            best_key(keys.iter(), "quay.io", "team/app").unwrap(),
            "quay.io/team/app"
        );
        assert_eq!(
            best_key(keys.iter(), "quay.io", "team/other").unwrap(),
            "quay.io/team"
        );
        assert_eq!(
            best_key(keys.iter(), "quay.io", "teamx/a").unwrap(),
            "quay.io"
        );
        assert!(best_key(keys.iter(), "ghcr.io", "a").is_none());
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("oci-creds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sources_in_order() {
        let d = tmpdir("order");
        std::fs::create_dir_all(d.join("run/containers")).unwrap();
        std::fs::create_dir_all(d.join("home/.docker")).unwrap();
        std::fs::write(
            d.join("home/.docker/config.json"),
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"r.example":{{"username":"u2","password":"p2","identitytoken":"tok"}}}}}}"#,
                base64_encode(b"hub:hubpass")
            ),
        )
        .unwrap();
        let env = Env {
            home: Some(d.join("home")),
            xdg_runtime_dir: Some(d.join("run")),
            ..Env::default()
        };
        let c = lookup("registry-1.docker.io", "library/alpine", &env)
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("hub", "hubpass")
        );
        let c = lookup("r.example", "x", &env).unwrap().unwrap();
        assert_eq!(c.identity_token.as_ref().unwrap().expose(), "tok");
        // podman's auth.json comes first.
        std::fs::write(
            d.join("run/containers/auth.json"),
            format!(
                r#"{{"auths":{{"docker.io":{{"auth":"{}"}}}}}}"#,
                base64_encode(b"pod:podpass")
            ),
        )
        .unwrap();
        let c = lookup("docker.io", "library/alpine", &env)
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "pod");
        assert!(c.source.contains("auth.json"));
        assert!(lookup("other.example", "x", &env).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn secrets_are_not_shown() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let c = Credentials {
            username: "u".into(),
            password: s,
            identity_token: None,
            source: "x".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
