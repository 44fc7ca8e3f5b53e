//! The initramfs: busybox, the kernel's netfilter/IPVS modules (+ depmod), the witness tools with
//! their shared libraries at the same paths, and a payload (test binaries, or a demo script).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::kernel::Kernel;
use crate::testbins::TestBinary;

/// Witness tools copied into the guest at their host paths, with the libraries `ldd` names.
const TOOLS: &[&str] = &[
    "/usr/sbin/ipvsadm",
    "/usr/sbin/conntrack",
    "/usr/sbin/nft",
    "/usr/sbin/ip",
    "/usr/sbin/xtables-legacy-multi",
    "/usr/sbin/xtables-nft-multi",
    "/usr/sbin/ipset",
];

/// Names the xtables multi-call binaries answer to.
const XTABLES_LINKS: &[(&str, &str)] = &[
    ("iptables-legacy", "xtables-legacy-multi"),
    ("iptables-legacy-save", "xtables-legacy-multi"),
    ("iptables-nft", "xtables-nft-multi"),
    ("iptables-legacy-restore", "xtables-legacy-multi"),
    ("ip6tables-legacy", "xtables-legacy-multi"),
    ("ip6tables-legacy-save", "xtables-legacy-multi"),
    ("ip6tables-legacy-restore", "xtables-legacy-multi"),
    ("iptables-nft-save", "xtables-nft-multi"),
    ("iptables-nft-restore", "xtables-nft-multi"),
    ("ip6tables-nft", "xtables-nft-multi"),
    ("ip6tables-nft-save", "xtables-nft-multi"),
    ("ip6tables-nft-restore", "xtables-nft-multi"),
];

/// Data directories the tools read at run time.
const TOOL_DATA: &[&str] = &["/usr/lib/x86_64-linux-gnu/xtables"];

/// Module subtrees (relative to `lib/modules/<release>/kernel`) the tests can need.
const MODULE_TREES: &[&str] = &[
    "net/netfilter",
    "net/ipv4",
    "net/ipv6",
    "net/sctp",
    "net/bridge",
    "lib",
    "drivers/net/dummy.ko",
    "drivers/net/veth.ko",
    "drivers/net/nlmon.ko",
];

/// Loaded at boot so the suite starts from a known kernel; everything else autoloads.
const BOOT_MODULES: &[&str] = &[
    "nf_conntrack",
    "nf_conntrack_netlink",
    "nf_tables",
    "ip_vs",
    "dummy",
    "veth",
];

/// Line the guest prints before a test binary runs.
pub const BEGIN_MARKER: &str = "@@PROXIER-BEGIN";
/// Line the guest prints after a test binary ends, followed by `rc=N`.
pub const END_MARKER: &str = "@@PROXIER-END";
/// Line the guest prints when the payload is finished.
pub const DONE_MARKER: &str = "@@PROXIER-DONE";

/// What the guest runs once it has booted and loaded modules.
pub struct Payload {
    /// Host files to copy in, and where they go in the guest.
    files: Vec<(PathBuf, String)>,
    /// Shell run by `/init` (busybox ash) after the common set-up.
    script: String,
    /// Names of the test binaries, in the order the script runs them.
    binary_names: Vec<String>,
}

impl Payload {
    /// Runs every test binary once, each under `timeout_secs`, with markers around it. A
    /// `filter` that names a binary runs all of its tests; otherwise it is libtest's name filter.
    pub fn tests(binaries: &[TestBinary], filter: Option<&str>, timeout_secs: u64) -> Self {
        let mut payload = Self {
            files: Vec::new(),
            script: String::new(),
            binary_names: Vec::new(),
        };
        for binary in binaries {
            // --show-output: the figures passing tests print (loss counts, witness lines)
            // appear in the log after the results, without splitting `test ... ok` lines.
            let mut args = vec!["--test-threads=1".to_owned(), "--show-output".to_owned()];
            if std::env::var_os("PROXIER_VM_NOCAPTURE").is_some() {
                args.push("--nocapture".to_owned());
            }
            if let Some(f) = filter.filter(|f| !binary.name.contains(f)) {
                args.push(f.to_owned());
            }
            payload.run(binary, &args, timeout_secs);
        }
        payload.finish()
    }

    /// Runs one program with `args` under `timeout_secs` (a VM benchmark, the demo).
    pub fn program(binary: &TestBinary, args: &[String], timeout_secs: u64) -> Self {
        let mut payload = Self {
            files: Vec::new(),
            script: String::new(),
            binary_names: Vec::new(),
        };
        payload.run(binary, args, timeout_secs);
        payload.finish()
    }

