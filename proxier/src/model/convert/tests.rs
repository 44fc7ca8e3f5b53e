//! Conversion table tests: valid objects, skipped ones and rejected ones, read from YAML as
//! `kubectl get -o yaml` prints them.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use netlink_ipvs::Protocol;

use super::*;
use crate::model::EndpointState;

fn svc(yaml: &str) -> Result<Service, Error> {
    let object: core::Service = serde_saphyr::from_str(yaml).unwrap();
    service_from_k8s(&object, &mut Vec::new())
}

/// The Service and the entries left out of it.
fn svc_skipping(yaml: &str) -> (Service, Vec<Error>) {
    let object: core::Service = serde_saphyr::from_str(yaml).unwrap();
    let mut skipped = Vec::new();
    let service = service_from_k8s(&object, &mut skipped).unwrap();
    (service, skipped)
}

fn reason<T: std::fmt::Debug>(result: Result<T, Error>) -> RejectReason {
    match result {
        Err(Error::Rejected { reason, .. }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

const BASE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n";

#[test]
fn full_service() {
    let yaml = format!(
        "{BASE}spec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.20\n  clusterIPs: [10.96.0.20, fd00::20]\n  \
         externalIPs: [198.51.100.7]\n  sessionAffinity: ClientIP\n  \
         sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 600}}}}\n  externalTrafficPolicy: Local\n  \
         trafficDistribution: PreferClose\n  \
         ports: [{{name: http, port: 80, targetPort: http, nodePort: 30080}}, {{name: dns, port: 53, protocol: UDP, nodePort: 30053}}]\n\
         status:\n  loadBalancer:\n    ingress: [{{ip: 203.0.113.10}}, {{ip: 203.0.113.11, ipMode: Proxy}}, {{hostname: lb.example}}]\n"
    );
    let service = svc(&yaml).unwrap();
    assert_eq!(service.name.to_string(), "shop/web");
    let http = &service.ports[0];
    assert_eq!(http.name.to_string(), "shop/web:http/TCP");
    assert_eq!((http.port, http.node_port), (80, Some(30080)));
    assert_eq!(http.cluster_ips.len(), 2);
    // ipMode Proxy: kube-proxy does not program such an ingress IP (KEP-1860).
    assert_eq!(
        http.load_balancer_ips,
        vec!["203.0.113.10".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        http.affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 600
        }
    );
    assert_eq!(http.external_policy, TrafficPolicy::Local);
    assert_eq!(http.internal_policy, TrafficPolicy::Cluster);
    assert_eq!(service.ports[1].name.protocol, Protocol::Udp);
}

#[test]
fn skipped_and_rejected_services() {
    // kube-proxy ShouldSkipService + its informer label selector; API validation for the rest.
    let cases: Vec<(&str, String, RejectReason)> = vec![
        ("headless", format!("{BASE}spec: {{clusterIP: None, ports: [{{port: 80}}]}}"), RejectReason::Headless),
        ("ExternalName", format!("{BASE}spec: {{type: ExternalName, externalName: x.example}}"), RejectReason::ExternalName),
        ("no cluster IP", format!("{BASE}spec: {{ports: [{{port: 80}}]}}"), RejectReason::NoClusterIp),
        (
            "service-proxy-name",
            "apiVersion: v1\nkind: Service\nmetadata: {name: w, labels: {service.kubernetes.io/service-proxy-name: cilium}}\nspec: {clusterIP: 10.96.0.1}".into(),
            RejectReason::ServiceProxyName("cilium".into()),
        ),
        (
            "headless label",
            "apiVersion: v1\nkind: Service\nmetadata: {name: w, labels: {service.kubernetes.io/headless: ''}}\nspec: {clusterIP: 10.96.0.1}".into(),
            RejectReason::HeadlessLabel,
        ),
        ("bad IP", format!("{BASE}spec: {{clusterIP: 10.96.0.300}}"), RejectReason::InvalidIp { field: "spec.clusterIPs", value: "10.96.0.300".into() }),
        ("port 0", format!("{BASE}spec: {{clusterIP: 10.96.0.1, ports: [{{port: 0}}]}}"), RejectReason::PortOutOfRange { field: "spec.ports.port", value: 0 }),
        ("port too big", format!("{BASE}spec: {{clusterIP: 10.96.0.1, ports: [{{port: 70000}}]}}"), RejectReason::PortOutOfRange { field: "spec.ports.port", value: 70000 }),
        ("protocol", format!("{BASE}spec: {{clusterIP: 10.96.0.1, ports: [{{port: 80, protocol: ICMP}}]}}"), RejectReason::UnknownProtocol("ICMP".into())),
        (
            "affinity timeout",
            format!("{BASE}spec: {{clusterIP: 10.96.0.1, sessionAffinity: ClientIP, sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 0}}}}}}"),
            RejectReason::InvalidAffinityTimeout(0),
        ),
        ("no spec", BASE.to_owned(), RejectReason::MissingSpec),
    ];
    for (what, yaml, expected) in cases {
        let got = reason(svc(&yaml));
        assert_eq!(got, expected, "{what}");
        let invalid = !matches!(
            what,
            "headless" | "ExternalName" | "no cluster IP" | "service-proxy-name" | "headless label"
        );
        assert_eq!(got.is_invalid(), invalid, "{what}");
    }
}

fn eps(yaml: &str) -> Result<EndpointSlice, Error> {
    let object: discovery::EndpointSlice = serde_saphyr::from_str(yaml).unwrap();
    endpoint_slice_from_k8s(&object)
}

const SLICE: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}\n";

#[test]
fn endpoint_slice_conditions_hints_and_ports() {
    let yaml = format!(
        "{SLICE}addressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: nope}}]\nendpoints:\n\
         - addresses: [10.244.1.5, 10.244.1.99]\n  nodeName: node-a\n  zone: zone-a\n  hints: {{forZones: [{{name: zone-a}}]}}\n\
         - addresses: [10.244.1.6]\n  conditions: {{ready: false, serving: true, terminating: true}}\n\
         - addresses: [10.244.1.7]\n  conditions: {{ready: false}}\n\
         - addresses: []\n"
    );
    let slice = eps(&yaml).unwrap();
    assert_eq!(slice.service.to_string(), "shop/web");
    assert_eq!(
        slice.ports,
        vec![EndpointPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080
        }]
    );
    let states: Vec<_> = slice
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.state()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("10.244.1.5".into(), EndpointState::Ready),
            (
                "10.244.1.6".into(),
                EndpointState::Terminating { serving: true }
            ),
            ("10.244.1.7".into(), EndpointState::NotReady),
        ]
    );
    assert!(slice.endpoints[0].zone_hints().contains("zone-a"));
}

