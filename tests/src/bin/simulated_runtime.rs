//! `simulated-runtime`: runs one simulated .NET runtime in listen mode until killed.
//!
//! Prints the socket path on stdout (one line) once listening, so a benchmark or test can run the
//! client in another process. SIGINT/SIGTERM remove the socket file before exiting.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use diagmon_tests::simulated_runtime::{SimulatedRuntime, SimulatedRuntimeConfig, StreamBehaviour};

/// Runs a simulated .NET runtime (diagnostics IPC server) in listen mode.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Directory of the `dotnet-diagnostic-{pid}-{key}-socket` file (default: $TMPDIR or /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Process id to report (default: this process's id).
    #[arg(long)]
    pid: Option<u32>,
    /// Sessions stream about N bytes as fast as the socket accepts, then end.
    #[arg(long, value_name = "N", conflicts_with = "disconnect_after_bytes")]
    full_speed_bytes: Option<u64>,
    /// Sessions send N bytes of a valid stream, then close abruptly (a killed target).
    #[arg(long, value_name = "N")]
    disconnect_after_bytes: Option<u64>,
    /// Newest Process-set command answered (0 = like .NET Core 3.1).
    #[arg(long, default_value_t = 3)]
    process_info_level: u8,
    /// Newest CollectTracing answered (1..=6).
    #[arg(long, default_value_t = 5)]
    collect_tracing_level: u8,
    /// Average size of the synthetic events in bytes (default: about 95, like real runtime
    /// events).
    #[arg(long, value_name = "N")]
    event_bytes: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = args.dir.unwrap_or_else(|| {
        std::env::var_os("TMPDIR")
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
    });
    let mut config = SimulatedRuntimeConfig {
        process_info_level: args.process_info_level,
        collect_tracing_level: args.collect_tracing_level,
        event_bytes: args.event_bytes,
        ..SimulatedRuntimeConfig::default()
    };
    if let Some(pid) = args.pid {
        config.pid = pid;
    }
    config.stream = match (args.full_speed_bytes, args.disconnect_after_bytes) {
        (Some(total_bytes), _) => StreamBehaviour::FullSpeed { total_bytes },
        (None, Some(after_bytes)) => StreamBehaviour::DisconnectAfter { after_bytes },
        (None, None) => StreamBehaviour::Paced,
    };
    let runtime = SimulatedRuntime::listen(&dir, config).await?;
    let path = runtime
        .socket_path()
        .context("listen mode has a socket path")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", path.display())?;
        stdout.flush()?;
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    runtime.shutdown().await;
    Ok(())
}
