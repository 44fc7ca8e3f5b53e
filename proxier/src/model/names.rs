//! One shared copy of each node and zone name the endpoints of a [`super::ClusterState`]
//! carry: at 10,000 Services × 10 endpoints, 100,000 endpoints name about a thousand nodes,
//! and a `String` each cost 100,000 allocations.

use std::collections::HashSet;
use std::sync::Arc;

use super::EndpointSlice;

/// The set is never pruned below this many names.
const MIN_PRUNE: usize = 64;

/// The names in use, each once. Names that no endpoint holds any more are dropped when the
/// set has doubled since it was last pruned, so node names that come and go (an autoscaled
/// cluster) cost no lasting memory.
#[derive(Debug, Clone, Default)]
pub(super) struct SharedNames {
    names: HashSet<Arc<str>>,
    prune_at: usize,
}

impl SharedNames {
    /// Replaces each endpoint's node and zone name by the shared copy.
    pub(super) fn share(&mut self, slice: &mut EndpointSlice) {
        for endpoint in &mut slice.endpoints {
            for name in [&mut endpoint.node, &mut endpoint.zone]
                .into_iter()
                .flatten()
            {
                *name = self.shared(name);
            }
        }
    }

    fn shared(&mut self, name: &Arc<str>) -> Arc<str> {
        if let Some(known) = self.names.get(&**name) {
            return Arc::clone(known);
        }
        if self.names.len() >= self.prune_at.max(MIN_PRUNE) {
            self.names.retain(|n| Arc::strong_count(n) > 1);
            self.prune_at = 2 * self.names.len();
        }
        self.names.insert(Arc::clone(name));
        Arc::clone(name)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{SharedNames, MIN_PRUNE};
    use crate::fixtures::{ep, slice};
    use crate::model::{ClusterState, Protocol};

    const PORTS: &[(&str, Protocol, u16)] = &[("http", Protocol::Tcp, 8080)];

    fn node_of<'a>(cluster: &'a ClusterState, slice_name: &str) -> &'a Arc<str> {
        let endpoint = &cluster.slice("default", slice_name).unwrap().endpoints[0];
        endpoint.node.as_ref().unwrap()
    }

    #[test]
    fn endpoints_of_different_slices_on_one_node_share_its_name() {
        let mut cluster = ClusterState::new();
        let (a, b) = (ep("10.0.0.1", "node-a"), ep("10.0.0.2", "node-a"));
        assert!(!Arc::ptr_eq(
            a.node.as_ref().unwrap(),
            b.node.as_ref().unwrap()
        ));
        cluster.upsert_slice(slice("one", "one-1", PORTS, vec![a]));
        cluster.upsert_slice(slice("two", "two-1", PORTS, vec![b]));
        assert!(Arc::ptr_eq(
            node_of(&cluster, "one-1"),
            node_of(&cluster, "two-1")
        ));
        assert_eq!(&**node_of(&cluster, "two-1"), "node-a");
        let mut zoned = ep("10.0.0.3", "node-b");
        zoned.zone = Some("zone-1".into());
        let mut also = ep("10.0.0.4", "node-b");
        also.zone = Some("zone-1".into());
        cluster.upsert_slice(slice("three", "three-1", PORTS, vec![zoned, also]));
        let endpoints = &cluster.slice("default", "three-1").unwrap().endpoints;
        let zones: Vec<&Arc<str>> = endpoints.iter().map(|e| e.zone.as_ref().unwrap()).collect();
        assert!(Arc::ptr_eq(zones[0], zones[1]));
    }

    #[test]
    fn names_no_endpoint_holds_are_dropped_as_the_set_grows() {
        let mut names = SharedNames::default();
        // Nodes come and go: each slice names a new node and replaces the last one.
        let mut held = slice("svc", "svc-1", PORTS, vec![ep("10.0.0.1", "node-0")]);
        names.share(&mut held);
        for n in 1..10 * MIN_PRUNE {
            held = slice(
                "svc",
                "svc-1",
                PORTS,
                vec![ep("10.0.0.1", &format!("node-{n}"))],
            );
            names.share(&mut held);
            assert!(
                names.names.len() <= 2 * MIN_PRUNE,
                "{} names kept",
                names.names.len()
            );
        }
        assert!(names.names.contains("node-639"));
    }
}
