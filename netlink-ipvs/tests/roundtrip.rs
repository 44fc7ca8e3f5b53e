//! Property tests: anything we can express encodes, parses back to the same value, and
//! re-encodes to the same bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_ipvs::{
    decode_message, destination_entry, encode_request, service_entry, Family, ForwardMethod,
    IpvsAttribute, IpvsOperation, Protocol, RealServer, RealServerKey, Scheduler, ServiceFlags,
    ServiceKey, TunnelKind, VirtualServer,
};
use netlink_packet_core::NetlinkPayload;
use proptest::prelude::*;

fn address(v6: bool) -> impl Strategy<Value = IpAddr> {
    if v6 {
        any::<u128>()
            .prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)))
            .boxed()
    } else {
        any::<u32>()
            .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
            .boxed()
    }
}

fn service_key(v6: bool) -> impl Strategy<Value = ServiceKey> {
    let family = if v6 { Family::V6 } else { Family::V4 };
    prop_oneof![
        (
            prop_oneof![
                Just(Protocol::Tcp),
                Just(Protocol::Udp),
                Just(Protocol::Sctp)
            ],
            address(v6),
            any::<u16>()
        )
            .prop_map(|(protocol, address, port)| ServiceKey::Address {
                protocol,
                address,
                port
            }),
        (1..u32::MAX).prop_map(move |mark| ServiceKey::FwMark { mark, family }),
    ]
}

fn virtual_server() -> impl Strategy<Value = VirtualServer> {
    any::<bool>()
        .prop_flat_map(service_key)
        .prop_flat_map(|key| {
            ("[a-z]{1,15}", any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
                move |(scheduler, flags, timeout, netmask)| VirtualServer {
                    key,
                    scheduler: Scheduler::from_name(&scheduler),
                    flags: ServiceFlags(flags),
                    timeout,
                    netmask,
                },
            )
        })
}

fn real_server(v6: bool) -> impl Strategy<Value = RealServer> {
    let forward = prop_oneof![
        Just(ForwardMethod::Masq),
        Just(ForwardMethod::Local),
        Just(ForwardMethod::Route),
        Just(ForwardMethod::Bypass),
        (0u8..3, any::<u16>(), any::<u16>()).prop_map(|(k, port, flags)| ForwardMethod::Tunnel {
            kind: TunnelKind::from_number(k).unwrap(),
            port,
            flags
        }),
    ];
    (
        address(v6),
        any::<u16>(),
        forward,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(address, port, forward, weight, upper_threshold, lower_threshold)| RealServer {
                key: RealServerKey { address, port },
                forward,
                weight,
                upper_threshold,
                lower_threshold,
            },
        )
}

fn round_trip(op: &IpvsOperation) -> IpvsAttribute {
    let mut bytes = Vec::new();
    encode_request(0x1c, op.to_message(), 5, 77, &mut bytes);
    let parsed = decode_message(&bytes).unwrap();
    let mut again = vec![0; parsed.buffer_len()];
    parsed.serialize(&mut again);
    assert_eq!(again, bytes, "re-emit is byte for byte");
    let NetlinkPayload::InnerMessage(genl) = parsed.payload else {
        panic!()
    };
    assert_eq!(genl.payload, op.to_message());
    genl.payload.attributes.last().unwrap().clone()
}

proptest! {
    #[test]
    fn virtual_servers_round_trip(service in virtual_server()) {
        let IpvsAttribute::Service(attrs) = round_trip(&IpvsOperation::AddVirtualServer(service.clone())) else { panic!() };
        prop_assert_eq!(service_entry(&attrs).unwrap().service, service);
    }

    #[test]
    fn real_servers_round_trip(rs in any::<bool>().prop_flat_map(real_server)) {
        let service = ServiceKey::FwMark { mark: 1, family: Family::of(&rs.key.address) };
        let op = IpvsOperation::AddRealServer { service, real_server: rs };
        let IpvsAttribute::Destination(attrs) = round_trip(&op) else { panic!() };
        prop_assert_eq!(destination_entry(&attrs, service.family()).unwrap().real_server, rs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_message(&bytes);
    }
}
