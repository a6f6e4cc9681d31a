//! The `wasi:filesystem` functions diagmon serves itself instead of wasmtime-wasi:
//!
//! - `descriptor.write`, straight from the guest's memory. wasmtime-wasi's own `write` receives
//!   the buffer as a `Vec<u8>`: every byte a provider writes is first copied out of its linear
//!   memory into a fresh allocation, then copied again by `pwrite` into the page cache. For the
//!   filesystem provider that is a whole extra copy (and a 1 MiB allocation per chunk) of every
//!   artifact. This replacement takes the buffer as a [`WasmList`], a view of the guest's memory
//!   (bounds-checked when the call's arguments are lifted, as for the `Vec`), and hands that slice
//!   to `pwrite` directly. It keeps wasmtime-wasi's semantics exactly: the descriptor comes from
//!   the same resource table (a bad handle traps, as there), a directory is `bad-descriptor`, a
//!   read-only grant is `not-permitted`, the file is written at `offset` with one positioned
//!   write (short writes are returned to the guest), and OS errors map to the same error codes.
//!   The call runs on the calling thread, as wasmtime-wasi does with
//!   `allow_blocking_current_thread`, which every provider instance sets (it has a thread of its
//!   own, see [`super::upload`]).
//! - `descriptor.symlink-at`, refused with `not-permitted`. wasmtime-wasi never follows a link
//!   out of the grant, but it creates any link it is asked for, `../../etc` included: a trap left
//!   for whoever uses the directory next outside the sandbox (an operator, a backup job,
//!   another program). No provider needs symbolic links to store artifacts.

use std::os::unix::fs::FileExt as _;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, WasmList};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;

/// The `wasi:filesystem/types` instance that `wasmtime_wasi::p2::add_to_linker_sync` defines
/// (wasmtime-wasi 48 implements WASI 0.2.12; guests importing older 0.2 versions are matched to
/// it). A unit test checks that the replacement is what providers actually call.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replaces `[method]descriptor.write` and `[method]descriptor.symlink-at` in `linker`, which
/// must already hold wasmtime-wasi's filesystem interfaces.
pub(crate) fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let defined = linker.instance(FILESYSTEM_TYPES).and_then(|mut types| {
        types.func_wrap("[method]descriptor.write", write::<T>)?;
        types.func_wrap("[method]descriptor.symlink-at", refuse_symlink::<T>)
    });
    linker.allow_shadowing(false);
    defined
}

/// Writes `buffer` at `offset` of the file `descriptor`; returns the bytes written.
fn write<T: WasiView + 'static>(
    mut store: StoreContextMut<'_, T>,
    (descriptor, buffer, offset): (Resource<Descriptor>, WasmList<u8>, u64),
) -> wasmtime::Result<(Result<u64, ErrorCode>,)> {
    let file = match store.data_mut().ctx().table.get(&descriptor)? {
        Descriptor::File(file) => file,
        Descriptor::Dir(_) => return Ok((Err(ErrorCode::BadDescriptor),)),
    };
    if file.perms.write_not_permitted() {
        return Ok((Err(ErrorCode::NotPermitted),));
    }
    let file = file.file.clone();
    #[cfg(test)]
    tests::CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let bytes = buffer.as_le_slice(&store);
    Ok((file
        .write_at(bytes, offset)
        .map(|written| written as u64)
        .map_err(ErrorCode::from),))
}

/// Refuses to create a symbolic link.
fn refuse_symlink<T: WasiView + 'static>(
    _store: StoreContextMut<'_, T>,
    (_directory, _target, _link): (Resource<Descriptor>, String, String),
) -> wasmtime::Result<(Result<(), ErrorCode>,)> {
    Ok((Err(ErrorCode::NotPermitted),))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::SystemTime;

    use bytes::Bytes;

    use crate::egress::{Artifact, EgressConfig, EgressHost, ProviderConfig};

    /// Calls of the replacement so far, in this test process.
    pub(crate) static CALLS: AtomicU64 = AtomicU64::new(0);

    /// The built-in filesystem provider writes through the replacement (so it is linked under
    /// the name wasmtime-wasi uses), and the file holds exactly the bytes sent.
    #[tokio::test]
    async fn the_filesystem_provider_writes_in_place() {
        let directory = tempfile::tempdir().unwrap();
        let mut provider = ProviderConfig::new("filesystem");
        provider.directory = Some(directory.path().to_owned());
        provider.limits.chunk_kib = 64;
        let config = EgressConfig {
            providers: [("files".to_owned(), provider)].into_iter().collect(),
            cache_directory: None,
        };
        let host = EgressHost::load(&config).await.unwrap();
        let started_at = SystemTime::now();
        let artifact = Artifact::trace(
            7,
            uuid::Uuid::new_v4(),
            "test",
            uuid::Uuid::new_v4(),
            Vec::new(),
            started_at,
        );
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let before = CALLS.load(Ordering::Relaxed);
        let mut upload = host.begin("files", artifact).await.unwrap();
        for piece in bytes.chunks(40_000) {
            upload.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let location = upload.finish().await.unwrap();
        assert!(
            CALLS.load(Ordering::Relaxed) - before >= 5,
            "300 000 bytes gathered into 64 KiB writes are 5 writes, all in place"
        );
        assert_eq!(std::fs::read(location).unwrap(), bytes);
    }
}
