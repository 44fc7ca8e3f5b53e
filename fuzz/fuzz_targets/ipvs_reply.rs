#![no_main]
//! Arbitrary bytes into the IPVS reply parser: errors are fine, panics are not. Whatever parses
//! as an IPVS message must re-encode and parse again to the same message.

use libfuzzer_sys::fuzz_target;
use netlink_packet_core::NetlinkPayload;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = netlink_ipvs::decode_message(data) else {
        return;
    };
    let NetlinkPayload::InnerMessage(genl) = message.payload else {
        return;
    };
    let mut bytes = Vec::new();
    let header = message.header;
    netlink_ipvs::encode_request(
        header.message_type,
        genl.payload.clone(),
        header.flags,
        header.sequence_number,
        &mut bytes,
    );
    let again = netlink_ipvs::decode_message(&bytes).expect("re-encoded message parses");
    let NetlinkPayload::InnerMessage(again) = again.payload else {
        panic!("re-encoded message is not an IPVS message");
    };
    assert_eq!(again.payload, genl.payload);
});
