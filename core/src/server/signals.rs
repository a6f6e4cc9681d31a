//! Stop signals: the first SIGTERM or SIGINT starts a graceful shutdown, a second one exits
//! the process at once.

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The exit status after a second stop signal: 128 + the signal's number, as shells report a
/// process killed by it.
fn exit_status(kind: SignalKind) -> i32 {
    128 + kind.as_raw_value()
}

/// Installs the handlers now (so a signal that arrives while the server starts is not lost)
/// and returns a future that resolves on the first SIGTERM or SIGINT. From then on, a second
/// one exits the process immediately, whatever the shutdown is waiting for.
pub fn stop_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let first = next(&mut terminate, &mut interrupt).await;
        tracing::info!(
            signal = first.as_raw_value(),
            "stop signal received; a second one exits at once"
        );
        tokio::spawn(async move {
            let second = next(&mut terminate, &mut interrupt).await;
            tracing::warn!(
                signal = second.as_raw_value(),
                "second stop signal: exiting now without waiting for the shutdown"
            );
            std::process::exit(exit_status(second));
        });
    })
}

/// The next of the two signals.
async fn next(terminate: &mut Signal, interrupt: &mut Signal) -> SignalKind {
    tokio::select! {
        _ = terminate.recv() => SignalKind::terminate(),
        _ = interrupt.recv() => SignalKind::interrupt(),
    }
}
