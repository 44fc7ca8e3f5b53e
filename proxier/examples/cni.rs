//! A CNI agent embedding proxier with a [`Source`] of its own. The agent already watches
//! Services and endpoints its own way; its source hands proxier two kinds of input:
//!
//! - k8s-openapi objects from its watch, sent through a [`Feed`] (any thread may send);
//! - services it makes up itself (a node-local DNS VIP from its IPAM), as the model's plain
//!   types, written straight into the cluster.
//!
//! The same sync loop as `proxier run` then programs the kernel (IPVS, `kube-ipvs0`, proxier's
//! nftables table). No Kubernetes client is linked:
//! `proxier = { default-features = false, features = ["kernel"] }`.
//!
//! Run as root, in a network namespace of your own:
//! `ip netns add cni && ip netns exec cni cargo run -p proxier --example cni`, then
//! `ip netns exec cni ipvsadm -Ln` shows `10.96.7.7:80 -> 10.244.7.7:8080` (from the watch) and
//! `10.96.7.53:53 -> 10.244.7.53:5353` UDP (from the IPAM). The VM test
//! `tests/tests/examples.rs` runs it and checks that listing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use proxier::config::Config;
use proxier::dataplane::kernel::KernelDataplane;
use proxier::k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use proxier::k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use proxier::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proxier::model::{self, ClusterState, ServiceName, ServicePortName};
use proxier::plan::{NodeContext, Planner};
use proxier::runtime::{run, Proxier, SyncTiming};
use proxier::source::{Feed, FeedSender, FeedUpdate, KubeObject, Source, SourcePoll};

/// The Service VIP and the pod behind it (from the watch).
pub const VIP: &str = "10.96.7.7";
/// The pod (endpoint) address.
pub const POD: &str = "10.244.7.7";
/// The node-local DNS VIP the agent's IPAM allocated, and its pod.
pub const DNS: (&str, &str) = ("10.96.7.53", "10.244.7.53");

fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("cni".into()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..ObjectMeta::default()
    }
}

/// What the CNI's own watch would produce: the `api` Service and its one ready endpoint.
fn objects() -> Vec<KubeObject> {
    let service = Service {
        metadata: meta("api", &[]),
        spec: Some(ServiceSpec {
            cluster_ip: Some(VIP.into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let slice = EndpointSlice {
        metadata: meta("api-1", &[("kubernetes.io/service-name", "api")]),
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
        endpoints: Some(vec![Endpoint {
            addresses: vec![POD.into()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        }]),
    };
    vec![
        KubeObject::Service(Box::new(service)),
        KubeObject::EndpointSlice(Box::new(slice)),
    ]
}

/// The CNI's watch loop, reduced to one snapshot (a real agent sends one on every change).
fn cni_watch(feed: FeedSender) -> Result<(), proxier::Error> {
    feed.send(FeedUpdate::Snapshot(objects()))
}

/// The node-local DNS service as the model's plain types: `DNS.0:53/UDP -> DNS.1:5353`.
fn node_local_dns() -> Result<(model::Service, model::EndpointSlice), std::net::AddrParseError> {
    let (vip, pod): (IpAddr, IpAddr) = (DNS.0.parse()?, DNS.1.parse()?);
    let name = ServiceName {
        namespace: "cni".into(),
        name: "node-dns".into(),
    };
    let port = model::ServicePort {
        name: ServicePortName {
            service: name.clone(),
            port: "dns".into(),
            protocol: model::Protocol::Udp,
        },
        port: 53,
        node_port: None,
        cluster_ips: vec![vip],
        external_ips: vec![],
        load_balancer_ips: vec![],
        load_balancer_source_ranges: vec![],
        affinity: model::SessionAffinity::None,
        internal_policy: model::TrafficPolicy::Cluster,
        external_policy: model::TrafficPolicy::Cluster,
    };
    let slice = model::EndpointSlice {
        name: "node-dns-1".into(),
        service: name.clone(),
        family: model::Family::V4,
        ports: vec![model::EndpointPort {
            name: "dns".into(),
            protocol: model::Protocol::Udp,
            port: 5353,
        }],
        endpoints: vec![model::Endpoint::ready(pod)],
    };
    Ok((
        model::Service {
            name,
            ports: vec![port],
            health_check_node_port: None,
        },
        slice,
    ))
}

/// The agent's own source: what its watch sent through the feed, plus the services its IPAM
/// made up (written once, as model types).
struct CniSource {
    watch: Feed,
    ipam: Option<(model::Service, model::EndpointSlice)>,
}

impl Source for CniSource {
    fn poll_changes(&mut self, cluster: &mut ClusterState) -> Result<SourcePoll, proxier::Error> {
        let mut poll = self.watch.poll_changes(cluster)?;
        if let Some((service, slice)) = self.ipam.take() {
            cluster.upsert_service(service);
            cluster.upsert_slice(slice);
            poll.changed = true;
        }
        Ok(poll)
    }
}

/// Programs the kernel for two seconds, then stops (the kernel state stays).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = NodeContext {
        name: "node-a".into(),
        node_ips: vec![],
        zone: None,
    };
    let mut proxier = Proxier::new(
        Planner::new(node, Config::default()),
        KernelDataplane::connect("kube-ipvs0")?,
    );
    let (sender, watch) = Feed::new();
    cni_watch(sender)?;
    let mut source = CniSource {
        watch,
        ipam: Some(node_local_dns()?),
    };
    let stop = async { tokio::time::sleep(Duration::from_secs(2)).await };
    let on_sync = |kind, outcome: &_| println!("{kind:?}: {outcome:?}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(
            &mut proxier,
            &mut source,
            SyncTiming::default(),
            on_sync,
            stop,
        ))?;
    Ok(())
}
