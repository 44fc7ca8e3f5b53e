//! kube-proxy's service health server (pkg/proxy/healthcheck/service_health.go): one HTTP
//! listener per `healthCheckNodePort` of an `externalTrafficPolicy: Local` LoadBalancer
//! Service, answering any path with the local endpoint count as JSON, 200 when there is at
//! least one and the proxy is healthy, 503 otherwise, so that cloud load balancers send
//! traffic only to nodes with local endpoints. Listeners open and close as the plan's
//! [`HealthChecks`] change; they listen on every address when `nodePortAddresses` matches all
//! of the primary family, else on the selected node IPs.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use super::http;
use super::Health;
use crate::error::Error;
use crate::model::ServiceName;
use crate::plan::{HealthChecks, ServiceHealthCheck};

type Counts = Arc<Mutex<BTreeMap<ServiceName, ServiceHealthCheck>>>;

/// The listeners of one Service's health check.
struct Listening {
    port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The health-check listeners of a proxy.
pub struct ServiceHealthServer {
    health: Arc<Health>,
    counts: Counts,
    addresses: Option<Vec<IpAddr>>,
    listening: BTreeMap<ServiceName, Listening>,
}

impl std::fmt::Debug for ServiceHealthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHealthServer")
            .field("addresses", &self.addresses)
            .field("ports", &self.ports())
            .finish()
    }
}

/// Binds `address` now (so a conflict is known at once), for serving on the runtime.
fn listen(address: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    let serve_error = |source| Error::Serve { address, source };
    let listener = std::net::TcpListener::bind(address).map_err(serve_error)?;
    listener.set_nonblocking(true).map_err(serve_error)?;
    tokio::net::TcpListener::from_std(listener).map_err(serve_error)
}

impl ServiceHealthServer {
    /// A server whose answers say `health`'s verdict as `serviceProxyHealthy`.
    pub fn new(health: Arc<Health>) -> Self {
        Self {
            health,
            counts: Arc::default(),
            addresses: None,
            listening: BTreeMap::new(),
        }
    }

    /// The open health-check ports by Service.
    pub fn ports(&self) -> BTreeMap<ServiceName, u16> {
        self.listening
            .iter()
            .map(|(name, l)| (name.clone(), l.port))
            .collect()
    }

    /// Follows `checks`: updates the endpoint counts, closes the listeners of Services gone
    /// (or whose port or addresses changed) and opens the new ones. A port that cannot be
    /// bound is reported and tried again at the next sync, as kube-proxy does. Must run on
    /// the tokio runtime.
    pub fn sync(&mut self, checks: &HealthChecks) {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner) = checks.services.clone();
        if checks.addresses != self.addresses {
            self.listening.clear();
            self.addresses.clone_from(&checks.addresses);
        }
        self.listening.retain(|name, l| {
            let keep = checks.services.get(name).map(|c| c.node_port) == Some(l.port);
            if !keep {
                tracing::info!(service = %name, port = l.port, "health check closed");
            }
            keep
        });
        for (name, check) in &checks.services {
            if self.listening.contains_key(name) {
                continue;
            }
            match self.open(name, check.node_port) {
                Ok(listening) => {
                    tracing::info!(service = %name, port = check.node_port, "health check listening");
                    self.listening.insert(name.clone(), listening);
                }
                Err(error) => {
                    tracing::error!(service = %name, error = %error.report(), "health check could not listen; retried at the next sync");
                }
            }
        }
    }

    fn open(&self, name: &ServiceName, port: u16) -> Result<Listening, Error> {
        let addresses: Vec<SocketAddr> = match &self.addresses {
            Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
            None => vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)],
        };
        let mut listeners = Vec::new();
        for address in addresses {
            // `[::]` takes IPv4 too; a node without IPv6 gets `0.0.0.0`.
            let listener = listen(address).or_else(|error| match address.ip() {
                IpAddr::V6(v6) if v6.is_unspecified() => {
                    listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
                }
                _ => Err(error),
            })?;
            listeners.push(listener);
        }
        let handler = self.handler(name.clone());
        let tasks = listeners
            .into_iter()
            .map(|listener| tokio::spawn(http::serve(listener, handler.clone())))
            .collect();
        Ok(Listening { port, tasks })
    }

    /// Any path answers with the Service's count, as kube-proxy's handler does.
    fn handler(&self, name: ServiceName) -> http::Handler {
        let (counts, health) = (self.counts.clone(), self.health.clone());
        Arc::new(move |_path| {
            let check = *counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&name)?;
            let healthy = health.status(Instant::now(), SystemTime::now()).healthy;
            Some(http::Response::new(
                check.status(healthy),
                "application/json",
                check.body(&name, healthy),
            ))
        })
    }
}

#[cfg(test)]
mod tests;
