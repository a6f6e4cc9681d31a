//! Builds the built-in egress providers (`plugins/`, a workspace of its own) for wasm32-wasip2 and
//! puts the components in `OUT_DIR`, where `src/egress/builtin.rs` embeds them.
//!
//! The plugins build in release mode with their own target directory, `<target>/wasm-plugins`:
//! a nested cargo on diagmon's own target directory would wait forever for the lock that the
//! outer cargo holds. This runs again only when `plugins/` or `wit/` change; the first build
//! takes about 30 s on two cores, later ones are incremental. How a guest workspace is built is
//! shared with the tests: `build/wasm_guests.rs`.

#[path = "build/wasm_guests.rs"]
mod wasm_guests;

use std::path::{Path, PathBuf};

/// The built-ins: (crate's library name, name of the embedded file).
const PLUGINS: &[(&str, &str)] = &[
    ("diagmon_egress_filesystem", "filesystem.wasm"),
    ("diagmon_egress_object_storage", "object-storage.wasm"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("core/ is inside the workspace");
    let plugins = root.join("plugins");
    let wit = root.join("wit");
    println!("cargo:rerun-if-changed={}", plugins.display());
    println!("cargo:rerun-if-changed={}", wit.display());
    println!("cargo:rerun-if-changed=build/wasm_guests.rs");

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = target_root(&out_dir).join("wasm-plugins");
    let built = wasm_guests::build_workspace(&plugins.join("Cargo.toml"), &target_dir)
        .unwrap_or_else(|error| {
            panic!("the built-in egress providers (embedded in diagmon) cannot be built: {error}")
        });
    for (library, file) in PLUGINS {
        let component = built.join(format!("{library}.wasm"));
        std::fs::copy(&component, out_dir.join(file))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", component.display()));
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
