//! Validator benchmark: how fast [`NettraceValidator`] reads a trace held in memory, both framing
//! only (what every session does inline) and every event (what the summary does), over a synthetic
//! V4 trace from the test oracle in `diagmon_tests::synthetic_nettrace`. Prints MB/s and million
//! events per second; asserts only that the trace is read whole and valid.
//!
//! `cargo bench -p diagmon-tests --bench nettrace [-- SIZE_MIB...]` (default 100).

use std::time::Instant;

use diagmon::diagnostics::nettrace::NettraceValidator;
use diagmon_tests::synthetic_nettrace::synthetic_trace_bytes;

/// The chunk size the validator is fed in: the monitor's socket read. (With pieces the size of
/// the synthetic trace's 64 KiB blocks, nearly every block straddles two and is copied whole
/// before it is parsed; with 256 KiB reads about one block in four does.)
const CHUNK: usize = 256 << 10;

fn main() {
    let mut sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    if sizes.is_empty() {
        // The trace is held in memory: the streaming bench's larger defaults do not fit here.
        sizes.push(100);
    }
    for size_mib in sizes {
        let bytes = synthetic_trace_bytes(size_mib << 20);
        for (label, mut validator) in [
            ("framing only", NettraceValidator::framing_only()),
            ("every event", NettraceValidator::new()),
        ] {
            let start = Instant::now();
            for chunk in bytes.chunks(CHUNK) {
                validator.feed(chunk).expect("a valid synthetic trace");
            }
            let summary = validator.finish().expect("a complete synthetic trace");
            let elapsed = start.elapsed().as_secs_f64();
            assert_eq!(summary.bytes, bytes.len() as u64);
            println!(
                "{size_mib} MiB, {label}: {:.0} MB/s, {:.1} M events/s ({} events, {elapsed:.3} s)",
                bytes.len() as f64 / 1e6 / elapsed,
                summary.events as f64 / 1e6 / elapsed,
                summary.events,
            );
        }
    }
}
