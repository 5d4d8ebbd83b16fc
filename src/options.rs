//! The options string: comma-separated `key[=value]` items, in the style
//! of `mkfs.erofs --oci=…`.

use std::time::Duration;

use std::path::PathBuf;

use crate::digest::check_digest;
use crate::error::{Error, Result};
use crate::registry::credentials::{split_auth, Secret};
use crate::registry::platform::Platform;

/// Longest options string we accept, in bytes.
pub const MAX_OPTIONS_LEN: usize = 4096;

/// Which blob of the image to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The N-th (0-based) layer of the platform's manifest.
    Layer(usize),
    /// A blob named by digest, read from the reference's repository.
    Blob(String),
}

/// How much of a blob is checked against its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Bytes read in order from byte 0 are hashed as they arrive; the
    /// read that reaches the end fails on a mismatch (the default).
    Stream,
    /// The whole blob is fetched and verified at open, before any byte
    /// is served.
    Full,
    /// Nothing is hashed (the caller verifies elsewhere).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub platform: Platform,
    pub target: Target,
    /// Plain http to the registry.
    pub insecure: bool,
    /// Cache block size in bytes.
    pub block: usize,
    /// `block=` was given (else a gzip layer under random access gets
    /// blocks of its own size, `seekable::SPAN_BLOCK`).
    pub block_given: bool,
    /// Memory the block cache may hold.
    pub cache_mem: usize,
    /// How far a sequential stream runs ahead of the reader.
    pub readahead: usize,
    /// Bytes per Range request of parallel readahead (rounded up to
    /// whole blocks).
    pub chunk: usize,
    pub verify: Verify,
    /// Retries of a failed request (connection errors, 5xx, 429).
    pub retries: u32,
    pub connect_timeout: Duration,
    /// Abort a transfer that stays below `low_speed_limit` bytes/s for
    /// `low_speed_time` (0 turns this off).
    pub low_speed_limit: u32,
    pub low_speed_time: Duration,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// A PEM file of extra CA certificates.
    pub ca: Option<PathBuf>,
    /// `tls_verify=0`: no certificate verification.
    pub tls_verify: bool,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Pull-through mirrors tried before the registry itself.
    pub mirrors: Vec<String>,
    /// `decompress=auto`: present the uncompressed tar of a gzip or zstd
    /// layer (by media type, else by magic).
    pub decompress: bool,
    /// Present the whole image as one merged tar of its root filesystem.
    pub flatten: bool,
    /// Gzip checkpoints of the layer (a SOCI / erofs-utils zinfo file);
    /// implies `decompress=auto`.
    pub zinfo: Option<PathBuf>,
    /// A tar index (`mkfs.erofs --tar=i` / `--oci=i`) presented in front
    /// of the layer's uncompressed tar; implies `decompress=auto`.
    pub tarindex: Option<PathBuf>,
    /// The on-disk cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Where blocks evicted from memory go (a private unlinked file).
    pub spill: Spill,
    /// Fetch the rest of the blob in the background once random reads
    /// have touched a good part of it.
    pub fill: bool,
    /// From a far registry, fetch the blocks an EROFS image's first two
    /// directory levels lie in as soon as its first block is read.
    pub meta_prefetch: bool,
    /// Range requests a sequential reader keeps in flight at once, each on
    /// a connection of its own (1: one stream); None (`auto`): the default
    /// number once the registry's round trip is found long, else one.
    pub connections: Option<usize>,
}

/// The spill file's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spill {
    /// `$TMPDIR`, else `/var/tmp` (disk, not tmpfs, by convention).
    Auto,
    Dir(PathBuf),
    /// Evicted blocks are dropped (fetched again when read again).
    None,
}

impl Spill {
    /// The directory to use, if any.
    pub fn dir(&self) -> Option<PathBuf> {
        match self {
            Spill::Auto => Some(crate::fetch::disk::default_tmp_dir()),
            Spill::Dir(d) => Some(d.clone()),
            Spill::None => None,
        }
    }
}

pub const DEFAULT_BLOCK: usize = 1 << 20;
pub const DEFAULT_CACHE_MEM: usize = 64 << 20;
pub const DEFAULT_READAHEAD: usize = 8 << 20;
/// Parallel range requests of a sequential reader (`connections=auto`,
/// once the round trip is long): one TCP connection gets a fraction of a
/// long link (and CDNs and S3 cap it); see `fetch::planner`.
pub const DEFAULT_CONNECTIONS: usize = 8;
pub const MAX_CONNECTIONS: usize = 64;
/// Bytes per Range request of parallel readahead: long enough that its
/// transfer, not the round trip before it, takes the time (4 MiB at 20 MB/s
/// is 0.2 s against a 30 ms round trip), short enough that two per
/// connection fit the memory cache.
pub const DEFAULT_CHUNK: usize = 4 << 20;

