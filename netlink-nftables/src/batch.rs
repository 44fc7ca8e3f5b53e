//! nfnetlink framing: `struct nlmsghdr`, `struct nfgenmsg`, the batch delimiters, and the
//! encoder of one transaction.

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};

use crate::attr::{NFNETLINK_V0, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES};
use crate::message::NftMessage;

/// `messages` in one batch (one transaction): `BATCH_BEGIN` has `sequence`, message `i` has
/// `sequence + 1 + i`, `BATCH_END` follows. Only the last message asks for an ACK: nfnetlink
/// reports every refused message whether or not it asked (`nfnetlink_rcv_batch`: `if
/// (nlh->nlmsg_flags & NLM_F_ACK || err) nfnl_err_add(...)`, and it keeps processing after an
/// error), so a transaction of any size costs one ACK, and the receive buffer holds only the
/// refusals.
pub fn encode_batch(messages: &[NftMessage], sequence: u32) -> Vec<u8> {
    let mut out = Vec::new();
    emit_batch_begin(sequence, &mut out);
    let mut next = sequence;
    for (i, m) in messages.iter().enumerate() {
        next = next.wrapping_add(1);
        m.emit(next, i + 1 == messages.len(), &mut out);
    }
    emit_batch_end(next.wrapping_add(1), &mut out);
    out
}

impl NftMessage {
    /// Appends the message with `sequence` to `out`; `ack` adds `NLM_F_ACK`.
    pub fn emit(&self, sequence: u32, ack: bool, out: &mut Vec<u8>) {
        let message_type = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(self.kind);
        let ack = if ack { NLM_F_ACK } else { 0 };
        let start = out.len();
        emit_header(
            out,
            message_type,
            NLM_F_REQUEST | ack | self.flags,
            sequence,
            self.family,
            0,
        );
        for attr in &self.attrs {
            out.extend_from_slice(&attr.to_bytes());
        }
        set_length(out, start);
    }
}

/// `NFNL_MSG_BATCH_BEGIN` for the nf_tables subsystem (`res_id` names the subsystem).
pub fn emit_batch_begin(sequence: u32, out: &mut Vec<u8>) {
    let start = out.len();
    emit_header(
        out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        sequence,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    set_length(out, start);
}

/// `NFNL_MSG_BATCH_END`: the kernel commits the transaction when it reads it.
pub fn emit_batch_end(sequence: u32, out: &mut Vec<u8>) {
    let start = out.len();
    emit_header(
        out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        sequence,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    set_length(out, start);
}

pub(crate) fn emit_header(
    out: &mut Vec<u8>,
    message_type: u16,
    flags: u16,
    sequence: u32,
    family: u8,
    res_id: u16,
) {
    // struct nlmsghdr: length (filled in by set_length), type, flags, seq, pid (0: the kernel).
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&message_type.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&sequence.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // struct nfgenmsg: family, version, res_id (big-endian).
    out.push(family);
    out.push(NFNETLINK_V0);
    out.extend_from_slice(&res_id.to_be_bytes());
    debug_assert_eq!(out.len() % 4, 0, "headers keep 4-byte alignment");
}

pub(crate) fn set_length(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}
