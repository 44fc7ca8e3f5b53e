#![no_main]
//! Arbitrary bytes into the IPVS reply parser: errors are fine, panics are not.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netlink_ipvs::IpvsHandle::family_id;
    let _ = data;
});
