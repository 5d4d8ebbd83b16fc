//! Where an EROFS image keeps its first two directory levels, read from
//! the image's first bytes.
//!
//! A filesystem walking a lazily fetched image discovers its metadata
//! one round trip at a time: the root's entries name the inodes of its
//! children, a directory's inode names its entry blocks, whose entries
//! name more inodes. mkfs.erofs places the root, and as a rule the
//! directories under it, within the image's first block, but the entries
//! of those directories point all over the image. `first_levels` follows
//! what the first block holds and names the offsets beyond it that a
//! listing reads next: the inodes of the root's children and
//! grandchildren, and the entry blocks of its subdirectories, in the
//! order a walk meets them. `Blob` fetches their blocks at once
//! (`meta_prefetch=auto`), on as many connections as a far registry
//! has, so a listing finds them here rather than paying one round trip
//! after another.
//!
//! Only what is needed for that is read (the on-disk format of
//! erofs-utils' `include/erofs_fs.h`): the superblock, compact and
//! extended inodes, flat directories (plain or with an inline tail) and
//! their entries. An image with anything else (48-bit layouts, a
//! metabox, directory blocks of another size, a root it cannot read)
//! gets nothing named, and a subdirectory it cannot read (compressed,
//! chunked, damaged) is left out: this is a hint, and the reads
//! themselves stay exact.

/// Where the superblock starts, and its magic number.
const SB_OFF: usize = 1024;
const SB_SIZE: usize = 128;
const MAGIC: u32 = 0xE0F5_E1E2;
/// Feature bits that move inodes or block addresses where this walk
/// does not look.
const INCOMPAT_48BIT: u32 = 0x80;
const INCOMPAT_METABOX: u32 = 0x100;
/// Inode data layouts of a directory this walk reads.
const FLAT_PLAIN: u16 = 0;
const FLAT_INLINE: u16 = 2;
const S_IFMT: u16 = 0o170000;
const S_IFDIR: u16 = 0o040000;
const DIRENT: usize = 12;
/// Entries read at most, counting each entry block beyond the first
/// block as one (a block holds one entry at least): a bound on the work
/// and the memory under the state lock, whatever sizes a damaged image
/// gives its directories.
const MAX_ENTRIES: usize = 1 << 16;

/// What the first bytes of an image tell.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Walk {
    /// Not an EROFS image, or one this walk does not read.
    Nothing,
    /// A part of the first block not yet here is needed.
    More,
    /// The offsets beyond the first block that the first two levels of
    /// the tree are read from, in the order a walk meets them (with
    /// repeats).
    Wanted(Vec<u64>),
}

/// One piece of the image: here, in the first block but not yet here,
/// or beyond the first block (at that offset).
enum Got<T> {
    Here(T),
    More,
    Beyond(u64),
}

struct Image<'a> {
    /// The image's first bytes.
    head: &'a [u8],
    /// The size of its first block: offsets below it are `head`'s or
    /// coming, offsets at or past it are elsewhere.
    first: u64,
    blkszbits: u32,
    meta: u64,
    /// Entries read so far (`MAX_ENTRIES`).
    read: usize,
}

struct Inode {
    dir: bool,
    size: u64,
    layout: u16,
    /// The first block of its data (flat layouts).
    start: u64,
    /// Where its inline data starts (after the inode and its xattrs).
    inline: u64,
}

