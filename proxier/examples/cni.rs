//! A CNI agent embedding proxier: it already watches Services and endpoints its own way, so it
//! hands k8s-openapi objects to a [`Feed`] and lets the same sync loop as `proxier run` program
//! the kernel (IPVS, `kube-ipvs0`, proxier's nftables table). No Kubernetes client is linked:
//! `proxier = { default-features = false, features = ["kernel"] }`.
//!
//! Run as root, in a network namespace of your own:
//! `ip netns add cni && ip netns exec cni cargo run -p proxier --example cni`, then
//! `ip netns exec cni ipvsadm -Ln` shows `10.96.7.7:80 -> 10.244.7.7:8080`.
//! The VM test `tests/tests/examples.rs` runs it and checks that listing.

use std::collections::BTreeMap;
use std::time::Duration;

use proxier::config::Config;
use proxier::dataplane::kernel::KernelDataplane;
use proxier::k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use proxier::k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use proxier::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proxier::plan::{NodeContext, Planner};
use proxier::runtime::{run, Proxier, SyncTiming};
use proxier::source::{Feed, FeedSender, FeedUpdate, KubeObject};

/// The Service VIP and the pod behind it.
pub const VIP: &str = "10.96.7.7";
/// The pod (endpoint) address.
pub const POD: &str = "10.244.7.7";

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
    let (sender, mut feed) = Feed::new();
    cni_watch(sender)?;
    let stop = async { tokio::time::sleep(Duration::from_secs(2)).await };
    let on_sync = |kind, outcome: &_| println!("{kind:?}: {outcome:?}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(
            &mut proxier,
            &mut feed,
            SyncTiming::default(),
            on_sync,
            stop,
        ))?;
    Ok(())
}
