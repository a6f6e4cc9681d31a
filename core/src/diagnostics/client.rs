//! Commands sent to one runtime: process information, environment, resume, and the request/reply
//! exchange every command shares.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use uuid::Uuid;

use super::protocol::{
    self, Command, FrameError, HEADER_LEN, Header, MAX_CONTINUATION_LEN, PayloadReader,
    RuntimeErrorCode,
};
use super::{DiagnosticsError, Endpoint};

/// How long diagmon waits for a runtime. The runtime serves one connection at a time, so a hung
/// peer must cost a bounded wait, never a hang.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting (or, in listen mode, waiting for the runtime's next connection).
    pub connect: Duration,
    /// Waiting for a reply to a command, and for each read of a reply.
    pub reply: Duration,
    /// The stop deadline: how long after a stop request StopTracing is retried and the trace
    /// stream may take to end (rundown can take seconds).
    pub stop: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            reply: Duration::from_secs(10),
            stop: Duration::from_secs(60),
        }
    }
}

/// What a runtime says about itself (ProcessInfo, ProcessInfo2, ProcessInfo3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    /// The process id as the runtime sees it (its own pid namespace).
    pub pid: u64,
    /// The runtime instance cookie.
    pub cookie: Uuid,
    /// The command line.
    pub command_line: String,
    /// The operating system, e.g. `Linux`.
    pub operating_system: String,
    /// The process architecture, e.g. `x64`.
    pub process_architecture: String,
    /// The managed entry-point assembly name (ProcessInfo2 and later).
    pub managed_entry_point_assembly_name: Option<String>,
    /// The CLR product version (ProcessInfo2 and later).
    pub clr_product_version: Option<String>,
    /// The runtime identifier, e.g. `linux-x64` (ProcessInfo3 version 1 and later).
    pub runtime_identifier: Option<String>,
}

/// A client for one runtime endpoint. Cheap to clone; every command uses a fresh connection.
#[derive(Debug, Clone)]
pub struct DiagnosticsClient {
    endpoint: Endpoint,
    timeouts: Timeouts,
}

impl DiagnosticsClient {
    /// A client for `endpoint` with the given timeouts.
    pub fn new(endpoint: Endpoint, timeouts: Timeouts) -> Self {
        DiagnosticsClient { endpoint, timeouts }
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The timeouts this client applies.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Asks the runtime who it is, with the newest command it knows: ProcessInfo3, then 2, then 1.
    /// A runtime without any (.NET Core 3.1) answers with an unknown-command error.
    pub async fn process_info(&self) -> Result<ProcessInfo, DiagnosticsError> {
        let mut last_error = None;
        for command in [
            Command::ProcessInfo3,
            Command::ProcessInfo2,
            Command::ProcessInfo,
        ] {
            match self.request(command, &[]).await {
                Ok((_, payload)) => return Ok(parse_process_info(command, &payload)?),
                Err(error) if error.is_unknown_command() => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or(DiagnosticsError::Unsupported("describe itself".to_owned())))
    }

    /// Resumes a runtime that was started suspended (a no-op for a running one).
    pub async fn resume_runtime(&self) -> Result<(), DiagnosticsError> {
        self.request(Command::ResumeRuntime, &[]).await.map(|_| ())
    }

    /// Reads the runtime's environment variables.
    pub async fn process_environment(&self) -> Result<BTreeMap<String, String>, DiagnosticsError> {
        let (mut stream, payload) = self.request(Command::ProcessEnvironment, &[]).await?;
        let mut reader = PayloadReader::new(&payload);
        let length = reader.u32("environment block length")? as usize;
        if length > MAX_CONTINUATION_LEN {
            return Err(FrameError(format!(
                "the environment block claims {length} bytes, more than the {MAX_CONTINUATION_LEN}-byte limit"
            ))
            .into());
        }
        let mut block = vec![0u8; length];
        read_exact_within(
            &mut stream,
            &mut block,
            self.timeouts.reply,
            "send its environment",
        )
        .await?;
        Ok(parse_environment_block(&block)?)
    }

    /// Sends one command on a fresh connection and returns the OK reply's payload together with the
    /// connection, which some commands keep using (a trace stream, a continuation).
    pub(crate) async fn request(
        &self,
        command: Command,
        payload: &[u8],
    ) -> Result<(UnixStream, Vec<u8>), DiagnosticsError> {
        match self.exchange(command, payload, self.timeouts.reply).await? {
            (stream, Reply::Ok(reply)) => Ok((stream, reply)),
            (_, Reply::Error(reply)) => {
                let hresult = PayloadReader::new(&reply).u32("error code")?;
                Err(DiagnosticsError::Runtime {
                    command,
                    code: RuntimeErrorCode::from_hresult(hresult),
                })
            }
        }
    }

    /// Sends one command on a fresh connection and waits at most `reply_timeout` for the reply,
    /// which is returned as it came: an OK payload or an error payload (for the commands whose
    /// error replies carry more than the HRESULT).
    pub(crate) async fn exchange(
        &self,
        command: Command,
        payload: &[u8],
        reply_timeout: Duration,
    ) -> Result<(UnixStream, Reply), DiagnosticsError> {
        let message = protocol::encode_request(command, payload)?;
        let mut stream = self.endpoint.open(self.timeouts.connect).await?;
        let timeout = self.timeouts.reply;
        match tokio::time::timeout(timeout, stream.write_all(&message)).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(DiagnosticsError::Io {
                    what: "sending a command",
                    source,
                });
            }
            Err(_) => {
                return Err(DiagnosticsError::Timeout {
                    what: "accept the command",
                    after: timeout,
                });
            }
        }
        let mut header = [0u8; HEADER_LEN];
        read_exact_within(&mut stream, &mut header, reply_timeout, "answer").await?;
        let header = Header::parse(&header)?;
        let mut reply = vec![0u8; header.payload_len()];
        read_exact_within(&mut stream, &mut reply, timeout, "finish its answer").await?;
        match (header.command_set, header.command_id) {
            (0xFF, 0x00) => Ok((stream, Reply::Ok(reply))),
            (0xFF, 0xFF) => Ok((stream, Reply::Error(reply))),
            (set, id) => Err(FrameError(format!(
                "expected a server reply (0xFF00 or 0xFFFF) to {command}, got 0x{set:02X}{id:02X}"
            ))
            .into()),
        }
    }
}

