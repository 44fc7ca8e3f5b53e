#![no_main]
//! Arbitrary text through proxier's document reader (`proxier::yaml::documents`) against the
//! YAML parser alone (serde-saphyr). JSON text takes serde_json's fast path in the reader, block
//! YAML the block reader's, a stream is read a document at a time where it cuts exactly; none
//! of it may change what a text means: a text the reader reads without error is read the same
//! by the YAML parser, to the same values. (The other way round is not asked: the reader's
//! budget refuses texts the parser's defaults accept.)

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let (ours, error) = proxier::yaml::documents("fuzz", text);
    if error.is_some() {
        return;
    }
    match serde_saphyr::from_multiple::<serde_json::Value>(text) {
        Ok(theirs) => assert_eq!(ours, theirs, "{text:?}"),
        Err(e) => panic!("read {ours:?} from {text:?}, which YAML refuses: {e}"),
    }
});
