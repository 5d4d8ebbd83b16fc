//! Layer decompression: which compression a layer blob uses (from its
//! media type, or from its first bytes when the media type says nothing)
//! and a streaming decoder for it.
//!
//! Decoders are plain `std::io::Read` adapters with bounded buffers, so a
//! layer of any size streams through: gzip holds a 32 KiB window, zstd
//! at most a 128 MiB one (`ZSTD_WINDOW_LOG_MAX`). Corrupt or truncated input is an
//! `io::Error`, never a panic.

use std::io::{self, BufRead, BufReader, Read};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Largest zstd window accepted (2^27 bytes, 128 MiB: zstd's own default
/// limit, set here so that it does not depend on the libzstd version). A
/// frame that asks for more fails; this bounds what a small input can
/// make the decoder allocate.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Bytes `sniff` wants to see to tell every format apart.
pub const SNIFF_LEN: usize = ZSTD_MAGIC.len();

impl Compression {
    /// The compression a layer media type names, or `None` for a media type
    /// that is not a (known) layer type: the caller may then `sniff`.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        // Parameters (`; foo=bar`) do not change the encoding.
        let mt = mt.split(';').next().unwrap_or("").trim();
        match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// The compression whose magic number `first_bytes` starts with; a
    /// plain tar (or anything unknown) is `None`.
    pub fn sniff(first_bytes: &[u8]) -> Compression {
        if first_bytes.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if first_bytes.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The compression a media type names, or `Compression::sniff` on the
/// first bytes when it names none.
pub fn from_media_type(mt: &str) -> Option<Compression> {
    Compression::from_media_type(mt)
}

/// See `Compression::sniff`.
pub fn sniff(first_bytes: &[u8]) -> Compression {
    Compression::sniff(first_bytes)
}

/// A reader of the uncompressed bytes of `r`.
///
/// Gzip accepts multi-member streams (as `pigz` and concatenated files
/// make); zstd accepts several frames. A stream that ends early, has a bad
/// checksum or is not in the format at all fails with an `io::Error`.
pub fn decoder<'a, R: Read + 'a>(c: Compression, r: R) -> Box<dyn Read + 'a> {
    match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => match zstd::stream::read::Decoder::new(r)
            .and_then(|mut d| d.window_log_max(ZSTD_WINDOW_LOG_MAX).map(|()| d))
        {
            Ok(d) => Box::new(d),
            // Only a failed allocation of the decoder context gets here.
            Err(e) => Box::new(Failed(Some(e))),
        },
    }
}

/// A decoder for a layer of media type `mt`: the media type decides when
/// it names a compression, else the stream's first bytes do.
pub fn layer_decoder<'a, R: Read + 'a>(mt: &str, r: R) -> io::Result<Box<dyn Read + 'a>> {
    if let Some(c) = Compression::from_media_type(mt) {
        return Ok(decoder(c, r));
    }
    let mut r = BufReader::new(r);
    let c = Compression::sniff(peek(&mut r, SNIFF_LEN)?);
    Ok(decoder(c, r))
}

/// Up to `n` bytes at the front of `r`, left unread; fewer only at end of
/// stream.
fn peek<R: Read>(r: &mut BufReader<R>, n: usize) -> io::Result<&[u8]> {
    // BufReader only refills an empty buffer: the first fill of a fresh
    // reader is all we get, which is short only for a tiny read(2) answer.
    let buf = r.fill_buf()?;
    Ok(&buf[..buf.len().min(n)])
}

/// A reader that fails with the error it holds, then reports end of
/// stream.
struct Failed(Option<io::Error>);

