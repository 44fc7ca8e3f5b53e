//! A small routed topology for real-packet tests: the calling thread's (fresh) namespace is the
//! router, where IPVS lives; each host is a named namespace joined to it by a veth pair, with a
//! default route back through the router.

use std::process::Command;

use crate::sysctl::enable_forwarding;
use crate::witness::{witness, IP};

/// Named host namespaces joined to the calling thread's namespace; deleted on drop.
pub struct Lab {
    tag: String,
    hosts: Vec<String>,
}

impl Lab {
    /// A lab whose namespace names start with `tag` (keep it short and unique per test).
    pub fn new(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            hosts: Vec::new(),
        }
    }

    /// A lab with host `client` at 10.0.1.2 (router 10.0.1.1) and IPv4 forwarding on; returns
    /// it and the client's namespace.
    pub fn with_client(tag: &str) -> (Self, String) {
        let mut lab = Self::new(tag);
        let client = lab.host("client", "10.0.1.2", "10.0.1.1");
        enable_forwarding();
        (lab, client)
    }

    /// Adds host `name` at `host_ip` on the /24 shared with the router's `router_ip`; returns
    /// the host's namespace name.
    pub fn host(&mut self, name: &str, host_ip: &str, router_ip: &str) -> String {
        let netns = format!("{}-{name}", self.tag);
        let router_side = self.router_side(self.hosts.len());
        witness(IP, &["netns", "add", &netns]);
        self.hosts.push(netns.clone());
        let veth = [
            "link",
            "add",
            &router_side,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
        ];
        witness(IP, &[&veth[..], &["netns", &netns]].concat());
        witness(
            IP,
            &[
                "addr",
                "add",
                &format!("{router_ip}/24"),
                "dev",
                &router_side,
            ],
        );
        witness(IP, &["link", "set", &router_side, "up"]);
        let host_address = format!("{host_ip}/24");
        witness(
            IP,
            &["-n", &netns, "addr", "add", &host_address, "dev", "eth0"],
        );
        witness(IP, &["-n", &netns, "link", "set", "eth0", "up"]);
        witness(IP, &["-n", &netns, "link", "set", "lo", "up"]);
        witness(
            IP,
            &["-n", &netns, "route", "add", "default", "via", router_ip],
        );
        netns
    }

    /// Gives host `netns` (made by [`Lab::host`]) IPv6 too: `host_ip`/64 on its side,
    /// `router_ip`/64 on the router's, and a default route through the router.
    pub fn add_ipv6(&self, netns: &str, host_ip: &str, router_ip: &str) {
        let index = self
            .hosts
            .iter()
            .position(|h| h == netns)
            .unwrap_or_else(|| panic!("{netns} is not a host of this lab"));
        let router_side = self.router_side(index);
        let router_address = format!("{router_ip}/64");
        witness(
            IP,
            &["addr", "add", &router_address, "dev", &router_side, "nodad"],
        );
        let host_address = format!("{host_ip}/64");
        let add = [
            "-n",
            netns,
            "addr",
            "add",
            &host_address,
            "dev",
            "eth0",
            "nodad",
        ];
        witness(IP, &add);
        witness(
            IP,
            &[
                "-n", netns, "-6", "route", "add", "default", "via", router_ip,
            ],
        );
    }

    /// The router's end of the veth of host number `index`.
    fn router_side(&self, index: usize) -> String {
        format!("v{}{index}", self.tag)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for netns in &self.hosts {
            let _ = Command::new(IP).args(["netns", "del", netns]).status();
        }
    }
}

/// The topology most scenarios use: a client at 10.0.1.2 (router 10.0.1.1) and pods numbered
/// from 0 at [`PodNetwork::pod_ip`] (10.0.2.2, 10.0.3.2, …), with IPv4 forwarding on.
pub struct PodNetwork {
    /// The namespaces; dropping it deletes them.
    pub lab: Lab,
    /// The client's namespace.
    pub client: String,
    /// Each pod's namespace, by number.
    pub pods: Vec<String>,
}

impl PodNetwork {
    /// A client and `pods` pod namespaces (named `a`, `b`, … after the tag).
    pub fn new(tag: &str, pods: usize) -> Self {
        let (mut lab, client) = Lab::with_client(tag);
        let pods = (0..pods)
            .map(|i| {
                let name = char::from(b'a' + u8::try_from(i).expect("a few pods"));
                lab.host(
                    &name.to_string(),
                    &Self::pod_ip(i),
                    &format!("10.0.{}.1", i + 2),
                )
            })
            .collect();
        Self { lab, client, pods }
    }

    /// The address of pod `i`: 10.0.(i+2).2.
    pub fn pod_ip(i: usize) -> String {
        format!("10.0.{}.2", i + 2)
    }
}
