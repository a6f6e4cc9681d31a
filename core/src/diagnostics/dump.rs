//! The Dump command set: asking a runtime to write a core dump of its own process.
//!
//! The runtime does not send the dump over the connection: it starts `createdump` next to its own
//! `libcoreclr.so`, which writes the file at a path **the target** resolves, and replies once
//! `createdump` has finished. Three versions of the command exist: GenerateCoreDump (.NET Core 3.0,
//! what 3.1 answers), GenerateCoreDump2 (.NET 6: a set of flags) and GenerateCoreDump3 (.NET 7+:
//! error replies carry a message). [`DiagnosticsClient::generate_core_dump`] sends the newest one
//! and falls back to older ones when the runtime answers "unknown command".

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use super::client::Reply;
use super::protocol::{Command, FrameError, PayloadReader, PayloadWriter, RuntimeErrorCode};
use super::{DiagnosticsClient, DiagnosticsError};

/// What a dump holds, by dotnet-monitor's names (the `type` query parameter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DumpType {
    /// All memory of the process, module images included: the largest.
    Full,
    /// Threads, stacks and modules, without the heap: the smallest useful dump (the runtime's
    /// "Normal").
    Mini,
    /// Mini plus the managed heap: enough to analyse managed memory (the default).
    #[default]
    WithHeap,
    /// Mini with personal data (paths, strings, memory) left out, for crash reporting.
    Triage,
}

/// A `type` value that is not a dump type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a dump type; use Mini, Full, WithHeap or Triage (or 1 to 4)")]
pub struct UnknownDumpType(pub String);

impl DumpType {
    /// Every dump type, in the order of dotnet-monitor's enum (numbered from 1).
    pub const ALL: [DumpType; 4] = [
        DumpType::Full,
        DumpType::Mini,
        DumpType::WithHeap,
        DumpType::Triage,
    ];

    /// The value the runtime expects on the wire: 1 Normal, 2 WithHeap, 3 Triage, 4 Full.
    pub fn runtime_code(self) -> u32 {
        match self {
            DumpType::Mini => 1,
            DumpType::WithHeap => 2,
            DumpType::Triage => 3,
            DumpType::Full => 4,
        }
    }

    /// The name as the API spells it.
    pub fn name(self) -> &'static str {
        match self {
            DumpType::Full => "Full",
            DumpType::Mini => "Mini",
            DumpType::WithHeap => "WithHeap",
            DumpType::Triage => "Triage",
        }
    }

    /// How `dotnet-dump collect` names this kind of dump in its "Writing ... to" line.
    pub fn description(self) -> &'static str {
        match self {
            DumpType::Full => "full",
            DumpType::Mini => "dump",
            DumpType::WithHeap => "dump with heap",
            DumpType::Triage => "triage dump",
        }
    }
}

impl FromStr for DumpType {
    type Err = UnknownDumpType;

    /// Parses a dump type name, case-insensitively, or its number in dotnet-monitor's enum
    /// (`1` Full, `2` Mini, `3` WithHeap, `4` Triage), which its query binding accepts too.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let by_number = text
            .parse::<usize>()
            .ok()
            .and_then(|number| DumpType::ALL.get(number.checked_sub(1)?).copied());
        by_number
            .or_else(|| {
                DumpType::ALL
                    .into_iter()
                    .find(|kind| kind.name().eq_ignore_ascii_case(text))
            })
            .ok_or_else(|| UnknownDumpType(text.to_owned()))
    }
}

impl fmt::Display for DumpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a dump command did not produce a dump.
#[derive(Debug, thiserror::Error)]
pub enum DumpCommandError {
    /// The runtime answered with an error reply; GenerateCoreDump3 adds its own message.
    #[error("{command} failed: {code}{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Refused {
        /// The command that was refused.
        command: Command,
        /// The HRESULT, classified.
        code: RuntimeErrorCode,
        /// The runtime's message (GenerateCoreDump3 only), when it sent a non-empty one.
        message: Option<String>,
    },
    /// The runtime could not be reached, did not answer in time, or broke the protocol.
    #[error(transparent)]
    Diagnostics(#[from] DiagnosticsError),
}

impl DumpCommandError {
    fn is_unknown_command(&self) -> bool {
        matches!(
            self,
            DumpCommandError::Refused {
                code: RuntimeErrorCode::UnknownCommand,
                ..
            }
        )
    }
}

/// The request payload shared by the three versions: `string path, u32 type, u32 flags`. For
/// GenerateCoreDump the flags are the "diagnostics" switch; for the later ones a bit set (1
/// logging, 2 verbose logging, 4 crash report). diagmon sends 0: no logging into the target's
/// console.
fn dump_payload(path: &Path, dump_type: DumpType) -> Result<Vec<u8>, FrameError> {
    let path = path.to_str().ok_or_else(|| {
        FrameError(format!(
            "the dump path {} is not valid UTF-8, which the protocol cannot carry",
            path.display()
        ))
    })?;
    let mut writer = PayloadWriter::new();
    writer.string(path).u32(dump_type.runtime_code()).u32(0);
    Ok(writer.into_bytes())
}

