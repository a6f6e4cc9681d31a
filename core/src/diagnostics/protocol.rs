//! Framing of the diagnostics IPC protocol: message headers, payload primitives and the runtime's
//! error codes.
//!
//! Every message is a 20-byte header (`DOTNET_IPC_V1\0`, total size, command set, command id,
//! reserved) followed by a payload of little-endian integers, length-prefixed UTF-16 strings and
//! arrays. Everything read here comes from a socket that anyone on the machine may have created, so
//! every length is bounds-checked against the bytes actually present and against fixed caps.

use std::fmt;

use uuid::Uuid;

/// The magic that opens every IPC message.
pub const MAGIC: &[u8; 14] = b"DOTNET_IPC_V1\0";

/// Size of the message header in bytes.
pub const HEADER_LEN: usize = 20;

/// Largest message the protocol can express: the header's size field is a `u16`.
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;

/// Largest string accepted from a peer, in UTF-16 code units. A message cannot hold more anyway;
/// continuations (ProcessEnvironment) are capped separately by [`MAX_CONTINUATION_LEN`].
pub const MAX_STRING_UNITS: usize = 1 << 20;

/// Largest continuation payload accepted after a reply (the ProcessEnvironment block).
pub const MAX_CONTINUATION_LEN: usize = 16 << 20;

/// A command the monitor sends: its command set and id, with a readable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// EventPipe StopTracing (0x02, 0x01).
    StopTracing,
    /// EventPipe CollectTracing (0x02, 0x02): always rundown and stackwalk.
    CollectTracing,
    /// EventPipe CollectTracing2 (0x02, 0x03): adds the rundown flag.
    CollectTracing2,
    /// EventPipe CollectTracing3 (0x02, 0x04): adds the stackwalk flag.
    CollectTracing3,
    /// EventPipe CollectTracing4 (0x02, 0x05): the rundown flag becomes a rundown keyword.
    CollectTracing4,
    /// EventPipe CollectTracing5 (0x02, 0x06): session type and per-provider event filters.
    CollectTracing5,
    /// Process ProcessInfo (0x04, 0x00).
    ProcessInfo,
    /// Process ResumeRuntime (0x04, 0x01).
    ResumeRuntime,
    /// Process ProcessEnvironment (0x04, 0x02).
    ProcessEnvironment,
    /// Process ProcessInfo2 (0x04, 0x04): adds entry-point assembly and CLR version.
    ProcessInfo2,
    /// Process ProcessInfo3 (0x04, 0x08): versioned, adds the runtime identifier.
    ProcessInfo3,
    /// Dump GenerateCoreDump (0x01, 0x01): path, dump type, diagnostics flag.
    GenerateCoreDump,
    /// Dump GenerateCoreDump2 (0x01, 0x02): the flag becomes a set of flags.
    GenerateCoreDump2,
    /// Dump GenerateCoreDump3 (0x01, 0x03): error replies carry a message.
    GenerateCoreDump3,
}

impl Command {
    /// The (command set, command id) pair on the wire.
    pub fn code(self) -> (u8, u8) {
        match self {
            Command::StopTracing => (0x02, 0x01),
            Command::CollectTracing => (0x02, 0x02),
            Command::CollectTracing2 => (0x02, 0x03),
            Command::CollectTracing3 => (0x02, 0x04),
            Command::CollectTracing4 => (0x02, 0x05),
            Command::CollectTracing5 => (0x02, 0x06),
            Command::ProcessInfo => (0x04, 0x00),
            Command::ResumeRuntime => (0x04, 0x01),
            Command::ProcessEnvironment => (0x04, 0x02),
            Command::ProcessInfo2 => (0x04, 0x04),
            Command::ProcessInfo3 => (0x04, 0x08),
            Command::GenerateCoreDump => (0x01, 0x01),
            Command::GenerateCoreDump2 => (0x01, 0x02),
            Command::GenerateCoreDump3 => (0x01, 0x03),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (set, id) = self.code();
        write!(f, "{self:?} (0x{set:02X}{id:02X})")
    }
}

/// An error reply's HRESULT, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeErrorCode {
    /// 0x80131385: the runtime does not know this command (too old, or compiled out).
    UnknownCommand,
    /// 0x80131384: the runtime could not parse the request payload.
    BadEncoding,
    /// 0x80131386: the runtime did not recognise the message magic.
    UnknownMagic,
    /// 0x80131515: the command exists but this runtime build does not support it.
    NotSupported,
    /// 0x80004005: the runtime tried and failed (for example a session could not be created).
    Failed,
    /// 0x8013135B: the runtime is not running yet (suspended at start-up).
    NotYetAvailable,
    /// 0x80131371: the runtime is not initialised.
    RuntimeUninitialized,
    /// 0x80070057: an argument was rejected.
    InvalidArgument,
    /// Any other HRESULT.
    Other(u32),
}