/// A reply's payload, by kind.
#[derive(Debug)]
pub(crate) enum Reply {
    /// An OK reply (0xFF00).
    Ok(Vec<u8>),
    /// An error reply (0xFFFF): an HRESULT, and for some commands more.
    Error(Vec<u8>),
}

/// Fills `buffer` from the stream, failing on EOF or when `timeout` passes without completion.
async fn read_exact_within(
    stream: &mut UnixStream,
    buffer: &mut [u8],
    timeout: Duration,
    what: &'static str,
) -> Result<(), DiagnosticsError> {
    match tokio::time::timeout(timeout, stream.read_exact(buffer)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError(
            format!("the connection closed before the runtime could {what}"),
        )
        .into()),
        Ok(Err(source)) => Err(DiagnosticsError::Io {
            what: "reading a reply",
            source,
        }),
        Err(_) => Err(DiagnosticsError::Timeout {
            what,
            after: timeout,
        }),
    }
}

/// Decodes the continuation of a ProcessEnvironment reply: a count and that many `NAME=value`
/// strings (a string without `=` is a name with an empty value).
pub fn parse_environment_block(block: &[u8]) -> Result<BTreeMap<String, String>, FrameError> {
    let mut reader = PayloadReader::new(block);
    let count = reader.count("environment variable count", 4)?;
    let mut variables = BTreeMap::new();
    for _ in 0..count {
        let entry = reader.string("environment variable")?;
        let (name, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        variables.insert(name.to_owned(), value.to_owned());
    }
    Ok(variables)
}

/// Decodes the OK payload of a ProcessInfo, ProcessInfo2 or ProcessInfo3 reply (`command` says
/// which).
pub fn parse_process_info(command: Command, payload: &[u8]) -> Result<ProcessInfo, FrameError> {
    let mut reader = PayloadReader::new(payload);
    let version = match command {
        Command::ProcessInfo3 => Some(reader.u32("ProcessInfo3 version")?),
        _ => None,
    };
    let mut info = ProcessInfo {
        pid: reader.u64("pid")?,
        cookie: reader.guid("runtime cookie")?,
        command_line: reader.string("command line")?,
        operating_system: reader.string("operating system")?,
        process_architecture: reader.string("architecture")?,
        managed_entry_point_assembly_name: None,
        clr_product_version: None,
        runtime_identifier: None,
    };
    if command != Command::ProcessInfo {
        info.managed_entry_point_assembly_name = Some(reader.string("entry-point assembly")?);
        info.clr_product_version = Some(reader.string("CLR product version")?);
    }
    if version.is_some_and(|version| version >= 1) {
        info.runtime_identifier = Some(reader.string("runtime identifier")?);
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::protocol::PayloadWriter;

    fn process_info_payload(version: Option<u32>) -> Vec<u8> {
        let mut writer = PayloadWriter::new();
        if let Some(version) = version {
            writer.u32(version);
        }
        writer.u64(42);
        let mut bytes = writer.into_bytes();
        bytes.extend_from_slice(&Uuid::from_u128(7).to_bytes_le());
        let mut writer = PayloadWriter::new();
        writer
            .string("dotnet app.dll")
            .string("Linux")
            .string("x64");
        if version.is_some() {
            writer.string("app").string("9.0.0").string("linux-x64");
        }
        bytes.extend(writer.into_bytes());
        bytes
    }

    #[test]
    fn process_info3_fields_are_decoded_in_wire_order() {
        let info =
            parse_process_info(Command::ProcessInfo3, &process_info_payload(Some(1))).unwrap();
        assert_eq!(info.pid, 42);
        assert_eq!(info.cookie, Uuid::from_u128(7));
        assert_eq!(info.command_line, "dotnet app.dll");
        assert_eq!(
            info.managed_entry_point_assembly_name.as_deref(),
            Some("app")
        );
        assert_eq!(info.runtime_identifier.as_deref(), Some("linux-x64"));
    }

    #[test]
    fn a_short_process_info_is_an_error() {
        let payload = process_info_payload(None);
        let error = parse_process_info(Command::ProcessInfo2, &payload).unwrap_err();
        assert!(error.0.contains("entry-point assembly"), "{error}");
    }
}
