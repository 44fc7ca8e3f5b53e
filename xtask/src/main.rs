//! Project automation for proxier.
//!
//! `cargo xtask test` is the one test command: host tests, then the real-kernel suite in a VM.
//! `cargo xtask vmtest [FILTER]` runs only the VM part. See the README for the rest.

mod api;
mod host;
mod image;
mod image_check;
mod initramfs;
mod kernel;
mod report;
mod testbins;
mod vm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::report::Tally;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test                     the public API listings, host tests (cargo test --workspace), then
                           the real-kernel VM suite
  api [--check]            rewrite each published crate's public-api.txt from its source
                           (--check: only report the ones that differ)
  vmtest [FILTER] [--negative-control]
                           only the VM suite; FILTER is passed to every test binary
  vmbench ipvs [SERVICES]  program SERVICES x 10 IPVS entries three ways in the VM and compare
  vmbench scale [SERVICES...]
                           the release binary at SERVICES x 10 endpoints (default 100 10000),
                           file and Kubernetes sources: cold start, RSS, idle CPU, event ->
                           kernel p50/p99 with resyncs running, issue 15's goals (VM: 4 GiB;
                           SCALE_FLIPS, SCALE_SYNC_PERIOD, SCALE_RESTORE_MAX, SCALE_SOURCES
                           are passed on)
  vmbench conntrack [SIZES]
                           flush 1000 of SIZES (default 100000,1000000) entries vs conntrack -D
  demo                     boot the VM, run proxier on examples/demo and show real traffic
  image [--out DIR] [--binary PATH] [--check]
                           write the OCI image layout (default target/oci/proxier, tag = the
                           crate version) of the static release binary, no container engine;
                           --binary packs a given static binary instead of building one;
                           --check builds it twice, compares, and reads it with skopeo and umoci

