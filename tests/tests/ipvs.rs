//! netlink-ipvs against the real kernel, with `ipvsadm` as the outside witness.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use netlink_ipvs::{
    Family, IpvsError, IpvsHandle, IpvsOperation, IpvsState, Protocol, RealServer, ServiceKey,
    Timeouts,
};
use proxier_kernel_tests::{create_ops, ipvsadm_save, sample, witness, NetNs, IPVSADM};

/// Our own dump, normalised (kernel-set HASHED masked).
fn dump(handle: &mut IpvsHandle) -> IpvsState {
    let mut state = handle.state().expect("dump");
    for s in state.services.values_mut() {
        s.service = s.service.normalized();
    }
    state
}

fn assert_all_ok(results: &[Result<(), IpvsError>]) {
    let failed: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .take(5)
        .collect();
    assert!(failed.is_empty(), "failures: {failed:?}");
}

fn assert_witness_matches(state: &IpvsState) {
    let listed: BTreeSet<String> = witness(IPVSADM, &["-Sn"])
        .lines()
        .map(str::to_owned)
        .collect();
    let expected = ipvsadm_save(state);
    let missing: Vec<_> = expected.difference(&listed).take(5).collect();
    let extra: Vec<_> = listed.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
    assert_eq!(
        listed.len(),
        state.services.len() + state.real_server_count()
    );
}

#[test]
fn thousand_services_times_ten_destinations_match_the_witness() {
    let _ns = NetNs::fresh();
    let mut handle = IpvsHandle::connect().unwrap();
    let mut state = sample(1000, 10, true);
    let results = handle.apply(&create_ops(&state));
    assert_eq!(results.len(), 11_000);
    assert_all_ok(&results);
    assert_witness_matches(&state);
    assert_eq!(dump(&mut handle), state, "our dump equals what we wrote");

    // Edit the weights of every real server of the first 100 services.
    let mut edits = Vec::new();
    for s in state.services.values_mut().take(100) {
        for rs in s.real_servers.values_mut() {
            rs.weight = 0;
            edits.push(IpvsOperation::UpdateRealServer {
                service: s.service.key,
                real_server: *rs,
            });
        }
    }
    assert_all_ok(&handle.apply(&edits));
    // Delete every other service.
    let doomed: Vec<ServiceKey> = state.services.keys().step_by(2).copied().collect();
    let deletes: Vec<_> = doomed
        .iter()
        .map(|k| IpvsOperation::DeleteVirtualServer(*k))
        .collect();
    assert_all_ok(&handle.apply(&deletes));
    for key in &doomed {
        state.services.remove(key);
    }
    assert_eq!(state.services.len(), 500);
    assert_witness_matches(&state);
    assert_eq!(dump(&mut handle), state);
}

#[test]
fn timeouts_are_set_and_read_back() {
    let _ns = NetNs::fresh();
    let mut handle = IpvsHandle::connect().unwrap();
    let wanted = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    handle.set_timeouts(wanted).unwrap();
    assert_eq!(handle.timeouts().unwrap(), wanted);
    let listing = witness(IPVSADM, &["-L", "--timeout"]);
    assert!(listing.contains("900 120 300"), "{listing}");
    // 0 leaves a value unchanged.
    handle
        .set_timeouts(Timeouts {
            tcp: 0,
            tcp_fin: 0,
            udp: 60,
        })
        .unwrap();
    assert_eq!(handle.timeouts().unwrap(), Timeouts { udp: 60, ..wanted });
}

