//! `diagmon gcdump report` on arbitrary bytes: reading a `.gcdump` file, building its report
//! (per-type counts and sizes, root references, retained sizes from the dominator tree) and
//! rendering it never panics; a report that is built adds up.

#![no_main]

use diagmon::gcdump::{report, report_of_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(built) = report_of_file(data, Some(5)) else {
        return;
    };
    let listed: u64 = built.types.iter().map(|row| row.count).sum();
    assert!(
        listed <= built.objects,
        "{listed} objects listed, {} in all",
        built.objects
    );
    let _ = report::render(&built);
});
