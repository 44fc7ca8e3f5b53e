//! Byte fixtures for every IPVS message kind, built by hand from the layout in
//! `include/uapi/linux/ip_vs.h` (struct nlmsghdr, struct genlmsghdr, then attributes, each a
//! 4-byte header + value padded to 4), independent of this crate's encoder.
//! Each fixture is checked both ways: emit == bytes, and parse(bytes) == value.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use netlink_ipvs::{
    decode_message, encode_request, DestinationAttribute, Family, ForwardMethod, IpvsAttribute,
    IpvsCommand, IpvsMessage, IpvsOperation, Protocol, RealServer, ServiceAttribute, ServiceFlags,
    ServiceKey, StatsAttribute, StatsCounter, Timeouts, VirtualServer,
};
use netlink_packet_core::{NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

const FAMILY: u16 = 0x1c;

/// One attribute: length (header + value, unpadded), type, value, zero padding.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
    out.extend(kind.to_ne_bytes());
    out.extend(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out
}

/// nlmsghdr + genlmsghdr (cmd, version 1, reserved) + attributes.
fn message(cmd: u8, flags: u16, seq: u32, attributes: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = attributes.concat();
    let mut out = ((16 + 4 + body.len()) as u32).to_ne_bytes().to_vec();
    out.extend(FAMILY.to_ne_bytes());
    out.extend(flags.to_ne_bytes());
    out.extend(seq.to_ne_bytes());
    out.extend(0u32.to_ne_bytes()); // port id
    out.extend([cmd, 1, 0, 0]);
    out.extend(body);
    out
}

fn u16v(v: u16) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}
fn u32v(v: u32) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}
fn addr4(a: [u8; 4]) -> Vec<u8> {
    let mut v = a.to_vec();
    v.extend([0; 12]); // the kernel's union nf_inet_addr is always 16 bytes
    v
}

fn tcp_10_0_0_1_80() -> ServiceKey {
    ServiceKey::Address {
        protocol: Protocol::Tcp,
        address: "10.0.0.1".parse().unwrap(),
        port: 80,
    }
}

/// The service key attributes for TCP 10.0.0.1:80: AF_INET, IPPROTO_TCP, address, port (BE).
fn tcp_key_nlas() -> Vec<Vec<u8>> {
    vec![
        nla(1, &u16v(2)),
        nla(2, &u16v(6)),
        nla(3, &addr4([10, 0, 0, 1])),
        nla(4, &80u16.to_be_bytes()),
    ]
}

fn check(op: IpvsOperation, flags: u16, expected: Vec<u8>) {
    let mut emitted = Vec::new();
    encode_request(FAMILY, op.to_message(), flags, 1, &mut emitted);
    assert_eq!(emitted, expected, "emit of {op}");
    let parsed = decode_message(&expected).unwrap();
    let NetlinkPayload::InnerMessage(genl) = parsed.payload else {
        panic!("not an inner message")
    };
    assert_eq!(genl.payload, op.to_message(), "parse of {op}");
}

#[test]
fn new_service_tcp_ipv4() {
    let mut service = VirtualServer::new(tcp_10_0_0_1_80());
    service.flags = ServiceFlags::PERSISTENT;
    service.timeout = 10800;
    let mut inner = tcp_key_nlas();
    inner.extend([
        nla(6, b"rr\0"),
        nla(7, &[u32v(1), u32v(u32::MAX)].concat()), // struct ip_vs_flags { flags, mask }
        nla(8, &u32v(10800)),
        nla(9, &u32v(0xffff_ffff)),
    ]);
    let bytes = message(1, NLM_F_REQUEST | NLM_F_ACK, 1, &[nla(1, &inner.concat())]);
    assert_eq!(bytes.len(), 104);
    check(
        IpvsOperation::AddVirtualServer(service),
        NLM_F_REQUEST | NLM_F_ACK,
        bytes,
    );
}

#[test]
fn set_service_and_delete_fwmark_ipv6_service() {
    let key = ServiceKey::FwMark {
        mark: 7,
        family: Family::V6,
    };
    let mut service = VirtualServer::new(key);
    service.scheduler = "mh".into();
    service.flags = ServiceFlags::SCHED1 | ServiceFlags::SCHED2;
    let inner = [
        nla(1, &u16v(10)),
        nla(5, &u32v(7)),
        nla(6, b"mh\0"),
        nla(7, &[u32v(0x18), u32v(u32::MAX)].concat()),
        nla(8, &u32v(0)),
        nla(9, &u32v(128)),
    ];
    check(
        IpvsOperation::UpdateVirtualServer(service),
        NLM_F_REQUEST | NLM_F_ACK,
        message(2, NLM_F_REQUEST | NLM_F_ACK, 1, &[nla(1, &inner.concat())]),
    );
    let inner = [nla(1, &u16v(10)), nla(5, &u32v(7))];
    check(
        IpvsOperation::DeleteVirtualServer(key),
        NLM_F_REQUEST | NLM_F_ACK,
        message(3, NLM_F_REQUEST | NLM_F_ACK, 1, &[nla(1, &inner.concat())]),
    );
}

