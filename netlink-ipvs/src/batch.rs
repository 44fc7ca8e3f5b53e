//! Sans-io batching: encode many requests into one buffer; [`netlink_base::AckTracker`]
//! matches the ACKs back to operations.
//!
//! Measured on the kernel we target: with the default 212,992-byte receive buffer only about 256
//! ACKs fit before the kernel drops them (ENOBUFS), one `sendmsg` above ~208 KB fails with
//! EMSGSIZE, and an error in one message does not stop the kernel from processing the rest of
//! the buffer. So a batch is cut into windows small enough for both limits; each window is one
//! `sendmsg`. Only the window's last request asks for an ACK: the kernel processes the messages
//! of one `sendmsg` in order and always reports an error, so once the last request is answered
//! every earlier one without an error message succeeded. A window therefore costs one send and
//! (without errors) one receive, however many operations it carries; at most one error message
//! per operation can be queued, which the window size keeps inside the receive buffer.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_generic::GenlMessage;

use crate::message::IpvsMessage;
use crate::operation::IpvsOperation;

/// Limits of one window.
#[derive(Debug, Clone, Copy)]
pub struct WindowLimits {
    /// Most requests (and therefore ACKs) in flight.
    pub max_requests: usize,
    /// Most bytes in one `sendmsg`.
    pub max_bytes: usize,
}

impl Default for WindowLimits {
    /// 128 ACKs (half of what the default receive buffer holds) and 64 KiB per send.
    fn default() -> Self {
        Self {
            max_requests: 128,
            max_bytes: 64 * 1024,
        }
    }
}

/// Serialises `message` as a netlink request (header `flags`, `sequence`) of the family
/// `family_id`, appending it to `out`.
pub fn encode_request(
    family_id: u16,
    message: IpvsMessage,
    flags: u16,
    sequence: u32,
    out: &mut Vec<u8>,
) {
    let mut genl = GenlMessage::from_payload(message);
    genl.set_resolved_family_id(family_id);
    let mut netlink = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(genl));
    netlink.header.flags = flags;
    netlink.header.sequence_number = sequence;
    netlink.finalize();
    let start = out.len();
    out.resize(start + netlink.buffer_len(), 0);
    netlink.serialize(&mut out[start..]);
}

/// One window of a batch, encoded: operations `first..first + count`, sequence numbers
/// `first_sequence..first_sequence + count`.
#[derive(Debug)]
pub struct Window {
    /// Index of the first operation of the batch in this window.
    pub first: usize,
    /// Number of operations.
    pub count: usize,
    /// Sequence number of the first operation.
    pub first_sequence: u32,
    /// The bytes to send in one `sendmsg`.
    pub bytes: Vec<u8>,
}

/// Encodes the window of `operations` starting at `first`, within `limits` (always at least one
/// operation, so progress is guaranteed).
pub fn encode_window(
    family_id: u16,
    operations: &[IpvsOperation],
    first: usize,
    first_sequence: u32,
    limits: WindowLimits,
) -> Window {
    let mut bytes = Vec::new();
    let mut count = 0;
    for operation in &operations[first..] {
        // At least one request per window (a limit of 0 would never make progress).
        if count == limits.max_requests.max(1) {
            break;
        }
        let before = bytes.len();
        let sequence = first_sequence.wrapping_add(count as u32);
        encode_request(
            family_id,
            operation.to_message(),
            NLM_F_REQUEST,
            sequence,
            &mut bytes,
        );
        if count > 0 && bytes.len() > limits.max_bytes {
            bytes.truncate(before);
            break;
        }
        count += 1;
    }
    // The last request asks for the ACK.
    netlink_base::ack_last_only(&mut bytes);
    Window {
        first,
        count,
        first_sequence,
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NLM_F_ACK;

    use super::*;
    use crate::types::{ServiceKey, VirtualServer};
    use crate::Protocol;

    fn add(port: u16) -> IpvsOperation {
        IpvsOperation::AddVirtualServer(VirtualServer::new(ServiceKey::Address {
            protocol: Protocol::Tcp,
            address: "10.0.0.1".parse().unwrap(),
            port,
        }))
    }

    #[test]
    fn windows_respect_request_and_byte_limits() {
        let ops: Vec<_> = (0..300).map(add).collect();
        let limits = WindowLimits {
            max_requests: 128,
            max_bytes: 64 * 1024,
        };
        let w = encode_window(30, &ops, 0, 1, limits);
        assert_eq!(w.count, 128);
        let one = encode_window(
            30,
            &ops,
            0,
            1,
            WindowLimits {
                max_requests: 1,
                ..limits
            },
        );
        let per_message = one.bytes.len();
        assert_eq!(w.bytes.len(), 128 * per_message);
        let small = WindowLimits {
            max_requests: 1000,
            max_bytes: per_message * 10 + 1,
        };
        assert_eq!(encode_window(30, &ops, 290, 1, small).count, 10);
        // A window always carries at least one operation, even with a request limit of 0.
        let zero = WindowLimits {
            max_requests: 0,
            ..limits
        };
        assert_eq!(encode_window(30, &ops, 0, 1, zero).count, 1);
        let tiny = WindowLimits {
            max_requests: 10,
            max_bytes: 1,
        };
        assert_eq!(encode_window(30, &ops, 0, 1, tiny).count, 1);
    }

    #[test]
    fn only_the_last_request_asks_for_an_ack() {
        let ops: Vec<_> = (0..3).map(add).collect();
        let w = encode_window(30, &ops, 0, 1, WindowLimits::default());
        let flags: Vec<u16> = netlink_base::split_messages(&w.bytes)
            .map(|m| u16::from_ne_bytes([m[6], m[7]]))
            .collect();
        assert_eq!(
            flags,
            [NLM_F_REQUEST, NLM_F_REQUEST, NLM_F_REQUEST | NLM_F_ACK]
        );
    }
}
