//! Flattening of layer tars built in memory: the merged tree read back
//! with the `tar` crate, and extracted with GNU tar.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use oci_registry::layer::decompress::{self, Compression};
use oci_registry::layer::flatten::{flatten, flatten_with, Options, Stats};
use tar::{EntryType, Header};

const MTIME: u64 = 1_700_000_000;

/// A layer tar under construction (GNU headers, GNU long names).
struct Layer {
    b: tar::Builder<Vec<u8>>,
}

fn header(kind: EntryType, mode: u32) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(0);
    h
}

impl Layer {
    fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn dir(self, p: &str) -> Self {
        self.dir_mode(p, 0o755)
    }

    fn dir_mode(mut self, p: &str, mode: u32) -> Self {
        let mut h = header(EntryType::Directory, mode);
        self.b.append_data(&mut h, p, io::empty()).unwrap();
        self
    }

    fn file(self, p: &str, data: &[u8]) -> Self {
        self.file_with(p, data, 0o644, &[])
    }

    fn file_with(mut self, p: &str, data: &[u8], mode: u32, pax: &[(&str, &[u8])]) -> Self {
        if !pax.is_empty() {
            self.b.append_pax_extensions(pax.iter().copied()).unwrap();
        }
        let mut h = header(EntryType::Regular, mode);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, p, data).unwrap();
        self
    }

    /// A file whose header is prepared by `f` (path and checksum set here).
    fn file_header(mut self, p: &str, data: &[u8], f: impl FnOnce(&mut Header)) -> Self {
        let mut h = header(EntryType::Regular, 0o644);
        h.set_size(data.len() as u64);
        f(&mut h);
        self.b.append_data(&mut h, p, data).unwrap();
        self
    }

    fn whiteout(self, p: &str) -> Self {
        self.file(p, b"")
    }

    fn symlink(mut self, p: &str, target: &str) -> Self {
        let mut h = header(EntryType::Symlink, 0o777);
        self.b.append_link(&mut h, p, target).unwrap();
        self
    }

    fn hardlink(mut self, p: &str, target: &str) -> Self {
        let mut h = header(EntryType::Link, 0o644);
        self.b.append_link(&mut h, p, target).unwrap();
        self
    }

    fn fifo(mut self, p: &str) -> Self {
        let mut h = header(EntryType::Fifo, 0o600);
        self.b.append_data(&mut h, p, io::empty()).unwrap();
        self
    }

    fn chardev(mut self, p: &str, major: u32, minor: u32) -> Self {
        let mut h = header(EntryType::Char, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, p, io::empty()).unwrap();
        self
    }

    /// An entry whose name bytes go into the header as they are.
    fn raw(mut self, name: &[u8], kind: EntryType, mode: u32, data: &[u8]) -> Self {
        let mut h = header(kind, mode);
        h.set_size(data.len() as u64);
        h.as_old_mut().name = [0; 100];
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    /// A file whose path is given only by a PAX `path` record (ustar header).
    fn pax_path_file(mut self, p: &str, data: &[u8]) -> Self {
        self.b
            .append_pax_extensions([("path", p.as_bytes())])
            .unwrap();
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        h.set_path("truncated-name").unwrap();
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn build(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// What the output says about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A hard link to the named path.
    Link(String),
    Fifo,
    Char(u32, u32),
}

fn file(s: &str) -> Node {
    Node::File(s.as_bytes().to_vec())
}

fn sym(s: &str) -> Node {
    Node::Symlink(s.to_string())
}

fn link(s: &str) -> Node {
    Node::Link(s.to_string())
}

#[derive(Debug, Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    modes: BTreeMap<String, u32>,
    uids: BTreeMap<String, (u64, u64)>,
    pax: BTreeMap<String, Vec<(String, Vec<u8>)>>,
}

/// Reads a flattened tar back, checking that it has no whiteout, no
/// duplicate, and no hard link before its target.
fn read_back(data: &[u8]) -> Tree {
    let mut tree = Tree::default();
    let mut a = tar::Archive::new(data);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let raw = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let path = match raw.trim_end_matches('/') {
            "." | "" => ".".to_string(),
            p => p.to_string(),
        };
        assert!(
            !path.split('/').any(|c| c.starts_with(".wh.")),
            "whiteout in the output: {path}"
        );
        assert!(!path.starts_with('/') && !path.starts_with("./"), "{path}");
        assert!(!tree.nodes.contains_key(&path), "duplicate entry {path}");
        let records: Vec<(String, Vec<u8>)> = match e.pax_extensions().unwrap() {
            Some(exts) => exts
                .map(|x| {
                    let x = x.unwrap();
                    (x.key().unwrap().to_string(), x.value_bytes().to_vec())
                })
                .collect(),
            None => Vec::new(),
        };
        let h = e.header();
        tree.modes.insert(path.clone(), h.mode().unwrap());
        tree.uids
            .insert(path.clone(), (h.uid().unwrap(), h.gid().unwrap()));
        let link_name = || String::from_utf8(e.link_name_bytes().unwrap().into_owned()).unwrap();
        let node = match h.entry_type() {
            EntryType::Directory => Node::Dir,
            EntryType::Symlink => Node::Symlink(link_name()),
            EntryType::Link => {
                let target = link_name();
                assert!(
                    matches!(tree.nodes.get(&target), Some(n) if *n != Node::Dir),
                    "hard link {path} before its target {target}"
                );
                Node::Link(target)
            }
            EntryType::Fifo => Node::Fifo,
            EntryType::Char => Node::Char(
                h.device_major().unwrap().unwrap(),
                h.device_minor().unwrap().unwrap(),
            ),
            EntryType::Regular => {
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                Node::File(v)
            }
            t => panic!("unexpected entry type {t:?} at {path}"),
        };
        let keep: Vec<_> = records
            .into_iter()
            .filter(|(k, _)| k != "path" && k != "linkpath")
            .collect();
        if !keep.is_empty() {
            tree.pax.insert(path.clone(), keep);
        }
        tree.nodes.insert(path, node);
    }
    tree
}

