//! The sysctls IPVS mode needs, chosen deliberately and reported (incident I4), written through
//! conntrack-gc's [`HostFiles`] (procfs under a root path, so tests use a temp dir).
//!
//! - `net/ipv4/vs/conntrack = 1`: IPVS connections get conntrack entries, so our masquerade
//!   rule applies and UDP flows of a removed endpoint can be flushed over ctnetlink.
//! - `net/ipv4/vs/expire_nodest_conn = 1`: packets of a connection whose real server was deleted
//!   expire it at once, so the client's retry is scheduled to a live server.
//! - `net/ipv4/vs/expire_quiescent_template = 1`: persistence templates pointing at a weight-0
//!   server expire, so sticky clients move off a draining pod.
//! - `net/ipv4/vs/conn_reuse_mode`: 1 (reschedule a new connection that reuses a source port)
//!   on kernels >= 5.9, where reuse no longer costs a one-second delay; on older kernels 0 as
//!   kube-proxy does, with a warning: there a reused port can still land on a draining server,
//!   but never on a deleted one (we delete real servers as soon as their endpoint is gone).
//! - `net/ipv4/ip_forward = 1`.
//! - with `ipvs.strictARP`: `arp_ignore = 1`, `arp_announce = 2` (VIPs on the dummy interface are
//!   not answered for on other interfaces, for MetalLB-style load balancers).

use conntrack_gc::HostFiles;

/// One sysctl we want, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    /// Path relative to the filesystem root (`proc/sys/...`).
    pub path: &'static str,
    /// The value we want.
    pub value: u32,
    /// Why, for the log.
    pub reason: &'static str,
}

/// What happened to one sysctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlChange {
    /// The sysctl.
    pub sysctl: Sysctl,
    /// The value found before (None if unreadable).
    pub before: Option<u32>,
    /// Whether we wrote it.
    pub written: bool,
    /// An error reading or writing it.
    pub error: Option<String>,
}

/// The running kernel's release (`uname -r`, e.g. `6.1.0-56-cloud-amd64`). Every container on
/// the node shares the kernel, so this needs no host mount.
pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// Parses `6.1.0-56-cloud-amd64` into (6, 1).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The sysctls for a kernel `release`, with strict ARP or not.
pub fn wanted_sysctls(release: &str, strict_arp: bool) -> Vec<Sysctl> {
    let reuse = match kernel_version(release) {
        Some(version) if version >= (5, 9) => Sysctl {
            path: "proc/sys/net/ipv4/vs/conn_reuse_mode",
            value: 1,
            reason: "kernel >= 5.9: reschedule reused source ports without delay",
        },
        _ => Sysctl {
            path: "proc/sys/net/ipv4/vs/conn_reuse_mode",
            value: 0,
            reason:
                "kernel < 5.9: mode 1 delays reused ports by 1 s; reuse may hit a draining server",
        },
    };
    let mut sysctls = vec![
        Sysctl {
            path: "proc/sys/net/ipv4/vs/conntrack",
            value: 1,
            reason: "conntrack entries for IPVS connections (masquerade, UDP flush)",
        },
        Sysctl {
            path: "proc/sys/net/ipv4/vs/expire_nodest_conn",
            value: 1,
            reason: "connections of a deleted real server expire at once",
        },
        Sysctl {
            path: "proc/sys/net/ipv4/vs/expire_quiescent_template",
            value: 1,
            reason: "persistence templates of weight-0 servers expire",
        },
        reuse,
        Sysctl {
            path: "proc/sys/net/ipv4/ip_forward",
            value: 1,
            reason: "forward to endpoints on other nodes",
        },
    ];
    if strict_arp {
        sysctls.push(Sysctl {
            path: "proc/sys/net/ipv4/conf/all/arp_ignore",
            value: 1,
            reason: "ipvs.strictARP",
        });
        sysctls.push(Sysctl {
            path: "proc/sys/net/ipv4/conf/all/arp_announce",
            value: 2,
            reason: "ipvs.strictARP",
        });
    }
    sysctls
}