    fn run(&mut self, binary: &TestBinary, args: &[String], timeout_secs: u64) {
        let guest = format!("/tests/{}", binary.name.replace("::", "__"));
        let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        self.script.push_str(&format!(
            "echo; echo '{BEGIN_MARKER} {name}'\n\
             timeout -s KILL {timeout_secs} {guest} {args} 2>&1\n\
             rc=$?; echo; echo \"{END_MARKER} {name} rc=$rc\"\n",
            name = binary.name,
            args = args.join(" "),
        ));
        self.files.push((binary.path.clone(), guest));
        self.binary_names.push(binary.name.clone());
    }

    fn finish(mut self) -> Self {
        self.script.push_str(&format!("echo '{DONE_MARKER}'\n"));
        self
    }

    /// Runs `shell` (busybox ash) in the guest before the programs (sysctls of the VM itself).
    pub fn with_setup(mut self, shell: &str) -> Self {
        self.script = format!("{shell}\n{}", self.script);
        self
    }

    /// Also copies `host` into the guest at `guest` (the `proxier` binary).
    pub fn with_file(mut self, host: &Path, guest: &str) -> Self {
        self.files.push((host.to_owned(), guest.to_owned()));
        self
    }

    /// Names of the test binaries this payload runs.
    pub fn binary_names(&self) -> Vec<String> {
        self.binary_names.clone()
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Builds the initramfs for `kernel` with `payload` under `work` and returns the cpio archive.
pub fn build(work: &Path, kernel: &Kernel, payload: &Payload) -> Result<PathBuf> {
    let root = work.join("root");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "root",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    copy_file(Path::new("/usr/bin/busybox"), &root.join("bin/busybox"))?;
    add_modules(&root, kernel)?;
    add_tools(&root)?;
    for (host, guest) in &payload.files {
        copy_file(host, &root.join(guest.trim_start_matches('/')))?;
    }
    let init = root.join("init");
    fs::write(&init, init_script(payload))?;
    set_executable(&init)?;
    let archive = work.join("initramfs.cpio");
    pack(&root, &archive)?;
    Ok(archive)
}

fn init_script(payload: &Payload) -> String {
    let modules = BOOT_MODULES.join(" ");
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root RUST_BACKTRACE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /run/netns /var && ln -s /run /var/run
echo 1 > /proc/sys/kernel/printk
echo /sbin/modprobe > /proc/sys/kernel/modprobe
/usr/sbin/ip link set lo up
for m in {modules}; do modprobe $m || echo "@@PROXIER-MODPROBE-FAILED $m"; done
cd /tmp
{script}
sync
echo o > /proc/sysrq-trigger
sleep 10
"#,
        script = payload.script
    )
}

fn add_modules(root: &Path, kernel: &Kernel) -> Result<()> {
    let guest_modules = root.join("lib/modules").join(&kernel.release);
    for tree in MODULE_TREES {
        let from = kernel.modules.join("kernel").join(tree);
        if from.exists() {
            copy_tree(&from, &guest_modules.join("kernel").join(tree))?;
        }
    }
    for file in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let from = kernel.modules.join(file);
        if from.exists() {
            copy_file(&from, &guest_modules.join(file))?;
        }
    }
    let status = Command::new("/usr/sbin/depmod")
        .arg("-b")
        .arg(root)
        .arg(&kernel.release)
        .status()
        .context("running depmod")?;
    if !status.success() {
        bail!("depmod -b {} {} failed", root.display(), kernel.release);
    }
    Ok(())
}

fn add_tools(root: &Path) -> Result<()> {
    let mut libraries = BTreeSet::new();
    for tool in TOOLS {
        let tool = Path::new(tool);
        if !tool.exists() {
            bail!("{} is missing on the host", tool.display());
        }
        copy_file(tool, &guest_path(root, tool))?;
        libraries.extend(shared_libraries(tool)?);
    }
    for (link, target) in XTABLES_LINKS {
        symlink(target, root.join("usr/sbin").join(link))?;
    }
    for dir in TOOL_DATA {
        copy_tree(Path::new(dir), &guest_path(root, Path::new(dir)))?;
        for plugin in fs::read_dir(dir)? {
            libraries.extend(shared_libraries(&plugin?.path())?);
        }
    }
    for library in &libraries {
        copy_file(library, &guest_path(root, library))?;
    }
    Ok(())
}

/// The shared libraries (and the loader) `ldd` lists for `binary`.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .stderr(Stdio::null())
        .output()
        .context("running ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn guest_path(root: &Path, host: &Path) -> PathBuf {
    root.join(host.strip_prefix("/").unwrap_or(host))
}

/// Copies a file's content (following symlinks) and permissions.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if from.is_file() {
        return copy_file(from, to);
    }
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        copy_tree(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn pack(root: &Path, archive: &Path) -> Result<()> {
    let out = fs::File::create(archive)?;
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . -print0 | cpio --null --create --format=newc --owner=0:0 --quiet")
        .current_dir(root)
        .stdout(out)
        .status()
        .context("running cpio")?;
    if !status.success() {
        bail!("packing the initramfs with cpio failed");
    }
    Ok(())
}