fn run(layers_bottom_up: &[Vec<u8>]) -> (Vec<u8>, Stats) {
    let layers: Vec<io::Result<Box<dyn Read>>> = layers_bottom_up
        .iter()
        .rev()
        .map(|l| Ok(Box::new(io::Cursor::new(l.clone())) as Box<dyn Read>))
        .collect();
    let mut out = Vec::new();
    let stats = flatten(layers.into_iter(), &mut out).unwrap();
    (out, stats)
}

/// The expected tree: `pairs`, plus the parent directories that have no
/// entry of their own (the flattener writes them at the end).
fn expect(pairs: &[(&str, Node)]) -> BTreeMap<String, Node> {
    let mut want: BTreeMap<String, Node> = pairs
        .iter()
        .map(|(p, n)| (p.to_string(), n.clone()))
        .collect();
    add_parents(&mut want);
    want
}

fn add_parents(want: &mut BTreeMap<String, Node>) {
    let paths: Vec<String> = want.keys().cloned().collect();
    for p in paths {
        for (i, _) in p.match_indices('/') {
            want.entry(p[..i].to_string()).or_insert(Node::Dir);
        }
    }
}

fn long_a() -> String {
    format!("long/{}/{}", "d".repeat(60), "f".repeat(80))
}

fn long_b() -> String {
    format!("long/{}/{}", "x".repeat(120), "y".repeat(150))
}

fn long_target() -> String {
    format!("../{}", "t".repeat(150))
}

/// Binary, but without a newline: the tar crate (used to read the output
/// back) splits PAX records at newlines.
const CAPABILITY: &[u8] = b"\x01\x00\x00\x02=\xff\x00 ";

