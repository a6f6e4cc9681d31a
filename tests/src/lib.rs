//! Test support for diagmon's end-to-end tests: real parts to test against.
//!
//! - [`target`]: a real .NET Core 3.1 program with its own TMPDIR;
//! - [`api`]: operations polled to their end, `Location`s, and the checks of an artifact's bytes;
//! - [`monitor`]: the real `diagmon collect` binary on a loopback port;
//! - [`simulated_runtime`] and [`synthetic_nettrace`]: a runtime for what 3.1 cannot show;
//! - [`counter_events`]: counter and meter events as a runtime writes them, for the simulator;
//! - [`aspnet_events`]: ASP.NET Core request events (DiagnosticSource), for the simulator;
//! - [`guests`]: WebAssembly fixtures and example providers, built from source;
//! - [`browser`]: a real headless Chromium driven over WebDriver, for the web console;
//! - [`http_server`]: a recording HTTP server for egress providers that upload over HTTP;
//! - [`storage`]: real object-storage servers (moto for S3, Azurite for Azure Blob) and an
//!   independent client to read objects back.

pub mod api;
pub mod aspnet_events;
pub mod bench;
pub mod browser;
pub mod counter_events;
pub mod guests;
pub mod http_server;
pub mod monitor;
pub mod simulated_runtime;
pub mod storage;
pub mod synthetic_nettrace;
pub mod target;
