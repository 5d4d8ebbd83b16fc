//! Content digests (`sha256:…`, `sha512:…`) and their running hashers.

use sha2::Digest as _;
use std::fmt;

use crate::error::{Error, Result};

/// `algorithm:encoded` with a known algorithm and the right length.
pub fn check_digest(d: &str) -> Result<()> {
    let (alg, hex) = d
        .split_once(':')
        .ok_or_else(|| Error::invalid(format!("bad digest '{d}'")))?;
    let want = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => {
            return Err(Error::invalid(format!(
                "unsupported digest algorithm '{alg}'"
            )))
        }
    };
    if hex.len() != want || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Error::invalid(format!("bad {alg} digest '{d}'")));
    }
    Ok(())
}

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
    /// SHA-256 by the system libcrypto (see `sha256_by_libcrypto`).
    Sha256Crypto(CryptoSha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Hasher {
        match alg {
            Algorithm::Sha256 if sha256_by_libcrypto() => match CryptoSha256::new() {
                Some(h) => Hasher::Sha256Crypto(h),
                None => Hasher::Sha256(sha2::Sha256::new()),
            },
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha256Crypto(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest(format!("sha256:{}", hex(&h.finalize()))),
            Hasher::Sha256Crypto(h) => match h.finish() {
                Some(d) => Digest(format!("sha256:{}", hex(&d))),
                // Never equal to a digest: the check fails and says why.
                None => Digest("sha256:(libcrypto failed)".to_string()),
            },
            Hasher::Sha512(h) => Digest(format!("sha512:{}", hex(&h.finalize()))),
        }
    }
}

/// Which code hashes SHA-256, chosen once. The hash is what a verified
/// stream waits for, so it takes the fastest code this CPU runs: sha2's
/// where the CPU has SHA extensions (there it is as fast as libcrypto's,
/// a little faster on the machines measured), libcrypto's everywhere else
/// (its AVX2 / AVX / SSSE3 code hashes about twice as fast as sha2's
/// portable code). `OPENSSL_ia32cap`, OpenSSL's own switch for the CPU
/// features it may use, hands the choice to libcrypto, so that it applies
/// to our hashing as it does to the `openssl` tool.
fn sha256_by_libcrypto() -> bool {
    static BY_LIBCRYPTO: once_cell::sync::Lazy<bool> = once_cell::sync::Lazy::new(|| {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        let sha_ext = std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse4.1")
            && std::is_x86_feature_detected!("ssse3");
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
        let sha_ext = false;
        !sha_ext || std::env::var_os("OPENSSL_ia32cap").is_some()
    });
    *BY_LIBCRYPTO
}

/// A SHA-256 context of libcrypto (EVP).
pub struct CryptoSha256 {
    ctx: std::ptr::NonNull<openssl_sys::EVP_MD_CTX>,
    failed: bool,
}

// The context is used by one thread at a time (it moves with the hasher).
unsafe impl Send for CryptoSha256 {}

impl CryptoSha256 {
    fn new() -> Option<CryptoSha256> {
        // SAFETY: a fresh context, freed by Drop; EVP_sha256() is static.
        unsafe {
            let ctx = std::ptr::NonNull::new(openssl_sys::EVP_MD_CTX_new())?;
            let h = CryptoSha256 { ctx, failed: false };
            let md = openssl_sys::EVP_sha256();
            (openssl_sys::EVP_DigestInit_ex(ctx.as_ptr(), md, std::ptr::null_mut()) == 1)
                .then_some(h)
        }
    }

    fn update(&mut self, data: &[u8]) {
        // SAFETY: an initialised context; `data` is valid for its length.
        let rc = unsafe {
            openssl_sys::EVP_DigestUpdate(self.ctx.as_ptr(), data.as_ptr().cast(), data.len())
        };
        self.failed |= rc != 1;
    }

    fn finish(self) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        let mut len = 0u32;
        // SAFETY: an initialised context; `out` holds a SHA-256 digest.
        let rc = unsafe {
            openssl_sys::EVP_DigestFinal_ex(self.ctx.as_ptr(), out.as_mut_ptr(), &mut len)
        };
        (rc == 1 && len == 32 && !self.failed).then_some(out)
    }
}

impl Drop for CryptoSha256 {
    fn drop(&mut self) {
        // SAFETY: made by EVP_MD_CTX_new, freed once.
        unsafe { openssl_sys::EVP_MD_CTX_free(self.ctx.as_ptr()) }
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

    /// Both SHA-256 engines give the same digests, over updates of any
    /// size and none.
    #[test]
    fn libcrypto_and_sha2_agree() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for cuts in [&[][..], &[0, 1, 63, 64, 65, 1000, 131_072][..]] {
            let mut a = sha2::Sha256::new();
            let mut b = CryptoSha256::new().expect("libcrypto SHA-256");
            let mut at = 0;
            for &c in cuts.iter().chain([data.len()].iter()) {
                a.update(&data[at..c]);
                b.update(&data[at..c]);
                at = c;
            }
            assert_eq!(b.finish().unwrap(), <[u8; 32]>::from(a.finalize()));
        }
        let mut h = Hasher::Sha256Crypto(CryptoSha256::new().unwrap());
        h.update(b"abc");
        assert_eq!(h.finish(), Digest::of(Algorithm::Sha256, b"abc"));
    }
}