/// The three layers of the main scenario, bottom first.
fn scenario(with_dev: bool) -> Vec<Vec<u8>> {
    let mut l1 = Layer::new()
        .raw(b"./", EntryType::Directory, 0o755, b"")
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0")
        .file("etc/hostname", b"base")
        .dir("bin")
        .file_with("bin/sh", b"shell", 0o755, &[])
        .hardlink("bin/bash", "bin/sh")
        .dir("usr")
        .dir("usr/lib")
        .file("usr/lib/libfoo.so.1", b"foo1")
        .symlink("usr/lib/libfoo.so", "libfoo.so.1")
        .dir("del")
        .file("del/a", b"a")
        .dir("del/sub")
        .file("del/sub/b", b"b")
        .file("gone.txt", b"gone")
        .dir("opq")
        .file("opq/old1", b"old1")
        .dir("opq/olddir")
        .file("opq/olddir/x", b"x")
        .file("f2d", b"was a file")
        .dir("d2s")
        .file("d2s/child", b"c")
        .dir("d2s/sub")
        .file("d2s/sub/deep", b"deep")
        .dir("d2f")
        .file("d2f/c", b"c")
        .file("x", b"x was a file")
        .file("readd", b"v1")
        .file("lower_target", b"LT")
        .dir("hl_hidden")
        .file("hl_hidden/t", b"hidden target")
        .hardlink("hl_hidden/l", "hl_hidden/t")
        .dir("hl_multi")
        .file("hl_multi/t", b"multi")
        .hardlink("hl_multi/l1", "hl_multi/t")
        .hardlink("hl_multi/l2", "hl_multi/t")
        .dir("cross")
        .file("cross/t3", b"t3 old")
        .file("cross/t5", b"t5 old")
        .dir("same")
        .dir("same/x")
        .file("same/x/child", b"child")
        .fifo("fifo")
        .file(&long_a(), b"long a")
        .file_with(
            "cap",
            b"cap",
            0o755,
            &[
                ("SCHILY.xattr.user.note", b"hi"),
                ("SCHILY.xattr.security.capability", CAPABILITY),
                ("mtime", b"1700000000.5"),
            ],
        )
        .file_header("bigid", b"big ids", |h| {
            h.set_uid(3_000_000);
            h.set_gid(4_000_000);
        });
    if with_dev {
        l1 = l1.chardev("dev/null", 1, 3);
    }
    let l2 = Layer::new()
        .whiteout(".wh.gone.txt")
        .whiteout(".wh.del")
        .dir("opq")
        .whiteout("opq/.wh..wh..opq")
        .file("opq/new", b"new")
        .dir("f2d")
        .file("f2d/inside", b"inside")
        .whiteout(".wh.readd")
        .dir("etc")
        .file("etc/hostname", b"layer2")
        .whiteout("hl_hidden/.wh.t")
        .file("x/y/z", b"implied parents")
        .dir("cross")
        .file("cross/t", b"cross2")
        .file("cross/t5", b"t5 mid")
        .whiteout("same/.wh.x")
        .file("same/x", b"new x")
        .pax_path_file(&long_b(), b"long b");
    let l3 = Layer::new()
        .raw(b"./", EntryType::Directory, 0o700, b"")
        .symlink("d2s", "/elsewhere")
        .file("d2f", b"now a file")
        .file("readd", b"v3")
        .file("hl_multi/t", b"replaced")
        .hardlink("lower_link", "lower_target")
        .hardlink("cross/l", "cross/t")
        .hardlink("cross/l3", "cross/t3")
        .file("cross/t3", b"t3 new")
        .hardlink("cross/l5", "cross/t5")
        .file("cross/t5", b"t5 new")
        .hardlink("dangling", "no/such/file")
        .symlink("long_link", &long_target())
        .hardlink("long_hl", &long_a());
    vec![l1.build(), l2.build(), l3.build()]
}

