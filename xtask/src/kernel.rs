//! The kernel the VM boots: Debian's cloud kernel (it has IPVS), fetched with the Debian package
//! client and cached under `target/`, or one given by `PROXIER_TEST_KERNEL` + `PROXIER_TEST_MODULES`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A bootable kernel and the modules built for it.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The compressed kernel image.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of this kernel.
    pub modules: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
}

const METAPACKAGE: &str = "linux-image-cloud-amd64";

/// Finds the kernel to boot: the override from the environment, or the cached Debian one.
pub fn locate(cache: &Path) -> Result<Kernel> {
    if let Some(vmlinuz) = std::env::var_os("PROXIER_TEST_KERNEL") {
        let modules = std::env::var_os("PROXIER_TEST_MODULES").context(
            "PROXIER_TEST_KERNEL is set but PROXIER_TEST_MODULES (its lib/modules dir) is not",
        )?;
        return from_override(PathBuf::from(vmlinuz), PathBuf::from(modules));
    }
    let package = current_package()?;
    let unpacked = cache.join(&package);
    if !unpacked.join("boot").is_dir() {
        download(cache, &package, &unpacked)?;
    }
    from_unpacked(&unpacked)
}

fn from_override(vmlinuz: PathBuf, modules: PathBuf) -> Result<Kernel> {
    if !vmlinuz.is_file() {
        bail!("PROXIER_TEST_KERNEL={} is not a file", vmlinuz.display());
    }
    // Accept either lib/modules or lib/modules/<release>.
    let modules = if modules.join("modules.order").exists() || modules.join("kernel").is_dir() {
        modules
    } else {
        single_subdir(&modules)?
    };
    let release = file_name(&modules)?;
    Ok(Kernel {
        vmlinuz,
        modules,
        release,
    })
}

fn from_unpacked(unpacked: &Path) -> Result<Kernel> {
    let modules = single_subdir(&unpacked.join("lib/modules"))?;
    let release = file_name(&modules)?;
    let vmlinuz = unpacked.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} is missing from the unpacked kernel", vmlinuz.display());
    }
    Ok(Kernel {
        vmlinuz,
        modules,
        release,
    })
}

/// The versioned package the cloud-kernel metapackage depends on right now.
fn current_package() -> Result<String> {
    if let Some(found) = cloud_kernel_dependency()? {
        return Ok(found);
    }
    // The package lists may not be there yet on a fresh machine.
    let status = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("running apt-get update")?;
    if !status.success() {
        bail!("apt-get update failed; cannot resolve {METAPACKAGE}");
    }
    cloud_kernel_dependency()?
        .with_context(|| format!("apt-cache knows no dependency of {METAPACKAGE}"))
}

fn cloud_kernel_dependency() -> Result<Option<String>> {
    let out = Command::new("apt-cache")
        .args(["depends", METAPACKAGE])
        .output()
        .context("running apt-cache")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_owned))
}

fn download(cache: &Path, package: &str, unpacked: &Path) -> Result<()> {
    fs::create_dir_all(cache)?;
    println!("xtask: apt-get download {package}");
    let status = Command::new("apt-get")
        .args(["download", "-qq", package])
        .current_dir(cache)
        .status()
        .context("running apt-get download")?;
    if !status.success() {
        bail!("apt-get download {package} failed");
    }
    let deb = fs::read_dir(cache)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|x| x == "deb")
                && file_name(p).is_ok_and(|n| n.starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("no .deb for {package} in {}", cache.display()))?;
    let staging = unpacked.with_extension("partial");
    let _ = fs::remove_dir_all(&staging);
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&staging)
        .status()
        .context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    fs::rename(&staging, unpacked)?;
    fs::remove_file(&deb)?;
    Ok(())
}

fn single_subdir(dir: &Path) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match dirs.len() {
        1 => Ok(dirs.remove(0)),
        n => bail!(
            "expected one kernel release in {}, found {n}",
            dir.display()
        ),
    }
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no usable file name", path.display()))
}
