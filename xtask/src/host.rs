//! Host packages the VM runner needs, installed through Debian's package client when we are root.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A host file we need and the Debian package that provides it.
pub struct HostPackage {
    /// Absolute path checked for presence.
    pub path: &'static str,
    /// Debian package to install when it is missing.
    pub package: &'static str,
}

const fn pkg(path: &'static str, package: &'static str) -> HostPackage {
    HostPackage { path, package }
}

/// Everything `cargo xtask vmtest` needs on the host.
pub const VM_PACKAGES: &[HostPackage] = &[
    pkg("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    pkg("/usr/bin/busybox", "busybox-static"),
    pkg("/usr/bin/cpio", "cpio"),
    pkg("/usr/sbin/depmod", "kmod"),
    pkg("/usr/sbin/ipvsadm", "ipvsadm"),
    pkg("/usr/sbin/conntrack", "conntrack"),
    pkg("/usr/sbin/nft", "nftables"),
    pkg("/usr/sbin/ip", "iproute2"),
    pkg("/usr/sbin/xtables-legacy-multi", "iptables"),
];

/// Installs the packages whose files are missing (as root), or fails naming the exact command.
pub fn ensure_packages(wanted: &[HostPackage]) -> Result<()> {
    let mut missing: Vec<&str> = wanted
        .iter()
        .filter(|p| !Path::new(p.path).exists())
        .map(|p| p.package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!("apt-get install -y {}", missing.join(" "));
    if !is_root() {
        bail!("missing host packages; install them with: sudo apt-get update && sudo {install}");
    }
    println!("xtask: installing {}", missing.join(" "));
    run_apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq"];
    args.extend(missing.iter().copied());
    run_apt(&args)?;
    for p in wanted {
        if !Path::new(p.path).exists() {
            bail!("{} is still missing after `{install}`", p.path);
        }
    }
    Ok(())
}

fn run_apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed: {status}", args.join(" "));
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}
