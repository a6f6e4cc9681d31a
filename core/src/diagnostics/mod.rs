//! The diagnostics IPC client: how diagmon talks to .NET runtimes.
//!
//! - [`protocol`]: message framing and the runtime's error codes;
//! - [`endpoint`]: where runtimes are reached: their own sockets in TMPDIR (connect mode) or
//!   connections they open to diagmon (listen mode, [`reverse`]);
//! - [`client`]: the commands (process information, environment, resume, tracing);
//! - [`dump`]: the Dump command set (the runtime writes a core dump of itself);
//! - [`eventpipe`]: EventPipe sessions and their nettrace byte stream;
//! - [`nettrace`]: a streaming validator of the nettrace format;
//! - [`payload`]: event payloads decoded from the trace's metadata;
//! - [`summary`]: the summary of a whole trace, computed on the caller's thread or on a thread of
//!   its own (fed through a `chunk_queue` that wakes the feeder once per batch of chunks).
//!
//! This layer knows nothing of HTTP or egress: it turns a runtime into typed answers and a byte
//! stream, and reports every failure of the peer as a [`DiagnosticsError`].
//!
//! `docs/ipc-protocol.md` describes the protocol as diagmon speaks it (framing, commands,
//! transports, the trust checks on runtime sockets); `docs/nettrace.md` the trace format.

pub(crate) mod chunk_queue;
pub mod client;
pub mod dump;
pub mod endpoint;
pub mod eventpipe;
pub mod nettrace;
pub mod payload;
pub mod protocol;
mod read_buffers;
pub mod reverse;
pub mod summary;

use std::path::PathBuf;
use std::time::Duration;

pub use client::{DiagnosticsClient, ProcessInfo, Timeouts};
pub use endpoint::Endpoint;
pub use eventpipe::{
    BlockingSession, EventPipeSession, EventProvider, SessionConfig, SessionInterrupter, StopHandle,
};
pub use protocol::{Command, RuntimeErrorCode};

/// Everything that can go wrong talking to a runtime.
#[derive(Debug, thiserror::Error)]
pub enum DiagnosticsError {
    /// The runtime's socket could not be reached.
    #[error("cannot connect to the runtime at {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The peer did not answer in time: a hung or busy runtime (it serves one connection at a time).
    #[error(
        "the runtime did not {what} within {after:?}; it may be hung or busy with another client"
    )]
    Timeout {
        /// What diagmon was waiting for.
        what: &'static str,
        /// The timeout that expired.
        after: Duration,
    },
    /// The process serving a runtime socket is not the one its name gives: a socket in a shared
    /// directory that another process planted.
    #[error(
        "the socket {path} claims pid {claimed} but is served by {}",
        .peer.map_or_else(|| "an unknown process".to_owned(), |pid| format!("pid {pid}"))
    )]
    ImpostorPeer {
        /// The socket path.
        path: PathBuf,
        /// The pid in the socket's name.
        claimed: u32,
        /// The pid of the peer (`SO_PEERCRED`), when the kernel names one.
        peer: Option<i32>,
    },
    /// Reading or writing the socket failed.
    #[error("the connection to the runtime failed while {what}: {source}")]
    Io {
        /// What diagmon was doing.
        what: &'static str,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The peer broke the protocol: it is not a .NET runtime, or it is a broken one.
    #[error("the peer broke the diagnostics protocol: {0}")]
    Protocol(#[from] protocol::FrameError),
    /// The runtime answered a command with an error reply.
    #[error("{command} failed: {code}")]
    Runtime {
        /// The command that was refused.
        command: Command,
        /// What the runtime answered.
        code: RuntimeErrorCode,
    },
    /// The request asks for something no command this runtime knows can express.
    #[error("this runtime cannot {0}")]
    Unsupported(String),
    /// The trace stream ended without its end-of-stream marker: the target died or the socket was
    /// cut. The bytes delivered so far are not a complete trace.
    #[error("the trace was cut short after {bytes} bytes: {reason}")]
    Truncated {
        /// Bytes received before the stream ended.
        bytes: u64,
        /// Why the stream is known to be incomplete.
        reason: String,
    },
    /// The trace stream is not valid nettrace.
    #[error("the runtime sent an invalid trace: {0}")]
    InvalidTrace(String),
    /// No runtime (listen mode) is connected under this cookie.
    #[error("no runtime with cookie {0} is connected to the diagnostic port")]
    RuntimeGone(uuid::Uuid),
    /// A session was read again after it had failed; the first error said why.
    #[error("the session already failed: {0}")]
    SessionFailed(String),
    /// diagmon's own machinery failed, not the runtime (e.g. the trace summarizer's thread).
    #[error("diagmon failed internally: {0}")]
    Internal(String),
}

impl DiagnosticsError {
    /// True when the runtime said it does not know the command (an older runtime).
    pub fn is_unknown_command(&self) -> bool {
        matches!(
            self,
            DiagnosticsError::Runtime {
                code: RuntimeErrorCode::UnknownCommand,
                ..
            }
        )
    }
}