#[test]
fn errors_inside_a_batch_are_typed_and_do_not_stop_the_rest() {
    let _ns = NetNs::fresh();
    let mut handle = IpvsHandle::connect().unwrap();
    let mut state = sample(200, 0, false);
    assert_all_ok(&handle.apply(&create_ops(&state)));
    let keys: Vec<ServiceKey> = state.services.keys().copied().collect();
    let missing_service = ServiceKey::Address {
        protocol: Protocol::Tcp,
        address: "192.0.2.1".parse().unwrap(),
        port: 1,
    };
    let mut ops = Vec::new();
    let mut bad = Vec::new();
    for i in 0..2000 {
        let key = keys[i % keys.len()];
        match i {
            7 | 500 | 1999 => {
                bad.push((i, "exists"));
                ops.push(IpvsOperation::AddVirtualServer(
                    state.services[&key].service.clone(),
                ));
            }
            100 | 1500 => {
                bad.push((i, "no destination"));
                let rs = RealServer::masq("198.51.100.1".parse().unwrap(), 9);
                ops.push(IpvsOperation::DeleteRealServer {
                    service: key,
                    real_server: rs.key,
                });
            }
            250 | 1000 => {
                bad.push((i, "no service"));
                let rs = RealServer::masq("198.51.100.2".parse().unwrap(), 9);
                ops.push(IpvsOperation::AddRealServer {
                    service: missing_service,
                    real_server: rs,
                });
            }
            _ => {
                let address: IpAddr = match key.family() {
                    Family::V4 => format!("10.200.{}.{}", i / 250, i % 250 + 1)
                        .parse()
                        .unwrap(),
                    Family::V6 => format!("fd02::{:x}", i + 1).parse().unwrap(),
                };
                let rs = RealServer::masq(address, 8080);
                state
                    .services
                    .get_mut(&key)
                    .unwrap()
                    .real_servers
                    .insert(rs.key, rs);
                ops.push(IpvsOperation::AddRealServer {
                    service: key,
                    real_server: rs,
                });
            }
        }
    }
    let results = handle.apply(&ops);
    assert_eq!(results.len(), 2000);
    for (i, result) in results.iter().enumerate() {
        match bad.iter().find(|(at, _)| *at == i).map(|(_, why)| *why) {
            None => assert!(result.is_ok(), "op {i}: {result:?}"),
            Some("exists") => assert!(
                matches!(result, Err(IpvsError::AlreadyExists { .. })),
                "op {i}: {result:?}"
            ),
            Some("no destination") => {
                assert!(
                    matches!(result, Err(IpvsError::NoSuchDestination { .. })),
                    "op {i}: {result:?}"
                )
            }
            Some(_) => assert!(
                matches!(result, Err(IpvsError::NoSuchService { .. })),
                "op {i}: {result:?}"
            ),
        }
    }
    // Every good operation was applied.
    assert_witness_matches(&state);
    println!(
        "batch of 2000 with {} bad operations: typed errors at {:?}",
        bad.len(),
        bad
    );
}

#[test]
fn a_batch_of_twenty_thousand_operations_loses_no_result() {
    let _ns = NetNs::fresh();
    let mut handle = IpvsHandle::connect().unwrap();
    let state = sample(2000, 9, false);
    let ops = create_ops(&state);
    assert_eq!(ops.len(), 20_000);
    let results = handle.apply(&ops);
    assert_eq!(results.len(), 20_000);
    assert_all_ok(&results);
    // Applying it again: every single operation must come back EEXIST, none lost or merged.
    let again = handle.apply(&ops);
    assert_eq!(again.len(), 20_000);
    let exists = again
        .iter()
        .filter(|r| matches!(r, Err(IpvsError::AlreadyExists { .. })))
        .count();
    assert_eq!(exists, 20_000);
    assert_witness_matches(&state);
    println!("20000-operation batch: 20000 results, 20000 EEXIST on replay");
}

#[test]
fn info_reports_version_and_table_size() {
    let _ns = NetNs::fresh();
    let mut handle = IpvsHandle::connect().unwrap();
    let info = handle.info().unwrap();
    let listing = witness(IPVSADM, &["-Ln"]);
    let version = format!(
        "IP Virtual Server version {}.{}.{} (size={})",
        info.version >> 16,
        (info.version >> 8) & 0xff,
        info.version & 0xff,
        info.connection_table_size
    );
    assert!(listing.starts_with(&version), "{listing}\nvs {version}");
}
