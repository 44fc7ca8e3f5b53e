//! The label sets, bucket layouts and scrape-time collectors of [`super::metrics`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use netlink_ipvs::Family;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, MetricEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family as Labelled;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::dataplane::kernel::KernelCounters;

/// The `ip_family` label value, as kube-proxy writes `v1.IPFamily`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelValue)]
pub(super) enum IpFamily {
    IPv4,
    IPv6,
}

impl From<Family> for IpFamily {
    fn from(family: Family) -> Self {
        match family {
            Family::V4 => IpFamily::IPv4,
            Family::V6 => IpFamily::IPv6,
        }
    }
}

impl From<IpFamily> for Family {
    fn from(label: IpFamily) -> Self {
        match label {
            IpFamily::IPv4 => Family::V4,
            IpFamily::IPv6 => Family::V6,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ByFamily {
    pub(super) ip_family: IpFamily,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ByPolicy {
    pub(super) traffic_policy: &'static str,
    pub(super) ip_family: IpFamily,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ByCode {
    pub(super) code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ByState {
    pub(super) state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ByReason {
    pub(super) reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ByOperation {
    pub(super) operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ByLeftoverKind {
    pub(super) kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct BySizing {
    pub(super) knob: String,
    pub(super) decision: String,
}

pub(super) type FloatGauge = Gauge<f64, AtomicU64>;
pub(super) type Histograms = Labelled<ByFamily, Histogram, fn() -> Histogram>;

/// kube-proxy's sync duration buckets: `ExponentialBuckets(0.001, 2, 15)`.
pub(super) fn sync_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// kube-proxy's network programming buckets: 0.25 s, 0.5 s, 1..59 s, 60..115 s by 5 s,
/// 2..5 min by 30 s.
pub(super) fn network_programming_histogram() -> Histogram {
    let mut bounds = vec![0.25, 0.5];
    bounds.extend((1..=59).map(f64::from));
    bounds.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    bounds.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    Histogram::new(bounds)
}

/// Values read at scrape time: the conntrack fill level and the kernel dataplane's counters.
#[derive(Debug)]
pub(super) struct Readings {
    /// Conntrack fill ratio as f64 bits (NaN = never read).
    pub(super) conntrack_fill_ratio: AtomicU64,
    pub(super) kernel: OnceLock<Arc<KernelCounters>>,
}

impl Collector for Readings {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let ratio = f64::from_bits(self.conntrack_fill_ratio.load(Ordering::Relaxed));
        if !ratio.is_nan() {
            let gauge = ConstGauge::new(ratio);
            gauge.encode(encoder.encode_descriptor(
                "proxier_conntrack_fill_ratio",
                "nf_conntrack_count / nf_conntrack_max",
                None,
                gauge.metric_type(),
            )?)?;
        }
        let read = |pick: fn(&KernelCounters) -> &AtomicU64| {
            self.kernel
                .get()
                .map_or(0, |k| pick(k).load(Ordering::Relaxed))
        };
        for (name, help, value) in [
            (
                "proxier_conntrack_entries_flushed",
                "Conntrack entries deleted for removed endpoints and services",
                read(|k| &k.conntrack_flushed),
            ),
            (
                "proxier_ipvs_dump_skipped_virtual_servers",
                "Virtual servers left out of an IPVS dump (unreadable or vanished mid-dump)",
                read(|k| &k.ipvs_dump_skipped),
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
/// A counter whose cumulative value is kept elsewhere (set, never reset).
#[derive(Debug, Clone)]
pub(super) struct ConstCounterCell(pub(super) Gauge);

impl TypedMetric for ConstCounterCell {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ConstCounterCell {
    fn encode(&self, encoder: MetricEncoder) -> std::fmt::Result {
        let value = u64::try_from(self.0.get()).unwrap_or(0);
        ConstCounter::new(value).encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}