fn scenario_expected(with_dev: bool) -> BTreeMap<String, Node> {
    let mut want = expect(&[
        (".", Node::Dir),
        ("etc", Node::Dir),
        ("etc/passwd", file("root:x:0:0")),
        ("etc/hostname", file("layer2")),
        ("bin", Node::Dir),
        ("bin/sh", file("shell")),
        ("bin/bash", link("bin/sh")),
        ("usr", Node::Dir),
        ("usr/lib", Node::Dir),
        ("usr/lib/libfoo.so.1", file("foo1")),
        ("usr/lib/libfoo.so", sym("libfoo.so.1")),
        ("opq", Node::Dir),
        ("opq/new", file("new")),
        ("f2d", Node::Dir),
        ("f2d/inside", file("inside")),
        ("d2s", sym("/elsewhere")),
        ("d2f", file("now a file")),
        ("x/y/z", file("implied parents")),
        ("readd", file("v3")),
        ("lower_target", file("LT")),
        ("lower_link", link("lower_target")),
        ("hl_hidden", Node::Dir),
        ("hl_hidden/l", file("hidden target")),
        ("hl_multi", Node::Dir),
        ("hl_multi/t", file("replaced")),
        ("hl_multi/l1", file("multi")),
        ("hl_multi/l2", link("hl_multi/l1")),
        ("cross", Node::Dir),
        ("cross/t", file("cross2")),
        ("cross/l", link("cross/t")),
        ("cross/t3", file("t3 new")),
        ("cross/l3", file("t3 old")),
        ("cross/t5", file("t5 new")),
        ("cross/l5", file("t5 mid")),
        ("same", Node::Dir),
        ("same/x", file("new x")),
        ("fifo", Node::Fifo),
        ("cap", file("cap")),
        ("bigid", file("big ids")),
        ("long_link", Node::Symlink(long_target())),
    ]);
    want.insert(long_a(), file("long a"));
    want.insert("long_hl".into(), Node::Link(long_a()));
    want.insert(long_b(), file("long b"));
    if with_dev {
        want.insert("dev/null".into(), Node::Char(1, 3));
    }
    add_parents(&mut want);
    want
}

#[test]
fn merged_tree() {
    let (out, stats) = run(&scenario(true));
    let tree = read_back(&out);
    assert_eq!(tree.nodes, scenario_expected(true));

    assert_eq!(tree.modes["."], 0o700, "the top layer's root wins");
    assert_eq!(tree.modes["bin/sh"], 0o755);
    assert_eq!(tree.modes["cap"], 0o755);
    assert_eq!(tree.modes["x/y"], 0o755);
    assert_eq!(tree.uids["bigid"], (3_000_000, 4_000_000));
    let cap = &tree.pax["cap"];
    for (k, v) in [
        ("SCHILY.xattr.user.note", &b"hi"[..]),
        ("SCHILY.xattr.security.capability", CAPABILITY),
        ("mtime", b"1700000000.5"),
    ] {
        assert!(
            cap.iter().any(|(key, val)| key == k && val == v),
            "{k} lost: {cap:?}"
        );
    }

    assert_eq!(stats.layers, 3);
    assert_eq!(stats.hardlinks, 5, "{stats:?}");
    assert_eq!(stats.materialized_links, 4, "{stats:?}");
    assert_eq!(stats.dangling_links, 1, "{stats:?}");
    assert_eq!(stats.entries_written, tree.nodes.len() as u64);
    assert_eq!(stats.whiteouts, 6);
    // x, x/y, dev, long and the two directories in it.
    assert_eq!(stats.implied_dirs, 6);
    // Every hidden non-empty file waits in the spill file in case a hard
    // link of its layer follows, except those that upper links wait for
    // (cross/t3 and the middle cross/t5), which stream into the link.
    let spilled = [
        "base",
        "gone",
        "a",
        "b",
        "old1",
        "x",
        "was a file",
        "c",
        "deep",
        "c",
        "x was a file",
        "v1",
        "hidden target",
        "multi",
        "t5 old",
        "child",
    ];
    assert_eq!(
        stats.spilled_bytes,
        spilled.iter().map(|s| s.len() as u64).sum::<u64>()
    );
}

#[test]
fn output_order_is_topmost_first_and_ends_properly() {
    let (out, _) = run(&scenario(false));
    assert_eq!(out.len() % 512, 0);
    assert!(out[out.len() - 1024..].iter().all(|&b| b == 0));
    // The whole output parses, and a second flattening of it (one layer)
    // is the identity on the tree.
    let (again, stats) = run(std::slice::from_ref(&out));
    assert_eq!(read_back(&again).nodes, read_back(&out).nodes);
    assert_eq!(stats.hidden, 0);
    assert_eq!(stats.dangling_links, 0);
}

