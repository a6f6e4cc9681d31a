//! The built-in providers: components built from `plugins/` by `core/build.rs` and embedded in
//! the binary, so that `component = "filesystem"` works without any file beside diagmon.

/// The built-in filesystem provider (`plugins/filesystem`).
static FILESYSTEM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/filesystem.wasm"));

/// The built-in object-storage provider (`plugins/object-storage`): needs an `object_store`
/// grant.
static OBJECT_STORAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/object-storage.wasm"));

/// The names of the built-in components.
pub const NAMES: &[&str] = &["filesystem", "object-storage"];

/// The component of a built-in, by name (case-insensitive).
pub fn component(name: &str) -> Option<&'static [u8]> {
    match name.to_ascii_lowercase().as_str() {
        "filesystem" => Some(FILESYSTEM),
        "object-storage" => Some(OBJECT_STORAGE),
        _ => None,
    }
}

/// The built-in's name as listed in [`NAMES`].
pub(crate) fn canonical_name(name: &str) -> &'static str {
    NAMES
        .iter()
        .find(|n| n.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or("built-in")
}
