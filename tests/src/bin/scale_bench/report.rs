//! The scale bench's figures, its one table and issue 15's goal ratios.

use std::time::Duration;

/// Where the cluster comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `proxier run --source DIR` of YAML files.
    File,
    /// `proxier run --source DIR` of JSON files (`kind: List`, as `kubectl get -o json`
    /// writes them).
    JsonFile,
    /// `proxier run --kubeconfig …` against the fake API server.
    Kube,
}

impl SourceKind {
    /// The column label.
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::JsonFile => "json",
            Self::Kube => "kube",
        }
    }
}

/// What one size × source measured.
#[derive(Debug)]
pub struct Figures {
    /// Process start → "initial sync" logged.
    pub cold_start: Duration,
    /// `ipvsadm -R` of the same table (scaled from `restored` Services when fewer).
    pub restore: Duration,
    /// How many Services `ipvsadm -R` really restored.
    pub restored: usize,
    /// VmRSS after the initial sync.
    pub rss_start_kb: u64,
    /// VmRSS after the flips and ≥ 3 resyncs.
    pub rss_after_kb: u64,
    /// utime + stime over `idle_wall` (3 resyncs, no change).
    pub idle_cpu: Duration,
    /// The idle window.
    pub idle_wall: Duration,
    /// One `ipvsadm -Sn` of the table.
    pub dump: Duration,
    /// Event → kernel of each flip that arrived.
    pub latencies: Vec<Duration>,
    /// Flips that never arrived.
    pub lost: usize,
    /// Resyncs logged from the first flip to the RSS reading.
    pub resyncs_during_flips: usize,
}

impl Figures {
    /// The `q` quantile (nearest rank) of the latencies.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted.get(rank - 1).copied()
    }

    fn rss_growth(&self) -> f64 {
        (self.rss_after_kb as f64 / self.rss_start_kb as f64 - 1.0) * 100.0
    }

    fn idle_per_period(&self, sync_period: u64) -> Duration {
        let periods = self.idle_wall.as_secs_f64() / sync_period as f64;
        self.idle_cpu.div_f64(periods)
    }
}

/// One size × source.
pub struct Run {
    /// Services.
    pub size: usize,
    /// The source.
    pub source: SourceKind,
    /// What it measured.
    pub figures: Figures,
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3))
}

