//! The model of how layers apply, shared by tests/flatten_model.rs and the
//! flatten fuzz target: random (or fuzz-chosen) layer stacks, their tars,
//! the tree they make applied bottom-up, and the tree a flattened tar
//! holds.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Read};

use oci_registry::layer::flatten::{flatten, Stats};
use tar::{EntryType, Header};

/// Where the random choices come from: xorshift64* (deterministic and
/// dependency-free), or the bytes of a fuzz input, one per choice (0 once
/// they run out).
pub enum Rng {
    Xorshift(u64),
    Bytes(Vec<u8>, usize),
}

impl Rng {
    fn next(&mut self) -> u64 {
        match self {
            Rng::Xorshift(s) => {
                *s ^= *s >> 12;
                *s ^= *s << 25;
                *s ^= *s >> 27;
                s.wrapping_mul(0x2545_F491_4F6C_DD1D)
            }
            Rng::Bytes(b, i) => {
                let v = b.get(*i).copied().unwrap_or(0);
                *i += 1;
                v as u64
            }
        }
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug, Clone)]
pub enum Op {
    Dir(String),
    File(String, String),
    Symlink(String, String),
    Hardlink(String, String),
    Whiteout(String),
    /// An opaque marker in this directory ("" for the root).
    Opaque(String),
}

impl Op {
    /// The path of the entry this op writes.
    fn entry_path(&self) -> String {
        let under = |d: &str, name: &str| {
            if d.is_empty() {
                name.to_string()
            } else {
                format!("{d}/{name}")
            }
        };
        match self {
            Op::Dir(p) | Op::File(p, _) | Op::Symlink(p, _) | Op::Hardlink(p, _) => p.clone(),
            Op::Whiteout(p) => {
                let (d, n) = split(p);
                under(d, &format!(".wh.{n}"))
            }
            Op::Opaque(d) => under(d, ".wh..wh..opq"),
        }
    }

    fn is_non_dir_entry(&self) -> bool {
        matches!(self, Op::File(..) | Op::Symlink(..) | Op::Hardlink(..))
    }
}

