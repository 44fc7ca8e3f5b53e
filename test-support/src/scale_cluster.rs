//! The cluster of the scale benchmarks (`cargo xtask vmbench scale`, the sources' criterion
//! benches): `services` ClusterIP Services (TCP port 80 → 8080) with one EndpointSlice of
//! `per_service` endpoints each, rendered three ways — YAML files for
//! `proxier run --source DIR` (at most 100 files), object templates for the fake API server,
//! and the `ipvsadm -R` text of the same IPVS table. A flip turns endpoint 0 of one Service
//! ready ⇄ terminating (still serving: weight 1 ⇄ 0 in the kernel).
//!
//! Where the pods run: by default the endpoints are spread round-robin over [`CLUSTER_NODES`]
//! nodes, of which `node-a` (proxier's `--node`) is one, so at 10,000 × 10 the node under test
//! runs 100 of them — a real node's share (the kubelet's default `maxPods` is 110). Only those
//! are local to proxier (the hairpin set, `internalTrafficPolicy: Local`).
//! [`ScaleCluster::all_local`] puts every endpoint on `node-a` instead: the worst case for the
//! per-endpoint packet rules, which no real node reaches.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::fake_api::{node, FakeApi};
use crate::yaml::{node_name, service_yaml, slice_yaml, write_atomically, Endpoint};

/// The Services' port.
pub const PORT: u16 = 80;
/// The endpoints' port.
pub const TARGET_PORT: u16 = 8080;
/// At most this many files hold the cluster (100 files of 100 Services at 10,000).
pub const MAX_FILES: usize = 100;
/// The node the endpoints run on (and proxier's `--node`).
pub const NODE: &str = "node-a";
/// How many nodes the endpoints are spread over by default (`node-a` and `node-1…`).
pub const CLUSTER_NODES: u16 = 1_000;

/// The generated cluster and which Services have endpoint 0 terminating.
#[derive(Debug, Clone)]
pub struct ScaleCluster {
    per_service: usize,
    /// The endpoints run on nodes `0..nodes` (0 is `node-a`).
    nodes: u16,
    /// Files are JSON (`kind: List`, as `kubectl get -o json` writes) instead of YAML.
    json: bool,
    terminating: Vec<bool>,
}

impl ScaleCluster {
    /// `services` Services × `per_service` ready endpoints (at most 16 per Service), spread over
    /// [`CLUSTER_NODES`] nodes.
    pub fn new(services: usize, per_service: usize) -> Self {
        assert!(
            (1..=16).contains(&per_service),
            "1..=16 endpoints per Service"
        );
        Self {
            per_service,
            nodes: CLUSTER_NODES,
            json: false,
            terminating: vec![false; services],
        }
    }

    /// The same cluster with every endpoint on `node-a`, the node under test.
    pub fn all_local(self) -> Self {
        Self { nodes: 1, ..self }
    }

    /// The same cluster written as JSON files (`part-NNN.json`, one `List` each).
    pub fn json_files(self) -> Self {
        Self { json: true, ..self }
    }

    /// The node endpoint `j` of Service `i` runs on (0 is `node-a`; see
    /// [`crate::yaml::node_name`]).
    pub fn node_of(&self, i: usize, j: usize) -> u16 {
        let spread = (i * self.per_service + j) % usize::from(self.nodes);
        // Below `self.nodes`, a u16.
        spread as u16
    }

    /// How many endpoints run on `node-a`.
    pub fn local_endpoints(&self) -> usize {
        let all = self.services() * self.per_service;
        all.div_ceil(usize::from(self.nodes))
    }

    /// How many Services.
    pub fn services(&self) -> usize {
        self.terminating.len()
    }

    /// Endpoints per Service.
    pub fn per_service(&self) -> usize {
        self.per_service
    }

    /// Service `i`'s name.
    pub fn name(i: usize) -> String {
        format!("s{i:05}")
    }

