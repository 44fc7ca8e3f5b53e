//! Service and destination statistics (`IPVS_STATS_ATTR_*`), 32-bit and 64-bit flavours.

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, Parseable};

/// Which statistic a counter is (`IPVS_STATS_ATTR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsCounter {
    /// Connections scheduled.
    Connections,
    /// Incoming packets.
    InPackets,
    /// Outgoing packets.
    OutPackets,
    /// Incoming bytes.
    InBytes,
    /// Outgoing bytes.
    OutBytes,
    /// Current connection rate.
    ConnectionsPerSecond,
    /// Current incoming packet rate.
    InPacketsPerSecond,
    /// Current outgoing packet rate.
    OutPacketsPerSecond,
    /// Current incoming byte rate.
    InBytesPerSecond,
    /// Current outgoing byte rate.
    OutBytesPerSecond,
}

const COUNTERS: [StatsCounter; 10] = [
    StatsCounter::Connections,
    StatsCounter::InPackets,
    StatsCounter::OutPackets,
    StatsCounter::InBytes,
    StatsCounter::OutBytes,
    StatsCounter::ConnectionsPerSecond,
    StatsCounter::InPacketsPerSecond,
    StatsCounter::OutPacketsPerSecond,
    StatsCounter::InBytesPerSecond,
    StatsCounter::OutBytesPerSecond,
];

impl StatsCounter {
    fn kind(self) -> u16 {
        // The attribute numbers follow the order of COUNTERS, starting at 1.
        COUNTERS
            .iter()
            .position(|c| *c == self)
            .map_or(0, |i| i as u16 + 1)
    }

    fn from_kind(kind: u16) -> Option<Self> {
        COUNTERS.get(usize::from(kind).checked_sub(1)?).copied()
    }
}

/// One statistics attribute: a counter with its value and width on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsAttribute {
    /// A counter; `wide` means it was (or is to be) sent as 8 bytes.
    Counter {
        /// Which statistic.
        counter: StatsCounter,
        /// Its value.
        value: u64,
        /// 8 bytes on the wire (all of `STATS64`, and the byte counters of `STATS`).
        wide: bool,
    },
    /// Padding or an unknown attribute, kept as it came.
    Other(DefaultNla),
}

impl Nla for StatsAttribute {
    fn value_len(&self) -> usize {
        match self {
            StatsAttribute::Counter { wide: true, .. } => 8,
            StatsAttribute::Counter { wide: false, .. } => 4,
            StatsAttribute::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            StatsAttribute::Counter { counter, .. } => counter.kind(),
            StatsAttribute::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            StatsAttribute::Counter {
                value, wide: true, ..
            } => buffer[..8].copy_from_slice(&value.to_ne_bytes()),
            StatsAttribute::Counter { value, .. } => {
                // Narrow counters come from u32 attributes; truncation keeps the wire value.
                buffer[..4].copy_from_slice(&(*value as u32).to_ne_bytes())
            }
            StatsAttribute::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl StatsAttribute {
    /// Parses one statistics attribute; a counter of unexpected width is kept as `Other`.
    pub fn parse(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        let value = buf.value();
        let counter = StatsCounter::from_kind(buf.kind());
        Ok(match (counter, value.len()) {
            (Some(counter), 4) => StatsAttribute::Counter {
                counter,
                value: u64::from(u32::from_ne_bytes([value[0], value[1], value[2], value[3]])),
                wide: false,
            },
            (Some(counter), 8) => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(value);
                StatsAttribute::Counter {
                    counter,
                    value: u64::from_ne_bytes(bytes),
                    wide: true,
                }
            }
            _ => StatsAttribute::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Statistics of a virtual or real server, as plain numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connections scheduled.
    pub connections: u64,
    /// Incoming packets.
    pub in_packets: u64,
    /// Outgoing packets.
    pub out_packets: u64,
    /// Incoming bytes.
    pub in_bytes: u64,
    /// Outgoing bytes.
    pub out_bytes: u64,
    /// Current connection rate.
    pub connections_per_second: u64,
    /// Current incoming packet rate.
    pub in_packets_per_second: u64,
    /// Current outgoing packet rate.
    pub out_packets_per_second: u64,
    /// Current incoming byte rate.
    pub in_bytes_per_second: u64,
    /// Current outgoing byte rate.
    pub out_bytes_per_second: u64,
}

impl Stats {
    /// Collects counters from attributes (unknown ones are ignored).
    pub fn from_attributes(attributes: &[StatsAttribute]) -> Self {
        let mut stats = Stats::default();
        for attribute in attributes {
            let StatsAttribute::Counter { counter, value, .. } = attribute else {
                continue;
            };
            let slot = match counter {
                StatsCounter::Connections => &mut stats.connections,
                StatsCounter::InPackets => &mut stats.in_packets,
                StatsCounter::OutPackets => &mut stats.out_packets,
                StatsCounter::InBytes => &mut stats.in_bytes,
                StatsCounter::OutBytes => &mut stats.out_bytes,
                StatsCounter::ConnectionsPerSecond => &mut stats.connections_per_second,
                StatsCounter::InPacketsPerSecond => &mut stats.in_packets_per_second,
                StatsCounter::OutPacketsPerSecond => &mut stats.out_packets_per_second,
                StatsCounter::InBytesPerSecond => &mut stats.in_bytes_per_second,
                StatsCounter::OutBytesPerSecond => &mut stats.out_bytes_per_second,
            };
            *slot = *value;
        }
        stats
    }
}
