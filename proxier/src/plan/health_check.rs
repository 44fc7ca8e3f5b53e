//! Health checks of `externalTrafficPolicy: Local` LoadBalancer Services: what kube-proxy's
//! service health server answers on each `healthCheckNodePort` (pkg/proxy/healthcheck/
//! service_health.go), as plain data. The HTTP side is `observability::service_health`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::{EndpointSlice, Service, ServiceName};

/// One Service's health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceHealthCheck {
    /// `spec.healthCheckNodePort` (TCP).
    pub node_port: u16,
    /// Ready endpoints on this node, counted by IP (kube-proxy's `LocalReadyEndpoints`: a
    /// pod serving two ports is one endpoint; terminating ones do not count, so the load
    /// balancer stops sending to a node whose pods are all going away).
    pub local_endpoints: usize,
}

impl ServiceHealthCheck {
    /// The health check of `service` on node `node`, if it has one.
    pub fn of<'a>(
        service: &Service,
        slices: impl Iterator<Item = &'a EndpointSlice>,
        node: &str,
    ) -> Option<Self> {
        let node_port = service.health_check_node_port?;
        let local: BTreeSet<IpAddr> = slices
            .filter(|slice| !slice.ports.is_empty())
            .flat_map(|slice| &slice.endpoints)
            .filter(|e| e.ready && e.node.as_deref() == Some(node))
            .map(|e| e.address)
            .collect();
        Some(Self {
            node_port,
            local_endpoints: local.len(),
        })
    }

    /// The HTTP status kube-proxy answers: 200 with at least one local endpoint while the
    /// proxy is healthy, 503 otherwise.
    pub fn status(&self, proxy_healthy: bool) -> u16 {
        if self.local_endpoints > 0 && proxy_healthy {
            200
        } else {
            503
        }
    }

    /// kube-proxy's JSON body, byte for byte (tab-indented).
    pub fn body(&self, service: &ServiceName, proxy_healthy: bool) -> String {
        format!(
            "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {}\n}}",
            service.namespace, service.name, self.local_endpoints, proxy_healthy
        )
    }
}

/// The health checks of a plan and where they listen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthChecks {
    /// By Service.
    pub services: BTreeMap<ServiceName, ServiceHealthCheck>,
    /// Where each health check listens: `None` = every address (`nodePortAddresses` matches
    /// all addresses of the primary family, kube-proxy's `0.0.0.0`), else these node IPs.
    pub addresses: Option<Vec<IpAddr>>,
}

impl HealthChecks {
    /// The health-check node ports, for the packet filter.
    pub fn node_ports(&self) -> BTreeSet<u16> {
        self.services.values().map(|c| c.node_port).collect()
    }
}

#[cfg(test)]
mod tests;
