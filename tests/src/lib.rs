//! What the real-kernel tests need beyond `proxier-test-support`: IPVS tables and their
//! `ipvsadm` rendering (netlink-ipvs types), and kube-proxy's IPVS algorithm replayed through
//! netlink-ipvs for the incident baselines. Everything else is re-exported from
//! `proxier_test_support`.
//!
//! These tests run inside the VM that `cargo xtask vmtest` boots (a kernel with IPVS); they are
//! excluded from the host run.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers panic on failure"
)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use netlink_ipvs::{
    Family, IpvsHandle, IpvsOperation, IpvsState, Protocol, RealServer, RealServerKey,
    ServiceFlags, ServiceKey, ServiceState, VirtualServer,
};
pub use proxier_test_support::*;

/// proxier's engine over the kernel dataplane (`kube-ipvs0`, host prepared as the binary
/// does) for node `node-a` at `node_ip`, with the Services and EndpointSlices of `yaml`
/// applied and fully synced; panics on any failed operation.
pub fn program_node(
    yaml: &str,
    node_ip: &str,
    settings: proxier::plan::PacketSettings,
) -> proxier::runtime::Proxier<proxier::dataplane::kernel::KernelDataplane> {
    use proxier::plan::{NodeContext, Planner};
    let mut dataplane = proxier::dataplane::kernel::KernelDataplane::connect("kube-ipvs0").unwrap();
    dataplane
        .prepare_host(
            &conntrack_gc::FsRoot::system(),
            false,
            netlink_ipvs::Timeouts::default(),
        )
        .unwrap();
    let node = NodeContext {
        name: "node-a".into(),
        node_ips: vec![node_ip.parse().unwrap()],
        zone: None,
    };
    let planner =
        Planner::new(node, proxier::config::Config::default()).with_packet_settings(settings);
    let mut proxier = proxier::runtime::Proxier::new(planner, dataplane);
    let (objects, problems) = proxier::source::parse_documents("test", yaml);
    assert!(problems.is_empty(), "{problems:?}");
    proxier::source::SnapshotSync::new().apply(&objects, proxier.cluster_mut());
    let outcome = proxier.full_sync().unwrap();
    assert_eq!(outcome.failed, 0, "{:?}", outcome.failures);
    proxier
}

/// The lines `ipvsadm -Sn` prints for `state` (as a set: ipvsadm's order is the kernel's hash order).
pub fn ipvsadm_save(state: &IpvsState) -> BTreeSet<String> {
    netlink_ipvs::ipvsadm::save(state)
}

/// `count` virtual servers with `per_service` real servers each: TCP/UDP/SCTP, IPv4 and IPv6,
/// a few persistent ones, schedulers rr/wrr/lc, and (when `with_fwmark`) one fwmark service.
pub fn sample(count: usize, per_service: usize, with_fwmark: bool) -> IpvsState {
    let mut state = IpvsState::default();
    for i in 0..count {
        let v6 = i % 5 == 4;
        let key = if with_fwmark && i == count - 1 {
            let family = if v6 { Family::V6 } else { Family::V4 };
            ServiceKey::FwMark { mark: 7, family }
        } else {
            let address: IpAddr = if v6 {
                format!("fd00::{:x}", i + 1)
                    .parse()
                    .expect("generated address")
            } else {
                format!("10.96.{}.{}", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap()
            };
            ServiceKey::Address {
                protocol: [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][i % 3],
                address,
                port: 80 + (i % 100) as u16,
            }
        };
        let mut service = VirtualServer::new(key);
        service.scheduler = ["rr", "wrr", "lc"][i % 3].into();
        if i % 10 == 3 {
            service.flags = ServiceFlags::PERSISTENT;
            service.timeout = 10800;
        }
        let real_servers = (0..per_service)
            .map(|j| {
                let address: IpAddr = if v6 {
                    format!("fd01::{:x}:{:x}", i + 1, j + 1)
                        .parse()
                        .expect("generated address")
                } else {
                    format!("10.{}.{}.{}", 100 + i / 250, i % 250, j + 1)
                        .parse()
                        .unwrap()
                };
                let mut rs = RealServer::masq(address, 8080);
                rs.weight = 1 + (j % 3) as u32;
                (rs.key, rs)
            })
            .collect();
        state.services.insert(
            key,
            ServiceState {
                service,
                real_servers,
            },
        );
    }
    state
}

/// The operations that create `state` from nothing.
pub fn create_ops(state: &IpvsState) -> Vec<IpvsOperation> {
    let mut ops = Vec::new();
    for s in state.services.values() {
        ops.push(IpvsOperation::AddVirtualServer(s.service.clone()));
        ops.extend(
            s.real_servers
                .values()
                .map(|rs| IpvsOperation::AddRealServer {
                    service: s.service.key,
                    real_server: *rs,
                }),
        );
    }
    ops
}

/// kube-proxy's IPVS programming replayed through netlink-ipvs, after
/// [`kube_proxy::host_setup`]: one virtual server, real servers set to weight 0 when their pod
/// terminates and deleted only once their connection counts reach 0 (its graceful termination).
pub struct KubeProxyIpvs {
    ipvs: IpvsHandle,
    /// The one virtual server.
    pub key: ServiceKey,
}

impl KubeProxyIpvs {
    /// Sets up the host as kube-proxy does (`extra` sysctls on top of its defaults) and
    /// creates the virtual server `protocol` `vip`:`port` with `real_servers`.
    pub fn start(
        vip: &str,
        protocol: Protocol,
        port: u16,
        extra: &[(&str, &str)],
        real_servers: &[RealServer],
    ) -> Self {
        kube_proxy::host_setup(vip, extra);
        let mut ipvs = IpvsHandle::connect().unwrap();
        let key = ServiceKey::Address {
            protocol,
            address: vip.parse().unwrap(),
            port,
        };
        ipvs.add_virtual_server(&VirtualServer::new(key)).unwrap();
        let mut this = Self { ipvs, key };
        for rs in real_servers {
            this.add(rs);
        }
        this
    }

    /// Adds a real server.
    pub fn add(&mut self, real_server: &RealServer) {
        self.ipvs.add_real_server(&self.key, real_server).unwrap();
    }

    /// A terminating pod: its real server at weight 0.
    pub fn set_weight_zero(&mut self, real_server: &RealServer) {
        let mut weight0 = *real_server;
        weight0.weight = 0;
        self.ipvs
            .apply_one(IpvsOperation::UpdateRealServer {
                service: self.key,
                real_server: weight0,
            })
            .unwrap();
    }

    /// kube-proxy's graceful-termination check: deletes the real server `rs` once its
    /// ActiveConn + InActConn are 0; true when it is gone (now or before).
    pub fn delete_if_drained(&mut self, rs: &RealServerKey) -> bool {
        let counts = self
            .ipvs
            .destinations(&self.key)
            .unwrap()
            .into_iter()
            .find(|d| d.real_server.key == *rs)
            .map(|d| d.active_connections + d.inactive_connections);
        match counts {
            Some(0) => {
                self.ipvs.delete_real_server(&self.key, rs).unwrap();
                true
            }
            Some(_) => false,
            None => true,
        }
    }
}

/// The procfs path of conntrack knob `knob` on this machine (`/proc/sys/...`).
pub fn knob_path(knob: conntrack_gc::sizing::Knob) -> String {
    format!("/{}", knob.relative_path())
}
