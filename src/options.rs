//! The options string: comma-separated `key[=value]` items, in the style
//! of `mkfs.erofs --oci=…`.

use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::reference::check_digest;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub platform: Platform,
    pub target: Target,
    /// Plain http to the registry.
    pub insecure: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            platform: Platform::host(),
            target: Target::Layer(0),
            insecure: false,
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
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown option '{}'",
                        key.chars().take(64).collect::<String>()
                    )))
                }
            }
        }
        if have_layer && have_blob {
            return Err(Error::invalid(
                "options 'layer' and 'blob' exclude each other",
            ));
        }
        Ok(o)
    }
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
