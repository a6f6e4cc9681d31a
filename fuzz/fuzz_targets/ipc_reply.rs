//! The IPC reply parsers on arbitrary bytes: the message header, the ProcessInfo replies (1, 2
//! and 3) and the ProcessEnvironment block. Whatever a peer sends, they answer or refuse, never
//! panic.

#![no_main]

use diagmon::diagnostics::Command;
use diagmon::diagnostics::client::{parse_environment_block, parse_process_info};
use diagmon::diagnostics::protocol::{HEADER_LEN, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.first_chunk::<HEADER_LEN>()
        && let Ok(header) = Header::parse(header)
    {
        assert!(header.payload_len() <= usize::from(u16::MAX));
    }
    for command in [
        Command::ProcessInfo,
        Command::ProcessInfo2,
        Command::ProcessInfo3,
    ] {
        let _ = parse_process_info(command, data);
    }
    let _ = parse_environment_block(data);
});
