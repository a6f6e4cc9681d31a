//! The full nettrace validator (every block's contents, every event) on arbitrary bytes, fed in
//! arbitrary pieces: it never panics, the pieces never change the verdict, and whatever it finds
//! complete the framing-only validator finds complete too.

#![no_main]

mod common;

use common::{split_points, verdict};
use diagmon::diagnostics::nettrace::NettraceValidator;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (split, trace) = split_points(data);
    let whole = verdict(NettraceValidator::new(), [trace]);
    let pieces = verdict(NettraceValidator::new(), split.pieces(trace));
    assert_eq!(
        whole, pieces,
        "the verdict depends on how the bytes were split"
    );
    if whole.starts_with("complete") {
        let framing = verdict(NettraceValidator::framing_only(), [trace]);
        assert!(
            framing.starts_with("complete"),
            "complete for the full validator, {framing} for the framing"
        );
    }
});