environment:
  PROXIER_TEST_KERNEL      path to a vmlinuz to boot instead of the Debian cloud kernel
  PROXIER_TEST_MODULES     its modules directory (the one holding modules.dep's KVER dir)
  PROXIER_VM_TIMEOUT       seconds one test binary may run in the VM (default 600)
  PROXIER_VM_NOCAPTURE     set: test output is printed as it happens (--nocapture)
";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        return Ok(ExitCode::FAILURE);
    };
    let rest = &args[1..];
    let tally = match command.as_str() {
        "test" => {
            if !rest.is_empty() {
                bail!("`cargo xtask test` takes no arguments; use `cargo xtask vmtest FILTER`");
            }
            let mut tally = api_check()?;
            tally.add(&host_tests()?);
            tally.add(&vm_tests(&VmTestOptions::default())?);
            tally
        }
        "vmtest" => vm_tests(&VmTestOptions::parse(rest)?)?,
        "vmbench" => return vm_bench(rest),
        "api" => return api_command(rest),
        "demo" => return vm_program("demo", &[], false),
        "image" => return build_image(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        other => bail!("unknown command `{other}`\n{USAGE}"),
    };
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(if tally.failed == 0 && tally.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo xtask image`: writes the OCI layout and prints its manifest digest.
fn build_image(args: &[String]) -> Result<ExitCode> {
    let root = workspace_root();
    let mut out = root.join("target/oci/proxier");
    let mut binary = None;
    let mut check = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = PathBuf::from(args.next().context("--out needs a directory")?),
            "--binary" => {
                binary = Some(PathBuf::from(args.next().context("--binary needs a path")?))
            }
            "--check" => check = true,
            other => bail!("unexpected argument `{other}`\n{USAGE}"),
        }
    }
    let binary = match binary {
        Some(path) => path,
        None => testbins::build_static_bin(&root, "proxier", "proxier", true)?.path,
    };
    let bytes = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    let tag = env!("CARGO_PKG_VERSION");
    let layout = image::image_layout(&bytes, tag)?;
    layout.write(&out)?;
    println!(
        "image: {} ({} bytes) -> oci:{}:{tag}\nimage: manifest digest {}",
        binary.display(),
        bytes.len(),
        out.display(),
        layout.manifest_digest
    );
    if check {
        image_check::check(&layout, &out, &bytes, tag)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of the VM suite.
#[derive(Debug, Default)]
struct VmTestOptions {
    /// libtest filter given to every test binary.
    filter: Option<String>,
    /// Also build and run the deliberately failing binaries that prove the runner reports failure.
    negative_control: bool,
}

impl VmTestOptions {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self::default();
        for arg in args {
            match arg.as_str() {
                "--negative-control" => options.negative_control = true,
                flag if flag.starts_with('-') => bail!("unknown flag `{flag}`\n{USAGE}"),
                filter if options.filter.is_none() => options.filter = Some(filter.to_owned()),
                extra => bail!("unexpected argument `{extra}`\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> PathBuf {
    // `cargo xtask` (cargo run) sets CARGO_MANIFEST_DIR for the process: the checkout it was
    // started in. The compile-time value is only a fallback: a binary built in another checkout
    // (a copied target dir) would otherwise build and test that other checkout.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// `cargo xtask api [--check]`.
fn api_command(args: &[String]) -> Result<ExitCode> {
    match args {
        [] => {
            api::write_all(&workspace_root())?;
            Ok(ExitCode::SUCCESS)
        }
        [check] if check == "--check" => Ok(if api_check()?.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        _ => bail!("usage: cargo xtask api [--check]"),
    }
}

/// The public API listings against the source: one pass or one failure.
fn api_check() -> Result<Tally> {
    println!("== public API listings (<crate>/public-api.txt) ==");
    let stale = api::stale(&workspace_root())?;
    if stale.is_empty() {
        println!("public API listings: all {} current", api::CRATES.len());
        return Ok(Tally {
            passed: 1,
            failed: 0,
        });
    }
    for krate in &stale {
        eprintln!(
            "xtask: {krate}'s public API differs from {krate}/public-api.txt; if the change is \
             on purpose run `cargo xtask api` and commit the listing (`git diff` shows it)"
        );
    }
    Ok(Tally {
        passed: 0,
        failed: 1,
    })
}

/// `cargo test --workspace` on the host, except the crate whose tests need the VM kernel.
fn host_tests() -> Result<Tally> {
    println!("== host tests: cargo test --workspace (kernel suite excluded) ==");
    let output = testbins::cargo_test_host(&workspace_root())?;
    let tally = report::tally_cargo_test(&output.text);
    if !output.success && tally.failed == 0 {
        // A build failure or a crashed harness prints no per-test failure: count it as one.
        return Ok(Tally {
            passed: tally.passed,
            failed: 1,
        });
    }
    Ok(tally)
}

fn vm_tests(options: &VmTestOptions) -> Result<Tally> {
    println!("== real-kernel tests in the VM ==");
    let root = workspace_root();
    host::ensure_packages(host::VM_PACKAGES)?;
    let binaries = testbins::build_static(&root, options.negative_control)
        .context("building the static test binaries for the VM")?;
    if binaries.is_empty() {
        bail!("no test binaries were built for the VM");
    }
    let proxier = testbins::build_static_bin(&root, "proxier", "proxier", false)
        .context("building the proxier binary for the VM")?;
    let kernel = kernel::locate(&root.join("target/vm-kernel"))?;
    let timeout = vm::binary_timeout()?;
    let payload = initramfs::Payload::tests(&binaries, options.filter.as_deref(), timeout)
        .with_file(&proxier.path, testbins::GUEST_PROXIER);
    let image = initramfs::build(&root.join("target/vm-initramfs"), &kernel, &payload)?;
    let run = vm::boot(
        &kernel,
        &image,
        vm::overall_timeout(timeout, binaries.len()),
    )?;
    let results = report::parse_console(&run.console, &payload.binary_names());
    report::print(&results);
    println!(
        "VM wall time, boot to power-off: {:.1} s",
        run.wall.as_secs_f64()
    );
    let mut tally = report::tally(&results);
    if run.timed_out {
        eprintln!("xtask: the VM did not power off in time and was killed");
        tally.failed += 1;
    }
    Ok(tally)
}

/// Runs a benchmark program of the kernel suite in the VM; its output is the report.
fn vm_bench(args: &[String]) -> Result<ExitCode> {
    match args.split_first() {
        Some((name, rest)) if name == "ipvs" => vm_program("ipvs_bench", rest, true),
        Some((name, rest)) if name == "conntrack" => vm_conntrack_bench(rest),
        Some((name, rest)) if name == "scale" => vm_scale_bench(rest),
        _ => bail!(
            "usage: cargo xtask vmbench ipvs [SERVICES] | scale [SERVICES...] | conntrack [SIZES]"
        ),
    }
}

/// Guest memory of the scale bench (the 10,000-service table and proxier beside it).
const SCALE_MEMORY_MB: u32 = 4096;

/// How long the scale bench may run unless `PROXIER_VM_TIMEOUT` says otherwise.
const SCALE_TIMEOUT_SECS: u64 = 3 * 3600;

/// The scale bench (`tests/src/bin/scale_bench`) in a VM with more memory; the `SCALE_*`
/// variables of the host are exported to it.
fn vm_scale_bench(args: &[String]) -> Result<ExitCode> {
    for size in args {
        size.parse::<usize>()
            .with_context(|| format!("`{size}` is not a number of services"))?;
    }
    let root = workspace_root();
    host::ensure_packages(host::VM_PACKAGES)?;
    let binary =
        testbins::build_static_bin(&root, testbins::KERNEL_TESTS_PACKAGE, "scale_bench", true)?;
    let proxier = testbins::build_static_bin(&root, "proxier", "proxier", true)?;
    let timeout = match std::env::var("PROXIER_VM_TIMEOUT") {
        Ok(_) => vm::binary_timeout()?,
        Err(_) => SCALE_TIMEOUT_SECS,
    };
    let exports: Vec<String> = [
        "SCALE_FLIPS",
        "SCALE_SYNC_PERIOD",
        "SCALE_RESTORE_MAX",
        "SCALE_SOURCES",
        "SCALE_LOCAL",
    ]
    .iter()
    .filter_map(|name| {
        let value = std::env::var(name).ok()?;
        value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ',')
            .then(|| format!("export {name}={value}"))
    })
    .collect();
    let payload = initramfs::Payload::program(&binary, args, timeout)
        .with_file(&proxier.path, testbins::GUEST_PROXIER)
        .with_setup(&exports.join("\n"));
    boot_program(&root, payload, timeout, SCALE_MEMORY_MB)
}

/// Boots the VM to run one program of the kernel suite (with the `proxier` binary beside it);
/// its output is the report, its exit status the verdict.
fn vm_program(bin: &str, args: &[String], release: bool) -> Result<ExitCode> {
    let root = workspace_root();
    host::ensure_packages(host::VM_PACKAGES)?;
    let binary = testbins::build_static_bin(&root, testbins::KERNEL_TESTS_PACKAGE, bin, release)?;
    let proxier = testbins::build_static_bin(&root, "proxier", "proxier", release)?;
    let timeout = vm::binary_timeout()?;
    let payload = initramfs::Payload::program(&binary, args, timeout)
        .with_file(&proxier.path, testbins::GUEST_PROXIER);
    boot_program(&root, payload, timeout, vm::DEFAULT_MEMORY_MB)
}

/// conntrack-gc's flush benchmark in the VM, where the table may be raised to 1,000,000+
/// entries (the build machines' own limit is read-only): our one-pass flush vs `conntrack -D`.
fn vm_conntrack_bench(args: &[String]) -> Result<ExitCode> {
    let sizes = args.first().map_or("100000,1000000", String::as_str);
    let root = workspace_root();
    host::ensure_packages(host::VM_PACKAGES)?;
    let binary =
        testbins::build_static_target(&root, "conntrack-gc", "--bench", "flush_vs_cli", true)?;
    let timeout = vm::binary_timeout()?;
    let payload = initramfs::Payload::program(&binary, &[], timeout).with_setup(&format!(
        "echo 2500000 > /proc/sys/net/netfilter/nf_conntrack_max\n\
         echo 262144 > /sys/module/nf_conntrack/parameters/hashsize\n\
         export CONNTRACK_BENCH_SIZES={sizes}"
    ));
    boot_program(&root, payload, timeout, vm::DEFAULT_MEMORY_MB)
}

/// Boots a one-program payload; the program's exit status is the verdict.
fn boot_program(
    root: &Path,
    payload: initramfs::Payload,
    timeout: u64,
    memory_mb: u32,
) -> Result<ExitCode> {
    let kernel = kernel::locate(&root.join("target/vm-kernel"))?;
    let image = initramfs::build(&root.join("target/vm-initramfs"), &kernel, &payload)?;
    let run = vm::boot_with_memory(&kernel, &image, vm::overall_timeout(timeout, 1), memory_mb)?;
    let results = report::parse_console(&run.console, &payload.binary_names());
    let tally = report::tally(&results);
    println!(
        "VM wall time, boot to power-off: {:.1} s",
        run.wall.as_secs_f64()
    );
    Ok(if tally.failed == 0 && !run.timed_out {
        ExitCode::SUCCESS
    } else {
        report::print(&results);
        ExitCode::FAILURE
    })
}
