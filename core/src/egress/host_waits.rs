//! Host calls that wait, bounded by the deadline of the provider call they are made from.
//!
//! The epoch deadline stops a guest that runs too long, but only while it runs wasm: a guest
//! blocked inside a host call (a one-hour `sleep`, a read from an HTTP peer that sends nothing)
//! never reaches an epoch check, and would hold its thread for as long as the host call waits.
//! Every such wait in WASI 0.2 goes through `wasi:io`: `poll`, `pollable.block`, and the
//! `blocking-*` methods of input and output streams (sleeps are pollables of
//! `wasi:clocks`, HTTP bodies are streams). This module replaces those functions in the linker
//! with the same wasmtime-wasi implementations, awaited only until the call's deadline
//! ([`CallDeadline`]); past it the call traps with [`DeadlineReached`], which the instance reports
//! as the deadline. Other host calls either return at once or wait on the host's own bounded
//! work (a file write; object-store requests, which end before the deadline themselves).

use std::future::Future;
use std::time::Instant;

use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::{AsContextMut, StoreContextMut};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::p2::bindings::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamResult};

/// The interfaces whose waits are bounded, at the version wasmtime-wasi 48 defines (guests
/// importing older 0.2 versions are matched to it).
const POLL: &str = "wasi:io/poll@0.2.12";
const STREAMS: &str = "wasi:io/streams@0.2.12";

/// Store data that knows when the provider call in progress must return.
pub(crate) trait CallDeadline {
    /// The deadline of the provider call in progress.
    fn call_deadline(&self) -> Instant;
}

/// A host call reached the deadline of the provider call it was made from; the call traps.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a host call was still waiting at the provider call's deadline")]
pub(crate) struct DeadlineReached;

/// Runs `future` on diagmon's runtime, blocking this (provider) thread, until it ends or
/// `deadline` passes (`None`).
pub(crate) fn wait_until<F: Future>(deadline: Instant, future: F) -> Option<F::Output> {
    let until = tokio::time::Instant::from_std(deadline);
    let bounded = async { tokio::time::timeout_at(until, future).await.ok() };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime.block_on(bounded),
        // Not on a runtime thread (a test driving an instance by hand): a private one.
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?
            .block_on(bounded),
    }
}

/// Awaits `future`, made from the store's resource table, until the call's deadline.
fn bounded<T, R>(
    mut store: StoreContextMut<'_, T>,
    future: impl for<'a> FnOnce(
        &'a mut ResourceTable,
    ) -> std::pin::Pin<Box<dyn Future<Output = R> + Send + 'a>>,
) -> wasmtime::Result<R>
where
    T: WasiView + CallDeadline + 'static,
{
    let deadline = store.data().call_deadline();
    let table = store.data_mut().ctx().table;
    wait_until(deadline, future(table)).ok_or_else(|| wasmtime::Error::new(DeadlineReached))
}

/// A stream result in the form the guest receives it.
fn lower<T>(
    table: &mut ResourceTable,
    result: StreamResult<T>,
) -> wasmtime::Result<Result<T, streams::StreamError>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(error) => streams::Host::convert_stream_error(table, error).map(Err),
    }
}

/// Replaces the waiting functions of `wasi:io` in `linker`, which must already hold
/// wasmtime-wasi's.
pub(crate) fn add_to_linker<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: WasiView + CallDeadline + 'static,
{
    linker.allow_shadowing(true);
    let result = define(linker);
    linker.allow_shadowing(false);
    result
}

fn define<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: WasiView + CallDeadline + 'static,
{
    let mut poll_instance = linker.instance(POLL)?;
    poll_instance.func_wrap(
        "poll",
        |store: StoreContextMut<'_, T>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let ready = bounded(store, |table| {
                Box::pin(async move { poll::Host::poll(table, pollables).await })
            })??;
            Ok((ready,))
        },
    )?;
    poll_instance.func_wrap(
        "[method]pollable.block",
        |store: StoreContextMut<'_, T>, (pollable,): (Resource<DynPollable>,)| {
            bounded(store, |table| {
                Box::pin(async move { poll::HostPollable::block(table, pollable).await })
            })??;
            Ok(())
        },
    )?;

    let mut streams_instance = linker.instance(STREAMS)?;
    streams_instance.func_wrap(
        "[method]input-stream.blocking-read",
        |mut store: StoreContextMut<'_, T>, (stream, len): (Resource<DynInputStream>, u64)| {
            let result = bounded(store.as_context_mut(), |table| {
                Box::pin(async move {
                    streams::HostInputStream::blocking_read(table, stream, len).await
                })
            })?;
            Ok((lower(store.data_mut().ctx().table, result)?,))
        },
    )?;
    streams_instance.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut store: StoreContextMut<'_, T>, (stream, len): (Resource<DynInputStream>, u64)| {
            let result = bounded(store.as_context_mut(), |table| {
                Box::pin(async move {
                    streams::HostInputStream::blocking_skip(table, stream, len).await
                })
            })?;
            Ok((lower(store.data_mut().ctx().table, result)?,))
        },
    )?;
    streams_instance.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, T>,
         (stream, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            let result = bounded(store.as_context_mut(), |table| {
                Box::pin(async move {
                    streams::HostOutputStream::blocking_write_and_flush(table, stream, bytes).await
                })
            })?;
            Ok((lower(store.data_mut().ctx().table, result)?,))
        },
    )?;
    streams_instance.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store: StoreContextMut<'_, T>, (stream, len): (Resource<DynOutputStream>, u64)| {
            let result = bounded(store.as_context_mut(), |table| {
                Box::pin(async move {
                    streams::HostOutputStream::blocking_write_zeroes_and_flush(table, stream, len)
                        .await
                })
            })?;
            Ok((lower(store.data_mut().ctx().table, result)?,))
        },
    )?;
    streams_instance.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store: StoreContextMut<'_, T>, (stream,): (Resource<DynOutputStream>,)| {
            let result = bounded(store.as_context_mut(), |table| {
                Box::pin(
                    async move { streams::HostOutputStream::blocking_flush(table, stream).await },
                )
            })?;
            Ok((lower(store.data_mut().ctx().table, result)?,))
        },
    )?;
    streams_instance.func_wrap(
        "[method]output-stream.blocking-splice",
        |mut store: StoreContextMut<'_, T>,
         (destination, source, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            let result = bounded(store.as_context_mut(), |table| {
                Box::pin(async move {
                    streams::HostOutputStream::blocking_splice(table, destination, source, len)
                        .await
                })
            })?;
            Ok((lower(store.data_mut().ctx().table, result)?,))
        },
    )?;
    Ok(())
}
