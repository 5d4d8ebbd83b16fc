use super::entry::*;
use super::path::*;
use super::tar_read::*;
use super::tar_write::*;
use super::*;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};

fn meta(kind: Kind) -> Meta {
    Meta {
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        uname: b"root".to_vec(),
        gname: b"root".to_vec(),
        dev_major: 0,
        dev_minor: 0,
        link: Vec::new(),
        size: 0,
        pax: Vec::new(),
    }
}

/// An archive of `(path, meta, content)` written by `TarWriter`.
fn archive(entries: &[(&[u8], Meta, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = TarWriter::new(&mut out);
    for (path, m, data) in entries {
        let mut m = m.clone();
        m.size = data.len() as u64;
        let mut data: &[u8] = data;
        w.entry(path, &m, b"", Some(&mut data)).unwrap();
    }
    w.finish().unwrap();
    out
}

/// Every entry of `data` with its content.
fn entries(data: &[u8]) -> io::Result<Vec<(RawEntry, Vec<u8>)>> {
    let mut r = TarReader::new(data);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry()? {
        let mut content = Vec::new();
        r.read_to_end(&mut content)?;
        out.push((e, content));
    }
    Ok(out)
}

fn record<'a>(e: &'a RawEntry, key: &str) -> Option<&'a [u8]> {
    e.pax
        .iter()
        .find(|(k, _)| k == key.as_bytes())
        .map(|(_, v)| v.as_slice())
}

#[test]
fn normalisation() {
    let n = |p: &str| normalize(p.as_bytes()).map(|v| String::from_utf8(v).unwrap());
    assert_eq!(n("./usr//bin/"), Some("usr/bin".into()));
    assert_eq!(n("/etc/passwd"), Some("etc/passwd".into()));
    assert_eq!(n("a/./b/../c"), Some("a/c".into()));
    assert_eq!(n("./"), Some("".into()));
    assert_eq!(n("."), Some("".into()));
    assert_eq!(n(""), Some("".into()));
    assert_eq!(n(".."), None);
    assert_eq!(n("a/../../b"), None);
    assert_eq!(n("..."), Some("...".into()));
    assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
    assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    let ps: Vec<&[u8]> = parents(b"a/b/c").collect();
    assert_eq!(ps, vec![&b"a/b"[..], &b"a"[..]]);
    assert_eq!(parents(b"a").count(), 0);
}