/// The walk's verdict from `head`, the image's first bytes, whose first
/// block is `first` bytes long (the cache block, or the whole image if
/// smaller).
pub(super) fn first_levels(head: &[u8], first: u64) -> Walk {
    let Some(mut img) = Image::open(head, first) else {
        return if head.len() < SB_OFF + SB_SIZE && first >= (SB_OFF + SB_SIZE) as u64 {
            Walk::More
        } else {
            Walk::Nothing
        };
    };
    let root = img.meta + 32 * u64::from(u16_at(head, SB_OFF + 14).unwrap_or(0));
    let mut wanted = Vec::new();
    let children = match img.entries_of(root, &mut wanted) {
        Some(Got::Here(c)) => c,
        Some(Got::More) => return Walk::More,
        Some(Got::Beyond(off)) => return Walk::Wanted(vec![off]),
        None => return Walk::Nothing,
    };
    for (at, dir) in children {
        if at >= first {
            wanted.push(at);
            continue;
        }
        if !dir {
            continue;
        }
        match img.entries_of(at, &mut wanted) {
            Some(Got::Here(grand)) => {
                wanted.extend(grand.into_iter().map(|(g, _)| g).filter(|&g| g >= first))
            }
            Some(Got::More) => return Walk::More,
            Some(Got::Beyond(off)) => wanted.push(off),
            // One this walk does not read (compressed, chunked, damaged):
            // its entries are left to the reader.
            None => {}
        }
    }
    Walk::Wanted(wanted)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl<'a> Image<'a> {
    /// The superblock's fields this walk uses; None when `head` does not
    /// hold one it reads.
    fn open(head: &'a [u8], first: u64) -> Option<Image<'a>> {
        let sb = head.get(SB_OFF..SB_OFF + SB_SIZE)?;
        let blkszbits = u32::from(sb[12]);
        let incompat = u32_at(sb, 80)?;
        let dirblkbits = sb[90];
        if u32_at(sb, 0)? != MAGIC
            || !(9..=16).contains(&blkszbits)
            || incompat & (INCOMPAT_48BIT | INCOMPAT_METABOX) != 0
            || dirblkbits != 0
        {
            return None;
        }
        let meta = u64::from(u32_at(sb, 40)?) << blkszbits;
        Some(Image {
            head,
            first,
            blkszbits,
            meta,
            read: 0,
        })
    }

    /// `len` bytes at `off`.
    fn bytes(&self, off: u64, len: usize) -> Got<&'a [u8]> {
        let end = off.saturating_add(len as u64);
        if end > self.first {
            return Got::Beyond(off);
        }
        match self.head.get(off as usize..end as usize) {
            Some(b) => Got::Here(b),
            None => Got::More,
        }
    }

    /// The inode at offset `at`; Some(Beyond) when it is elsewhere, None
    /// when it is not one this walk reads.
    fn inode(&self, at: u64) -> Option<Got<Inode>> {
        let b = match self.bytes(at, 32) {
            Got::Here(b) => b,
            Got::More => return Some(Got::More),
            Got::Beyond(o) => return Some(Got::Beyond(o)),
        };
        let format = u16_at(b, 0)?;
        let extended = format & 1 == 1;
        let (b, size) = if extended {
            let b = match self.bytes(at, 64) {
                Got::Here(b) => b,
                Got::More => return Some(Got::More),
                Got::Beyond(o) => return Some(Got::Beyond(o)),
            };
            (b, u64_at(b, 8)?)
        } else {
            (b, u64::from(u32_at(b, 8)?))
        };
        let icount = u64::from(u16_at(b, 2)?);
        let xattrs = if icount == 0 {
            0
        } else {
            12 + 4 * (icount - 1)
        };
        Some(Got::Here(Inode {
            dir: u16_at(b, 4)? & S_IFMT == S_IFDIR,
            size,
            layout: (format >> 1) & 7,
            start: u64::from(u32_at(b, 16)?),
            inline: at + if extended { 64 } else { 32 } + xattrs,
        }))
    }

    /// The entries of the directory whose inode is at `at`: the offset
    /// of each one's inode and whether it is a directory ("." and ".."
    /// left out). Entry blocks beyond the first block go to `wanted`.
    fn entries_of(&mut self, at: u64, wanted: &mut Vec<u64>) -> Option<Got<Vec<(u64, bool)>>> {
        let ino = match self.inode(at)? {
            Got::Here(i) => i,
            Got::More => return Some(Got::More),
            Got::Beyond(o) => return Some(Got::Beyond(o)),
        };
        if !ino.dir || (ino.layout != FLAT_PLAIN && ino.layout != FLAT_INLINE) {
            return None;
        }
        let bs = 1u64 << self.blkszbits;
        // Whole blocks from `start`; with an inline tail, the rest after
        // the inode.
        let whole = if ino.layout == FLAT_INLINE {
            ino.size / bs
        } else {
            ino.size.div_ceil(bs)
        };
        if whole > MAX_ENTRIES.saturating_sub(self.read) as u64 {
            return None;
        }
        let mut pieces: Vec<(u64, u64)> = (0..whole)
            .map(|i| {
                let off = (ino.start + i) << self.blkszbits;
                (off, bs.min(ino.size - i * bs))
            })
            .collect();
        if ino.layout == FLAT_INLINE && ino.size % bs != 0 {
            pieces.push((ino.inline, ino.size % bs));
        }
        let mut out = Vec::new();
        for (off, len) in pieces {
            match self.bytes(off, len as usize) {
                Got::Here(b) => self.dirents(b, &mut out)?,
                Got::More => return Some(Got::More),
                Got::Beyond(o) => {
                    self.read += 1;
                    wanted.push(o);
                }
            }
        }
        Some(Got::Here(out))
    }

    /// The entries of one directory block `b`, as `entries_of` gives them.
    fn dirents(&mut self, b: &[u8], out: &mut Vec<(u64, bool)>) -> Option<()> {
        let n = usize::from(u16_at(b, 8)?) / DIRENT;
        if n == 0 || n * DIRENT > b.len() {
            return None;
        }
        self.read += n;
        if self.read > MAX_ENTRIES {
            return None;
        }
        for i in 0..n {
            let e = i * DIRENT;
            let nid = u64_at(b, e)?;
            let name_off = usize::from(u16_at(b, e + 8)?);
            let name_end = match i + 1 < n {
                true => usize::from(u16_at(b, e + DIRENT + 8)?),
                false => b.len(),
            };
            let name = b.get(name_off..name_end.max(name_off))?;
            let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
            if name == b"." || name == b".." {
                continue;
            }
            // EROFS_FT_DIR
            out.push((self.meta.checked_add(nid.checked_mul(32)?)?, b[e + 10] == 2));
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small image: 4 KiB blocks, the root (nid 36, inline) with a file
    /// `f` (nid 40) and directories `d` (nid 44, inline, its child's inode
    /// at block 300) and `p` (nid 48, plain, entries at block 200);
    /// `first` bytes long.
    fn image(first: usize) -> Vec<u8> {
        let mut b = vec![0u8; first];
        let sb = SB_OFF;
        b[sb..sb + 4].copy_from_slice(&MAGIC.to_le_bytes());
        b[sb + 12] = 12;
        b[sb + 14..sb + 16].copy_from_slice(&36u16.to_le_bytes());
        // compact inode: format, xattr count, mode, nlink, size, mtime, i_u
        let inode = |b: &mut Vec<u8>, nid: usize, layout: u16, mode: u16, size: u32, start: u32| {
            let o = nid * 32;
            b[o..o + 2].copy_from_slice(&(layout << 1).to_le_bytes());
            b[o + 4..o + 6].copy_from_slice(&mode.to_le_bytes());
            b[o + 8..o + 12].copy_from_slice(&size.to_le_bytes());
            b[o + 16..o + 20].copy_from_slice(&start.to_le_bytes());
        };
        let dirents = |b: &mut Vec<u8>, at: usize, ents: &[(u64, u8, &str)]| {
            let mut name = at + DIRENT * ents.len();
            for (i, (nid, ft, n)) in ents.iter().enumerate() {
                let e = at + i * DIRENT;
                b[e..e + 8].copy_from_slice(&nid.to_le_bytes());
                b[e + 8..e + 10].copy_from_slice(&((name - at) as u16).to_le_bytes());
                b[e + 10] = *ft;
                b[name..name + n.len()].copy_from_slice(n.as_bytes());
                name += n.len();
            }
            name - at
        };
        let root = [
            (36, 2, "."),
            (36, 2, ".."),
            (44, 2, "d"),
            (40, 1, "f"),
            (48, 2, "p"),
        ];
        let len = dirents(&mut b, 36 * 32 + 32, &root);
        inode(&mut b, 36, FLAT_INLINE, S_IFDIR | 0o755, len as u32, 0);
        inode(&mut b, 40, FLAT_PLAIN, 0o100644, 5, 100);
        let d = [(44, 2, "."), (36, 2, ".."), (300 * 128, 1, "x")];
        let len = dirents(&mut b, 44 * 32 + 32, &d);
        inode(&mut b, 44, FLAT_INLINE, S_IFDIR | 0o755, len as u32, 0);
        inode(&mut b, 48, FLAT_PLAIN, S_IFDIR | 0o755, 4096, 200);
        b
    }

    #[test]
    fn names_what_lies_beyond_the_first_block() {
        let img = image(64 * 1024);
        // d's child's inode, then p's entry block
        assert_eq!(
            first_levels(&img, 64 * 1024),
            Walk::Wanted(vec![300 * 4096, 200 * 4096])
        );
    }

    #[test]
    fn leaves_out_a_subdirectory_it_does_not_read() {
        let mut img = image(64 * 1024);
        // d chunk-based: only p's entry block is named
        img[44 * 32..44 * 32 + 2].copy_from_slice(&(4u16 << 1).to_le_bytes());
        assert_eq!(
            first_levels(&img, 64 * 1024),
            Walk::Wanted(vec![200 * 4096])
        );
    }

    #[test]
    fn a_directory_of_more_blocks_than_entries_it_reads_is_left_out() {
        let mut img = image(64 * 1024);
        // p 4 GiB long: a million entry blocks are not named one by one
        img[48 * 32 + 8..48 * 32 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            first_levels(&img, 64 * 1024),
            Walk::Wanted(vec![300 * 4096])
        );
    }

    #[test]
    fn waits_for_bytes_of_the_first_block_still_coming() {
        let img = image(64 * 1024);
        assert_eq!(first_levels(&img[..1000], 64 * 1024), Walk::More);
        assert_eq!(first_levels(&img[..1200], 64 * 1024), Walk::More);
        assert_eq!(first_levels(&img[..44 * 32 + 40], 64 * 1024), Walk::More);
        assert!(matches!(
            first_levels(&img[..4096], 64 * 1024),
            Walk::Wanted(_)
        ));
    }

    #[test]
    fn a_root_beyond_the_first_block_is_wanted_itself() {
        let mut img = image(64 * 1024);
        // meta_blkaddr 20: every inode 80 KiB further on
        img[SB_OFF + 40..SB_OFF + 44].copy_from_slice(&20u32.to_le_bytes());
        assert_eq!(
            first_levels(&img, 64 * 1024),
            Walk::Wanted(vec![20 * 4096 + 36 * 32])
        );
    }

    #[test]
    fn reads_nothing_it_does_not_know() {
        let img = image(64 * 1024);
        assert_eq!(first_levels(&[0u8; 8192], 1 << 20), Walk::Nothing);
        assert_eq!(first_levels(&img[..1000], 1000), Walk::Nothing);
        for (at, v) in [
            (SB_OFF, 0u8),       // magic
            (SB_OFF + 12, 30),   // block size
            (SB_OFF + 80, 0x80), // 48-bit layout
            (SB_OFF + 81, 1),    // a metabox
            (SB_OFF + 90, 1),    // directory blocks of another size
        ] {
            let mut bad = img.clone();
            bad[at] = v;
            assert_eq!(first_levels(&bad, 64 * 1024), Walk::Nothing, "byte {at}");
        }
        // a root that is no directory; a directory entry count past its block
        let mut bad = img.clone();
        bad[36 * 32 + 4..36 * 32 + 6].copy_from_slice(&0o100644u16.to_le_bytes());
        assert_eq!(first_levels(&bad, 64 * 1024), Walk::Nothing);
        let mut bad = img;
        bad[36 * 32 + 32 + 8..36 * 32 + 32 + 10].copy_from_slice(&600u16.to_le_bytes());
        assert_eq!(first_levels(&bad, 64 * 1024), Walk::Nothing);
    }
}
