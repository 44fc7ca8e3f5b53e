#![no_main]
//! Arbitrary attribute bytes into the IPVS service and destination entry readers (what a dump
//! reply's nested `IPVS_CMD_ATTR_SERVICE`/`IPVS_CMD_ATTR_DEST` hands them): errors are fine,
//! panics are not. The first byte picks the reader and, for destinations, the service's family.
//! Whatever reads as an entry must survive the attributes proxier writes for it: they read back
//! to the same virtual server / real server.

use libfuzzer_sys::fuzz_target;
use netlink_ipvs::{
    destination_attributes, destination_entry, service_attributes, service_entry,
    DestinationAttribute, Family, ServiceAttribute,
};
use netlink_packet_core::NlasIterator;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        let Ok(attributes) = NlasIterator::new(bytes)
            .map(|nla| nla.and_then(|nla| ServiceAttribute::parse(&nla)))
            .collect::<Result<Vec<_>, _>>()
        else {
            return;
        };
        let Ok(entry) = service_entry(&attributes) else {
            return;
        };
        let again = service_entry(&service_attributes(&entry.service))
            .expect("the attributes of a read virtual server read back");
        assert_eq!(again.service, entry.service);
    } else {
        let family = if selector & 2 == 0 { Family::V4 } else { Family::V6 };
        let Ok(attributes) = NlasIterator::new(bytes)
            .map(|nla| nla.and_then(|nla| DestinationAttribute::parse(&nla)))
            .collect::<Result<Vec<_>, _>>()
        else {
            return;
        };
        let Ok(entry) = destination_entry(&attributes, family) else {
            return;
        };
        let again = destination_entry(&destination_attributes(&entry.real_server), entry.family)
            .expect("the attributes of a read real server read back");
        assert_eq!(again.real_server, entry.real_server);
    }
});