impl Read for Failed {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match self.0.take() {
            Some(e) => Err(e),
            None => Err(io::Error::other("decoder unavailable")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Compressible but not trivial data.
    fn sample(n: usize) -> Vec<u8> {
        let mut x: u32 = 0x1234_5678;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if i % 7 == 0 {
                    (x >> 24) as u8
                } else {
                    b'a' + (i % 13) as u8
                }
            })
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd_of(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    fn decode(c: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decoder(c, data).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn media_types() {
        use Compression::*;
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Some(None)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Some(None),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Some(Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip; charset=x",
                Some(Gzip),
            ),
            ("application/vnd.oci.image.config.v1+json", Option::None),
            (
                "application/vnd.oci.image.layer.v1.tar+encrypted",
                Option::None,
            ),
            ("", Option::None),
        ];
        for (mt, want) in cases {
            assert_eq!(from_media_type(mt), want, "{mt}");
        }
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(&gzip(b"x")), Compression::Gzip);
        assert_eq!(sniff(&zstd_of(b"x")), Compression::Zstd);
        assert_eq!(sniff(b"usr/\0\0\0"), Compression::None);
        assert_eq!(sniff(b""), Compression::None);
        assert_eq!(sniff(&[0x1f]), Compression::None);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f]), Compression::None);
    }

    #[test]
    fn round_trips() {
        for n in [0, 1, 511, 100_000, 1 << 20] {
            let data = sample(n);
            assert_eq!(decode(Compression::Gzip, &gzip(&data)).unwrap(), data);
            assert_eq!(decode(Compression::Zstd, &zstd_of(&data)).unwrap(), data);
            assert_eq!(decode(Compression::None, &data).unwrap(), data);
        }
    }

    #[test]
    fn multi_member_gzip_and_multi_frame_zstd() {
        let (a, b) = (sample(70_000), b"second member".to_vec());
        let mut gz = gzip(&a);
        gz.extend(gzip(&b));
        let mut want = a.clone();
        want.extend(&b);
        assert_eq!(decode(Compression::Gzip, &gz).unwrap(), want);

        let mut zs = zstd_of(&a);
        zs.extend(zstd_of(&b));
        assert_eq!(decode(Compression::Zstd, &zs).unwrap(), want);
    }

    #[test]
    fn truncated_streams_fail() {
        let data = sample(200_000);
        let gz = gzip(&data);
        let zs = zstd_of(&data);
        for cut in [1, 10, gz.len() / 2, gz.len() - 4, gz.len() - 1] {
            assert!(
                decode(Compression::Gzip, &gz[..cut]).is_err(),
                "gzip cut {cut}"
            );
        }
        for cut in [1, 5, zs.len() / 2, zs.len() - 1] {
            assert!(
                decode(Compression::Zstd, &zs[..cut]).is_err(),
                "zstd cut {cut}"
            );
        }
    }

    #[test]
    fn corrupt_streams_fail() {
        let data = sample(200_000);
        // A flipped byte in the gzip trailer's CRC.
        let mut gz = gzip(&data);
        let n = gz.len();
        gz[n - 6] ^= 0x55;
        assert!(decode(Compression::Gzip, &gz).is_err());
        // A flipped byte in the middle of the deflate stream.
        let mut gz = gzip(&data);
        let mid = gz.len() / 2;
        gz[mid] ^= 0xff;
        assert!(decode(Compression::Gzip, &gz).is_err());
        // Garbage after a complete gzip member is not a member.
        let mut gz = gzip(&data);
        gz.extend(b"garbage!");
        assert!(decode(Compression::Gzip, &gz).is_err());

        // zstd with its content checksum on catches any flipped byte.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_checksum(true).unwrap();
        enc.write_all(&data).unwrap();
        let zs = enc.finish().unwrap();
        for pos in [zs.len() / 2, zs.len() - 2] {
            let mut bad = zs.clone();
            bad[pos] ^= 0xff;
            assert!(decode(Compression::Zstd, &bad).is_err(), "zstd flip {pos}");
        }
        assert!(decode(Compression::Zstd, b"\x28\xb5\x2f\xfdnot zstd at all").is_err());
        assert!(decode(Compression::Gzip, b"\x1f\x8bnot gzip at all").is_err());
    }

    #[test]
    fn layer_decoder_sniffs_unknown_media_types() {
        let data = sample(10_000);
        for (enc, mt) in [
            (gzip(&data), ""),
            (zstd_of(&data), "application/octet-stream"),
            (data.clone(), ""),
            (gzip(&data), "application/vnd.oci.image.layer.v1.tar+gzip"),
        ] {
            let mut out = Vec::new();
            layer_decoder(mt, &enc[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{mt:?}");
        }
        let mut out = Vec::new();
        layer_decoder("", &b""[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }
}