fn s(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// Prints the table (rows = figures, columns = size × source) and the goals.
pub fn print(runs: &[Run], sync_period: u64) {
    type Row = (&'static str, Box<dyn Fn(&Run) -> String>);
    let rows: Vec<Row> = vec![
        (
            "cold start: process start -> initial sync (s)",
            Box::new(|r| s(r.figures.cold_start)),
        ),
        (
            "ipvsadm -R of the same table (s; * = scaled from fewer)",
            Box::new(|r| {
                let mark = if r.figures.restored < r.size { "*" } else { "" };
                format!("{}{mark}", s(r.figures.restore))
            }),
        ),
        (
            "cold start / ipvsadm -R",
            Box::new(|r| {
                format!(
                    "{:.3}",
                    r.figures.cold_start.as_secs_f64() / r.figures.restore.as_secs_f64()
                )
            }),
        ),
        (
            "RSS after start (MB)",
            Box::new(|r| mb(r.figures.rss_start_kb)),
        ),
        (
            "RSS after flips + resyncs (MB)",
            Box::new(|r| mb(r.figures.rss_after_kb)),
        ),
        (
            "RSS growth (%)",
            Box::new(|r| format!("{:+.1}", r.figures.rss_growth())),
        ),
        (
            "idle CPU over 3 resyncs (% of a core)",
            Box::new(|r| {
                format!(
                    "{:.1}",
                    r.figures.idle_cpu.as_secs_f64() / r.figures.idle_wall.as_secs_f64() * 100.0
                )
            }),
        ),
        (
            "idle CPU per syncPeriod (s)",
            Box::new(move |r| s(r.figures.idle_per_period(sync_period))),
        ),
        ("ipvsadm -Sn (s)", Box::new(|r| s(r.figures.dump))),
        (
            "idle CPU per syncPeriod / ipvsadm -Sn",
            Box::new(move |r| {
                format!(
                    "{:.2}",
                    r.figures.idle_per_period(sync_period).as_secs_f64()
                        / r.figures.dump.as_secs_f64()
                )
            }),
        ),
        (
            "flips reaching the kernel (lost)",
            Box::new(|r| format!("{} ({})", r.figures.latencies.len(), r.figures.lost)),
        ),
        (
            "resyncs from first flip to RSS reading",
            Box::new(|r| r.figures.resyncs_during_flips.to_string()),
        ),
        (
            "event -> kernel p50 (ms)",
            Box::new(|r| ms(r.figures.quantile(0.5))),
        ),
        (
            "event -> kernel p99 (ms)",
            Box::new(|r| ms(r.figures.quantile(0.99))),
        ),
        (
            "event -> kernel max (ms)",
            Box::new(|r| ms(r.figures.quantile(1.0))),
        ),
    ];
    let mut header = "| figure |".to_owned();
    let mut rule = "|---|".to_owned();
    for run in runs {
        header.push_str(&format!(" {} x 10 {} |", run.size, run.source.name()));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    for (label, cell) in &rows {
        let cells: Vec<String> = runs.iter().map(cell).collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
    println!();
    goals(runs, sync_period);
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// Issue 15's goals per source, the largest size against the smallest.
fn goals(runs: &[Run], sync_period: u64) {
    for source in [SourceKind::File, SourceKind::JsonFile, SourceKind::Kube] {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.source == source).collect();
        let (Some(small), Some(large)) = (
            mine.iter().min_by_key(|r| r.size),
            mine.iter().max_by_key(|r| r.size),
        ) else {
            continue;
        };
        let (n0, n1, name) = (small.size, large.size, source.name());
        let base = small.figures.quantile(0.5);
        if n0 < n1 {
            if let (Some(base), Some(p50), Some(p99)) = (
                base,
                large.figures.quantile(0.5),
                large.figures.quantile(0.99),
            ) {
                let r50 = p50.as_secs_f64() / base.as_secs_f64();
                let r99 = p99.as_secs_f64() / base.as_secs_f64();
                println!(
                    "goal {name}: p50@{n1} / p50@{n0} = {r50:.2} (<= 1.5): {}",
                    verdict(r50 <= 1.5)
                );
                println!(
                    "goal {name}: p99@{n1} / p50@{n0} = {r99:.2} (<= 3): {}",
                    verdict(r99 <= 3.0)
                );
            }
        }
        let f = &large.figures;
        let rss = f.rss_start_kb as f64 / 1024.0;
        println!(
            "goal {name}: RSS after start @{n1} = {rss:.1} MB (<= 100): {}",
            verdict(rss <= 100.0)
        );
        let growth = f.rss_growth();
        let enough = f.latencies.len() + f.lost >= 100 && f.resyncs_during_flips >= 3;
        println!(
            "goal {name}: RSS growth @{n1} after {} flips and {} resyncs = {growth:+.1} % (<= 5){}: {}",
            f.latencies.len() + f.lost,
            f.resyncs_during_flips,
            if enough { "" } else { " [fewer than 100 flips / 3 resyncs]" },
            verdict(growth <= 5.0)
        );
        let idle = f.idle_per_period(sync_period).as_secs_f64() / f.dump.as_secs_f64();
        println!(
            "goal {name}: idle CPU per syncPeriod / ipvsadm -Sn @{n1} = {idle:.2} (<= 1): {}",
            verdict(idle <= 1.0)
        );
        let cold = f.cold_start.as_secs_f64() / f.restore.as_secs_f64();
        println!(
            "goal {name}: cold start / ipvsadm -R @{n1} = {cold:.3} (<= 0.2): {}",
            verdict(cold <= 0.2)
        );
    }
}