    /// Service `i`'s cluster IP: 10.96.0.1 + i.
    pub fn vip(i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + index(i))
    }

    /// Endpoint `j` of Service `i`: 10.128.0.1 + 16 i + j.
    pub fn endpoint(i: usize, j: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 1)) + index(i * 16 + j))
    }

    /// Toggles endpoint 0 of Service `i` ready ⇄ terminating; returns the IPVS weight it must
    /// now have (0 terminating, 1 ready).
    pub fn flip(&mut self, i: usize) -> u32 {
        self.terminating[i] = !self.terminating[i];
        self.weight(i)
    }

    /// The IPVS weight endpoint 0 of Service `i` has in the cluster as it is.
    pub fn weight(&self, i: usize) -> u32 {
        u32::from(!self.terminating[i])
    }

    fn endpoints(&self, i: usize) -> Vec<Endpoint> {
        (0..self.per_service)
            .map(|j| {
                let ip = Self::endpoint(i, j).to_string();
                let endpoint = if j == 0 && self.terminating[i] {
                    Endpoint::terminating(&ip)
                } else {
                    Endpoint::ready(&ip)
                };
                Endpoint {
                    node: self.node_of(i, j),
                    ..endpoint
                }
            })
            .collect()
    }

    /// How many files hold the cluster.
    pub fn files(&self) -> usize {
        self.services().clamp(1, MAX_FILES)
    }

    /// The file holding Service `i`.
    pub fn file_of(&self, i: usize) -> usize {
        i * self.files() / self.services()
    }

    /// File `f`'s name.
    pub fn file_name(&self, f: usize) -> String {
        format!("part-{f:03}.{}", if self.json { "json" } else { "yaml" })
    }

    /// File `f`'s text: its Services and their EndpointSlices.
    pub fn file_text(&self, f: usize) -> String {
        let services = (0..self.services()).filter(|i| self.file_of(*i) == f);
        if self.json {
            let items: Vec<String> = services
                .flat_map(|i| [Self::service_json(i), self.slice_json(i)])
                .collect();
            return format!(
                r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
                items.join(",\n")
            );
        }
        let mut text = String::new();
        for i in services {
            let name = Self::name(i);
            let vip = Self::vip(i).to_string();
            text.push_str(&service_yaml(
                &name,
                &vip,
                &[("http", "TCP", PORT, TARGET_PORT, None)],
            ));
            text.push_str("---\n");
            text.push_str(&slice_yaml(
                &name,
                &[("http", "TCP", TARGET_PORT)],
                &self.endpoints(i),
            ));
            text.push_str("---\n");
        }
        text
    }

    /// Writes every file into `dir`.
    pub fn write_files(&self, dir: &Path) {
        for f in 0..self.files() {
            write_atomically(&dir.join(self.file_name(f)), &self.file_text(f));
        }
    }

    /// Replaces the file holding Service `i` (a temporary file renamed over it).
    pub fn rewrite_file_of(&self, dir: &Path, i: usize) {
        let f = self.file_of(i);
        write_atomically(&dir.join(self.file_name(f)), &self.file_text(f));
    }

    /// Service `i` as a fake API server template.
    pub fn service_json(i: usize) -> String {
        let name = Self::name(i);
        let ip = Self::vip(i);
        format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}","namespace":"default","resourceVersion":"RV"}},"spec":{{"type":"ClusterIP","clusterIP":"{ip}","clusterIPs":["{ip}"],"ports":[{{"name":"http","port":{PORT},"protocol":"TCP","targetPort":{TARGET_PORT}}}]}}}}"#
        )
    }

    /// The name of Service `i`'s EndpointSlice.
    pub fn slice_name(i: usize) -> String {
        format!("{}-eps", Self::name(i))
    }

    /// Service `i`'s EndpointSlice as a fake API server template.
    pub fn slice_json(&self, i: usize) -> String {
        let name = Self::name(i);
        let endpoints: Vec<String> = self
            .endpoints(i)
            .iter()
            .map(|e| {
                format!(
                    r#"{{"addresses":["{}"],"conditions":{{"ready":{},"serving":{},"terminating":{}}},"nodeName":"{}"}}"#,
                    e.ip,
                    e.ready,
                    e.serving,
                    e.terminating,
                    node_name(e.node)
                )
            })
            .collect();
        format!(
            r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","addressType":"IPv4","metadata":{{"name":"{name}-eps","namespace":"default","resourceVersion":"RV","labels":{{"kubernetes.io/service-name":"{name}"}}}},"endpoints":[{}],"ports":[{{"name":"http","port":{TARGET_PORT},"protocol":"TCP"}}]}}"#,
            endpoints.join(",")
        )
    }

    /// Loads the whole cluster (and Node `node-a` at 10.0.1.1) into `api` without watch events.
    pub fn load_into(&self, api: &FakeApi) {
        api.load(
            "services",
            (0..self.services()).map(|i| (Self::name(i), Self::service_json(i))),
        );
        api.load(
            "endpointslices",
            (0..self.services()).map(|i| (Self::slice_name(i), self.slice_json(i))),
        );
        api.put("nodes", NODE, &node(NODE, "10.0.1.1"));
    }

    /// Sends Service `i`'s EndpointSlice as it is now as one MODIFIED watch event.
    pub fn publish(&self, api: &FakeApi, i: usize) {
        api.put("endpointslices", &Self::slice_name(i), &self.slice_json(i));
    }

    /// The `ipvsadm -R` input creating the IPVS table of the first `count` Services (what
    /// `ipvsadm -Sn` prints for it: virtual servers, then their real servers, masquerading,
    /// round robin, the weights of the cluster as it is).
    pub fn restore_text(&self, count: usize) -> String {
        let count = count.min(self.services());
        let mut text = String::new();
        for i in 0..count {
            let _ = writeln!(text, "-A -t {}:{PORT} -s rr", Self::vip(i));
        }
        for i in 0..count {
            for j in 0..self.per_service {
                let weight = if j == 0 { self.weight(i) } else { 1 };
                let _ = writeln!(
                    text,
                    "-a -t {}:{PORT} -r {}:{TARGET_PORT} -m -w {weight}",
                    Self::vip(i),
                    Self::endpoint(i, j)
                );
            }
        }
        text
    }
}

