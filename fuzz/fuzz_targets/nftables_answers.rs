#![no_main]
//! Arbitrary datagrams into the answer tracker of an nf_tables transaction (what the kernel
//! sends back for a batch): panics are not allowed. A refusal must carry a non-zero errno and
//! name one of the batch's messages (or `BATCH_BEGIN`); a transaction answered only by ACKs
//! succeeds.

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netlink_nftables::attr::msg;
use netlink_nftables::{NftMessage, NftablesError, TransactionAnswers};

#[derive(Debug, Arbitrary)]
struct Answers {
    batch_begin: u32,
    messages: u8,
    datagrams: Vec<Vec<u8>>,
}

fuzz_target!(|input: Answers| {
    let messages: Vec<NftMessage> = (0..input.messages)
        .map(|i| NftMessage::table(msg::NEWTABLE, &format!("t{i}"), 0, "create"))
        .collect();
    let mut answers = TransactionAnswers::new(input.batch_begin, messages.len());
    for datagram in &input.datagrams {
        answers.feed(datagram);
        if answers.complete() {
            break;
        }
    }
    match answers.into_result(&messages) {
        Ok(()) => {}
        Err(NftablesError::Refused { message, errno, .. }) => {
            assert_ne!(errno, 0, "an ACK is not a refusal");
            assert!(
                message.starts_with("nf_tables batch")
                    || messages.iter().any(|m| m.description == message),
                "the refusal names a message of the batch: {message}"
            );
        }
        Err(other) => panic!("the tracker only refuses: {other}"),
    }
});
