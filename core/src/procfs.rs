//! What Linux's `/proc` says about a process: liveness, start time, command line, executable.
//!
//! Used where the runtime itself cannot answer (.NET Core 3.1 has no Process commands) and to tell
//! live runtimes from stale socket files.

use std::path::Path;

/// The fields of `/proc/{pid}/stat` diagmon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Start time in clock ticks since boot (field 22): with the pid, it identifies a process
    /// instance, and it is the key in the runtime's socket name.
    pub start_time: u64,
}

/// Reads `/proc/{pid}/stat`; `None` when the process does not exist or the file is unreadable.
pub fn stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses the text of a stat file. The command name (field 2) may contain spaces and parentheses,
/// so the fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 is `state`; `starttime` is field 22, so 18 fields further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// The uid that owns the process (the owner of `/proc/{pid}`); `None` when it does not exist.
pub fn owner_uid(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|meta| meta.uid())
}

/// True when the process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|stat| stat.state != 'Z' && stat.state != 'X')
}

/// The command line, arguments joined by spaces; `None` when unreadable or empty (kernel threads,
/// zombies).
pub fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|byte| *byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

/// The architecture of the process's executable, read from its ELF header, in .NET's names
/// (`x64`, `x86`, `arm64`, `arm`); `None` when unreadable or unknown.
pub fn architecture(pid: u32) -> Option<String> {
    elf_architecture(&Path::new("/proc").join(pid.to_string()).join("exe"))
}

fn elf_architecture(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(path)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    if &header[..4] != b"\x7fELF" {
        return None;
    }
    let name = match u16::from_le_bytes([header[18], header[19]]) {
        0x3E => "x64",
        0x03 => "x86",
        0xB7 => "arm64",
        0x28 => "arm",
        _ => return None,
    };
    Some(name.to_owned())
}

/// The boot id: with pid and start time it makes a process instance unique across reboots.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "31339 (dotnet (x) y) S 1 31339 31339 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 9 0 109949 3 4 5";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                state: 'S',
                start_time: 109949
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_described() {
        let pid = std::process::id();
        assert!(is_alive(pid));
        assert!(command_line(pid).is_some());
        assert!(architecture(pid).is_some());
        assert!(!is_alive(u32::MAX));
        // SAFETY: getuid(2) cannot fail.
        assert_eq!(owner_uid(pid), Some(unsafe { libc::getuid() }));
        assert_eq!(owner_uid(u32::MAX), None);
    }
}
