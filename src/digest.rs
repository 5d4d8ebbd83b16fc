//! Content digests (`sha256:…`, `sha512:…`) and their running hashers.

use sha2::Digest as _;
use std::fmt;

use crate::error::{Error, Result};
use crate::reference::check_digest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

/// A validated digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest> {
        check_digest(s)?;
        Ok(Digest(s.to_string()))
    }

    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digest of `data` with this digest's algorithm.
    pub fn of(alg: Algorithm, data: &[u8]) -> Digest {
        let mut h = Hasher::new(alg);
        h.update(data);
        h.finish()
    }

    /// Checks that `data` hashes to this digest.
    pub fn verify(&self, data: &[u8], what: &str) -> Result<()> {
        let got = Digest::of(self.algorithm(), data);
        if &got == self {
            Ok(())
        } else {
            Err(Error::new(
                libc::EBADMSG,
                format!("{what}: digest mismatch: expected {self}, got {got}"),
            ))
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running hash.
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Hasher {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest(format!("sha256:{}", hex(&h.finalize()))),
            Hasher::Sha512(h) => Digest(format!("sha512:{}", hex(&h.finalize()))),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(
            Digest::of(Algorithm::Sha256, b"abc").as_str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let d = Digest::of(Algorithm::Sha512, b"");
        assert!(d.as_str().starts_with("sha512:cf83e135"));
        assert_eq!(
            Digest::parse(d.as_str()).unwrap().algorithm(),
            Algorithm::Sha512
        );
        let want = Digest::of(Algorithm::Sha256, b"abc");
        assert!(want.verify(b"abc", "x").is_ok());
        let e = want.verify(b"abd", "blob").unwrap_err();
        assert_eq!(e.errno(), libc::EBADMSG);
        assert!(e.message().contains(want.as_str()));
    }
}