impl Default for Options {
    fn default() -> Self {
        Options {
            platform: Platform::host(),
            target: Target::Layer(0),
            insecure: false,
            block: DEFAULT_BLOCK,
            block_given: false,
            cache_mem: DEFAULT_CACHE_MEM,
            readahead: DEFAULT_READAHEAD,
            chunk: DEFAULT_CHUNK,
            verify: Verify::Stream,
            retries: 4,
            connect_timeout: Duration::from_secs(30),
            low_speed_limit: 1024,
            low_speed_time: Duration::from_secs(30),
            username: None,
            password: None,
            ca: None,
            tls_verify: true,
            cert: None,
            key: None,
            mirrors: Vec::new(),
            decompress: false,
            flatten: false,
            zinfo: None,
            tarindex: None,
            cache_dir: None,
            spill: Spill::Auto,
            fill: true,
            meta_prefetch: true,
            connections: None,
        }
    }
}

impl Options {
    /// Parses NULL/empty (all defaults) or `key[=value],…`.
    pub fn parse(s: Option<&str>) -> Result<Options> {
        let mut o = Options::default();
        let s = match s {
            Some(s) => s,
            None => return Ok(o),
        };
        if s.len() > MAX_OPTIONS_LEN {
            return Err(Error::invalid(format!(
                "options string is longer than {MAX_OPTIONS_LEN} bytes"
            )));
        }
        let mut have_layer = false;
        let mut have_blob = false;
        for item in s.split(',') {
            if item.is_empty() {
                continue;
            }
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            let need = |v: Option<&str>| -> Result<String> {
                match v {
                    Some(v) if !v.is_empty() => Ok(v.to_string()),
                    _ => Err(Error::invalid(format!("option '{key}' needs a value"))),
                }
            };
            match key {
                "platform" => o.platform = Platform::parse(&need(value)?)?,
                "layer" => {
                    let v = need(value)?;
                    let n = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n < 1_000_000)
                        .ok_or_else(|| {
                            Error::invalid(format!(
                                "option 'layer={v}': expected a 0-based layer number"
                            ))
                        })?;
                    o.target = Target::Layer(n);
                    have_layer = true;
                }
                "blob" => {
                    let v = need(value)?;
                    check_digest(&v).map_err(|e| e.context("option 'blob'"))?;
                    o.target = Target::Blob(v);
                    have_blob = true;
                }
                "insecure" => {
                    o.insecure = parse_bool(key, value)?;
                }
                "block" => {
                    let v = parse_size(key, &need(value)?)?;
                    if !(4096..=(64 << 20)).contains(&v) || !v.is_power_of_two() {
                        return Err(Error::invalid(format!(
                            "option 'block': {v} is not a power of two from 4K to 64M"
                        )));
                    }
                    o.block = v;
                    o.block_given = true;
                }
                "cache_mem" => o.cache_mem = parse_size(key, &need(value)?)?,
                "readahead" => o.readahead = parse_size(key, &need(value)?)?,
                "chunk" => {
                    o.chunk = parse_size(key, &need(value)?)?;
                    if o.chunk == 0 {
                        return Err(Error::invalid("option 'chunk=0': expected a size"));
                    }
                }
                "verify" => {
                    o.verify = match need(value)?.as_str() {
                        "stream" | "auto" | "on" => Verify::Stream,
                        "full" => Verify::Full,
                        "none" | "off" => Verify::None,
                        v => {
                            return Err(Error::invalid(format!(
                                "option 'verify={v}': expected stream, full or none"
                            )))
                        }
                    }
                }
                "retries" => o.retries = parse_num(key, &need(value)?, 100)? as u32,
                "connections" => {
                    o.connections = match need(value)?.as_str() {
                        "auto" => None,
                        v => match parse_num(key, v, MAX_CONNECTIONS as u64)? {
                            0 => {
                                return Err(Error::invalid(
                                    "option 'connections=0': expected auto or 1 or more",
                                ))
                            }
                            n => Some(n as usize),
                        },
                    }
                }
                "connect_timeout" => {
                    o.connect_timeout = Duration::from_secs(parse_num(key, &need(value)?, 3600)?)
                }
                "low_speed_limit" => {
                    o.low_speed_limit = parse_num(key, &need(value)?, u32::MAX as u64)? as u32
                }
                "low_speed_time" => {
                    o.low_speed_time = Duration::from_secs(parse_num(key, &need(value)?, 3600)?)
                }
                "username" => o.username = Some(need(value)?),
                "password" => o.password = Some(Secret::new(value.unwrap_or(""))),
                "auth" => {
                    let (u, p) = split_auth(&need(value)?, "option 'auth'")?;
                    o.username = Some(u);
                    o.password = Some(p);
                }
                "ca" => o.ca = Some(existing_file(key, &need(value)?)?),
                "cert" => o.cert = Some(existing_file(key, &need(value)?)?),
                "key" => o.key = Some(existing_file(key, &need(value)?)?),
                "tls_verify" => o.tls_verify = parse_bool(key, value)?,
                "decompress" => {
                    o.decompress = match need(value)?.as_str() {
                        "auto" => true,
                        "none" => false,
                        v => {
                            return Err(Error::invalid(format!(
                                "option 'decompress={v}': expected auto or none"
                            )))
                        }
                    }
                }
                "flatten" => o.flatten = parse_bool(key, value)?,
                "zinfo" => o.zinfo = Some(existing_file(key, &need(value)?)?),
                "tarindex" => o.tarindex = Some(existing_file(key, &need(value)?)?),
                "cache_dir" => {
                    let v = need(value)?;
                    let p = PathBuf::from(&v);
                    std::fs::create_dir_all(&p).map_err(|e| {
                        Error::invalid(format!("option 'cache_dir={v}': cannot create it: {e}"))
                    })?;
                    o.cache_dir = Some(p);
                }
                "spill" => {
                    o.spill = match need(value)?.as_str() {
                        "auto" => Spill::Auto,
                        "none" | "off" | "0" => Spill::None,
                        v => {
                            let p = PathBuf::from(v);
                            if !p.is_dir() {
                                return Err(Error::invalid(format!(
                                    "option 'spill={v}': expected auto, none or a directory"
                                )));
                            }
                            Spill::Dir(p)
                        }
                    }
                }
                "fill" | "meta_prefetch" => {
                    let on = match need(value)?.as_str() {
                        "auto" => true,
                        "none" | "off" | "0" => false,
                        v => {
                            return Err(Error::invalid(format!(
                                "option '{key}={v}': expected auto or none"
                            )))
                        }
                    };
                    match key {
                        "fill" => o.fill = on,
                        _ => o.meta_prefetch = on,
                    }
                }
                "mirror" => {
                    let m = need(value)?;
                    crate::registry::reference::Reference::parse(&format!("{m}/x"))
                        .ok()
                        .filter(|r| r.registry == m)
                        .ok_or_else(|| {
                            Error::invalid(format!("option 'mirror={m}': expected host[:port]"))
                        })?;
                    o.mirrors.push(m);
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown option '{}'",
                        key.chars().take(64).collect::<String>()
                    )))
                }
            }
        }
        // The cache must hold the readahead window and the blocks being
        // read, or readahead would evict itself.
        o.cache_mem = o.cache_mem.max(o.readahead + 2 * o.block).max(2 * o.block);
        if o.password.is_some() && o.username.is_none() {
            return Err(Error::invalid("option 'password' needs 'username'"));
        }
        if o.cert.is_some() != o.key.is_some() {
            return Err(Error::invalid("options 'cert' and 'key' go together"));
        }
        if o.flatten && (have_layer || have_blob) {
            return Err(Error::invalid(
                "option 'flatten' takes the whole image: it excludes 'layer' and 'blob'",
            ));
        }
        if have_layer && have_blob {
            return Err(Error::invalid(
                "options 'layer' and 'blob' exclude each other",
            ));
        }
        if o.flatten && (o.zinfo.is_some() || o.tarindex.is_some()) {
            return Err(Error::invalid(
                "options 'zinfo' and 'tarindex' belong to one layer: they exclude 'flatten'",
            ));
        }
        if o.zinfo.is_some() || o.tarindex.is_some() {
            o.decompress = true;
        }
        Ok(o)
    }
}

