//! Booting the VM: qemu under software emulation (nested KVM fails on these machines), serial
//! console on stdout, a wall-clock limit, power-off from inside.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::kernel::Kernel;

/// What one boot printed and how it ended.
pub struct VmRun {
    /// Everything on the serial console, `\r` removed.
    pub console: String,
    /// Boot to power-off (or to the kill).
    pub wall: Duration,
    /// The VM hit the wall-clock limit or panicked and was killed.
    pub timed_out: bool,
}

const DEFAULT_BINARY_TIMEOUT_SECS: u64 = 600;

/// Seconds one test binary may run inside the VM (`PROXIER_VM_TIMEOUT`).
pub fn binary_timeout() -> Result<u64> {
    match std::env::var("PROXIER_VM_TIMEOUT") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("PROXIER_VM_TIMEOUT={v} is not a number of seconds")),
        Err(_) => Ok(DEFAULT_BINARY_TIMEOUT_SECS),
    }
}

/// The limit for a whole boot running `binaries` binaries of `per_binary` seconds each.
pub fn overall_timeout(per_binary: u64, binaries: usize) -> Duration {
    Duration::from_secs(per_binary * binaries as u64 + 120)
}

/// The VM's memory unless a command asks for more (3 GiB: the initramfs of every test binary
/// reached 735 MB, and 2 GiB failed with "Initramfs unpacking failed: write error").
pub const DEFAULT_MEMORY_MB: u32 = 3072;

/// Boots `kernel` with `initramfs`, echoes the console, and returns it when the guest powers off.
pub fn boot(kernel: &Kernel, initramfs: &Path, limit: Duration) -> Result<VmRun> {
    boot_with_memory(kernel, initramfs, limit, DEFAULT_MEMORY_MB)
}

/// [`boot`] with `memory_mb` of guest memory.
pub fn boot_with_memory(
    kernel: &Kernel,
    initramfs: &Path,
    limit: Duration,
    memory_mb: u32,
) -> Result<VmRun> {
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-m",
            &memory_mb.to_string(),
            "-smp",
            "2",
        ])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet loglevel=1 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line.replace('\r', "")).is_err() {
                break;
            }
        }
    });
    let mut console = String::new();
    let mut timed_out = false;
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match received.recv_timeout(left) {
            Ok(line) => {
                println!("{line}");
                let panicked = line.contains("Kernel panic");
                console.push_str(&line);
                console.push('\n');
                if panicked {
                    timed_out = true;
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    if timed_out {
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for qemu")?;
    if !timed_out && !status.success() {
        console.push_str(&format!("qemu exited with {status}\n"));
    }
    Ok(VmRun {
        console,
        wall: started.elapsed(),
        timed_out,
    })
}
