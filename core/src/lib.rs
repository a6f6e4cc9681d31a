//! diagmon: a diagnostics monitor for .NET processes.
//!
//! The library behind the `diagmon` binary, one module per concern:
//! - [`config`]: the merged configuration (defaults, file, environment, flags);
//! - [`server`]: what `diagmon collect` runs: discovery, listeners under connection limits and
//!   timeouts, key reload, signals and the shutdown deadline;
//! - [`http`]: the HTTP API (routes, the screen before them, extractors, problem+json errors);
//! - [`auth`]: API-key authentication of requests;
//! - [`telemetry`]: diagmon's own metrics (requests, operations, egress), served on `/metrics`;
//! - [`tls`]: the HTTPS certificate and key;
//! - [`secret`]: which configuration keys are secrets, and values read from env or files;
//! - [`egress`]: the WebAssembly egress host and its providers;
//! - [`metrics`]: counters of the observed processes (background sessions, `/livemetrics`, the
//!   counters view), for `/metrics`;
//! - [`operations`]: the registry of artifact operations, their limits and their capture;
//! - [`processes`]: which runtimes diagmon can see, what identifies them, and process selection;
//! - [`diagnostics`]: the diagnostics IPC client, EventPipe sessions and the nettrace validator;
//! - [`dumps`]: process dumps: the dump folder, the checks before a dump, the dump file's life;
//! - [`gcdump`]: heap snapshots: the heap walk, the `.gcdump` format and the heap report;
//! - [`profiles`]: named provider sets for traces;
//! - [`rules`]: collection rules: triggers that start artifact operations by themselves;
//! - [`procfs`]: what Linux says about a process when its runtime cannot.
#![deny(missing_docs)]

pub mod auth;
pub mod config;
pub mod diagnostics;
pub mod dumps;
pub mod egress;
pub mod gcdump;
pub mod http;
pub mod metrics;
pub mod operations;
pub mod processes;
pub mod procfs;
pub mod profiles;
pub mod rules;
pub mod secret;
pub mod server;
pub mod telemetry;
pub mod tls;
