//! The one wasmtime [`Engine`] of the process, its epoch ticker, and compilation with an on-disk
//! cache of precompiled components.
//!
//! - **Epochs.** A thread increments the engine's epoch every [`EPOCH_TICK`]; a store's deadline is
//!   counted in ticks. The check costs a compare at loop heads and function entries, and a guest
//!   cannot escape it (fuel cost about 15% of throughput when measured).
//! - **Cache.** Compiling a component takes 50 ms (a Rust provider) to 5 s (a Python one);
//!   loading its precompiled form takes under 1 ms. Entries are named after the sha256 of the
//!   component and the engine's compatibility hash (wasmtime version, settings, CPU features), so a
//!   diagmon upgrade never loads a stale entry; an entry that fails to load anyway is a miss and is
//!   rewritten. Loading precompiled code is `unsafe` in wasmtime because the file is trusted as
//!   machine code: the cache directory is used only when it belongs to this user and nobody else
//!   can write to it.

use std::hash::Hasher;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// How often the epoch advances: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The process-wide engine, created on first use with its epoch ticker.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.parallel_compilation(true);
        let engine = Engine::new(&config).expect("the egress engine configuration is valid");
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("egress-epoch".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("the epoch ticker thread starts");
        engine
    })
}

/// Epoch ticks for a deadline. The ticker may tick right after a call starts, so one more tick
/// than the deadline spans makes sure a call always gets at least its whole deadline (and at most
/// one tick more).
pub fn ticks(deadline: Duration) -> u64 {
    (deadline.as_millis() as u64).div_ceil(EPOCH_TICK.as_millis() as u64) + 1
}

/// Adapts sha256 to [`std::hash::Hasher`], so that the engine's compatibility hash (which only
/// implements `Hash`) gives the same key in every process.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The name of a cache entry for a component with this sha256.
fn cache_entry_name(component_sha256: &str) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    std::hash::Hash::hash(&engine().precompile_compatibility_hash(), &mut hasher);
    let engine_hash = hex(&hasher.0.finalize()[..8]);
    format!("{component_sha256}-{engine_hash}.cwasm")
}

/// The default cache directory: `$XDG_CACHE_HOME/diagmon/components`, else
/// `~/.cache/diagmon/components`; none when neither variable is set.
pub fn default_cache_directory() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|dir| dir.join("diagmon").join("components"))
}

/// Creates `directory` (mode 0700) if needed and says whether it is safe to load code from: a
/// directory owned by this user that nobody else can write to.
fn usable_cache_directory(directory: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !directory.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(directory)
            .map_err(|e| format!("cannot create {}: {e}", directory.display()))?;
    }
    let metadata = std::fs::metadata(directory)
        .map_err(|e| format!("cannot inspect {}: {e}", directory.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !metadata.is_dir() {
        return Err(format!("{} is not a directory", directory.display()));
    }
    if metadata.uid() != uid {
        return Err(format!("{} belongs to another user", directory.display()));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by other users (mode {:o}); make it 0700",
            directory.display(),
            metadata.mode() & 0o777
        ));
    }
    Ok(())
}

/// How a component was obtained, for logs and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileSource {
    /// Loaded from the cache.
    Cache,
    /// Compiled now (and written to the cache when there is one).
    Compiled,
}

/// Compiles `wasm` (blocking: call it on a blocking thread), or loads it precompiled from
/// `cache_directory`. Cache problems are logged and never fail the compilation.
pub fn compile(
    wasm: &[u8],
    cache_directory: Option<&Path>,
) -> wasmtime::Result<(Component, CompileSource)> {
    let engine = engine();
    let Some(directory) = cache_directory else {
        return Ok((Component::new(engine, wasm)?, CompileSource::Compiled));
    };
    if let Err(reason) = usable_cache_directory(directory) {
        tracing::warn!("not caching compiled egress providers: {reason}");
        return Ok((Component::new(engine, wasm)?, CompileSource::Compiled));
    }
    let entry = directory.join(cache_entry_name(&sha256_hex(wasm)));
    if entry.is_file() {
        // SAFETY: the entry was written by `Component::serialize` of this process or an earlier
        // one, in a directory only this user can write to (checked above); its name binds it to
        // this component's hash and this engine's compatibility hash, and `deserialize_file`
        // checks the header again.
        match unsafe { Component::deserialize_file(engine, &entry) } {
            Ok(component) => return Ok((component, CompileSource::Cache)),
            Err(error) => tracing::info!(
                "ignoring the unusable cache entry {}: {error}",
                entry.display()
            ),
        }
    }
    let component = Component::new(engine, wasm)?;
    if let Err(error) = write_entry(&component, directory, &entry) {
        tracing::warn!(
            "cannot cache a compiled egress provider in {}: {error}",
            directory.display()
        );
    }
    Ok((component, CompileSource::Compiled))
}

/// Writes a cache entry atomically: a temporary file, then a rename.
fn write_entry(component: &Component, directory: &Path, entry: &Path) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let mut temporary = tempfile_in(directory)?;
    temporary.1.write_all(&bytes)?;
    temporary.1.sync_all()?;
    drop(temporary.1);
    std::fs::rename(&temporary.0, entry).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary.0);
    })
}

fn tempfile_in(directory: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = format!(".tmp-{}-{}", std::process::id(), uuid::Uuid::new_v4());
    let path = directory.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok((path, file))
}
