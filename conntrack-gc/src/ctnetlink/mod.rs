//! The ctnetlink message layer (sans-io).

mod attr;
mod dump;
mod message;
mod tuple;

pub use attr::{
    IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_NEW, NETLINK_NETFILTER, NFGENMSG_LEN,
    NFNL_SUBSYS_CTNETLINK, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDR_LEN, NLM_F_ACK, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
pub use dump::{encode_dump, DumpFilter};
pub use message::{
    encode_delete, encode_new, family_of, parse_entry, parse_message, ConntrackEntry, NewEntry,
    Replies, Reply,
};
pub use tuple::{Tuple, TupleMatch};

#[cfg(test)]
mod tests;