/// `i` as an address offset (the cluster stays far below 2^24 addresses).
fn index(i: usize) -> u32 {
    u32::try_from(i).expect("a cluster of fewer than 2^32 addresses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_split_the_services_evenly_and_a_flip_changes_one_file() {
        let mut cluster = ScaleCluster::new(10_000, 10);
        assert_eq!(cluster.files(), 100);
        assert_eq!(cluster.file_of(0), 0);
        assert_eq!(cluster.file_of(99), 0);
        assert_eq!(cluster.file_of(100), 1);
        assert_eq!(cluster.file_of(9_999), 99);
        let before: Vec<String> = (0..3).map(|f| cluster.file_text(f)).collect();
        assert_eq!(before[1].matches("kind: Service\n").count(), 100);
        assert_eq!(cluster.flip(150), 0);
        assert_eq!(cluster.file_text(0), before[0]);
        assert_ne!(cluster.file_text(1), before[1]);
        assert!(cluster.file_text(1).contains("terminating: true"));
        assert_eq!(cluster.flip(150), 1);
        assert_eq!(cluster.file_text(1), before[1]);
        let small = ScaleCluster::new(7, 10);
        assert_eq!(small.files(), 7);
        assert_eq!((0..7).map(|i| small.file_of(i)).max(), Some(6));
    }

    #[test]
    fn endpoints_spread_over_the_cluster_unless_all_local() {
        let cluster = ScaleCluster::new(10_000, 10);
        assert_eq!(cluster.local_endpoints(), 100);
        let local = (0..10_000)
            .flat_map(|i| (0..10).map(move |j| (i, j)))
            .filter(|(i, j)| cluster.node_of(*i, *j) == 0)
            .count();
        assert_eq!(local, 100);
        let text = cluster.file_text(0);
        assert_eq!(text.matches("nodeName: node-a\n").count(), 1);
        assert!(text.contains("nodeName: node-1\n"));
        assert!(cluster.slice_json(1).contains(r#""nodeName":"node-10""#));
        let json = ScaleCluster::new(10_000, 10).json_files();
        assert_eq!(json.file_name(3), "part-003.json");
        let list: serde_json::Value = serde_json::from_str(&json.file_text(3)).unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 200);
        assert_eq!(list["items"][1]["endpoints"][0]["nodeName"], "node-a");
        assert_eq!(list["items"][3]["endpoints"][2]["nodeName"], "node-12");
        let all = ScaleCluster::new(100, 10).all_local();
        assert_eq!(all.local_endpoints(), 1_000);
        assert_eq!(all.file_text(0).matches("nodeName: node-a\n").count(), 10);
    }

    #[test]
    fn addresses_are_distinct_and_the_restore_text_lists_the_table() {
        assert_eq!(ScaleCluster::vip(0), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(ScaleCluster::vip(9_999), Ipv4Addr::new(10, 96, 39, 16));
        assert_eq!(ScaleCluster::endpoint(1, 0), Ipv4Addr::new(10, 128, 0, 17));
        let mut cluster = ScaleCluster::new(3, 2);
        cluster.flip(1);
        assert_eq!(
            cluster.restore_text(2),
            "-A -t 10.96.0.1:80 -s rr\n-A -t 10.96.0.2:80 -s rr\n\
             -a -t 10.96.0.1:80 -r 10.128.0.1:8080 -m -w 1\n\
             -a -t 10.96.0.1:80 -r 10.128.0.2:8080 -m -w 1\n\
             -a -t 10.96.0.2:80 -r 10.128.0.17:8080 -m -w 0\n\
             -a -t 10.96.0.2:80 -r 10.128.0.18:8080 -m -w 1\n"
        );
        assert!(cluster.slice_json(1).contains(
            r#""addresses":["10.128.0.17"],"conditions":{"ready":false,"serving":true,"terminating":true}"#
        ));
    }
}
