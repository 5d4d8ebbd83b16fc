//! Verification: blocks that arrive in order from byte 0 extend a running
//! hash; when it reaches the end it is checked against the digest, and
//! the read that reaches the end of the blob fails with EBADMSG on a
//! mismatch, as do all reads after it.

use std::sync::atomic::Ordering;

use super::blob::Inner;
use super::cache::Block;
use crate::digest::Hasher;
use crate::error::{Error, Result};

/// The running hash over the blob's prefix `[0, next)`.
pub(super) struct Chain {
    pub(super) next: u64,
    pub(super) hasher: Option<Hasher>,
    pub(super) verdict: Option<Result<()>>,
}

impl Inner {
    /// Offers a block to the running hash; the hash also takes the cached
    /// blocks that follow it.
    pub(super) fn offer_hash(&self, idx: u64, data: &Block) {
        let mut ch = self.chain.lock().unwrap_or_else(|e| e.into_inner());
        if ch.hasher.is_none() || ch.next != idx * self.block {
            return;
        }
        let mut block = data.clone();
        loop {
            if let Some(h) = ch.hasher.as_mut() {
                h.update(&block);
            }
            ch.next += block.len() as u64;
            self.hashed_to.store(ch.next, Ordering::Relaxed);
            if ch.next >= self.size {
                self.hashed_to.store(u64::MAX, Ordering::Relaxed);
                let got = ch.hasher.take().map(Hasher::finish);
                let verdict = match got {
                    Some(got) if got == self.digest => Ok(()),
                    Some(got) => Err(Error::new(
                        libc::EBADMSG,
                        format!(
                            "read blob: digest mismatch: expected {}, got {got}",
                            self.digest
                        ),
                    )),
                    None => Ok(()),
                };
                if let Err(e) = &verdict {
                    self.lock().poisoned = Some(e.clone());
                }
                ch.verdict = Some(verdict);
                return;
            }
            let next = ch.next / self.block;
            let cached = self.lock().mem.cache.peek(next);
            match cached {
                Some(b) => block = b,
                // Parts of a parallel fill arrive ahead of the hash, and
                // the memory cache may have let them go to the disk.
                None => match self.disk.as_ref().and_then(|d| d.read_block(next)) {
                    Some(v) => block = std::sync::Arc::new(v),
                    None => return,
                },
            }
        }
    }

    /// The running hash's verdict, once it has reached the end.
    pub(super) fn verdict(&self) -> Option<Result<()>> {
        self.chain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .verdict
            .clone()
    }

    /// Where the running hash stands (a byte offset); None when nothing
    /// is being hashed.
    pub(super) fn hashed_to(&self) -> Option<u64> {
        match self.hashed_to.load(Ordering::Relaxed) {
            u64::MAX => None,
            at => Some(at),
        }
    }
}
