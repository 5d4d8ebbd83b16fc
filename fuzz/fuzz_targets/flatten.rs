//! `flatten` on layer stacks. The first input byte picks the mode:
//!
//! - `R`: raw layers, the rest of the input cut at each "\n--layer--\n"
//!   (top layer first), any bytes at all. Errors are fine (they must be
//!   errors, not panics or hangs); an output must be a tar whose every
//!   path is relative, stays below the root (no `..`), appears once and
//!   holds no `.wh.` component, and whose every hard link points at an
//!   entry before it.
//! - anything else: the rest of the input drives the choices of the
//!   model of tests/model (up to 4 layers of up to 8 directories, files,
//!   symlinks, hard links, whiteouts and opaque markers, on paths of
//!   a/b/c); the tree of the flattened tar must equal the tree the model
//!   makes by applying the layers bottom-up: whiteouts act only on what
//!   lies below them, opaque markers only below their directory.
#![no_main]

#[path = "../../tests/model/mod.rs"]
mod model;

use std::collections::BTreeSet;
use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use model::{flatten_stack, forget_explicit, output_tree, random_stack, Rng};
use oci_registry::layer::flatten::flatten;

const SEPARATOR: &[u8] = b"\n--layer--\n";

fn cut(mut data: &[u8]) -> Vec<&[u8]> {
    let mut layers = Vec::new();
    while let Some(i) = data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        layers.push(&data[..i]);
        data = &data[i + SEPARATOR.len()..];
    }
    layers.push(data);
    layers
}

fn check_output(out: &[u8]) {
    let mut seen = BTreeSet::new();
    let mut a = tar::Archive::new(out);
    for e in a.entries().expect("the output is a tar") {
        let e = e.expect("every output entry reads back");
        let raw = e.path_bytes().into_owned();
        let path = raw.strip_suffix(b"/").unwrap_or(&raw).to_vec();
        assert!(!path.starts_with(b"/"), "absolute path {path:?}");
        for c in path.split(|&b| b == b'/') {
            assert!(c != b".." && c != b"." || path == b".", "{path:?} climbs");
            assert!(!c.starts_with(b".wh."), "{path:?} holds a whiteout name");
            assert!(
                !c.is_empty() || path.is_empty(),
                "{path:?}: empty component"
            );
        }
        if e.header().entry_type() == tar::EntryType::Link {
            let target = e
                .link_name_bytes()
                .expect("a hard link has a target")
                .into_owned();
            assert!(
                seen.contains(&target),
                "{path:?} links to {target:?}, not before it"
            );
        }
        assert!(seen.insert(path.clone()), "{path:?} twice");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode == b'R' {
        let layers = cut(rest);
        let input = layers
            .iter()
            .map(|l| Ok(Box::new(io::Cursor::new(l.to_vec())) as Box<dyn Read>));
        let mut out = Vec::new();
        if flatten(input, &mut out).is_ok() {
            check_output(&out);
        }
        return;
    }
    let mut rng = Rng::Bytes(rest.to_vec(), 0);
    let layers = random_stack(&mut rng);
    let (out, _) = flatten_stack(&layers);
    check_output(&out);
    assert_eq!(
        forget_explicit(&output_tree(&out)),
        forget_explicit(&model::model(&layers)),
        "layers {layers:#?}"
    );
});