/// Decodes an error reply: `u32 HRESULT`, and for GenerateCoreDump3 a message string after it.
fn parse_refusal(command: Command, payload: &[u8]) -> DumpCommandError {
    let mut reader = PayloadReader::new(payload);
    let hresult = match reader.u32("error code") {
        Ok(hresult) => hresult,
        Err(error) => return DiagnosticsError::Protocol(error).into(),
    };
    let message = if command == Command::GenerateCoreDump3 && reader.remaining() > 0 {
        match reader.string("error message") {
            Ok(message) => Some(message).filter(|m| !m.trim().is_empty()),
            Err(error) => return DiagnosticsError::Protocol(error).into(),
        }
    } else {
        None
    };
    DumpCommandError::Refused {
        command,
        code: RuntimeErrorCode::from_hresult(hresult),
        message,
    }
}

impl DiagnosticsClient {
    /// Asks the runtime to write a dump of its process at `path` (absolute, as the target resolves
    /// it) and waits at most `timeout` for `createdump` to finish. Sends GenerateCoreDump3, then 2,
    /// then 1 while the runtime answers "unknown command"; returns the command it accepted.
    pub async fn generate_core_dump(
        &self,
        path: &Path,
        dump_type: DumpType,
        timeout: Duration,
    ) -> Result<Command, DumpCommandError> {
        let payload = dump_payload(path, dump_type).map_err(DiagnosticsError::from)?;
        let mut refused = None;
        for command in [
            Command::GenerateCoreDump3,
            Command::GenerateCoreDump2,
            Command::GenerateCoreDump,
        ] {
            let error = match self.exchange(command, &payload, timeout).await? {
                (_, Reply::Ok(_)) => return Ok(command),
                (_, Reply::Error(reply)) => parse_refusal(command, &reply),
            };
            if !error.is_unknown_command() {
                return Err(error);
            }
            refused = Some(error);
        }
        Err(refused.unwrap_or(DumpCommandError::Diagnostics(
            DiagnosticsError::Unsupported("write a dump".to_owned()),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_types_parse_case_insensitively_and_map_to_the_runtime_codes() {
        assert_eq!("mini".parse(), Ok(DumpType::Mini));
        assert_eq!("FULL".parse(), Ok(DumpType::Full));
        assert_eq!("withHeap".parse(), Ok(DumpType::WithHeap));
        assert_eq!(" Triage ".parse(), Ok(DumpType::Triage));
        // dotnet-monitor's enum numbers.
        assert_eq!("1".parse(), Ok(DumpType::Full));
        assert_eq!("2".parse(), Ok(DumpType::Mini));
        assert_eq!("4".parse(), Ok(DumpType::Triage));
        assert!("0".parse::<DumpType>().is_err() && "5".parse::<DumpType>().is_err());
        assert_eq!(DumpType::default(), DumpType::WithHeap);
        let codes: Vec<u32> = DumpType::ALL.iter().map(|t| t.runtime_code()).collect();
        assert_eq!(codes, [4, 1, 2, 3]);
        let error = "Huge".parse::<DumpType>().unwrap_err();
        assert!(error.to_string().contains("Mini, Full, WithHeap or Triage"));
    }

    #[test]
    fn the_payload_is_path_type_and_zero_flags() {
        let payload = dump_payload(Path::new("/d/a"), DumpType::Full).unwrap();
        let mut reader = PayloadReader::new(&payload);
        assert_eq!(reader.string("path").unwrap(), "/d/a");
        assert_eq!(reader.u32("type").unwrap(), 4);
        assert_eq!(reader.u32("flags").unwrap(), 0);
        assert_eq!(reader.remaining(), 0);
    }

    #[test]
    fn refusals_carry_the_message_of_generate_core_dump3_only() {
        let mut writer = PayloadWriter::new();
        writer
            .u32(0x8000_4005)
            .string("Problem launching createdump");
        let payload = writer.into_bytes();
        let error = parse_refusal(Command::GenerateCoreDump3, &payload);
        assert!(
            error
                .to_string()
                .ends_with(": Problem launching createdump"),
            "{error}"
        );
        let error = parse_refusal(Command::GenerateCoreDump, &payload);
        assert!(
            matches!(
                error,
                DumpCommandError::Refused {
                    message: None,
                    code: RuntimeErrorCode::Failed,
                    ..
                }
            ),
            "{error:?}"
        );
        let error = parse_refusal(Command::GenerateCoreDump3, &[1, 2]);
        assert!(
            matches!(error, DumpCommandError::Diagnostics(_)),
            "{error:?}"
        );
    }
}
