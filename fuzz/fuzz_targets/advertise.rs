//! The listen-mode advertise parser on arbitrary 34-byte messages: only `ADVR_V1\0` messages are
//! accepted, and an accepted one gives back the cookie and pid it carries.

#![no_main]

use diagmon::diagnostics::reverse::{ADVERTISE_LEN, parse_advertise};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(message) = data.first_chunk::<ADVERTISE_LEN>() else {
        return;
    };
    if let Some(runtime) = parse_advertise(message) {
        assert_eq!(&message[..8], b"ADVR_V1\0");
        assert_eq!(runtime.cookie.to_bytes_le(), message[8..24]);
        assert_eq!(runtime.pid.to_le_bytes(), message[24..32]);
    }
});
