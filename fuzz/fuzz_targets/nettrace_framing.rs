//! The framing-only nettrace validator (what every session runs inline) on arbitrary bytes, fed
//! in arbitrary pieces: it never panics, and the pieces never change the verdict.

#![no_main]

mod common;

use common::{split_points, verdict};
use diagmon::diagnostics::nettrace::NettraceValidator;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (split, trace) = split_points(data);
    let whole = verdict(NettraceValidator::framing_only(), [trace]);
    let pieces = verdict(NettraceValidator::framing_only(), split.pieces(trace));
    assert_eq!(
        whole, pieces,
        "the verdict depends on how the bytes were split"
    );
});
