//! Drift repair by the running binary: someone deletes one of proxier's real servers and
//! changes another's weight with `ipvsadm`; the next full resync (every `--sync-period`) puts
//! them back, and a foreign virtual server added meanwhile is left alone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::time::{Duration, Instant};

use proxier_kernel_tests::yaml::web_source;
use proxier_kernel_tests::{wait_for_ipvs, witness, Endpoint, NetNs, ProxierProcess, IPVSADM};

#[test]
fn deleted_real_server_comes_back_within_one_sync_period() {
    let _ns = NetNs::fresh();
    let source = web_source(
        "drift",
        "10.96.0.60",
        &[Endpoint::ready("10.244.1.5"), Endpoint::ready("10.244.1.6")],
    );
    let mut proxier = ProxierProcess::run(&source, &["--sync-period", "3s"]);
    wait_for_ipvs("both real servers", Duration::from_secs(20), |l| {
        l.contains("-> 10.244.1.5:8080") && l.contains("-> 10.244.1.6:8080")
    });

    witness(
        IPVSADM,
        &["-d", "-t", "10.96.0.60:80", "-r", "10.244.1.5:8080"],
    );
    witness(
        IPVSADM,
        &[
            "-e",
            "-t",
            "10.96.0.60:80",
            "-r",
            "10.244.1.6:8080",
            "-m",
            "-w",
            "9",
        ],
    );
    witness(IPVSADM, &["-A", "-u", "192.0.2.77:53", "-s", "rr"]);
    let damaged = Instant::now();
    let listing = wait_for_ipvs("repair", Duration::from_secs(8), |l| {
        l.contains("-> 10.244.1.5:8080") && !l.contains("Masq    9")
    });
    let repaired_in = damaged.elapsed();
    println!(
        "drift repaired in {:.2} s (sync period 3 s):\n{listing}",
        repaired_in.as_secs_f64()
    );
    assert!(
        repaired_in < Duration::from_secs(6),
        "within one sync period (+ slack)"
    );
    assert!(
        listing.contains("UDP  192.0.2.77:53 rr"),
        "foreign service kept:\n{listing}"
    );
    proxier.assert_running();
}
