//! Byte fixtures in both directions and round-trip properties for the message layer.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

/// A dumped IPv4 UDP entry laid out as `ctnetlink_fill_info` writes it (fields the kernel adds
/// that we skip, such as CTA_STATUS and CTA_TIMEOUT, are kept to prove they are skipped).
#[rustfmt::skip]
fn dumped_entry() -> Vec<u8> {
    let mut b = vec![
        0, 0, 0, 0,             // nlmsg_len, patched below
        0x00, 0x01,             // type: CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
        0x02, 0x00,             // flags: NLM_F_MULTI
        0x2a, 0, 0, 0,          // seq 42
        0, 0, 0, 0,             // port id
        2, 0, 0, 0,             // nfgenmsg: AF_INET, v0, res_id 0
        // CTA_TUPLE_ORIG (nested), 52 bytes
        52, 0, 0x01, 0x80,
          20, 0, 0x01, 0x80,    // CTA_TUPLE_IP
            8, 0, 1, 0, 10, 0, 0, 1,     // CTA_IP_V4_SRC 10.0.0.1
            8, 0, 2, 0, 10, 96, 0, 10,   // CTA_IP_V4_DST 10.96.0.10
          28, 0, 0x02, 0x80,    // CTA_TUPLE_PROTO
            5, 0, 1, 0, 17, 0, 0, 0,     // CTA_PROTO_NUM 17 (+3 pad)
            6, 0, 2, 0, 0x03, 0xe9, 0, 0, // CTA_PROTO_SRC_PORT 1001
            6, 0, 3, 0, 0x00, 0x35, 0, 0, // CTA_PROTO_DST_PORT 53
        // CTA_TUPLE_REPLY (nested), 52 bytes
        52, 0, 0x02, 0x80,
          20, 0, 0x01, 0x80,
            8, 0, 1, 0, 10, 244, 1, 5,   // src 10.244.1.5 (the endpoint)
            8, 0, 2, 0, 10, 0, 0, 1,
          28, 0, 0x02, 0x80,
            5, 0, 1, 0, 17, 0, 0, 0,
            6, 0, 2, 0, 0x14, 0xe9, 0, 0, // 5353
            6, 0, 3, 0, 0x03, 0xe9, 0, 0, // 1001
        8, 0, 3, 0, 0, 0, 0, 0x08,       // CTA_STATUS (skipped)
        8, 0, 7, 0, 0, 0, 0, 30,         // CTA_TIMEOUT (skipped)
        8, 0, 8, 0, 0, 0, 0, 5,          // CTA_MARK 5
        8, 0, 12, 0, 0xde, 0xad, 0xbe, 0xef, // CTA_ID
        6, 0, 18, 0, 0, 7, 0, 0,         // CTA_ZONE 7
        8, 0, 99, 0, 1, 2, 3, 4,         // unknown attribute from a newer kernel
    ];
    let len = b.len() as u32;
    b[..4].copy_from_slice(&len.to_ne_bytes());
    b
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn parses_a_dumped_entry() {
    let bytes = dumped_entry();
    let Reply::Entry(entry) = parse_message(&bytes).unwrap() else {
        panic!("not an entry")
    };
    assert_eq!(entry.family, 2);
    assert_eq!(
        entry.orig,
        Tuple {
            src: ip("10.0.0.1"),
            dst: ip("10.96.0.10"),
            protocol: 17,
            src_port: Some(1001),
            dst_port: Some(53)
        }
    );
    assert_eq!(entry.reply.src, ip("10.244.1.5"));
    assert_eq!(entry.reply.src_port, Some(5353));
    assert_eq!(
        (entry.zone, entry.id, entry.mark),
        (7, Some(0xdead_beef), Some(5))
    );
    assert_eq!(entry.orig_raw, &bytes[24..72]);
}

#[test]
#[rustfmt::skip]
fn delete_copies_the_tuple_and_carries_zone_and_id() {
    let bytes = dumped_entry();
    let Reply::Entry(entry) = parse_message(&bytes).unwrap() else { panic!() };
    let mut out = Vec::new();
    encode_delete(&mut out, 9, &entry);
    let mut want = vec![
        0, 0, 0, 0,
        0x02, 0x01,       // CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE
        0x05, 0x00,       // NLM_F_REQUEST | NLM_F_ACK
        9, 0, 0, 0,
        0, 0, 0, 0,
        2, 0, 0, 0,
    ];
    want.extend_from_slice(&bytes[20..72]); // CTA_TUPLE_ORIG exactly as the kernel sent it
    want.extend_from_slice(&[6, 0, 18, 0, 0, 7, 0, 0]); // CTA_ZONE 7
    want.extend_from_slice(&[8, 0, 12, 0, 0xde, 0xad, 0xbe, 0xef]); // CTA_ID
    let len = want.len() as u32;
    want[..4].copy_from_slice(&len.to_ne_bytes());
    assert_eq!(out, want);
}

#[test]
#[rustfmt::skip]
fn dump_request_with_cta_filter() {
    let filter = DumpFilter {
        family: 2,
        orig: TupleMatch { dst: Some(ip("10.96.0.10")), protocol: Some(17), dst_port: Some(53), ..Default::default() },
        reply: TupleMatch::default(),
    };
    let mut out = Vec::new();
    encode_dump(&mut out, 3, &filter);
    let mut want = vec![
        0, 0, 0, 0,
        0x01, 0x01,        // IPCTNL_MSG_CT_GET
        0x01, 0x03,        // NLM_F_REQUEST | NLM_F_DUMP
        3, 0, 0, 0, 0, 0, 0, 0,
        2, 0, 0, 0,
        36, 0, 0x01, 0x80,             // CTA_TUPLE_ORIG
          12, 0, 0x01, 0x80,           // CTA_TUPLE_IP
            8, 0, 2, 0, 10, 96, 0, 10, // dst only
          20, 0, 0x02, 0x80,           // CTA_TUPLE_PROTO
            5, 0, 1, 0, 17, 0, 0, 0,
            6, 0, 3, 0, 0, 53, 0, 0,
        20, 0, 25, 0x80,               // CTA_FILTER
          8, 0, 1, 0,                  // ORIG_FLAGS: IP_DST | PROTO_NUM | PROTO_DST_PORT
    ];
    want.extend_from_slice(&(0b10_1010u32).to_ne_bytes());
    want.extend_from_slice(&[8, 0, 2, 0]);
    want.extend_from_slice(&0u32.to_ne_bytes()); // REPLY_FLAGS
    let len = want.len() as u32;
    want[..4].copy_from_slice(&len.to_ne_bytes());
    assert_eq!(out, want);
    // Family 0: no CTA_FILTER at all (the kernel refuses it without a family).
    let mut plain = Vec::new();
    encode_dump(&mut plain, 3, &DumpFilter { family: 0, ..filter });
    assert_eq!(plain.len(), 20);
}

#[test]
fn acks_errors_and_done() {
    let msg = |t: u16, seq: u32, code: i32| {
        let mut b = Vec::new();
        b.extend_from_slice(&20u32.to_ne_bytes());
        b.extend_from_slice(&t.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&code.to_ne_bytes());
        b
    };
    let mut buf = msg(NLMSG_ERROR, 1, 0);
    buf.extend(msg(NLMSG_ERROR, 2, -libc::ENOENT));
    buf.extend(msg(NLMSG_DONE, 3, 0));
    buf.extend(msg(NLMSG_DONE, 4, -libc::EINVAL));
    let got: Vec<_> = Replies::new(&buf).map(Result::unwrap).collect();
    assert_eq!(
        got,
        vec![
            Reply::Ack { seq: 1 },
            Reply::Failed {
                seq: 2,
                errno: libc::ENOENT
            },
            Reply::Done { seq: 3 },
            Reply::Failed {
                seq: 4,
                errno: libc::EINVAL
            },
        ]
    );
}

#[test]
fn truncated_input_is_an_error_not_a_panic() {
    let bytes = dumped_entry();
    // No bytes: no message, and nothing to complain about.
    assert!(Replies::new(&[]).next().is_none());
    // Any other cut short of the length in the header is an error (and ends the iteration).
    for cut in 1..bytes.len() {
        let replies: Vec<_> = Replies::new(&bytes[..cut]).collect();
        assert!(matches!(replies[..], [Err(_)]), "cut at {cut}: {replies:?}");
    }
    assert!(matches!(
        Replies::new(&bytes).collect::<Vec<_>>()[..],
        [Ok(_)]
    ));
    assert!(parse_message(&bytes[..30]).is_err());
}

fn arb_tuple(v6: bool) -> impl Strategy<Value = Tuple> {
    let addr = if v6 {
        any::<[u8; 16]>().prop_map(IpAddr::from).boxed()
    } else {
        any::<[u8; 4]>().prop_map(IpAddr::from).boxed()
    };
    (
        addr.clone(),
        addr,
        prop_oneof![Just(6u8), Just(17), Just(132)],
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(src, dst, protocol, sp, dp)| Tuple {
            src,
            dst,
            protocol,
            src_port: Some(sp),
            dst_port: Some(dp),
        })
}

proptest! {
    #[test]
    fn new_request_parses_back(v6: bool, orig in arb_tuple(false), orig6 in arb_tuple(true), zone: u16) {
        let orig = if v6 { orig6 } else { orig };
        let mut entry = NewEntry::plain(orig, 30);
        entry.zone = zone;
        let mut buf = Vec::new();
        encode_new(&mut buf, 1, &entry);
        let Reply::Entry(parsed) = parse_message(&buf).unwrap() else { panic!() };
        prop_assert_eq!(parsed.orig, entry.orig);
        prop_assert_eq!(parsed.reply, entry.reply);
        prop_assert_eq!(parsed.zone, zone);
        prop_assert_eq!(parsed.family, family_of(orig.src));
        // A delete built from it carries exactly the same tuple bytes.
        let mut del = Vec::new();
        encode_delete(&mut del, 2, &parsed);
        prop_assert_eq!(&del[24..24 + parsed.orig_raw.len()], parsed.orig_raw);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for reply in Replies::new(&bytes) {
            let _ = reply;
        }
    }
}
