//! The `process_*` metrics client_golang's process collector exports (CPU time, memory, file
//! descriptors, start time), read from `/proc/self` at every scrape, and `proxier_build_info`.

use std::path::Path;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// One reading of the process's resource use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time in seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub resident_bytes: f64,
    /// Virtual memory size in bytes.
    pub virtual_bytes: f64,
    /// Start time in seconds since the epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Parses `/proc/self/stat` (`stat`) with the boot time (`btime` of `/proc/stat`), the
    /// clock tick rate and the page size. `None` when a field is missing.
    pub fn parse(
        stat: &str,
        boot_time: u64,
        ticks_per_second: u64,
        page_size: u64,
    ) -> Option<Self> {
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        // `rest` starts at field 3 (state); proc(5) numbers fields from 1.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        let ticks = ticks_per_second.max(1) as f64;
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            virtual_bytes: field(23)? as f64,
            resident_bytes: (field(24)? * page_size) as f64,
            start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
        })
    }

    /// Reads this process's stats from `proc` (`/proc`).
    pub fn read(proc: &Path) -> Option<Self> {
        let stat = std::fs::read_to_string(proc.join("self/stat")).ok()?;
        let boot = std::fs::read_to_string(proc.join("stat")).ok()?;
        let boot_time = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Self::parse(
            &stat,
            boot_time,
            rustix::param::clock_ticks_per_second(),
            rustix::param::page_size() as u64,
        )
    }
}

/// The soft limit on open files from `/proc/self/limits` (`None` = unlimited or unreadable).
pub fn max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The `process_*` collector, reading `/proc` at every scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    proc: std::path::PathBuf,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self {
            proc: "/proc".into(),
        }
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        if let Some(stats) = ProcessStats::read(&self.proc) {
            let cpu = ConstCounter::new(stats.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                stats.resident_bytes,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stats.virtual_bytes,
            )?;
            gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                stats.start_time_seconds,
            )?;
        }
        if let Ok(fds) = std::fs::read_dir(self.proc.join("self/fd")) {
            let open = fds.count() as f64;
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                open,
            )?;
        }
        let limits = std::fs::read_to_string(self.proc.join("self/limits")).unwrap_or_default();
        if let Some(max) = max_fds(&limits) {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max as f64,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_read_after_the_command_name() {
        // Captured from `cat /proc/self/stat` (command name with a space and a parenthesis).
        let stat = "4242 (prox (ier) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 150 0 0 20 0 \
                    3 0 90000 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 \
                    1 0 0 0 0 0";
        let stats = ProcessStats::parse(stat, 1_700_000_000, 100, 4096).unwrap();
        assert_eq!(stats.cpu_seconds, 4.0);
        assert_eq!(stats.virtual_bytes, 123_456_789.0);
        assert_eq!(stats.resident_bytes, 2048.0 * 4096.0);
        assert_eq!(stats.start_time_seconds, 1_700_000_900.0);
        assert_eq!(ProcessStats::parse("4242 (x", 0, 100, 4096), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_fds(limits), Some(1024));
        assert_eq!(max_fds("Max open files  unlimited unlimited files"), None);
    }

    #[test]
    fn this_process_is_read_from_proc() {
        let stats = ProcessStats::read(Path::new("/proc")).unwrap();
        assert!(stats.resident_bytes > 0.0 && stats.virtual_bytes >= stats.resident_bytes);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            stats.start_time_seconds <= now + 1.0
                && stats.start_time_seconds > now - 86_400.0 * 365.0
        );
    }
}