#[test]
fn new_set_and_delete_destination() {
    let mut rs = RealServer::masq("10.244.1.5".parse().unwrap(), 8080);
    rs.weight = 3;
    let dest_key = [
        nla(11, &u16v(2)),
        nla(1, &addr4([10, 244, 1, 5])),
        nla(2, &8080u16.to_be_bytes()),
    ];
    let mut full = dest_key.to_vec();
    full.extend([
        nla(3, &u32v(0)),
        nla(4, &u32v(3)),
        nla(5, &u32v(0)),
        nla(6, &u32v(0)),
    ]);
    let service = nla(1, &tcp_key_nlas().concat());
    let flags = NLM_F_REQUEST | NLM_F_ACK;
    let add = IpvsOperation::AddRealServer {
        service: tcp_10_0_0_1_80(),
        real_server: rs,
    };
    check(
        add,
        flags,
        message(5, flags, 1, &[service.clone(), nla(2, &full.concat())]),
    );
    let set = IpvsOperation::UpdateRealServer {
        service: tcp_10_0_0_1_80(),
        real_server: rs,
    };
    check(
        set,
        flags,
        message(6, flags, 1, &[service.clone(), nla(2, &full.concat())]),
    );
    let del = IpvsOperation::DeleteRealServer {
        service: tcp_10_0_0_1_80(),
        real_server: rs.key,
    };
    check(
        del,
        flags,
        message(7, flags, 1, &[service, nla(2, &dest_key.concat())]),
    );
}

#[test]
fn tunnel_destination_carries_type_port_and_flags() {
    let mut rs = RealServer::masq("10.1.1.1".parse().unwrap(), 0);
    rs.forward = ForwardMethod::Tunnel {
        kind: netlink_ipvs::TunnelKind::Gue,
        port: 6080,
        flags: 1,
    };
    let attrs = netlink_ipvs::destination_attributes(&rs);
    assert!(attrs.contains(&DestinationAttribute::ForwardMethod(2)));
    assert!(attrs.contains(&DestinationAttribute::TunnelType(1)));
    assert!(attrs.contains(&DestinationAttribute::TunnelPort(6080)));
    let entry = netlink_ipvs::destination_entry(&attrs, Family::V4).unwrap();
    assert_eq!(entry.real_server, rs);
}

#[test]
fn set_config_and_flush() {
    let flags = NLM_F_REQUEST | NLM_F_ACK;
    let timeouts = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    check(
        IpvsOperation::SetTimeouts(timeouts),
        flags,
        message(
            12,
            flags,
            1,
            &[nla(4, &u32v(900)), nla(5, &u32v(120)), nla(6, &u32v(300))],
        ),
    );
    check(IpvsOperation::Flush, flags, message(17, flags, 1, &[]));
}

#[test]
fn dump_requests() {
    let mut bytes = Vec::new();
    encode_request(
        FAMILY,
        IpvsMessage::new(IpvsCommand::GetService, vec![]),
        NLM_F_REQUEST | NLM_F_DUMP,
        9,
        &mut bytes,
    );
    assert_eq!(bytes, message(4, NLM_F_REQUEST | NLM_F_DUMP, 9, &[]));
    let mut bytes = Vec::new();
    let request = IpvsMessage::new(
        IpvsCommand::GetDest,
        vec![IpvsAttribute::Service(
            netlink_ipvs::service_key_attributes(&tcp_10_0_0_1_80()),
        )],
    );
    encode_request(FAMILY, request, NLM_F_REQUEST | NLM_F_DUMP, 9, &mut bytes);
    assert_eq!(
        bytes,
        message(
            8,
            NLM_F_REQUEST | NLM_F_DUMP,
            9,
            &[nla(1, &tcp_key_nlas().concat())]
        )
    );
}

/// A service as the kernel dumps it: HASHED set, 32-bit stats with 64-bit byte counters,
/// stats64, and an attribute from the future (type 42) that must survive a round trip.
fn service_reply() -> Vec<u8> {
    let stats: Vec<u8> = [
        nla(1, &u32v(5)),
        nla(2, &u32v(50)),
        nla(3, &u32v(40)),
        nla(4, &3000u64.to_ne_bytes()),
        nla(5, &2000u64.to_ne_bytes()),
    ]
    .concat();
    let stats64: Vec<u8> = [nla(1, &5u64.to_ne_bytes()), nla(4, &3000u64.to_ne_bytes())].concat();
    let mut inner = tcp_key_nlas();
    inner.extend([
        nla(6, b"wrr\0"),
        nla(7, &[u32v(0x2), u32v(u32::MAX)].concat()),
        nla(8, &u32v(0)),
        nla(9, &u32v(0xffff_ffff)),
        nla(10, &stats),
        nla(12, &stats64),
        nla(42, &[1, 2, 3]),
    ]);
    message(1, 2 /* NLM_F_MULTI */, 3, &[nla(1, &inner.concat())])
}

