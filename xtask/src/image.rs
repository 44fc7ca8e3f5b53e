//! `cargo xtask image`: the OCI image layout of proxier, written without a container engine.
//!
//! One uncompressed layer holds the static binary at `/usr/local/bin/proxier` and, as a hard
//! link to it, `/usr/local/bin/kube-proxy` (kube-proxy's DaemonSet command runs it
//! unchanged). Everything is fixed (entry order, mtime 0, uid/gid 0, modes 0755, no creation
//! time, JSON with sorted keys), so the same binary gives the same digests on every build. The
//! files are world-readable and executable: the image runs under any `runAsUser`.
//!
//! The layout (`oci-layout`, `index.json`, `blobs/sha256/…`) is what `skopeo copy
//! oci:DIR:TAG docker://REGISTRY/proxier:TAG` pushes.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The layer's media type (uncompressed tar).
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Where the binary and its kube-proxy name live in the image.
pub const PROXIER_PATH: &str = "usr/local/bin/proxier";
/// kube-proxy's path, a hard link to [`PROXIER_PATH`].
pub const KUBE_PROXY_PATH: &str = "usr/local/bin/kube-proxy";

/// `sha256:HEX` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// One ustar entry kind.
enum Entry<'a> {
    Directory,
    File(&'a [u8]),
    HardLink(&'a str),
}

fn octal(field: &mut [u8], value: u64) {
    // Zero-padded octal, NUL-terminated, filling the field.
    let text = format!("{value:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(text.as_bytes());
}

/// One 512-byte ustar header (uid/gid 0, mtime 0, no user or group names).
fn header(name: &str, entry: &Entry<'_>) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o755);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    let (size, kind) = match entry {
        Entry::Directory => (0, b'5'),
        Entry::File(bytes) => (bytes.len() as u64, b'0'),
        Entry::HardLink(target) => {
            h[157..157 + target.len()].copy_from_slice(target.as_bytes());
            (0, b'1')
        }
    };
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum counts its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    h
}

/// The layer: `usr/`, `usr/local/`, `usr/local/bin/`, the binary, the kube-proxy hard link.
pub fn layer(binary: &[u8]) -> Vec<u8> {
    let entries = [
        ("usr/", Entry::Directory),
        ("usr/local/", Entry::Directory),
        ("usr/local/bin/", Entry::Directory),
        (PROXIER_PATH, Entry::File(binary)),
        (KUBE_PROXY_PATH, Entry::HardLink(PROXIER_PATH)),
    ];
    let mut tar = Vec::with_capacity(binary.len() + 8 * 512);
    for (name, entry) in &entries {
        tar.extend_from_slice(&header(name, entry));
        if let Entry::File(bytes) = entry {
            tar.extend_from_slice(bytes);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        }
    }
    // End of archive: two zero blocks.
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// An OCI image layout as files: path inside the layout directory → contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayout {
    /// Every file of the layout.
    pub files: Vec<(String, Vec<u8>)>,
    /// The manifest's digest (what a registry reports for the pushed tag).
    pub manifest_digest: String,
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": digest(bytes), "size": bytes.len() })
}

fn blob_path(bytes: &[u8]) -> String {
    format!("blobs/sha256/{}", &digest(bytes)["sha256:".len()..])
}

/// The layout of an image holding `binary`, tagged `tag`.
pub fn image_layout(binary: &[u8], tag: &str) -> Result<ImageLayout> {
    let layer = layer(binary);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/usr/local/bin/proxier"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": { "org.opencontainers.image.version": tag },
        },
        "rootfs": { "type": "layers", "diff_ids": [digest(&layer)] },
        "history": [{ "created_by": "cargo xtask image" }],
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(CONFIG_TYPE, &config),
        "layers": [descriptor(LAYER_TYPE, &layer)],
    }))?;
    let mut manifest_entry = descriptor(MANIFEST_TYPE, &manifest);
    manifest_entry["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    manifest_entry["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [manifest_entry],
    }))?;
    let manifest_digest = digest(&manifest);
    Ok(ImageLayout {
        files: vec![
            (
                "oci-layout".to_owned(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            (blob_path(&layer), layer),
            (blob_path(&config), config),
            (blob_path(&manifest), manifest),
            ("index.json".to_owned(), index),
        ],
        manifest_digest,
    })
}

impl ImageLayout {
    /// Writes the layout into `dir` (replacing an earlier layout there).
    pub fn write(&self, dir: &Path) -> Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        for (path, bytes) in &self.files {
            let path = dir.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_reproducible_and_its_digests_match_the_blobs() {
        let binary = b"\x7fELF not really".repeat(100);
        let first = image_layout(&binary, "0.1.0").unwrap();
        let second = image_layout(&binary, "0.1.0").unwrap();
        assert_eq!(first, second);
        assert_ne!(
            image_layout(b"other", "0.1.0").unwrap().manifest_digest,
            first.manifest_digest
        );
        for (path, bytes) in &first.files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(digest(bytes), format!("sha256:{hex}"));
            }
        }
        let index: Value = serde_json::from_slice(&first.files[4].1).unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            first.manifest_digest.as_str()
        );
    }

    /// GNU tar is the witness: it lists both paths, the link, owner 0/0, mode 0755, mtime 0.
    #[test]
    fn gnu_tar_reads_the_layer() {
        let dir = std::env::temp_dir().join(format!("xtask-layer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("layer.tar");
        std::fs::write(&path, layer(b"#!/bin/sh\necho hi\n")).unwrap();
        let out = std::process::Command::new("tar")
            .args(["--numeric-owner", "--full-time", "-tvf"])
            .arg(&path)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 5, "{listing}");
        assert!(
            lines[3].starts_with("-rwxr-xr-x 0/0") && lines[3].contains("18 1970-01-01 00:00:00"),
            "{listing}"
        );
        assert!(lines[3].ends_with(PROXIER_PATH), "{listing}");
        assert!(
            lines[4].ends_with(&format!("{KUBE_PROXY_PATH} link to {PROXIER_PATH}")),
            "{listing}"
        );
    }
}
