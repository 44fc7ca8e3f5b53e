//! Dump requests and the kernel-side filter (`CTA_FILTER`, kernel 5.8+) they may carry.

use super::attr::*;
use super::message::ConntrackEntry;
use super::tuple::TupleMatch;

/// What the kernel is asked to filter during a dump: the family in `nfgenmsg` (0 = all) and,
/// when the family is set, `CTA_FILTER` on the original and reply tuples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpFilter {
    /// `AF_INET`, `AF_INET6`, or 0 for both.
    pub family: u8,
    /// Fields of the original tuple (ignored when `family` is 0: the kernel needs it).
    pub orig: TupleMatch,
    /// Fields of the reply tuple (ignored when `family` is 0).
    pub reply: TupleMatch,
}

impl DumpFilter {
    /// True when the request carries a `CTA_FILTER` attribute.
    pub fn uses_cta_filter(&self) -> bool {
        self.family != 0 && (self.orig.flags() | self.reply.flags()) != 0
    }

    /// What the kernel applies if it honours the request.
    pub fn matches(&self, entry: &ConntrackEntry<'_>) -> bool {
        if self.family == 0 {
            return true;
        }
        entry.family == self.family
            && (!self.uses_cta_filter()
                || (self.orig.matches(&entry.orig) && self.reply.matches(&entry.reply)))
    }
}

/// Appends a dump request (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`) to `buf`.
pub fn encode_dump(buf: &mut Vec<u8>, seq: u32, filter: &DumpFilter) {
    let mut w = Writer::message(
        buf,
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        filter.family,
    );
    if filter.uses_cta_filter() {
        let (orig_flags, reply_flags) = (filter.orig.flags(), filter.reply.flags());
        if orig_flags != 0 {
            filter.orig.encode(&mut w, CTA_TUPLE_ORIG);
        }
        if reply_flags != 0 {
            filter.reply.encode(&mut w, CTA_TUPLE_REPLY);
        }
        let nest = w.begin_nested(CTA_FILTER);
        w.attr(CTA_FILTER_ORIG_FLAGS, &orig_flags.to_ne_bytes());
        w.attr(CTA_FILTER_REPLY_FLAGS, &reply_flags.to_ne_bytes());
        w.end_nested(nest);
    }
    w.finish();
}
