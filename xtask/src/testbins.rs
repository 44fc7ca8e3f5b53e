//! Building test binaries.
//!
//! Host tests and VM tests share one build configuration: static-pie binaries for the one installed
//! target (`+crt-static`), so the binaries the host runs are the same kind the bare initramfs runs,
//! and dependencies are compiled once for both.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The only target installed on these machines; giving it explicitly keeps build scripts and
/// proc-macros free of the static flag.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The crate whose tests need a kernel with IPVS and therefore only run in the VM.
pub const KERNEL_TESTS_PACKAGE: &str = "proxier-kernel-tests";

/// A test binary to run in the VM.
#[derive(Debug, Clone)]
pub struct TestBinary {
    /// Name shown in reports: `<crate>::<test target>`.
    pub name: String,
    /// The executable on the host.
    pub path: PathBuf,
}

/// Output of a host `cargo test`, echoed to the terminal as it came.
pub struct HostRun {
    /// Everything the test harnesses printed on stdout.
    pub text: String,
    /// Whether cargo exited zero.
    pub success: bool,
}

/// `cargo <args> --target TARGET` with the static flag, run from the workspace root.
fn static_cargo(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(args)
        .args(["--target", TARGET]);
    cmd
}

/// Runs `cargo test --workspace` (minus the kernel suite) and returns what it printed.
pub fn cargo_test_host(root: &Path) -> Result<HostRun> {
    let mut cmd = static_cargo(
        root,
        &["test", "--workspace", "--exclude", KERNEL_TESTS_PACKAGE],
    );
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().context("running cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut text = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.wait()?;
    Ok(HostRun {
        text,
        success: status.success(),
    })
}

/// Where the guest finds the `proxier` binary (scenario tests and the demo run it).
pub const GUEST_PROXIER: &str = "/usr/local/bin/proxier";

/// Builds binary `bin` of `package` (release for benchmarks) and returns it.
pub fn build_static_bin(
    root: &Path,
    package: &str,
    bin: &str,
    release: bool,
) -> Result<TestBinary> {
    build_static_target(root, package, "--bin", bin, release)
}

/// Builds target `bin` of kind `kind_flag` (`--bin`, `--bench`) of `package`.
pub fn build_static_target(
    root: &Path,
    package: &str,
    kind_flag: &str,
    bin: &str,
    release: bool,
) -> Result<TestBinary> {
    let mut args = vec![
        "build",
        "--message-format=json",
        "--package",
        package,
        kind_flag,
        bin,
    ];
    if release {
        args.push("--release");
    }
    let mut cmd = static_cargo(root, &args);
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().context("running cargo build")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut found = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(&line?) else {
            continue;
        };
        if let Some(rendered) = message.pointer("/message/rendered").and_then(Value::as_str) {
            eprint!("{rendered}");
        }
        if message.pointer("/target/name").and_then(Value::as_str) == Some(bin) {
            if let Some(path) = message.get("executable").and_then(Value::as_str) {
                found = Some(TestBinary {
                    name: bin.to_owned(),
                    path: PathBuf::from(path),
                });
            }
        }
    }
    if !child.wait()?.success() {
        bail!("cargo build --bin {bin} failed");
    }
    found.with_context(|| format!("cargo built no executable named {bin}"))
}

/// Builds the kernel suite's test binaries (and the negative controls when asked) and lists them.
pub fn build_static(root: &Path, negative_control: bool) -> Result<Vec<TestBinary>> {
    let mut cmd = static_cargo(
        root,
        &[
            "test",
            "--no-run",
            "--message-format=json",
            "--package",
            KERNEL_TESTS_PACKAGE,
        ],
    );
    cmd.stdout(Stdio::piped());
    if negative_control {
        cmd.args(["--features", "negative-control"]);
    }
    let mut child = cmd.spawn().context("running cargo test --no-run")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut binaries = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(rendered) = message.pointer("/message/rendered").and_then(Value::as_str) {
            eprint!("{rendered}");
        }
        if let Some(binary) = test_binary(&message) {
            binaries.push(binary);
        }
    }
    if !child.wait()?.success() {
        bail!("cargo test --no-run failed");
    }
    binaries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(binaries)
}

/// A `compiler-artifact` message for a test executable, if this is one.
fn test_binary(message: &Value) -> Option<TestBinary> {
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    if !message.pointer("/profile/test")?.as_bool()? {
        return None;
    }
    let path = PathBuf::from(message.get("executable")?.as_str()?);
    let target = message.pointer("/target/name")?.as_str()?;
    // `path+file:///w/tests#proxier-kernel-tests@0.1.0`, `registry+...#name@1.0`, or the
    // older `name 0.1.0 (path+file:///w/tests)`.
    let id = message.get("package_id")?.as_str()?;
    let package = match id.rsplit_once('#') {
        Some((_, name_version)) => name_version.split('@').next()?,
        None => id.split(' ').next()?,
    };
    Some(TestBinary {
        name: format!("{package}::{target}"),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_test_executables_in_cargo_messages() {
        let message: Value = serde_json::from_str(
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#proxier-kernel-tests@0.1.0",
                "target":{"name":"smoke"},"profile":{"test":true},"executable":"/w/target/smoke-1"}"#,
        )
        .unwrap();
        let binary = test_binary(&message).unwrap();
        assert_eq!(binary.name, "proxier-kernel-tests::smoke");
        assert_eq!(binary.path, PathBuf::from("/w/target/smoke-1"));
    }

    #[test]
    fn skips_libraries_and_other_messages() {
        let lib: Value = serde_json::from_str(
            r#"{"reason":"compiler-artifact","package_id":"x","target":{"name":"x"},
                "profile":{"test":false},"executable":null}"#,
        )
        .unwrap();
        assert!(test_binary(&lib).is_none());
        let done: Value =
            serde_json::from_str(r#"{"reason":"build-finished","success":true}"#).unwrap();
        assert!(test_binary(&done).is_none());
    }
}