#[test]
fn pax_records_round_trip_any_bytes() {
    let values: [&[u8]; 5] = [
        b"",
        b"x",
        b"line\nbreak = and \x00 nul",
        &[0xff; 200],
        &[b'9'; 95],
    ];
    let mut data = Vec::new();
    for (i, v) in values.iter().enumerate() {
        pax_record(&mut data, format!("SCHILY.xattr.user.k{i}").as_bytes(), v);
    }
    let parsed = parse_pax(&data).unwrap();
    assert_eq!(parsed.len(), values.len());
    for (i, (k, v)) in parsed.iter().enumerate() {
        assert_eq!(k, format!("SCHILY.xattr.user.k{i}").as_bytes());
        assert_eq!(v, values[i]);
    }
    // Lengths at the digit boundaries count their own digits.
    for n in 0..120 {
        let mut rec = Vec::new();
        pax_record(&mut rec, b"k", &vec![b'v'; n]);
        let len: usize = std::str::from_utf8(&rec[..rec.iter().position(|&b| b == b' ').unwrap()])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, rec.len(), "value of {n} bytes");
    }
    for bad in [
        &b"5 a=b\n"[..],
        b"x a=b\n",
        b"6 ab\nx",
        b"99 a=b\n",
        b"7 a=b\n",
    ] {
        assert!(
            parse_pax(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(parse_pax(b"6 a=b\n\0\0\0").is_ok());
}

#[test]
fn header_fields_that_do_not_fit_go_to_pax() {
    let exactly_100 = vec![b'a'; 100];
    let splittable = [vec![b'p'; 150], b"/".to_vec(), vec![b'n'; 100]].concat();
    let one_long_component = vec![b'z'; 150];
    let very_long = [vec![b'q'; 200], b"/".to_vec(), vec![b'r'; 200]].concat();
    let mut big = meta(Kind::File);
    big.uid = 3_000_000;
    big.gid = 5_000_000;
    big.mtime = 1 << 34;
    big.uname = vec![b'u'; 40];
    big.gname = vec![b'g'; 32];
    big.pax = vec![(b"SCHILY.xattr.user.nl".to_vec(), b"a\nb".to_vec())];
    let data = archive(&[
        (&exactly_100, meta(Kind::File), b"1"),
        (&splittable, meta(Kind::File), b"2"),
        (&one_long_component, meta(Kind::File), b"3"),
        (&very_long, big.clone(), b"4"),
        (b"", meta(Kind::Dir), b""),
        (b"d", meta(Kind::Dir), b""),
    ]);
    let got = entries(&data).unwrap();
    let paths: Vec<&[u8]> = got.iter().map(|(e, _)| e.path.as_slice()).collect();
    assert_eq!(
        paths,
        vec![
            &exactly_100[..],
            &splittable[..],
            &one_long_component[..],
            &very_long[..],
            b"./",
            b"d/"
        ]
    );
    // Only what does not fit in ustar went to PAX.
    assert!(got[0].0.pax.is_empty() && got[1].0.pax.is_empty());
    assert_eq!(record(&got[2].0, "path"), Some(&one_long_component[..]));
    let e = &got[3].0;
    let (_, m) = parse(e).unwrap().unwrap();
    assert_eq!(m.uid, 3_000_000);
    assert_eq!(m.gid, 5_000_000);
    assert_eq!(m.mtime, 1 << 34);
    assert_eq!(m.uname, vec![b'u'; 40]);
    assert_eq!(m.gname, vec![b'g'; 32]);
    assert_eq!(record(e, "SCHILY.xattr.user.nl"), Some(&b"a\nb"[..]));
    assert_eq!(got[3].1, b"4");

    // A size past the 11 octal digits of ustar.
    let mut huge = meta(Kind::File);
    huge.size = 10 << 30;
    let (headers, size) = encode_header(b"huge", &huge, b"");
    assert_eq!(size, 10 << 30);
    let mut r = TarReader::new(&headers[..]);
    assert_eq!(r.next_entry().unwrap().unwrap().size, 10 << 30);

    // GNU tar reads the same archive.
    if let Some(listing) = gnu_tar(&["-tv", "--numeric-owner"], &data) {
        let text = String::from_utf8_lossy(&listing);
        assert!(text.contains("3000000/5000000"), "{text}");
        assert!(
            text.contains(&String::from_utf8(very_long).unwrap()),
            "{text}"
        );
    }
}

/// Runs GNU tar with `args` on `input` (`-f -` added); `None` when
/// there is no tar.
fn gnu_tar(args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new("tar")
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

#[test]
fn global_pax_headers_apply_to_later_entries() {
    let mut data = Vec::new();
    let mut recs = Vec::new();
    pax_record(&mut recs, b"uid", b"42");
    pax_record(&mut recs, b"comment", b"global");
    let mut g = meta(Kind::File);
    g.size = recs.len() as u64;
    let (mut head, _) = encode_header(b"global", &g, b"");
    head[156] = b'g';
    let mut block: [u8; BLOCK] = head[..BLOCK].try_into().unwrap();
    checksum(&mut block);
    data.extend_from_slice(&block);
    data.extend_from_slice(&recs);
    data.resize(data.len() + padding(recs.len() as u64) as usize, 0);
    let mut local = meta(Kind::File);
    local.pax = vec![(b"comment".to_vec(), Vec::new())];
    let rest = archive(&[(b"a", meta(Kind::File), b"a"), (b"b", local, b"b")]);
    data.extend_from_slice(&rest);

    let got = entries(&data).unwrap();
    assert_eq!(got.len(), 2);
    let (_, a) = parse(&got[0].0).unwrap().unwrap();
    assert_eq!(a.uid, 42);
    assert_eq!(record(&got[0].0, "comment"), Some(&b"global"[..]));
    // An empty local value deletes the global record.
    assert_eq!(record(&got[1].0, "comment"), None);
    assert_eq!(parse(&got[1].0).unwrap().unwrap().1.uid, 42);
}

#[test]
fn checksums_signed_and_unsigned() {
    let mut m = meta(Kind::File);
    m.uname = vec![0xe9; 4];
    let (mut h, _) = encode_header(b"f", &m, b"");
    let block: &mut [u8; BLOCK] = (&mut h[..BLOCK]).try_into().unwrap();
    verify_checksum(block).unwrap();
    // The same header with a signed-byte sum, as some old tars wrote.
    block[148..156].fill(b' ');
    let signed: i64 = block.iter().map(|&b| i64::from(b as i8)).sum();
    octal(&mut block[148..155], signed as u64);
    verify_checksum(block).unwrap();
    block[0] ^= 1;
    assert!(verify_checksum(block).is_err());
}

#[test]
fn truncated_archives_fail() {
    let data = archive(&[(b"a", meta(Kind::File), &[7u8; 1000])]);
    for cut in [100, 512, 700, 1024 + 100] {
        assert!(entries(&data[..cut]).is_err(), "cut at {cut}");
    }
    // Cut between entries: the archive just ends there.
    assert_eq!(entries(&data[..1536]).unwrap().len(), 1);
    // An extended header with nothing after it.
    let mut m = meta(Kind::File);
    m.pax = vec![(b"k".to_vec(), b"v".to_vec())];
    let (h, _) = encode_header(b"f", &m, b"");
    assert!(entries(&h[..1024]).is_err());
}

#[test]
fn gnu_sparse_files_are_expanded() {
    let dir = std::env::temp_dir().join(format!("oci-flatten-sparse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = File::create(dir.join("sparse")).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_at(b"hello", 4096 * 3).unwrap();
    f.write_at(b"world", (1 << 20) - 5).unwrap();
    drop(f);
    let out = Command::new("tar")
        .args(["--format=gnu", "--sparse", "-cf", "-", "-C"])
        .arg(&dir)
        .arg("sparse")
        .output();
    std::fs::remove_dir_all(&dir).unwrap();
    let Ok(out) = out else {
        eprintln!("skipped: no tar");
        return;
    };
    assert!(out.status.success());
    let got = entries(&out.stdout).unwrap();
    let (e, content) = &got[0];
    let mut want = vec![0u8; 1 << 20];
    want[4096 * 3..4096 * 3 + 5].copy_from_slice(b"hello");
    want[(1 << 20) - 5..].copy_from_slice(b"world");
    assert_eq!(e.size, 1 << 20);
    assert!(content == &want, "sparse content differs");
    let sparse = tar::Header::from_byte_slice(&e.header)
        .entry_type()
        .as_byte()
        == b'S';
    eprintln!(
        "GNU tar wrote a {} entry",
        if sparse { "sparse" } else { "plain" }
    );

    // Through the flattener it comes out as a plain file.
    let mut flat = Vec::new();
    let layers = std::iter::once(Ok(&out.stdout[..]));
    flatten_with(&Options::default(), layers, &mut flat).unwrap();
    let got = entries(&flat).unwrap();
    assert_eq!(
        tar::Header::from_byte_slice(&got[0].0.header)
            .entry_type()
            .as_byte(),
        b'0'
    );
    assert!(got[0].1 == want);
}
