//! The in-memory block cache of one blob: fixed, aligned blocks, least
//! recently used first out, bounded in bytes.

use std::collections::HashMap;
use std::sync::Arc;

pub type Block = Arc<Vec<u8>>;

struct Entry {
    data: Block,
    used: u64,
}

pub struct BlockCache {
    blocks: HashMap<u64, Entry>,
    tick: u64,
    bytes: usize,
    cap: usize,
    pub hits: u64,
    pub misses: u64,
}

impl BlockCache {
    pub fn new(cap: usize) -> BlockCache {
        BlockCache {
            blocks: HashMap::new(),
            tick: 0,
            bytes: 0,
            cap,
            hits: 0,
            misses: 0,
        }
    }

    /// The block, marked as just used.
    pub fn get(&mut self, idx: u64) -> Option<Block> {
        self.tick += 1;
        let tick = self.tick;
        self.blocks.get_mut(&idx).map(|e| {
            e.used = tick;
            e.data.clone()
        })
    }

    /// The block, without touching its place in the LRU order.
    pub fn peek(&self, idx: u64) -> Option<Block> {
        self.blocks.get(&idx).map(|e| e.data.clone())
    }

    pub fn contains(&self, idx: u64) -> bool {
        self.blocks.contains_key(&idx)
    }

    /// Adds a block as the most recently used, then evicts the least
    /// recently used others while over budget; returns what left (with
    /// the block numbers; a replaced block of the same number too).
    pub fn insert(&mut self, idx: u64, data: Block) -> Vec<(u64, Block)> {
        self.tick += 1;
        self.put(idx, data, self.tick, false)
    }

    /// Adds a block nobody has asked for yet (background fill) as the
    /// least recently used: when the cache is full it is the first to go,
    /// itself included, rather than a block a reader uses.
    pub fn insert_cold(&mut self, idx: u64, data: Block) -> Vec<(u64, Block)> {
        self.put(idx, data, 0, true)
    }

    fn put(&mut self, idx: u64, data: Block, used: u64, may_evict_self: bool) -> Vec<(u64, Block)> {
        let mut gone = Vec::new();
        let len = data.len();
        if let Some(old) = self.blocks.insert(idx, Entry { data, used }) {
            self.bytes -= old.data.len();
            gone.push((idx, old.data));
        }
        self.bytes += len;
        while self.bytes > self.cap && self.blocks.len() > 1 {
            let victim = self
                .blocks
                .iter()
                .filter(|(k, _)| may_evict_self || **k != idx)
                .min_by_key(|(k, e)| (e.used, **k != idx))
                .map(|(k, _)| *k);
            match victim {
                Some(k) => {
                    if let Some(e) = self.blocks.remove(&k) {
                        self.bytes -= e.data.len();
                        gone.push((k, e.data));
                    }
                }
                None => break,
            }
        }
        gone
    }

    /// Drops a block (a sequential reader is done with it).
    pub fn remove(&mut self, idx: u64) -> Option<Block> {
        let e = self.blocks.remove(&idx)?;
        self.bytes -= e.data.len();
        Some(e.data)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blk(n: usize) -> Block {
        Arc::new(vec![0u8; n])
    }

    #[test]
    fn lru_eviction_within_budget() {
        let mut c = BlockCache::new(3 * 10);
        for i in 0..3 {
            c.insert(i, blk(10));
        }
        assert!(c.get(0).is_some()); // 0 is now the most recent
        c.insert(3, blk(10));
        assert!(c.contains(0) && c.contains(2) && c.contains(3));
        assert!(!c.contains(1), "the least recently used goes first");
        assert_eq!(c.bytes(), 30);
        c.insert(3, blk(5));
        assert_eq!(c.bytes(), 25);
        // Evicted blocks come back with their numbers.
        let gone = c.insert(4, blk(10));
        assert_eq!(gone.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn cold_blocks_leave_first() {
        let mut c = BlockCache::new(2 * 10);
        c.insert(0, blk(10));
        c.insert(1, blk(10));
        // Full: a cold block goes at once, the readers' blocks stay.
        let gone = c.insert_cold(7, blk(10));
        assert_eq!(gone.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![7]);
        assert!(c.contains(0) && c.contains(1) && !c.contains(7));
        // With room it stays, and is the first victim after that.
        let mut c = BlockCache::new(3 * 10);
        c.insert(0, blk(10));
        c.insert_cold(7, blk(10));
        c.insert(1, blk(10));
        let gone = c.insert(2, blk(10));
        assert_eq!(gone.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![7]);
    }
}