fn tar_available() -> bool {
    Command::new("tar")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("oci-flatten-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Extracts `tar` with GNU tar into a fresh directory.
fn gnu_extract(tar: &[u8], name: &str) -> TempDir {
    let dir = TempDir::new(name);
    let mut child = Command::new("tar")
        .args(["-x", "--no-same-owner", "-f", "-", "-C"])
        .arg(&dir.0)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tar -x failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn walk(root: &Path, rel: &str, found: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(root.join(rel)).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let p = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if e.file_type().unwrap().is_dir() {
            walk(root, &p, found);
        }
        found.insert(p);
    }
}

/// Checks an extracted tree against the expected nodes: every path with
/// its type and content, hard links as one inode, nothing else besides the
/// parent directories that tar creates.
fn check_extracted(root: &Path, want: &BTreeMap<String, Node>) {
    let mut found = BTreeSet::new();
    walk(root, "", &mut found);
    let mut expected: BTreeSet<String> = want.keys().filter(|p| *p != ".").cloned().collect();
    for p in want.keys() {
        let mut q = p.as_str();
        while let Some(i) = q.rfind('/') {
            q = &q[..i];
            expected.insert(q.to_string());
        }
    }
    assert_eq!(found, expected);
    for (p, node) in want {
        let path = root.join(p);
        let md = std::fs::symlink_metadata(&path).unwrap();
        match node {
            Node::Dir => assert!(md.is_dir(), "{p}"),
            Node::File(c) => {
                assert!(md.is_file(), "{p}");
                assert_eq!(&std::fs::read(&path).unwrap(), c, "{p}");
            }
            Node::Symlink(t) => {
                assert_eq!(std::fs::read_link(&path).unwrap(), Path::new(t), "{p}")
            }
            Node::Link(t) => {
                let target = std::fs::symlink_metadata(root.join(t)).unwrap();
                assert_eq!(md.ino(), target.ino(), "{p} is not a hard link of {t}");
                assert!(md.nlink() >= 2, "{p}");
            }
            Node::Fifo => assert!(md.file_type().is_fifo(), "{p}"),
            Node::Char(..) => assert!(md.file_type().is_char_device(), "{p}"),
        }
    }
}

#[test]
fn gnu_tar_extracts_the_merged_tree() {
    if !tar_available() {
        eprintln!("skipped: no tar");
        return;
    }
    // No device node: creating one needs privileges a sandbox may lack.
    let (out, _) = run(&scenario(false));
    let dir = gnu_extract(&out, "scenario");
    let want = scenario_expected(false);
    check_extracted(&dir.0, &want);
    let mode = |p: &str| {
        std::fs::symlink_metadata(dir.0.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("bin/sh"), 0o755);
    assert_eq!(mode("cap"), 0o755);
}

#[test]
fn root_opaque_marker_hides_all_lower_content() {
    let l1 = Layer::new()
        .dir("old")
        .file("old/f", b"f")
        .file("top", b"old top")
        .build();
    let l2 = Layer::new()
        .whiteout(".wh..wh..opq")
        .file("new", b"n")
        .build();
    let (out, _) = run(&[l1, l2]);
    assert_eq!(read_back(&out).nodes, expect(&[("new", file("n"))]));
}

#[test]
fn directory_recreated_after_whiteout_keeps_only_new_children() {
    let l1 = Layer::new()
        .dir("d")
        .file("d/old", b"o")
        .dir("d/sub")
        .file("d/sub/deep", b"x")
        .build();
    let l2 = Layer::new().whiteout(".wh.d").build();
    let l3 = Layer::new().dir("d").file("d/new", b"n").build();
    let (out, _) = run(&[l1, l2, l3]);
    assert_eq!(
        read_back(&out).nodes,
        expect(&[("d", Node::Dir), ("d/new", file("n"))])
    );
}

#[test]
fn whiteout_applies_to_lower_layers_only() {
    // A whiteout and an opaque marker next to content of their own layer.
    let l1 = Layer::new()
        .dir("o")
        .file("o/lower", b"l")
        .file("w", b"lower w")
        .build();
    let l2 = Layer::new()
        .dir("o")
        .file("o/mine", b"m")
        .whiteout("o/.wh..wh..opq")
        .file("w", b"upper w")
        .whiteout(".wh.w")
        .build();
    let (out, _) = run(&[l1, l2]);
    assert_eq!(
        read_back(&out).nodes,
        expect(&[
            ("o", Node::Dir),
            ("o/mine", file("m")),
            ("w", file("upper w"))
        ])
    );
}

#[test]
fn paths_are_normalised_and_unsafe_ones_dropped() {
    let l1 = Layer::new()
        .raw(b"./a//b/", EntryType::Directory, 0o755, b"")
        .raw(b"/abs/file", EntryType::Regular, 0o644, b"abs")
        .raw(b"a/./b/../c", EntryType::Regular, 0o644, b"c")
        .raw(b"../evil", EntryType::Regular, 0o644, b"evil")
        .raw(b"a/../../evil2", EntryType::Regular, 0o644, b"evil")
        .raw(b"olddir/", EntryType::Regular, 0o755, b"")
        .raw(b"x/.wh..wh.plnk/123", EntryType::Regular, 0o644, b"aufs")
        .build();
    let l2 = Layer::new()
        .raw(b"./a/b//", EntryType::Directory, 0o700, b"")
        .raw(b"/abs//file", EntryType::Regular, 0o644, b"abs upper")
        .build();
    let (out, stats) = run(&[l1, l2]);
    let tree = read_back(&out);
    assert_eq!(
        tree.nodes,
        expect(&[
            ("a/b", Node::Dir),
            ("abs/file", file("abs upper")),
            ("a/c", file("c")),
            ("olddir", Node::Dir),
        ])
    );
    assert_eq!(tree.modes["a/b"], 0o700);
    assert_eq!(stats.skipped, 3);
    assert_eq!(stats.hidden, 2);
}

#[test]
fn first_entry_of_a_path_in_a_layer_wins() {
    let l1 = Layer::new()
        .file("f", b"first")
        .file("f", b"second")
        .build();
    let (out, stats) = run(&[l1]);
    assert_eq!(read_back(&out).nodes, expect(&[("f", file("first"))]));
    assert_eq!(stats.hidden, 1);
}

#[test]
fn hard_link_chains_and_non_file_targets() {
    let l1 = Layer::new()
        .file("t", b"target")
        .hardlink("a", "t")
        .hardlink("b", "a")
        .symlink("s", "somewhere")
        .hardlink("hs", "s")
        .file("empty", b"")
        .hardlink("he", "empty")
        .dir("d")
        .hardlink("hd", "d")
        .build();
    let l2 = Layer::new()
        .whiteout(".wh.t")
        .whiteout(".wh.s")
        .whiteout(".wh.empty")
        .build();
    let (out, stats) = run(&[l1, l2]);
    assert_eq!(
        read_back(&out).nodes,
        expect(&[
            ("a", file("target")),
            ("b", link("a")),
            ("hs", sym("somewhere")),
            ("he", file("")),
            ("d", Node::Dir),
        ])
    );
    assert_eq!(stats.materialized_links, 3);
    assert_eq!(stats.hardlinks, 1);
    assert_eq!(stats.dangling_links, 1);
}

#[test]
fn upper_links_to_one_hidden_lower_inode_share_one_copy() {
    let big: Vec<u8> = (0..3 << 20).map(|i| (i % 253) as u8).collect();
    let l1 = Layer::new().file("t", &big).build();
    let l2 = Layer::new()
        .hardlink("l1", "t")
        .hardlink("l2", "t")
        .hardlink("l3", "l1")
        .file("t", b"new")
        .build();
    let (out, stats) = run(&[l1, l2]);
    let tree = read_back(&out);
    assert_eq!(
        tree.nodes,
        expect(&[
            ("t", file("new")),
            ("l1", Node::File(big)),
            ("l2", link("l1")),
            ("l3", link("l1")),
        ])
    );
    assert_eq!(stats.spilled_bytes, 0, "the data streamed straight through");
    if tar_available() {
        let dir = gnu_extract(&out, "shared-copy");
        check_extracted(&dir.0, &tree.nodes);
    }
}

#[test]
fn spill_directory_is_configurable() {
    let dir = TempDir::new("spill");
    let l1 = Layer::new()
        .file("t", b"spilled content")
        .hardlink("l", "t")
        .build();
    let l2 = Layer::new().whiteout(".wh.t").build();
    let layers: Vec<io::Result<io::Cursor<Vec<u8>>>> =
        vec![Ok(io::Cursor::new(l2)), Ok(io::Cursor::new(l1))];
    let mut out = Vec::new();
    let options = Options {
        temp_dir: Some(dir.0.clone()),
    };
    let stats = flatten_with(&options, layers.into_iter(), &mut out).unwrap();
    assert_eq!(stats.spilled_bytes, 15);
    assert_eq!(
        read_back(&out).nodes,
        expect(&[("l", file("spilled content"))])
    );
    // The spill file has no name.
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);

    let options = Options {
        temp_dir: Some(dir.0.join("missing")),
    };
    let l1 = Layer::new().file("t", b"x").build();
    let l2 = Layer::new().whiteout(".wh.t").build();
    let layers = vec![Ok(io::Cursor::new(l2)), Ok(io::Cursor::new(l1))];
    assert!(flatten_with(&options, layers.into_iter(), io::sink()).is_err());
}

#[test]
fn compressed_layers_through_the_decoders() {
    let layers = scenario(false);
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&layers[0]).unwrap();
        e.finish().unwrap()
    };
    let zs = zstd::stream::encode_all(&layers[1][..], 1).unwrap();
    let blobs = [
        (layers[2].clone(), "application/vnd.oci.image.layer.v1.tar"),
        (zs, ""),
        (gz, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    ];
    let opened = blobs.into_iter().map(|(blob, mt)| {
        decompress::layer_decoder(mt, io::Cursor::new(blob)).map(|r| Box::new(r) as Box<dyn Read>)
    });
    let mut out = Vec::new();
    flatten(opened, &mut out).unwrap();
    assert_eq!(read_back(&out).nodes, scenario_expected(false));
    assert_eq!(
        Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
        Some(Compression::Zstd)
    );
}

#[test]
fn broken_layers_are_errors() {
    let good = scenario(false).remove(0);
    // Cut inside an entry's content; cut between headers; bad checksum.
    let mut bad_sum = good.clone();
    bad_sum[600] ^= 0x20;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("cut", good[..good.len() / 2 + 100].to_vec()),
        ("cut at a header", good[..512 * 3].to_vec()),
        ("checksum", bad_sum),
    ];
    for (what, data) in cases {
        let layers = vec![Ok(Box::new(io::Cursor::new(data)) as Box<dyn Read>)];
        assert!(flatten(layers.into_iter(), io::sink()).is_err(), "{what}");
    }
    // A corrupt gzip layer fails too, when its tar part is fine but the
    // trailer is not.
    let mut gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&good).unwrap();
        e.finish().unwrap()
    };
    let n = gz.len();
    gz[n - 5] ^= 0xff;
    let layers = vec![Ok(decompress::decoder(
        Compression::Gzip,
        io::Cursor::new(gz),
    ))];
    assert!(flatten(layers.into_iter(), io::sink()).is_err());
    // A layer that fails to open.
    let layers: Vec<io::Result<Box<dyn Read>>> = vec![Err(io::Error::other("no such blob"))];
    let err = flatten(layers.into_iter(), io::sink()).unwrap_err();
    assert!(err.to_string().contains("no such blob"), "{err}");
}

#[test]
fn empty_input() {
    let (out, stats) = run(&[]);
    assert_eq!(out, vec![0u8; 1024]);
    assert_eq!(stats, Stats::default());
    let (out, _) = run(&[Vec::new(), vec![0u8; 1024]]);
    assert_eq!(out, vec![0u8; 1024]);
}
