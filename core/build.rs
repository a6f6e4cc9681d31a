//! Builds the built-in egress providers (`plugins/`, a workspace of its own) for wasm32-wasip2 and
//! puts the components in `OUT_DIR`, where `src/egress/builtin.rs` embeds them.
//!
//! The plugins build in release mode with their own target directory, `<target>/wasm-plugins`:
//! a nested cargo on diagmon's own target directory would wait forever for the lock that the
//! outer cargo holds. This runs again only when `plugins/` or `wit/` change; the first build
//! takes about 30 s on two cores, later ones are incremental.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built-ins: (crate's library name, name of the embedded file).
const PLUGINS: &[(&str, &str)] = &[
    ("diagmon_egress_filesystem", "filesystem.wasm"),
    ("diagmon_egress_object_storage", "object-storage.wasm"),
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("core/ is inside the workspace");
    let plugins = root.join("plugins");
    let wit = root.join("wit");
    println!("cargo:rerun-if-changed={}", plugins.display());
    println!("cargo:rerun-if-changed={}", wit.display());

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = target_root(&out_dir).join("wasm-plugins");

    check_target_installed();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // What the outer cargo sets for diagmon's own build must not leak into the plugins' build.
    for variable in [
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
    ] {
        command.env_remove(variable);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the built-in egress providers: {e}"));
    if !output.status.success() {
        panic!(
            "building the built-in egress providers in {} failed:\n{}",
            plugins.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for (library, file) in PLUGINS {
        let built = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{library}.wasm"));
        std::fs::copy(&built, out_dir.join(file))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
    }
}

/// The workspace's target directory: the nearest ancestor of `OUT_DIR` holding `CACHEDIR.TAG`
/// (`<target>/<profile>/build/<crate>/out` otherwise).
fn target_root(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_owned)
        .unwrap_or_else(|| out_dir.to_owned())
}

/// Fails with the fix when the standard library for wasm32-wasip2 is missing.
fn check_target_installed() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match libdir {
        Some(dir) if dir.is_dir() => {}
        _ => panic!(
            "the {TARGET} target is not installed; run `rustup target add {TARGET}` \
             (diagmon embeds its built-in egress providers, which are built for it)"
        ),
    }
}
