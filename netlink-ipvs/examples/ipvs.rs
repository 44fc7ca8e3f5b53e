//! netlink-ipvs alone: list the IPVS table, apply one batch (a virtual server and two real
//! servers, one result per operation), list again.
//!
//! Needs `CAP_NET_ADMIN` and a kernel with IPVS; acts on the calling thread's network
//! namespace: `ip netns add ipvs && ip netns exec ipvs cargo run -p netlink-ipvs --example ipvs`.
//! The VM test `tests/tests/examples.rs` runs it and checks the result with `ipvsadm -Ln`.

use std::net::{IpAddr, Ipv4Addr};

use netlink_ipvs::{
    IpvsError, IpvsHandle, IpvsOperation, IpvsState, Protocol, RealServer, Scheduler, ServiceKey,
    VirtualServer,
};

/// The virtual server the batch adds.
pub const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
/// Its real servers (port 8080).
pub const REAL_SERVERS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 244, 0, 2)),
    IpAddr::V4(Ipv4Addr::new(10, 244, 0, 3)),
];

fn print_listing(title: &str, state: &IpvsState) {
    println!("{title}: {} virtual servers", state.services.len());
    for service in state.services.values() {
        println!("{} {}", service.service.key, service.service.scheduler);
        for real in service.real_servers.values() {
            println!("  -> {} {} weight {}", real.key, real.forward, real.weight);
        }
    }
}

/// The batch: a round-robin TCP virtual server on `VIP:80` with the two real servers.
pub fn batch() -> Vec<IpvsOperation> {
    let service = ServiceKey::Address {
        protocol: Protocol::Tcp,
        address: VIP,
        port: 80,
    };
    let mut virtual_server = VirtualServer::new(service);
    virtual_server.scheduler = Scheduler::Rr;
    let mut ops = vec![IpvsOperation::AddVirtualServer(virtual_server)];
    ops.extend(
        REAL_SERVERS
            .iter()
            .map(|&address| IpvsOperation::AddRealServer {
                service,
                real_server: RealServer::masq(address, 8080),
            }),
    );
    ops
}

/// Lists, applies [`batch`], lists again; the first failed operation is the error.
pub fn main() -> Result<(), IpvsError> {
    let mut ipvs = IpvsHandle::connect()?;
    print_listing("before", &ipvs.state()?);
    let ops = batch();
    let results = ipvs.apply(&ops);
    for (op, result) in ops.iter().zip(&results) {
        println!("{op:?}: {result:?}");
    }
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    print_listing("after", &ipvs.state()?);
    Ok(())
}
