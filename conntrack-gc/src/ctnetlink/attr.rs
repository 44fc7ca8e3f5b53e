//! ctnetlink numbers (from `include/uapi/linux/netfilter/nfnetlink_conntrack.h` and
//! `nfnetlink.h`) and a small writer for netlink messages with nested attributes.

/// `NETLINK_NETFILTER`.
pub const NETLINK_NETFILTER: isize = 12;
/// `NFNL_SUBSYS_CTNETLINK`.
pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// `NFNETLINK_V0`.
pub const NFNETLINK_V0: u8 = 0;

/// `IPCTNL_MSG_CT_NEW` (also the type of every entry in a dump).
pub const IPCTNL_MSG_CT_NEW: u16 = 0;
/// `IPCTNL_MSG_CT_GET`.
pub const IPCTNL_MSG_CT_GET: u16 = 1;
/// `IPCTNL_MSG_CT_DELETE`.
pub const IPCTNL_MSG_CT_DELETE: u16 = 2;

/// `NLMSG_ERROR`.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
pub const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLM_F_EXCL`.
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLA_F_NESTED`.
pub const NLA_F_NESTED: u16 = 0x8000;

// enum ctattr_type
pub(crate) const CTA_TUPLE_ORIG: u16 = 1;
pub(crate) const CTA_TUPLE_REPLY: u16 = 2;
pub(crate) const CTA_TIMEOUT: u16 = 7;
pub(crate) const CTA_MARK: u16 = 8;
pub(crate) const CTA_ID: u16 = 12;
pub(crate) const CTA_ZONE: u16 = 18;
pub(crate) const CTA_FILTER: u16 = 25;

// enum ctattr_tuple
pub(crate) const CTA_TUPLE_IP: u16 = 1;
pub(crate) const CTA_TUPLE_PROTO: u16 = 2;

// enum ctattr_ip
pub(crate) const CTA_IP_V4_SRC: u16 = 1;
pub(crate) const CTA_IP_V4_DST: u16 = 2;
pub(crate) const CTA_IP_V6_SRC: u16 = 3;
pub(crate) const CTA_IP_V6_DST: u16 = 4;

// enum ctattr_l4proto
pub(crate) const CTA_PROTO_NUM: u16 = 1;
pub(crate) const CTA_PROTO_SRC_PORT: u16 = 2;
pub(crate) const CTA_PROTO_DST_PORT: u16 = 3;

// enum ctattr_filter (kernel 5.8+)
pub(crate) const CTA_FILTER_ORIG_FLAGS: u16 = 1;
pub(crate) const CTA_FILTER_REPLY_FLAGS: u16 = 2;

// CTA_FILTER_F_* (net/netfilter/nf_internals.h)
pub(crate) const CTA_FILTER_F_CTA_IP_SRC: u32 = 1 << 0;
pub(crate) const CTA_FILTER_F_CTA_IP_DST: u32 = 1 << 1;
pub(crate) const CTA_FILTER_F_CTA_PROTO_NUM: u32 = 1 << 3;
pub(crate) const CTA_FILTER_F_CTA_PROTO_SRC_PORT: u32 = 1 << 4;
pub(crate) const CTA_FILTER_F_CTA_PROTO_DST_PORT: u32 = 1 << 5;

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDR_LEN: usize = 16;
/// Size of `struct nfgenmsg`.
pub const NFGENMSG_LEN: usize = 4;

/// Rounds up to the 4-byte netlink alignment.
pub(crate) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends netlink messages with nested attributes to a byte buffer.
#[derive(Debug)]
pub(crate) struct Writer<'b> {
    buf: &'b mut Vec<u8>,
    message_start: usize,
}

impl<'b> Writer<'b> {
    /// Starts a ctnetlink message (`nlmsghdr` + `nfgenmsg`) at the end of `buf`.
    pub(crate) fn message(
        buf: &'b mut Vec<u8>,
        msg: u16,
        flags: u16,
        seq: u32,
        family: u8,
    ) -> Self {
        let message_start = buf.len();
        let msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | msg;
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        buf.extend_from_slice(&[family, NFNETLINK_V0, 0, 0]); // nfgenmsg, res_id 0
        Self { buf, message_start }
    }

    /// Appends one attribute with `value`, padded to 4 bytes.
    pub(crate) fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        // Attribute values written here are at most a raw tuple copied from a kernel attribute,
        // whose length already fit in a u16.
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(self.buf.len() + align4(len) - len, 0);
    }

    /// Opens a nested attribute; close it with [`Writer::end_nested`].
    pub(crate) fn begin_nested(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    /// Closes the nested attribute opened at `at`.
    pub(crate) fn end_nested(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// Patches the message length; returns the message's byte range start.
    pub(crate) fn finish(self) -> usize {
        let len = u32::try_from(self.buf.len() - self.message_start).unwrap_or(u32::MAX);
        self.buf[self.message_start..self.message_start + 4].copy_from_slice(&len.to_ne_bytes());
        self.message_start
    }
}
