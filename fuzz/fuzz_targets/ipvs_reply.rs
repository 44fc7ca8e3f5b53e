#![no_main]
//! Arbitrary bytes into the IPVS reply parser: errors are fine, panics are not. Whatever parses
//! must re-emit and parse again to the same value.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = netlink_ipvs::decode_message(data) else {
        return;
    };
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    let again = netlink_ipvs::decode_message(&bytes).expect("re-emitted message parses");
    assert_eq!(again.payload, message.payload);
});
