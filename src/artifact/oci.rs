//! An OCI artifact in Flux's format (`flux push artifact`): a manifest with
//! one tar+gzip layer (`application/vnd.cncf.flux.content.v1.tar+gzip`, or
//! any `…tar+gzip` layer type), read through the registry client converge
//! lists tags with (auth, `ca_file`, plain HTTP only when configured). The
//! layer is checked against its descriptor's digest and size before
//! anything reads it.

use sha2::{Digest as _, Sha256};

use crate::tags::registry::Registry;

/// Flux's layer media type.
pub const FLUX_LAYER: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";
/// At most this many bytes of a manifest.
const MAX_MANIFEST: u64 = 1024 * 1024;
/// At most this many bytes of a (compressed) layer.
pub const MAX_LAYER: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry could not be read (unreachable, auth, missing tag…).
    #[error(transparent)]
    Registry(#[from] crate::tags::registry::Error),
    #[error("the manifest is not an OCI image manifest: {0}")]
    Manifest(String),
    #[error("the artifact has {0} tar+gzip layers; one is expected")]
    Layers(usize),
    #[error("the layer is {size} bytes, over the cap of {MAX_LAYER}")]
    TooLarge { size: u64 },
    #[error("the layer's digest is {actual}, its descriptor says {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("the manifest's digest is {actual}, not the {expected} asked for")]
    ManifestDigest { expected: String, actual: String },
}

/// A pulled artifact: its layer's bytes and digest, and the manifest's
/// `org.opencontainers.image.revision` and `…source` annotations (`flux
/// push artifact --revision --source` writes them; empty when absent).
#[derive(Debug)]
pub struct Artifact {
    pub digest: String,
    pub layer: Vec<u8>,
    pub revision: String,
    pub origin: String,
}

#[derive(serde::Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
}

/// `host[:port]/repository` (an `oci://` prefix allowed, as Flux writes it).
///
/// # Errors
///
/// No repository after the host.
pub fn split(oci: &str) -> Result<(&str, &str), String> {
    let s = oci.strip_prefix("oci://").unwrap_or(oci);
    match s.split_once('/') {
        Some((host, repo)) if !host.is_empty() && !repo.is_empty() => Ok((host, repo)),
        _ => Err(format!(
            "manifests.oci {oci:?} is not <registry>/<repository>"
        )),
    }
}

/// The artifact tagged `tag` in `repository` (or whose manifest has the
/// digest `tag`, `sha256:<hex>`).
///
/// # Errors
///
/// The registry's failures, or an artifact that is not one checked layer.
pub fn pull(client: &Registry, repository: &str, tag: &str) -> Result<Artifact, Error> {
    let body = client.manifest(repository, tag, MAX_MANIFEST)?;
    // Asked by digest: the registry's answer is checked against it.
    if tag.starts_with("sha256:") {
        check(tag, &body).map_err(|_| Error::ManifestDigest {
            expected: tag.to_owned(),
            actual: format!("sha256:{}", crate::hex::encode(&Sha256::digest(&body))),
        })?;
    }
    let manifest = parse_manifest(&body)?;
    let layer = one_layer(&manifest)?;
    if layer.size > MAX_LAYER {
        return Err(Error::TooLarge { size: layer.size });
    }
    let bytes = client.blob(repository, &layer.digest, MAX_LAYER)?;
    check(&layer.digest, &bytes)?;
    let annotation = |k: &str| manifest.annotations.get(k).cloned().unwrap_or_default();
    Ok(Artifact {
        digest: layer.digest.clone(),
        layer: bytes,
        revision: annotation("org.opencontainers.image.revision"),
        origin: annotation("org.opencontainers.image.source"),
    })
}

fn parse_manifest(body: &[u8]) -> Result<Manifest, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Manifest(e.to_string()))
}

fn one_layer(m: &Manifest) -> Result<&Descriptor, Error> {
    let layers: Vec<_> = m
        .layers
        .iter()
        .filter(|l| l.media_type == FLUX_LAYER || l.media_type.ends_with("tar+gzip"))
        .collect();
    match layers.as_slice() {
        [one] if m.layers.len() == 1 => Ok(one),
        _ => Err(Error::Layers(layers.len().max(m.layers.len()))),
    }
}

/// The bytes' SHA-256 against `expected` (`sha256:<hex>`).
///
/// # Errors
///
/// A mismatch, or a digest of another algorithm.
pub fn check(expected: &str, bytes: &[u8]) -> Result<(), Error> {
    let actual = format!("sha256:{}", crate::hex::encode(&Sha256::digest(bytes)));
    if actual == expected {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            expected: expected.to_owned(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tar_gzip_layer_and_its_digest_are_required() {
        let m =
            |layers: &str| parse_manifest(format!("{{\"layers\":[{layers}]}}").as_bytes()).unwrap();
        let flux =
            format!("{{\"mediaType\":\"{FLUX_LAYER}\",\"digest\":\"sha256:ab\",\"size\":1}}");
        assert!(one_layer(&m(&flux)).is_ok());
        assert!(matches!(
            one_layer(&m(&format!("{flux},{flux}"))),
            Err(Error::Layers(2))
        ));
        let other = "{\"mediaType\":\"application/json\",\"digest\":\"sha256:ab\",\"size\":1}";
        assert!(one_layer(&m(other)).is_err());
        assert!(check("sha256:00", b"x").is_err());
        let good = format!("sha256:{}", crate::hex::encode(&Sha256::digest(b"x")));
        assert!(check(&good, b"x").is_ok());
        assert_eq!(split("oci://h:5000/a/b").unwrap(), ("h:5000", "a/b"));
        assert!(split("h").is_err());
    }
}