#[test]
fn service_dump_reply_parses_and_re_emits_byte_for_byte() {
    let bytes = service_reply();
    let parsed = decode_message(&bytes).unwrap();
    let mut again = vec![0; parsed.buffer_len()];
    parsed.serialize(&mut again);
    assert_eq!(again, bytes);
    let NetlinkPayload::InnerMessage(genl) = parsed.payload else {
        panic!()
    };
    let IpvsAttribute::Service(attrs) = &genl.payload.attributes[0] else {
        panic!()
    };
    assert!(
        attrs
            .iter()
            .any(|a| matches!(a, ServiceAttribute::Other(_))),
        "unknown attribute kept"
    );
    let in_bytes = StatsAttribute::Counter {
        counter: StatsCounter::InBytes,
        value: 3000,
        wide: true,
    };
    assert!(attrs
        .iter()
        .any(|a| matches!(a, ServiceAttribute::Stats(s) if s.contains(&in_bytes))));
    let entry = netlink_ipvs::service_entry(attrs).unwrap();
    assert_eq!(entry.service.key, tcp_10_0_0_1_80());
    assert_eq!(entry.service.scheduler, "wrr");
    assert_eq!(entry.service.flags, ServiceFlags::HASHED);
    assert_eq!(entry.service.normalized().flags, ServiceFlags::default());
    assert_eq!(entry.stats.connections, 5);
    assert_eq!(entry.stats.in_bytes, 3000);
}

#[test]
fn info_reply_uses_its_own_attribute_numbers() {
    // IPVS_CMD_SET_INFO (14) reply: IPVS_INFO_ATTR_VERSION=1, IPVS_INFO_ATTR_CONN_TAB_SIZE=2.
    let bytes = message(14, 0, 4, &[nla(1, &u32v(0x010201)), nla(2, &u32v(4096))]);
    let NetlinkPayload::InnerMessage(genl) = decode_message(&bytes).unwrap().payload else {
        panic!()
    };
    assert_eq!(
        genl.payload.attributes,
        vec![
            IpvsAttribute::Version(0x010201),
            IpvsAttribute::ConnectionTableSize(4096)
        ]
    );
}

#[test]
fn truncated_and_garbage_input_is_an_error_not_a_panic() {
    let bytes = service_reply();
    // Every cut short of the whole message (whose header states the full length) is refused.
    for cut in 0..bytes.len() {
        let decoded = decode_message(&bytes[..cut]);
        assert!(decoded.is_err(), "cut at {cut}: {decoded:?}");
    }
    assert!(decode_message(&bytes).is_ok());
    // An address attribute of the wrong length inside a service.
    let bad = message(
        1,
        0,
        1,
        &[nla(1, &[nla(1, &u16v(2)), nla(3, &[10, 0, 0, 1])].concat())],
    );
    assert!(decode_message(&bad).is_err());
    // A nested attribute whose length runs past its parent.
    let mut overrun = message(1, 0, 1, &[nla(1, &nla(1, &u16v(2)))]);
    overrun[20] = 0xff;
    assert!(decode_message(&overrun).is_err());
    // A service missing its key, or its scheduler, does not convert, and says why.
    assert_eq!(
        netlink_ipvs::service_entry(&[ServiceAttribute::AddressFamily(2)]).unwrap_err(),
        netlink_ipvs::EntryError::NoServiceKey
    );
    let no_scheduler = [
        ServiceAttribute::AddressFamily(2),
        ServiceAttribute::FwMark(7),
    ];
    assert_eq!(
        netlink_ipvs::service_entry(&no_scheduler).unwrap_err(),
        netlink_ipvs::EntryError::Missing("service scheduler")
    );
}

#[test]
fn unknown_attribute_with_both_flags_survives_a_round_trip() {
    // Found by the ipvs_reply fuzz target: type 0xcc00 = NLA_F_NESTED | NLA_F_NET_BYTEORDER | 0x0c00.
    let bytes = message(0, 0, 1, &[nla(0xcc00, &[0, 0, 23, 2])]);
    let parsed = decode_message(&bytes).unwrap();
    let NetlinkPayload::InnerMessage(genl) = parsed.payload else {
        panic!()
    };
    let mut again = Vec::new();
    encode_request(FAMILY, genl.payload.clone(), 0, 1, &mut again);
    assert_eq!(again, bytes);
}