/// Writes each sysctl that differs; returns what happened to each (writes are logged).
pub fn apply_sysctls(files: &dyn HostFiles, sysctls: &[Sysctl]) -> Vec<SysctlChange> {
    sysctls
        .iter()
        .map(|sysctl| {
            let before = files
                .read(sysctl.path)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            let mut change = SysctlChange {
                sysctl: sysctl.clone(),
                before,
                written: false,
                error: None,
            };
            if before != Some(sysctl.value) {
                match files.write(sysctl.path, &sysctl.value.to_string()) {
                    Ok(()) => change.written = true,
                    Err(e) => change.error = Some(e.to_string()),
                }
            }
            tracing::info!(
                sysctl = sysctl.path,
                before = ?change.before,
                wanted = sysctl.value,
                written = change.written,
                error = ?change.error,
                reason = sysctl.reason,
                "sysctl"
            );
            change
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use conntrack_gc::FsRoot;

    fn fake_root(values: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, value) in values {
            let file = dir.path().join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, value).unwrap();
        }
        dir
    }

    #[test]
    fn the_kernel_release_is_the_running_kernels() {
        let release = kernel_release();
        assert!(kernel_version(&release).is_some(), "{release:?}");
        let procfs = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(release, procfs.trim());
    }

    #[test]
    fn conn_reuse_mode_follows_the_kernel_version() {
        let mode = |release| {
            wanted_sysctls(release, false)
                .into_iter()
                .find(|s| s.path.ends_with("conn_reuse_mode"))
                .unwrap()
                .value
        };
        assert_eq!(mode("6.1.0-56-cloud-amd64"), 1);
        assert_eq!(mode("5.9.0"), 1);
        assert_eq!(mode("5.4.0-150-generic"), 0);
        assert_eq!(mode("4.19.0"), 0);
        assert_eq!(kernel_version("6.18.44-fc-v595"), Some((6, 18)));
    }

    #[test]
    fn only_differing_values_are_written() {
        let dir = fake_root(&[
            ("proc/sys/net/ipv4/vs/conntrack", "1\n"),
            ("proc/sys/net/ipv4/vs/expire_nodest_conn", "0\n"),
            ("proc/sys/net/ipv4/vs/expire_quiescent_template", "0\n"),
            ("proc/sys/net/ipv4/vs/conn_reuse_mode", "0\n"),
            ("proc/sys/net/ipv4/ip_forward", "1\n"),
        ]);
        let changes = apply_sysctls(&FsRoot::new(dir.path()), &wanted_sysctls("6.1.0", false));
        let written: Vec<_> = changes
            .iter()
            .filter(|c| c.written)
            .map(|c| c.sysctl.path)
            .collect();
        assert_eq!(
            written,
            [
                "proc/sys/net/ipv4/vs/expire_nodest_conn",
                "proc/sys/net/ipv4/vs/expire_quiescent_template",
                "proc/sys/net/ipv4/vs/conn_reuse_mode"
            ]
        );
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("proc/sys/net/ipv4/vs/conn_reuse_mode").trim(), "1");
        assert_eq!(read("proc/sys/net/ipv4/vs/conntrack"), "1\n", "untouched");
    }

    #[test]
    fn a_missing_sysctl_is_reported_not_created() {
        let dir = fake_root(&[("proc/sys/net/ipv4/ip_forward", "0")]);
        let changes = apply_sysctls(&FsRoot::new(dir.path()), &wanted_sysctls("6.1.0", true));
        let missing = changes
            .iter()
            .find(|c| c.sysctl.path.ends_with("vs/conntrack"))
            .unwrap();
        assert!(missing.error.is_some() && !missing.written && missing.before.is_none());
        assert!(!dir.path().join("proc/sys/net/ipv4/vs/conntrack").exists());
        assert!(changes
            .iter()
            .any(|c| c.sysctl.path.ends_with("ip_forward") && c.written));
    }
}
