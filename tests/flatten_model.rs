//! Random layer stacks: `flatten` against a model that applies the
//! layers bottom-up to an in-memory tree, the way an overlay (or a
//! sequential extraction with whiteout handling) would. Some outputs are
//! also extracted with GNU tar.

mod model;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use model::{flatten_stack, forget_explicit, model, output_tree, random_stack, Node, Rng, Tree};

/// Extracts with GNU tar and reads the tree back, directories made by tar
/// included.
fn extracted_tree(data: &[u8], case: usize) -> Tree {
    let dir = std::env::temp_dir().join(format!("oci-flatten-model-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new("tar")
        .args(["-x", "--no-same-owner", "-f", "-", "-C"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "case {case}: tar -x: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut t = Tree::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(dir.join(&rel)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let p = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type().unwrap();
            let node = if ft.is_symlink() {
                let target = std::fs::read_link(e.path()).unwrap();
                Node::Symlink(target.into_os_string().into_string().unwrap())
            } else if ft.is_dir() {
                stack.push(p.clone());
                Node::Dir { explicit: false }
            } else {
                Node::File(std::fs::read_to_string(e.path()).unwrap())
            };
            t.insert(p, node);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    t
}

#[test]
fn random_layer_stacks_match_the_model() {
    let have_tar = Command::new("tar")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut rng = Rng::Xorshift(0x9E37_79B9_7F4A_7C15);
    let mut kinds = BTreeSet::new();
    for case in 0..3000 {
        let layers = random_stack(&mut rng);
        let (out, stats) = flatten_stack(&layers);
        if stats.materialized_links > 0 {
            kinds.insert("materialized");
        }
        if stats.dangling_links > 0 {
            kinds.insert("dangling");
        }
        if stats.hardlinks > 0 {
            kinds.insert("hardlink");
        }
        let want = model(&layers);
        let got = output_tree(&out);
        assert_eq!(
            forget_explicit(&got),
            forget_explicit(&want),
            "case {case}: layers {layers:#?}"
        );
        if have_tar && case % 10 == 0 {
            assert_eq!(
                extracted_tree(&out, case),
                forget_explicit(&want),
                "case {case}: extracted, layers {layers:#?}"
            );
        }
    }
    // The random stacks did exercise the hard-link paths.
    assert_eq!(kinds.len(), 3, "{kinds:?}");
}