pub fn split(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

pub fn parents(p: &str) -> Vec<&str> {
    p.match_indices('/').map(|(i, _)| &p[..i]).collect()
}

pub fn is_below(p: &str, dir: &str) -> bool {
    dir.is_empty() || p.starts_with(dir) && p.as_bytes().get(dir.len()) == Some(&b'/')
}

pub fn random_path(rng: &mut Rng) -> String {
    let depth = 1 + rng.below(3);
    (0..depth)
        .map(|_| ["a", "b", "c"][rng.below(3)])
        .collect::<Vec<_>>()
        .join("/")
}

/// A layer of up to `n` random ops. No entry lies below a non-directory entry of
/// the same layer, nor below the target of one of its hard links, and no
/// link target lies below a non-directory of the layer: such a layer is
/// malformed, and its meaning depends on the tool that reads it.
pub fn random_layer(rng: &mut Rng, n: usize) -> Vec<Op> {
    let mut ops: Vec<Op> = Vec::new();
    // A byte source that has run dry repeats one choice: give up then.
    let mut tries = 64 * n;
    while ops.len() < n && tries > 0 {
        tries -= 1;
        let p = random_path(rng);
        let op = match rng.below(12) {
            0..=1 => Op::Dir(p),
            2..=5 => Op::File(p, format!("c{}", rng.below(1000))),
            6 => Op::Symlink(p, ["x", "../y", "/z"][rng.below(3)].to_string()),
            7..=8 => Op::Hardlink(p, random_path(rng)),
            9..=10 => Op::Whiteout(p),
            _ => {
                let d = split(&p).0.to_string();
                Op::Opaque(d)
            }
        };
        let path = op.entry_path();
        let link_target = |o: &Op| match o {
            Op::Hardlink(_, t) => Some(t.clone()),
            _ => None,
        };
        // Nor is a hard link to a path that the layer makes a directory.
        let below_itself = link_target(&op).is_some_and(|t| is_below(&t, &path));
        let clash = below_itself
            || ops.iter().any(|o| {
                let q = o.entry_path();
                (o.is_non_dir_entry() && is_below(&path, &q))
                    || (op.is_non_dir_entry() && is_below(&q, &path))
                    || link_target(o).is_some_and(|t| {
                        is_below(&path, &t) || op.is_non_dir_entry() && is_below(&t, &path)
                    })
                    || link_target(&op).is_some_and(|t| {
                        is_below(&q, &t) || o.is_non_dir_entry() && is_below(&t, &q)
                    })
            });
        if !clash {
            ops.push(op);
        }
    }
    ops
}

pub fn header(kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    h
}

pub fn build(ops: &[Op]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for op in ops {
        let path = op.entry_path();
        match op {
            Op::Dir(_) => b
                .append_data(&mut header(EntryType::Directory), &path, io::empty())
                .unwrap(),
            Op::File(_, c) => {
                let mut h = header(EntryType::Regular);
                h.set_size(c.len() as u64);
                b.append_data(&mut h, &path, c.as_bytes()).unwrap()
            }
            Op::Whiteout(_) | Op::Opaque(_) => b
                .append_data(&mut header(EntryType::Regular), &path, io::empty())
                .unwrap(),
            Op::Symlink(_, t) => b
                .append_link(&mut header(EntryType::Symlink), &path, t)
                .unwrap(),
            Op::Hardlink(_, t) => b
                .append_link(&mut header(EntryType::Link), &path, t)
                .unwrap(),
        }
    }
    b.into_inner().unwrap()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `explicit`: some layer has an entry for it (else it only exists as
    /// the parent of something).
    Dir {
        explicit: bool,
    },
    File(String),
    Symlink(String),
}

pub type Tree = BTreeMap<String, Node>;

pub fn remove_subtree(t: &mut Tree, p: &str) {
    t.retain(|q, _| q != p && !is_below(q, p));
}

pub fn imply_parents(t: &mut Tree, p: &str) {
    for a in parents(p) {
        match t.get(a) {
            Some(Node::Dir { .. }) => {}
            _ => {
                remove_subtree(t, a);
                t.insert(a.to_string(), Node::Dir { explicit: false });
            }
        }
    }
}

pub fn put(t: &mut Tree, p: &str, node: Node) {
    imply_parents(t, p);
    match (&node, t.get_mut(p)) {
        (Node::Dir { .. }, Some(Node::Dir { explicit })) => *explicit = true,
        _ => {
            remove_subtree(t, p);
            t.insert(p.to_string(), node);
        }
    }
}

/// The layers applied bottom-up.
pub fn model(layers: &[Vec<Op>]) -> Tree {
    let mut tree = Tree::new();
    for ops in layers {
        // Whiteouts act on the lower layers, before this layer's entries;
        // the directories holding them are this layer's.
        for op in ops {
            match op {
                Op::Whiteout(p) => remove_subtree(&mut tree, p),
                Op::Opaque(d) => tree.retain(|q, _| !is_below(q, d)),
                _ => {}
            }
        }
        for op in ops {
            match op {
                Op::Whiteout(p) => imply_parents(&mut tree, p),
                Op::Opaque(d) if !d.is_empty() => {
                    imply_parents(&mut tree, d);
                    if !matches!(tree.get(d), Some(Node::Dir { .. })) {
                        put(&mut tree, d, Node::Dir { explicit: false });
                    }
                }
                _ => {}
            }
        }
        let before = tree.clone();
        // What a hard link to each path of this layer gets (None: nothing
        // linkable).
        let mut here: BTreeMap<String, Option<Node>> = BTreeMap::new();
        for op in ops {
            let p = op.entry_path();
            if matches!(op, Op::Whiteout(_) | Op::Opaque(_)) || here.contains_key(&p) {
                continue;
            }
            let node = match op {
                Op::Dir(_) => None,
                Op::File(_, c) => Some(Node::File(c.clone())),
                Op::Symlink(_, t) => Some(Node::Symlink(t.clone())),
                Op::Hardlink(_, t) => match here.get(t) {
                    Some(n) => n.clone(),
                    None => match before.get(t) {
                        Some(Node::Dir { .. }) | None => None,
                        Some(n) => Some(n.clone()),
                    },
                },
                Op::Whiteout(_) | Op::Opaque(_) => unreachable!(),
            };
            here.insert(p.clone(), node.clone());
            match (op, node) {
                (Op::Dir(_), _) => put(&mut tree, &p, Node::Dir { explicit: true }),
                (_, Some(n)) => put(&mut tree, &p, n),
                // A dangling link: the path holds nothing.
                (_, None) => {
                    remove_subtree(&mut tree, &p);
                    imply_parents(&mut tree, &p);
                }
            }
        }
    }
    tree
}

/// The flattened output as a tree, hard links resolved to what they
/// point at.
pub fn output_tree(data: &[u8]) -> Tree {
    let mut t = Tree::new();
    let mut a = tar::Archive::new(data);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let path = path.trim_end_matches('/').to_string();
        assert!(!path.contains(".wh."), "{path}");
        assert!(!t.contains_key(&path), "duplicate {path}");
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap());
        let node = match e.header().entry_type() {
            EntryType::Directory => Node::Dir { explicit: true },
            EntryType::Regular => {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                Node::File(s)
            }
            EntryType::Symlink => Node::Symlink(link.unwrap()),
            EntryType::Link => {
                let target = link.unwrap();
                match t.get(&target) {
                    Some(n @ (Node::File(_) | Node::Symlink(_))) => n.clone(),
                    other => panic!("hard link {path} to {target}: {other:?}"),
                }
            }
            k => panic!("entry type {k:?}"),
        };
        t.insert(path, node);
    }
    t
}

pub fn forget_explicit(t: &Tree) -> Tree {
    t.iter()
        .map(|(p, n)| {
            let n = match n {
                Node::Dir { .. } => Node::Dir { explicit: false },
                n => n.clone(),
            };
            (p.clone(), n)
        })
        .collect()
}

/// A stack of up to 4 random layers (bottom first) of up to 8 ops each.
pub fn random_stack(rng: &mut Rng) -> Vec<Vec<Op>> {
    let n_layers = 1 + rng.below(4);
    (0..n_layers)
        .map(|_| {
            let n = rng.below(9);
            random_layer(rng, n)
        })
        .collect()
}

/// The layers (bottom first) as tars, flattened top-down.
pub fn flatten_stack(layers: &[Vec<Op>]) -> (Vec<u8>, Stats) {
    let tars: Vec<Vec<u8>> = layers.iter().map(|l| build(l)).collect();
    let input = tars
        .iter()
        .rev()
        .map(|t| Ok(Box::new(io::Cursor::new(t.clone())) as Box<dyn Read>));
    let mut out = Vec::new();
    let stats = flatten(input, &mut out).expect("well-formed layers flatten");
    (out, stats)
}
