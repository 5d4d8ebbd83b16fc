//! Platforms (`os/arch[/variant]`) and how an index entry is matched,
//! with the normalisation containerd applies (aarch64 = arm64 = arm64/v8,
//! x86_64 = amd64, armhf = arm/v7, …).

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: String,
}

impl Platform {
    /// Parses `os/arch[/variant]` and normalises it.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.len() <= 64
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok_part(p)) {
            return Err(Error::invalid(format!(
                "bad platform '{s}': expected os/arch[/variant], e.g. linux/arm64/v8"
            )));
        }
        Ok(Platform::new(
            parts[0],
            parts[1],
            parts.get(2).copied().unwrap_or(""),
        ))
    }

    /// A normalised platform from its parts.
    pub fn new(os: &str, arch: &str, variant: &str) -> Platform {
        let os = os.to_ascii_lowercase();
        let os = if os == "macos" {
            "darwin".to_string()
        } else {
            os
        };
        let arch = arch.to_ascii_lowercase();
        let variant = variant.to_ascii_lowercase();
        let (arch, variant) = match arch.as_str() {
            "x86_64" | "x86-64" | "amd64" => {
                let v = if variant == "v1" {
                    String::new()
                } else {
                    variant
                };
                ("amd64".to_string(), v)
            }
            "aarch64" | "arm64" => {
                let v = if variant.is_empty() || variant == "8" {
                    "v8".to_string()
                } else {
                    variant
                };
                ("arm64".to_string(), v)
            }
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "arm" => {
                let v = match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                };
                ("arm".to_string(), v)
            }
            "i386" | "i486" | "i586" | "i686" | "386" => ("386".to_string(), variant),
            _ => (arch, variant),
        };
        Platform { os, arch, variant }
    }

    /// The platform this library runs on.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "loongarch64" => "loong64",
            "mips64" => "mips64le",
            other => other,
        };
        Platform::new(std::env::consts::OS, arch, "")
    }

    /// Does an index entry's platform satisfy this request?
    pub fn matches(&self, os: &str, arch: &str, variant: &str) -> bool {
        let other = Platform::new(os, arch, variant);
        self.os == other.os && self.arch == other.arch && self.variant == other.variant
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.variant.is_empty() {
            write!(f, "{}/{}", self.os, self.arch)
        } else {
            write!(f, "{}/{}/{}", self.os, self.arch, self.variant)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(p.matches("linux", "arm64", "v8"));
        assert!(p.matches("linux", "arm64", ""));
        assert!(p.matches("linux", "aarch64", ""));
        assert!(!p.matches("linux", "arm", "v8"));
        let a = Platform::parse("linux/amd64").unwrap();
        assert!(a.matches("linux", "amd64", ""));
        assert!(a.matches("Linux", "x86_64", ""));
        assert!(!a.matches("windows", "amd64", ""));
        assert!(!a.matches("linux", "amd64", "v3"));
        let v7 = Platform::parse("linux/arm").unwrap();
        assert!(v7.matches("linux", "arm", "v7"));
        assert!(!v7.matches("linux", "arm", "v6"));
        let v6 = Platform::parse("linux/arm/v6").unwrap();
        assert!(v6.matches("linux", "arm", "v6"));
        assert!(!v6.matches("linux", "arm", "v7"));
    }

    #[test]
    fn rejects() {
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert_eq!(
                Platform::parse(bad).unwrap_err().errno(),
                libc::EINVAL,
                "{bad}"
            );
        }
    }

    #[test]
    fn host_is_parseable() {
        let h = Platform::host();
        assert!(!h.os.is_empty() && !h.arch.is_empty());
    }
}
