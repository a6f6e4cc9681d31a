//! diagmon: a diagnostics monitor for .NET processes.
//!
//! The library behind the `diagmon` binary, one module per concern:
//! - [`diagnostics`]: the diagnostics IPC client, EventPipe sessions and the nettrace validator;
//! - [`processes`]: which runtimes diagmon can see and what identifies them;
//! - [`procfs`]: what Linux says about a process when its runtime cannot.
#![deny(missing_docs)]

pub mod diagnostics;
pub mod processes;
pub mod procfs;