/// kube-proxy's endpointslicecache: `serving := Serving == nil || *Serving` — unset means
/// serving whatever `ready` says (it is not "same as ready"); `ready` and `terminating` unset
/// mean ready and not terminating.
#[test]
fn serving_unset_means_serving_as_kube_proxy() {
    let cases: [(&str, bool, EndpointState); 5] = [
        ("{}", true, EndpointState::Ready),
        ("{ready: false}", true, EndpointState::NotReady),
        (
            "{ready: false, terminating: true}",
            true,
            EndpointState::Terminating { serving: true },
        ),
        (
            "{ready: false, serving: false, terminating: true}",
            false,
            EndpointState::Terminating { serving: false },
        ),
        ("{ready: true, serving: false}", false, EndpointState::Ready),
    ];
    for (conditions, serving, state) in cases {
        let yaml = format!(
            "{SLICE}addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n\
             - addresses: [10.244.1.5]\n  conditions: {conditions}\n"
        );
        let endpoint = &eps(&yaml).unwrap().endpoints[0];
        assert_eq!(endpoint.serving, serving, "{conditions}");
        assert_eq!(endpoint.state(), state, "{conditions}");
    }
}

#[test]
fn rejected_endpoint_slices() {
    let cases: Vec<(&str, String, RejectReason)> = vec![
        (
            "no service-name label",
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: x}\naddressType: IPv4\nendpoints: []".into(),
            RejectReason::MissingServiceNameLabel,
        ),
        ("FQDN", format!("{SLICE}addressType: FQDN\nendpoints: []"), RejectReason::UnsupportedAddressType("FQDN".into())),
        ("bad IP", format!("{SLICE}addressType: IPv4\nendpoints: [{{addresses: [nope]}}]"), RejectReason::InvalidIp { field: "endpoints.addresses", value: "nope".into() }),
        ("family", format!("{SLICE}addressType: IPv4\nendpoints: [{{addresses: ['fd00::1']}}]"), RejectReason::FamilyMismatch("fd00::1".into())),
        ("port", format!("{SLICE}addressType: IPv4\nports: [{{port: -1}}]\nendpoints: []"), RejectReason::PortOutOfRange { field: "ports.port", value: -1 }),
        ("protocol", format!("{SLICE}addressType: IPv4\nports: [{{port: 1, protocol: GRE}}]\nendpoints: []"), RejectReason::UnknownProtocol("GRE".into())),
    ];
    for (what, yaml, expected) in cases {
        assert_eq!(reason(eps(&yaml)), expected, "{what}");
    }
}

#[test]
fn node_internal_ips_and_zone() {
    let yaml = "apiVersion: v1\nkind: Node\nmetadata: {name: node-a, labels: {topology.kubernetes.io/zone: zone-a}}\n\
                status: {addresses: [{type: InternalIP, address: 192.168.1.10}, {type: Hostname, address: node-a}, {type: InternalIP, address: 'fd00::10'}]}";
    let node: core::Node = serde_saphyr::from_str(yaml).unwrap();
    let node = node_from_k8s(&node).unwrap();
    assert_eq!(node.internal_ips.len(), 2);
    assert_eq!(node.zone.as_deref(), Some("zone-a"));
}

