//! Issue 12 item 8 (DESIGN.md invariant 3: never delete on bad input), through the binary: a
//! source file truncated to 0 bytes, then the whole source directory vanishing, leave the
//! programmed IPVS table exactly as it was (`ipvsadm -Sn` before/after), while proxier keeps
//! running and resyncing. Removing the file is what deletes its objects.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::time::Duration;

use proxier_kernel_tests::{
    service_yaml, slice_yaml, source_dir, wait_for_ipvs, witness, write_atomically, Endpoint,
    NetNs, ProxierProcess, IPVSADM,
};

#[test]
fn truncated_file_and_vanished_directory_delete_nothing() {
    let _ns = NetNs::fresh();
    let source = source_dir("bad-input");
    write_atomically(
        &source.join("web.yaml"),
        &format!(
            "{}---\n{}",
            service_yaml("web", "10.96.0.90", &[("web", "TCP", 80, 8080, None)]),
            slice_yaml(
                "web",
                &[("web", "TCP", 8080)],
                &[Endpoint::ready("10.0.2.2"), Endpoint::ready("10.0.2.3")],
            )
        ),
    );
    let mut proxier = ProxierProcess::run(&source, &["--sync-period", "1s"]);
    wait_for_ipvs("web programmed", Duration::from_secs(20), |l| {
        l.contains("10.96.0.90:80") && l.contains("10.0.2.3:8080")
    });
    let before = witness(IPVSADM, &["-Sn"]);

    // Truncated in place to 0 bytes (not an atomic rename: what `> file` does).
    std::fs::write(source.join("web.yaml"), "").unwrap();
    // Several polls and at least two full resyncs.
    std::thread::sleep(Duration::from_secs(3));
    proxier.assert_running();
    let truncated = witness(IPVSADM, &["-Sn"]);
    assert_eq!(before, truncated, "a truncated file deleted something");

    // The source directory vanishes.
    std::fs::remove_dir_all(&source).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    proxier.assert_running();
    let vanished = witness(IPVSADM, &["-Sn"]);
    assert_eq!(before, vanished, "a vanished directory deleted something");

    // It comes back without the file: now removal is explicit, and the service goes.
    std::fs::create_dir_all(&source).unwrap();
    write_atomically(&source.join("other.yaml"), "# nothing\n");
    wait_for_ipvs("web removed", Duration::from_secs(20), |l| {
        !l.contains("10.96.0.90:80")
    });
    let (_, log) = proxier.stop();
    let reported = log
        .lines()
        .filter(|l| l.contains("truncated?") || l.contains("vanished"))
        .count();
    assert!(reported >= 2, "both bad inputs reported:\n{log}");
    println!(
        "item 8 VM: ipvsadm -Sn identical ({} lines) after truncation to 0 bytes and after the directory vanished; {reported} log lines reported it",
        before.lines().count()
    );
}
