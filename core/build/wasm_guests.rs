//! Building WebAssembly guest workspaces (`wasm32-wasip2`, release): the one place that knows
//! how. `core/build.rs` uses it for the built-in providers (`plugins/`), and the test support
//! (`tests/src/guests.rs`) for the test fixtures (`tests/plugins/`) and the examples
//! (`examples/`); both include this file as a module.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target guests are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// What the outer cargo sets for its own build that must not leak into a guest build.
const OUTER_BUILD_VARIABLES: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "TARGET",
    "HOST",
    "OPT_LEVEL",
    "PROFILE",
    "DEBUG",
];

/// Fails with the fix when the standard library for [`TARGET`] is missing.
pub fn check_target_installed() -> Result<(), String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match libdir {
        Some(dir) if dir.is_dir() => Ok(()),
        _ => Err(format!(
            "the {TARGET} target is not installed; run `rustup target add {TARGET}`"
        )),
    }
}

/// Builds the guest workspace of `manifest` (release, `--locked`) into `target_dir`, which must
/// not be the outer build's own (a nested cargo would wait forever for its lock); returns the
/// directory holding the components.
pub fn build_workspace(manifest: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    check_target_installed()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    for variable in OUTER_BUILD_VARIABLES {
        command.env_remove(variable);
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run cargo to build {}: {e}", manifest.display()))?;
    if !output.status.success() {
        return Err(format!(
            "building {} failed:\n{}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(target_dir.join(TARGET).join("release"))
}