impl RuntimeErrorCode {
    /// Classifies an HRESULT from an error reply.
    pub fn from_hresult(hresult: u32) -> Self {
        match hresult {
            0x8013_1385 => Self::UnknownCommand,
            0x8013_1384 => Self::BadEncoding,
            0x8013_1386 => Self::UnknownMagic,
            0x8013_1515 => Self::NotSupported,
            0x8000_4005 => Self::Failed,
            0x8013_135B => Self::NotYetAvailable,
            0x8013_1371 => Self::RuntimeUninitialized,
            0x8007_0057 => Self::InvalidArgument,
            other => Self::Other(other),
        }
    }

    /// The HRESULT on the wire.
    pub fn hresult(self) -> u32 {
        match self {
            Self::UnknownCommand => 0x8013_1385,
            Self::BadEncoding => 0x8013_1384,
            Self::UnknownMagic => 0x8013_1386,
            Self::NotSupported => 0x8013_1515,
            Self::Failed => 0x8000_4005,
            Self::NotYetAvailable => 0x8013_135B,
            Self::RuntimeUninitialized => 0x8013_1371,
            Self::InvalidArgument => 0x8007_0057,
            Self::Other(code) => code,
        }
    }
}

impl fmt::Display for RuntimeErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::UnknownCommand => "the runtime does not support this command",
            Self::BadEncoding => "the runtime could not parse the request (bad encoding)",
            Self::UnknownMagic => "the runtime did not recognise the protocol magic",
            Self::NotSupported => "the command is not supported by this runtime build",
            Self::Failed => "the runtime failed to carry out the command",
            Self::NotYetAvailable => "the runtime is not available yet (suspended at start-up?)",
            Self::RuntimeUninitialized => "the runtime is not initialised",
            Self::InvalidArgument => "the runtime rejected an argument",
            Self::Other(_) => "the runtime returned an error",
        };
        write!(f, "{text} (HRESULT 0x{:08X})", self.hresult())
    }
}

/// A protocol violation by the peer: what was expected and what arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FrameError(pub String);

/// A parsed message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Total message size, header included.
    pub size: u16,
    /// Command set (0xFF for server replies).
    pub command_set: u8,
    /// Command id (for replies: 0x00 OK, 0xFF error).
    pub command_id: u8,
}

impl Header {
    /// Parses and checks a header: magic, a size that covers the header, reserved field.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Self, FrameError> {
        if &bytes[..14] != MAGIC {
            return Err(FrameError(format!(
                "the peer did not answer with the DOTNET_IPC_V1 magic (got {:02X?})",
                &bytes[..14]
            )));
        }
        let size = u16::from_le_bytes([bytes[14], bytes[15]]);
        if usize::from(size) < HEADER_LEN {
            return Err(FrameError(format!(
                "message size {size} is smaller than the {HEADER_LEN}-byte header"
            )));
        }
        Ok(Header {
            size,
            command_set: bytes[16],
            command_id: bytes[17],
        })
    }

    /// Payload length announced by the header.
    pub fn payload_len(&self) -> usize {
        usize::from(self.size) - HEADER_LEN
    }
}

/// Builds a request payload with the protocol's primitive encodings.
#[derive(Debug, Default)]
pub struct PayloadWriter {
    bytes: Vec<u8>,
}

impl PayloadWriter {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends a one-byte boolean, as EventPipe payloads encode it.
    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.bytes.push(u8::from(value));
        self
    }

    /// Appends a string: `u32` length in UTF-16 units including the NUL terminator, then UTF-16LE.
    /// The empty string is encoded as length 0 with no data.
    pub fn string(&mut self, value: &str) -> &mut Self {
        if value.is_empty() {
            return self.u32(0);
        }
        let units: Vec<u16> = value.encode_utf16().chain(std::iter::once(0)).collect();
        self.u32(units.len() as u32);
        for unit in units {
            self.bytes.extend_from_slice(&unit.to_le_bytes());
        }
        self
    }

    /// The payload bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Encodes a whole request message, or fails when it would not fit the `u16` size field.
pub fn encode_request(command: Command, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let total = HEADER_LEN + payload.len();
    let size = u16::try_from(total).map_err(|_| {
        FrameError(format!(
            "the {command} request is {total} bytes; the protocol allows at most {MAX_MESSAGE_LEN}"
        ))
    })?;
    let (set, id) = command.code();
    let mut message = Vec::with_capacity(total);
    message.extend_from_slice(MAGIC);
    message.extend_from_slice(&size.to_le_bytes());
    message.push(set);
    message.push(id);
    message.extend_from_slice(&[0, 0]);
    message.extend_from_slice(payload);
    Ok(message)
}

