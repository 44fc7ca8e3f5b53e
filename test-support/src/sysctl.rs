//! Host knobs under `/proc/sys`, read and written as the tests need them.

/// Reads a numeric knob (`/proc/sys/...`).
pub fn read(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Writes a numeric knob and checks that the kernel took the value.
pub fn write(path: &str, value: u64) {
    std::fs::write(path, format!("{value}\n")).unwrap_or_else(|e| panic!("write {path}: {e}"));
    assert_eq!(read(path), value, "{path} took the value");
}

/// The path of IPVS knob `name` (`/proc/sys/net/ipv4/vs/NAME`).
pub fn ipvs_knob(name: &str) -> String {
    format!("/proc/sys/net/ipv4/vs/{name}")
}

/// Turns IPv4 forwarding on in the calling thread's namespace (the router's).
pub fn enable_forwarding() {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1\n").expect("ip_forward");
}

/// Turns IPv6 forwarding on in the calling thread's namespace.
pub fn enable_ipv6_forwarding() {
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1\n").expect("ipv6 forwarding");
}
