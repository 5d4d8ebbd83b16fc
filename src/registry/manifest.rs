//! Manifests and indexes (OCI and Docker), their kinds, and choosing a
//! platform's manifest from an index.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::registry::platform::Platform;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The Accept header of every manifest request: all four kinds we read.
pub fn accept_header() -> String {
    format!("Accept: {OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_LIST}, {DOCKER_MANIFEST}")
}

/// Largest manifest or index accepted (as containerd does).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Most entries accepted in an index, and layers in a manifest.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PlatformJson {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<PlatformJson>,
    #[serde(default)]
    pub urls: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
struct IndexJson {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
struct ManifestJson {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// A parsed manifest document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// An OCI index or Docker manifest list.
    Index(Vec<Descriptor>),
    /// An image manifest: its layers.
    Image(Vec<Descriptor>),
}

/// The kind of a manifest response, from its Content-Type first: the body
/// need not carry `mediaType`. Falls back to the body's own `mediaType`,
/// then to its shape.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Document> {
    let ct = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::protocol(format!("manifest is not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| Error::protocol("manifest is not a JSON object"))?;
    let body_type = obj.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
    let schema = obj.get("schemaVersion").and_then(|v| v.as_u64());
    let kind = match ct.as_str() {
        OCI_INDEX | DOCKER_LIST | OCI_MANIFEST | DOCKER_MANIFEST => ct.clone(),
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => ct.clone(),
        _ if !body_type.is_empty() => body_type.to_string(),
        _ if schema == Some(1) => DOCKER_SCHEMA1.to_string(),
        _ if obj.contains_key("manifests") => OCI_INDEX.to_string(),
        _ if obj.contains_key("layers") => OCI_MANIFEST.to_string(),
        _ => {
            return Err(Error::protocol(format!(
                "unknown manifest type (Content-Type '{ct}')"
            )))
        }
    };
    match kind.as_str() {
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Err(Error::new(
            libc::EOPNOTSUPP,
            "Docker schema 1 manifests are not supported (deprecated); push the image again with a current client",
        )),
        OCI_INDEX | DOCKER_LIST => {
            let idx: IndexJson = serde_json::from_value(value)
                .map_err(|e| Error::protocol(format!("bad index: {e}")))?;
            if idx.schema_version != 2 {
                return Err(Error::protocol(format!(
                    "index has schemaVersion {}, expected 2",
                    idx.schema_version
                )));
            }
            if idx.manifests.len() > MAX_ENTRIES {
                return Err(Error::protocol("index has too many entries"));
            }
            Ok(Document::Index(idx.manifests))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: ManifestJson = serde_json::from_value(value)
                .map_err(|e| Error::protocol(format!("bad manifest: {e}")))?;
            if m.schema_version != 2 {
                return Err(Error::new(
                    if m.schema_version == 1 { libc::EOPNOTSUPP } else { libc::EPROTO },
                    format!("manifest has schemaVersion {}, expected 2", m.schema_version),
                ));
            }
            if m.layers.len() > MAX_ENTRIES {
                return Err(Error::protocol("manifest has too many layers"));
            }
            Ok(Document::Image(m.layers))
        }
        other => Err(Error::new(
            libc::EOPNOTSUPP,
            format!("unsupported manifest media type '{other}'"),
        )),
    }
}

/// The first index entry for `want`, skipping attestation manifests.
pub fn select_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Result<&'a Descriptor> {
    entries
        .iter()
        .find(|d| match &d.platform {
            Some(p) => want.matches(&p.os, &p.architecture, p.variant.as_deref().unwrap_or("")),
            None => false,
        })
        .ok_or_else(|| {
            let have: Vec<String> = entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(|p| {
                    Platform::new(&p.os, &p.architecture, p.variant.as_deref().unwrap_or(""))
                        .to_string()
                })
                .collect();
            Error::new(
                libc::ENOENT,
                format!(
                    "no manifest for platform {want} (the index has: {})",
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn manifest_without_media_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":7}}]}}"#
        );
        let doc = parse(
            Some("application/vnd.oci.image.manifest.v1+json"),
            body.as_bytes(),
        )
        .unwrap();
        match doc {
            Document::Image(l) => {
                assert_eq!(l.len(), 1);
                assert_eq!(l[0].digest, D2);
                assert_eq!(l[0].size, 7);
            }
            _ => panic!("not an image"),
        }
        // No Content-Type: the shape decides.
        assert!(matches!(
            parse(None, body.as_bytes()).unwrap(),
            Document::Image(_)
        ));
    }

    #[test]
    fn index_and_platforms() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        let doc = parse(
            Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
            body.as_bytes(),
        )
        .unwrap();
        let Document::Index(entries) = doc else {
            panic!()
        };
        let arm = select_platform(&entries, &Platform::parse("linux/arm64").unwrap()).unwrap();
        assert_eq!(arm.digest, D2);
        let amd = select_platform(&entries, &Platform::parse("linux/amd64").unwrap()).unwrap();
        assert_eq!(amd.digest, D1);
        let e = select_platform(&entries, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT);
        assert!(e.message().contains("linux/s390x"), "{e}");
        assert!(e.message().contains("linux/arm64/v8"), "{e}");
    }

    #[test]
    fn schema1_and_junk() {
        let e = parse(
            Some(DOCKER_SCHEMA1_SIGNED),
            br#"{"schemaVersion":1,"fsLayers":[]}"#,
        )
        .unwrap_err();
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
        assert!(e.message().contains("schema 1"));
        let e = parse(Some("application/json"), br#"{"schemaVersion":1}"#).unwrap_err();
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
        assert_eq!(parse(None, b"<html>").unwrap_err().errno(), libc::EPROTO);
        assert_eq!(parse(None, b"[]").unwrap_err().errno(), libc::EPROTO);
    }
}