#[test]
fn a_bad_object_does_not_affect_the_others() {
    let text = format!(
        "{BASE}spec: {{clusterIP: 10.96.0.300}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: ok}}\nspec: {{clusterIP: 10.96.0.1, ports: [{{port: 80}}]}}\n---\n\
         apiVersion: v1\nkind: List\nitems:\n- {{apiVersion: v1, kind: Pod, metadata: {{name: p}}}}\n\
         - {{apiVersion: v1, kind: Service, metadata: {{name: also-ok}}, spec: {{clusterIP: 10.96.0.2}}}}\n"
    );
    let (objects, problems) = crate::source::parse_documents("test", &text);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(objects.len(), 3, "the Pod is ignored");
    let (cluster, rejected) = crate::source::load_cluster(&objects);
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].to_string(),
        "Service shop/web: spec.clusterIPs: invalid IP \"10.96.0.300\""
    );
    assert_eq!(cluster.services().count(), 2);
}

#[test]
fn load_balancer_source_ranges() {
    let with_ranges = |ranges: &str| {
        format!(
            "{BASE}spec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.20\n  \
             loadBalancerSourceRanges: {ranges}\n  ports: [{{name: http, port: 80, nodePort: 30080}}]\n"
        )
    };
    let service = svc(&with_ranges("[198.51.100.0/24, 192.0.2.1, 'fd00::/8']")).unwrap();
    let ranges = &service.ports[0].load_balancer_source_ranges;
    let text: Vec<String> = ranges
        .iter()
        .map(|(ip, len)| format!("{ip}/{len}"))
        .collect();
    assert_eq!(text, ["198.51.100.0/24", "192.0.2.1/32", "fd00::/8"]);
    assert!(matches!(
        reason(svc(&with_ranges("[10.0.0.0/33]"))),
        RejectReason::InvalidIp {
            field: "spec.loadBalancerSourceRanges",
            ..
        }
    ));
    // One bad range among good ones is left out alone (kube-proxy's MapCIDRsByIPFamily).
    let (service, skipped) = svc_skipping(&with_ranges("[10.0.0.0/33, 198.51.100.0/24]"));
    let ranges = &service.ports[0].load_balancer_source_ranges;
    assert_eq!(ranges, &[("198.51.100.0".parse::<IpAddr>().unwrap(), 24)]);
    assert_eq!(skipped.len(), 1);
}

/// kube-proxy (pkg/proxy/util `MapIPsByIPFamily`, `netutils.ParseIPSloppy`) skips a bad
/// `externalIPs` entry or LoadBalancer ingress IP alone ("Skipping invalid IP") and keeps the
/// Service, ClusterIP included; a legacy IPv4 with leading zeros is read as decimal. proxier
/// does the same and reports each entry it leaves out.
#[test]
fn bad_ip_entries_are_skipped_alone_as_kube_proxy() {
    let ip = |t: &str| t.parse::<IpAddr>().unwrap();
    let yaml = format!(
        "{BASE}spec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.20\n  \
         externalIPs: [192.168.001.010, 'not-an-ip', 198.51.100.7, '', 10.0.0.300]\n  \
         ports: [{{name: http, port: 80, nodePort: 30080}}]\n\
         status:\n  loadBalancer:\n    ingress: [{{ip: 203.0.113.10}}, {{ip: 203.0.113.999}}]\n"
    );
    let (service, skipped) = svc_skipping(&yaml);
    let http = &service.ports[0];
    assert_eq!(http.cluster_ips, vec![ip("10.96.0.20")]);
    assert_eq!(
        http.external_ips,
        vec![ip("192.168.1.10"), ip("198.51.100.7")],
        "leading zeros are decimal; the bad entries are left out, the empty one silently"
    );
    assert_eq!(http.load_balancer_ips, vec![ip("203.0.113.10")]);
    let reported: Vec<String> = skipped.iter().map(ToString::to_string).collect();
    assert_eq!(
        reported,
        [
            "Service shop/web: skipped spec.externalIPs: invalid IP \"not-an-ip\"; the rest of the object is used",
            "Service shop/web: skipped spec.externalIPs: invalid IP \"10.0.0.300\"; the rest of the object is used",
            "Service shop/web: skipped status.loadBalancer.ingress.ip: invalid IP \"203.0.113.999\"; the rest of the object is used",
        ]
    );
    #[cfg(feature = "kernel")]
    assert!(skipped
        .iter()
        .all(|e| crate::observability::skip_reason(e) == "invalid_ip"));
}
