#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod attr;
mod batch;
mod dump;
mod error;
pub mod expr;
mod handle;
pub mod ipset;
mod message;
mod rule;

pub use batch::{emit_batch_begin, emit_batch_end, encode_batch};
pub use dump::{
    parse_generation, parse_reply, DumpAnswers, DumpedChain, DumpedRule, DumpedTable, NftReply,
    RuleExpr, RuleVerdict,
};
pub use error::{NftablesError, DUMP_ATTEMPTS};
pub use handle::{NftablesHandle, TransactionAnswers};
pub use message::{NftMessage, SetKey, ELEMENTS_PER_MESSAGE};
pub use netlink_base::{Family, Protocol};
pub use rule::{address_bytes, network_and_mask, Rule, SetRef};
