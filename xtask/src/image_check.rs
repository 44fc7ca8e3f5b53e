//! `cargo xtask image --check`: the layout is reproducible and real OCI tools from Debian read
//! it. `skopeo inspect` must report the manifest digest we computed; `umoci unpack` (rootless)
//! must give `/usr/local/bin/proxier` and `/usr/local/bin/kube-proxy` as one executable file,
//! which then runs as an unprivileged user (`setpriv`, uid 65534).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::host::{ensure_packages, HostPackage};
use crate::image::{image_layout, ImageLayout, KUBE_PROXY_PATH, PROXIER_PATH};

/// The OCI tools the check uses.
pub const OCI_PACKAGES: &[HostPackage] = &[
    HostPackage {
        path: "/usr/bin/skopeo",
        package: "skopeo",
    },
    HostPackage {
        path: "/usr/bin/umoci",
        package: "umoci",
    },
];

fn run(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the layout a second time from `binary` into a scratch directory, compares it with
/// `layout` (written in `dir`), and has skopeo and umoci read `dir`.
pub fn check(layout: &ImageLayout, dir: &Path, binary: &[u8], tag: &str) -> Result<()> {
    ensure_packages(OCI_PACKAGES)?;
    let scratch = std::env::temp_dir().join(format!("xtask-image-check-{}", std::process::id()));
    let again = image_layout(binary, tag)?;
    again.write(&scratch.join("layout"))?;
    println!(
        "image: built twice: {} and {}",
        layout.manifest_digest, again.manifest_digest
    );
    ensure!(
        again == *layout,
        "the second build differs: {} vs {}",
        again.manifest_digest,
        layout.manifest_digest
    );

    let reference = format!("oci:{}:{tag}", dir.display());
    let inspect: Value =
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &reference]))?)?;
    println!(
        "image: skopeo inspect {reference}: Digest {} Architecture {} Os {} Layers {}",
        inspect["Digest"], inspect["Architecture"], inspect["Os"], inspect["Layers"]
    );
    ensure!(
        inspect["Digest"] == layout.manifest_digest.as_str(),
        "skopeo reports {} for {}",
        inspect["Digest"],
        layout.manifest_digest
    );
    ensure!(inspect["Os"] == "linux" && inspect["Architecture"] == "amd64");

    let bundle = scratch.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{tag}", dir.display()))
        .arg(&bundle))?;
    let rootfs = bundle.join("rootfs");
    let proxier = std::fs::metadata(rootfs.join(PROXIER_PATH))?;
    let kube_proxy = std::fs::metadata(rootfs.join(KUBE_PROXY_PATH))?;
    ensure!(
        proxier.ino() == kube_proxy.ino(),
        "kube-proxy is not a hard link"
    );
    ensure!(
        proxier.len() == binary.len() as u64,
        "unpacked size differs"
    );
    ensure!(
        proxier.permissions().mode() & 0o777 == 0o755,
        "mode {:o}",
        proxier.permissions().mode()
    );
    println!(
        "image: umoci unpack: /{PROXIER_PATH} and /{KUBE_PROXY_PATH} are one file (inode {}), {} bytes, mode 0755",
        proxier.ino(),
        proxier.len()
    );
    // Any user can reach and run it: open the scratch directories, run as nobody.
    for path in [&scratch, &bundle] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    let version = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--no-new-privs",
        ])
        .arg(rootfs.join(KUBE_PROXY_PATH))
        .arg("version"))?;
    println!(
        "image: /{KUBE_PROXY_PATH} version, as uid 65534: {}",
        version.trim()
    );
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
