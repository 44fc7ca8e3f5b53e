//! nfnetlink framing: `struct nlmsghdr`, `struct nfgenmsg` and the batch delimiters.

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};

use super::attr::{
    Attr, NFNETLINK_V0, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES,
};

/// One nf_tables request: a message type, its flags and attributes, and a description used
/// when the kernel refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftMessage {
    /// `NFT_MSG_*`.
    pub(super) kind: u8,
    /// Flags besides `NLM_F_REQUEST | NLM_F_ACK` (`NLM_F_CREATE`, `NLM_F_APPEND`).
    pub(super) flags: u16,
    /// `nfgenmsg.nfgen_family`.
    pub(super) family: u8,
    /// The attributes, in order.
    pub(super) attrs: Vec<Attr>,
    /// What the message does, e.g. `add rule inet proxier postrouting #0`.
    pub description: String,
}

impl NftMessage {
    /// Appends the message with `sequence` to `out`. Every message asks for an ACK, so each
    /// gets its own answer.
    pub(super) fn emit(&self, sequence: u32, out: &mut Vec<u8>) {
        let message_type = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(self.kind);
        let start = out.len();
        emit_header(
            out,
            message_type,
            NLM_F_REQUEST | NLM_F_ACK | self.flags,
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
pub(super) fn emit_batch_begin(sequence: u32, out: &mut Vec<u8>) {
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
pub(super) fn emit_batch_end(sequence: u32, out: &mut Vec<u8>) {
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

fn emit_header(
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

fn set_length(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}
