//! Configuration: the parts of kube-proxy's `KubeProxyConfiguration`
//! (`kubeproxy.config.k8s.io/v1alpha1`) that the engine uses, plus proxier's own settings.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::error::Error;

/// The IPVS section of `KubeProxyConfiguration`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IpvsSection {
    /// `ipvs.scheduler` (empty = `rr`).
    pub scheduler: String,
}

/// `KubeProxyConfiguration` as read from YAML: known fields typed, the rest kept by name so
/// that the caller can warn about what proxier does not implement.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeProxyConfiguration {
    /// `ipvs`.
    pub ipvs: IpvsSection,
    /// `nodePortAddresses`: CIDRs, or `primary`.
    pub node_port_addresses: Vec<String>,
    /// `hostnameOverride`.
    pub hostname_override: String,
    /// Every other top-level field.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

impl KubeProxyConfiguration {
    /// Parses the YAML text of a configuration file.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        serde_yaml::from_str(text).map_err(|source| Error::Yaml {
            context: "KubeProxyConfiguration".to_owned(),
            source,
        })
    }

    /// Top-level fields that are set but that proxier does not implement (yet).
    pub fn unimplemented_fields(&self) -> Vec<&str> {
        const IGNORED_QUIETLY: &[&str] = &["apiVersion", "kind", "mode"];
        self.other
            .iter()
            .filter(|(k, v)| !IGNORED_QUIETLY.contains(&k.as_str()) && !v.is_null())
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// A `nodePortAddresses` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePortAddress {
    /// Node IPs inside this CIDR.
    Cidr {
        /// Network address.
        network: IpAddr,
        /// Prefix length.
        prefix: u8,
    },
    /// The node's primary IPs (its `InternalIP`s).
    Primary,
}

impl NodePortAddress {
    /// Parses `10.0.0.0/8`, `fd00::/64` or `primary`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Config {
            field: "nodePortAddresses",
            reason: format!("{text:?}: {reason}"),
        };
        if text == "primary" {
            return Ok(NodePortAddress::Primary);
        }
        let (ip, prefix) = text.split_once('/').ok_or_else(|| bad("not a CIDR"))?;
        let network: IpAddr = ip.parse().map_err(|_| bad("bad address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad("prefix too long"));
        }
        Ok(NodePortAddress::Cidr { network, prefix })
    }

    /// Whether a node IP is selected by this entry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (NodePortAddress::Primary, _) => true,
            (
                NodePortAddress::Cidr {
                    network: IpAddr::V4(n),
                    prefix,
                },
                IpAddr::V4(a),
            ) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (
                NodePortAddress::Cidr {
                    network: IpAddr::V6(n),
                    prefix,
                },
                IpAddr::V6(a),
            ) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Default base of the firewall marks proxier gives ETP=Local external-traffic services.
pub const DEFAULT_FWMARK_BASE: u32 = 0x0100_0000;
/// Number of firewall marks proxier may allocate from the base.
pub const FWMARK_COUNT: u32 = 0x0001_0000;

/// What the planner needs to know besides the cluster and the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// IPVS scheduler for every virtual server.
    pub scheduler: String,
    /// Which node IPs NodePorts open on (empty = all given node IPs).
    pub node_port_addresses: Vec<NodePortAddress>,
    /// The API server's NodePort range; node IP virtual servers with such a port are ours.
    pub node_port_range: (u16, u16),
    /// First firewall mark of proxier's range (`FWMARK_COUNT` marks).
    pub fwmark_base: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            scheduler: "rr".to_owned(),
            node_port_addresses: Vec::new(),
            node_port_range: (30000, 32767),
            fwmark_base: DEFAULT_FWMARK_BASE,
        }
    }
}

impl Config {
    /// The engine configuration a `KubeProxyConfiguration` asks for.
    pub fn from_kube_proxy(config: &KubeProxyConfiguration) -> Result<Self, Error> {
        let mut out = Config::default();
        if !config.ipvs.scheduler.is_empty() {
            out.scheduler = config.ipvs.scheduler.clone();
        }
        out.node_port_addresses = config
            .node_port_addresses
            .iter()
            .map(|a| NodePortAddress::parse(a))
            .collect::<Result<_, _>>()?;
        Ok(out)
    }

    /// The node IPs NodePorts open on, from the node's IPs.
    pub fn node_port_ips(&self, node_ips: &[IpAddr]) -> Vec<IpAddr> {
        node_ips
            .iter()
            .copied()
            .filter(|ip| {
                self.node_port_addresses.is_empty()
                    || self.node_port_addresses.iter().any(|a| a.contains(*ip))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kube_proxy_configuration_and_lists_unimplemented_fields() {
        let yaml = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                    mode: ipvs\nipvs:\n  scheduler: mh\nnodePortAddresses: [\"10.0.0.0/8\"]\n\
                    conntrack:\n  maxPerCore: 0\n";
        let kpc = KubeProxyConfiguration::from_yaml(yaml).unwrap();
        assert_eq!(kpc.unimplemented_fields(), vec!["conntrack"]);
        let config = Config::from_kube_proxy(&kpc).unwrap();
        assert_eq!(config.scheduler, "mh");
        let ips: Vec<IpAddr> = vec!["10.1.2.3".parse().unwrap(), "192.168.0.1".parse().unwrap()];
        assert_eq!(config.node_port_ips(&ips), vec![ips[0]]);
    }

    #[test]
    fn cidr_matching_and_parse_errors() {
        let v6 = NodePortAddress::parse("fd00::/64").unwrap();
        assert!(v6.contains("fd00::5".parse().unwrap()));
        assert!(!v6.contains("fd01::5".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all = NodePortAddress::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        assert!(NodePortAddress::parse("10.0.0.0/33").is_err());
        assert!(NodePortAddress::parse("ten/8").is_err());
        assert_eq!(
            NodePortAddress::parse("primary").unwrap(),
            NodePortAddress::Primary
        );
    }
}
