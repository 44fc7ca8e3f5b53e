//! Cluster files for `proxier run --source DIR`, and the kubeconfig and
//! `KubeProxyConfiguration` files of the binary's kube-proxy role.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// One endpoint of a generated EndpointSlice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The pod IP.
    pub ip: Ipv4Addr,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// The node the pod runs on: 0 is `node-a`, the node under test; `n > 0` is `node-{n}`, another
    /// node of the cluster (see [`node_name`]).
    pub node: u16,
}

/// The name of node `n` in generated EndpointSlices: `node-a` (the node under test) for 0,
/// `node-{n}` otherwise.
pub fn node_name(n: u16) -> String {
    if n == 0 {
        "node-a".to_owned()
    } else {
        format!("node-{n}")
    }
}

impl Endpoint {
    /// A ready pod.
    pub fn ready(ip: &str) -> Self {
        Self {
            ip: ip.parse().expect("IPv4 address"),
            ready: true,
            serving: true,
            terminating: false,
            node: 0,
        }
    }

    /// A pod that is shutting down but still serving (KEP-1669): weight 0 while others are ready.
    pub fn terminating(ip: &str) -> Self {
        Self {
            ready: false,
            serving: true,
            terminating: true,
            ..Self::ready(ip)
        }
    }
}

/// A Service `name` in namespace `default` with `cluster_ip` and `ports`
/// (`(name, protocol, port, target_port, node_port)`; a node port makes it `type: NodePort`).
pub fn service_yaml(
    name: &str,
    cluster_ip: &str,
    ports: &[(&str, &str, u16, u16, Option<u16>)],
) -> String {
    let node_port = ports.iter().any(|p| p.4.is_some());
    let mut text = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  type: {}\n  clusterIP: {cluster_ip}\n  clusterIPs: [{cluster_ip}]\n  ports:\n",
        if node_port { "NodePort" } else { "ClusterIP" }
    );
    for (port_name, protocol, port, target, node) in ports {
        text.push_str(&format!(
            "  - {{name: {port_name}, port: {port}, protocol: {protocol}, targetPort: {target}"
        ));
        if let Some(node) = node {
            text.push_str(&format!(", nodePort: {node}"));
        }
        text.push_str("}\n");
    }
    text
}

/// The EndpointSlice `{service}-eps` of Service `service` with `ports`
/// (`(name, protocol, target_port)`) and `endpoints`, all on node `node-a`.
pub fn slice_yaml(service: &str, ports: &[(&str, &str, u16)], endpoints: &[Endpoint]) -> String {
    let mut text = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-eps\n  namespace: default\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports:\n"
    );
    for (name, protocol, port) in ports {
        text.push_str(&format!(
            "- {{name: {name}, port: {port}, protocol: {protocol}}}\n"
        ));
    }
    if endpoints.is_empty() {
        text.push_str("endpoints: []\n");
    } else {
        text.push_str("endpoints:\n");
    }
    for e in endpoints {
        text.push_str(&format!(
            "- addresses: [{}]\n  conditions: {{ready: {}, serving: {}, terminating: {}}}\n  nodeName: {}\n",
            e.ip,
            e.ready,
            e.serving,
            e.terminating,
            node_name(e.node)
        ));
    }
    text
}

/// The port list of the DNS-like Service the UDP scenarios use (`dns`, UDP, target 5353).
pub const DNS_PORTS: &[(&str, &str, u16)] = &[("dns", "UDP", 5353)];

/// A fresh, empty source directory for `proxier run` under `/tmp`.
pub fn source_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/proxier-src-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create source dir");
    dir
}

/// A fresh source directory `tag` holding `web.yaml`: Service `web` at `vip`:80/TCP (port
/// `http`, target 8080) and its EndpointSlice with `endpoints`.
pub fn web_source(tag: &str, vip: &str, endpoints: &[Endpoint]) -> PathBuf {
    let source = source_dir(tag);
    let service = service_yaml("web", vip, &[("http", "TCP", 80, 8080, None)]);
    let slice = slice_yaml("web", &[("http", "TCP", 8080)], endpoints);
    write_atomically(&source.join("web.yaml"), &format!("{service}---\n{slice}"));
    source
}

/// Writes `text` to `path` the way a watcher must see it: a temporary file in the same
/// directory, then a rename over the target.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// Writes `/tmp/proxier-{tag}.yaml`, a `KubeProxyConfiguration` (mode ipvs) whose body after
/// the `mode` line is `body` (YAML, indented as top-level keys); returns its path.
pub fn kube_proxy_config(tag: &str, body: &str) -> String {
    let path = format!("/tmp/proxier-{tag}.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n{body}"
        ),
    )
    .unwrap_or_else(|e| panic!("write {path}: {e}"));
    path
}

/// Writes `/tmp/proxier-{tag}.kubeconfig`, a kubeconfig for the API server at `server`
/// (`http://…`, no credentials); returns its path.
pub fn kubeconfig(tag: &str, server: &str) -> String {
    let path = format!("/tmp/proxier-{tag}.kubeconfig");
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{server}\"}}\nusers:\n- name: none\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: none}}\ncurrent-context: fake\n"),
    )
    .unwrap_or_else(|e| panic!("write {path}: {e}"));
    path
}