fn existing_file(key: &str, v: &str) -> Result<PathBuf> {
    let p = PathBuf::from(v);
    if !p.is_file() {
        return Err(Error::invalid(format!("option '{key}={v}': no such file")));
    }
    Ok(p)
}

/// `N`, `NK`, `NM`, `NG` (powers of 1024).
fn parse_size(key: &str, v: &str) -> Result<usize> {
    let (num, mult) = match v.as_bytes().last() {
        Some(b'k' | b'K') => (&v[..v.len() - 1], 1usize << 10),
        Some(b'm' | b'M') => (&v[..v.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0 && *n <= (16usize << 30))
        .ok_or_else(|| {
            Error::invalid(format!(
                "option '{key}={v}': expected a size like 65536, 512K or 64M"
            ))
        })
}

fn parse_num(key: &str, v: &str, max: u64) -> Result<u64> {
    v.parse::<u64>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| Error::invalid(format!("option '{key}={v}': expected a number up to {max}")))
}

fn parse_bool(key: &str, value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("1") | Some("true") | Some("yes") | Some("on") => Ok(true),
        Some("0") | Some("false") | Some("no") | Some("off") => Ok(false),
        Some(v) => Err(Error::invalid(format!(
            "option '{key}={v}': expected a boolean (1/0, true/false)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let o = Options::parse(None).unwrap();
        assert_eq!(o.target, Target::Layer(0));
        assert_eq!(o.platform, Platform::host());
        let o = Options::parse(Some("platform=linux/arm64,layer=2,insecure")).unwrap();
        assert_eq!(o.platform.to_string(), "linux/arm64/v8");
        assert_eq!(o.target, Target::Layer(2));
        assert!(o.insecure);
        let d = format!("sha256:{}", "a".repeat(64));
        let o = Options::parse(Some(&format!("blob={d}"))).unwrap();
        assert_eq!(o.target, Target::Blob(d));
        assert!(Options::parse(Some("")).is_ok());
        assert!(!Options::parse(Some("insecure=0")).unwrap().insecure);
        let o = Options::parse(Some(
            "block=256K,cache_mem=8M,readahead=4M,verify=none,retries=2,low_speed_time=5",
        ))
        .unwrap();
        assert_eq!(
            (o.block, o.cache_mem, o.readahead),
            (256 << 10, 8 << 20, 4 << 20)
        );
        assert_eq!((o.verify, o.retries), (Verify::None, 2));
        assert_eq!(o.low_speed_time, Duration::from_secs(5));
        let o = Options::parse(Some(
            "auth=dXNlcjpwYXNz,mirror=m.example:5000,mirror=localhost,tls_verify=0",
        ))
        .unwrap();
        assert_eq!(o.username.as_deref(), Some("user"));
        assert_eq!(o.password.as_ref().unwrap().expose(), "pass");
        assert_eq!(
            o.mirrors,
            vec!["m.example:5000".to_string(), "localhost".to_string()]
        );
        assert!(!o.tls_verify);
        assert_eq!((o.spill.clone(), o.fill), (Spill::Auto, true));
        assert!(o.meta_prefetch);
        let o = Options::parse(Some("spill=none,fill=none,meta_prefetch=none")).unwrap();
        assert_eq!(
            (o.spill.dir(), o.fill, o.meta_prefetch),
            (None, false, false)
        );
        let o = Options::parse(Some("spill=/")).unwrap();
        assert_eq!(o.spill.dir(), Some(PathBuf::from("/")));
        // The cache grows to hold the readahead window.
        let o = Options::parse(Some("cache_mem=1M,readahead=8M")).unwrap();
        assert_eq!(o.cache_mem, 10 << 20);
        // A zinfo or a tar index is of the uncompressed tar.
        for item in ["zinfo=/etc/hostname", "tarindex=/etc/hostname"] {
            let o = Options::parse(Some(item)).unwrap();
            assert!(o.decompress, "{item}");
        }
        let o = Options::parse(Some("layer=1,tarindex=/etc/hostname,zinfo=/etc/hostname")).unwrap();
        assert_eq!(o.tarindex, Some(PathBuf::from("/etc/hostname")));
        assert_eq!(o.zinfo, Some(PathBuf::from("/etc/hostname")));
        assert!(!Options::parse(Some("layer=1")).unwrap().decompress);
    }

    #[test]
    fn rejects() {
        for (bad, needle) in [
            ("frobnicate", "unknown option 'frobnicate'"),
            ("layer", "option 'layer' needs a value"),
            ("layer=x", "layer=x"),
            ("layer=-1", "layer=-1"),
            ("platform=linux", "bad platform"),
            ("blob=sha256:abc", "option 'blob'"),
            ("insecure=maybe", "insecure=maybe"),
            ("block=1000", "power of two"),
            ("cache_mem=lots", "cache_mem=lots"),
            ("verify=maybe", "verify=maybe"),
            ("retries=-1", "retries=-1"),
            ("password=x", "needs 'username'"),
            ("ca=/nonexistent/ca.pem", "no such file"),
            ("cert=/etc/hostname", "go together"),
            ("mirror=http://x", "mirror"),
            ("auth=***", "base64"),
            ("decompress=gzip", "decompress=gzip"),
            ("flatten,layer=1", "excludes"),
            ("spill=/nonexistent/dir", "spill=/nonexistent/dir"),
            ("fill=always", "fill=always"),
            ("meta_prefetch=all", "meta_prefetch=all"),
            ("zinfo=/nonexistent/z", "no such file"),
            ("tarindex", "option 'tarindex' needs a value"),
            ("flatten,zinfo=/etc/hostname", "exclude 'flatten'"),
            ("tarindex=/etc/hostname,flatten", "exclude 'flatten'"),
        ] {
            let e = Options::parse(Some(bad)).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL);
            assert!(e.message().contains(needle), "{bad}: {}", e.message());
        }
        let d = format!("sha256:{}", "a".repeat(64));
        let e = Options::parse(Some(&format!("layer=1,blob={d}"))).unwrap_err();
        assert!(e.message().contains("exclude"));
    }
}