/// Reads primitives from a reply payload, failing (never panicking) when the payload is short or a
/// length is implausible.
#[derive(Debug)]
pub struct PayloadReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> PayloadReader<'a> {
    /// Reads from the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], FrameError> {
        if len > self.remaining() {
            return Err(FrameError(format!(
                "{what} needs {len} bytes at payload offset {} but only {} remain",
                self.position,
                self.remaining()
            )));
        }
        let slice = &self.bytes[self.position..self.position + len];
        self.position += len;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FrameError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N, what)?);
        Ok(array)
    }

    /// Reads a little-endian `u16`.
    pub fn u16(&mut self, what: &str) -> Result<u16, FrameError> {
        self.array(what).map(u16::from_le_bytes)
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self, what: &str) -> Result<u32, FrameError> {
        self.array(what).map(u32::from_le_bytes)
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self, what: &str) -> Result<u64, FrameError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Reads a GUID in .NET `Guid.ToByteArray` order.
    pub fn guid(&mut self, what: &str) -> Result<Uuid, FrameError> {
        self.array::<16>(what).map(Uuid::from_bytes_le)
    }

    /// Reads a length-prefixed UTF-16 string and checks its NUL terminator.
    pub fn string(&mut self, what: &str) -> Result<String, FrameError> {
        let units = self.u32(what)? as usize;
        if units == 0 {
            return Ok(String::new());
        }
        if units > MAX_STRING_UNITS || units * 2 > self.remaining() {
            return Err(FrameError(format!(
                "{what} claims {units} UTF-16 units but the payload holds {} bytes",
                self.remaining()
            )));
        }
        let raw = self.take(units * 2, what)?;
        let decoded: Vec<u16> = raw
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .collect();
        match decoded.split_last() {
            Some((0, text)) => String::from_utf16(text)
                .map_err(|_| FrameError(format!("{what} is not valid UTF-16"))),
            _ => Err(FrameError(format!("{what} lacks its NUL terminator"))),
        }
    }

    /// Reads an array count and checks that `count` elements of at least `min_element_len` bytes
    /// can fit in what remains.
    pub fn count(&mut self, what: &str, min_element_len: usize) -> Result<usize, FrameError> {
        let count = self.u32(what)? as usize;
        if count.saturating_mul(min_element_len.max(1)) > self.remaining() {
            return Err(FrameError(format!(
                "{what} claims {count} elements but the payload holds {} bytes",
                self.remaining()
            )));
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_with_terminator() {
        let mut writer = PayloadWriter::new();
        writer.string("Microsoft-Windows-DotNETRuntime").string("");
        let bytes = writer.into_bytes();
        assert_eq!(&bytes[..4], &32u32.to_le_bytes(), "31 units + NUL");
        let mut reader = PayloadReader::new(&bytes);
        assert_eq!(
            reader.string("name").unwrap(),
            "Microsoft-Windows-DotNETRuntime"
        );
        assert_eq!(reader.string("empty").unwrap(), "");
        assert_eq!(reader.remaining(), 0);
    }

    #[test]
    fn string_without_terminator_is_rejected() {
        let bytes = [2, 0, 0, 0, b'a', 0, b'b', 0];
        let error = PayloadReader::new(&bytes).string("name").unwrap_err();
        assert!(error.0.contains("NUL terminator"), "{error}");
    }

    #[test]
    fn oversized_lengths_are_errors_not_allocations() {
        let bytes = [0xFF, 0xFF, 0xFF, 0x7F, b'a', 0];
        assert!(PayloadReader::new(&bytes).string("name").is_err());
        assert!(PayloadReader::new(&bytes).count("providers", 4).is_err());
        assert!(PayloadReader::new(&[1, 2]).u32("short").is_err());
    }

    #[test]
    fn header_checks_magic_and_size() {
        let message = encode_request(Command::ProcessInfo, &[]).unwrap();
        let header: [u8; HEADER_LEN] = message[..HEADER_LEN].try_into().unwrap();
        let parsed = Header::parse(&header).unwrap();
        assert_eq!(
            (parsed.size, parsed.command_set, parsed.command_id),
            (20, 4, 0)
        );

        let mut bad_magic = header;
        bad_magic[12] = b'2';
        assert!(Header::parse(&bad_magic).unwrap_err().0.contains("magic"));

        let mut small = header;
        small[14] = 10;
        assert!(Header::parse(&small).unwrap_err().0.contains("smaller"));
    }

    #[test]
    fn requests_larger_than_the_size_field_are_refused() {
        let error = encode_request(Command::CollectTracing2, &vec![0; 70_000]).unwrap_err();
        assert!(error.0.contains("at most 65535"), "{error}");
    }

    #[test]
    fn error_codes_say_what_happened() {
        let code = RuntimeErrorCode::from_hresult(0x8013_1385);
        assert_eq!(code, RuntimeErrorCode::UnknownCommand);
        assert!(code.to_string().contains("does not support this command"));
        assert_eq!(RuntimeErrorCode::from_hresult(7).hresult(), 7);
    }
}
