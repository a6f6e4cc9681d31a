#!/bin/sh
# Builds the provider into c_directory.wasm, a component (about 240 KB):
#   1. `wit-bindgen c` writes the bindings of the contract into $BUILD_DIR/bindings;
#   2. clang (Debian: clang, lld, wasi-libc, libclang-rt-dev-wasm32) compiles provider.c and
#      the bindings for wasm32-wasi (WASI preview 1) into a core module;
#   3. `wasm-tools component new` turns it into a component, adapting preview 1 to the WASI 0.2
#      interfaces with wasmtime's preview1 adapter (the crate
#      wasi-preview1-component-adapter-provider, fetched by cargo).
# Tools: cargo install wit-bindgen-cli --version 0.63.0 --locked --no-default-features --features c
#        cargo install wasm-tools --version 1.262.0 --locked --no-default-features --features component
# OUT, WIT, BUILD_DIR, CC, WIT_BINDGEN and WASM_TOOLS override the defaults below.
set -e
cd "$(dirname "$0")"
OUT=${OUT:-c_directory.wasm}
WIT=${WIT:-../../wit/diagmon-egress@0.1.0}
BUILD_DIR=${BUILD_DIR:-build}
CC=${CC:-clang}
WIT_BINDGEN=${WIT_BINDGEN:-wit-bindgen}
WASM_TOOLS=${WASM_TOOLS:-wasm-tools}
ADAPTER_VERSION=48.0.8   # the wasmtime release diagmon embeds

mkdir -p "$BUILD_DIR/bindings" "$BUILD_DIR/adapter"
"$WIT_BINDGEN" c "$WIT" --world egress-provider --out-dir "$BUILD_DIR/bindings" >/dev/null

# The adapter: cargo fetches the crate; its manifest's folder holds the .wasm files.
cat > "$BUILD_DIR/adapter/Cargo.toml" <<TOML
[package]
name = "adapter-fetch"
version = "0.0.0"
edition = "2021"
[lib]
path = "lib.rs"
[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"
[workspace]
TOML
touch "$BUILD_DIR/adapter/lib.rs"
# Its own command, so that `set -e` stops here when cargo cannot fetch the crate.
cargo metadata --format-version 1 --manifest-path "$BUILD_DIR/adapter/Cargo.toml" \
    > "$BUILD_DIR/adapter/metadata.json"
ADAPTER_DIR=$(sed -n 's#.*"manifest_path":"\([^"]*wasi-preview1-component-adapter-provider-[^"]*\)/Cargo.toml".*#\1#p' \
    "$BUILD_DIR/adapter/metadata.json")
ADAPTER="$ADAPTER_DIR/artefacts/wasi_snapshot_preview1.reactor.wasm"
[ -f "$ADAPTER" ] || { echo "no preview1 adapter at $ADAPTER" >&2; exit 1; }

# A reactor (no main): diagmon calls the exports. -Oz keeps it small.
# Warnings are errors here (CFLAGS_WERROR= turns that off, e.g. for a newer clang's new warnings).
"$CC" --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -Oz -Wall -Wextra ${CFLAGS_WERROR--Werror} \
    -Wno-unused-parameter -I"$BUILD_DIR/bindings" \
    provider.c "$BUILD_DIR/bindings/egress_provider.c" \
    "$BUILD_DIR/bindings/egress_provider_component_type.o" \
    -o "$BUILD_DIR/c_directory.core.wasm"
"$WASM_TOOLS" component new "$BUILD_DIR/c_directory.core.wasm" \
    --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$OUT"
echo "built $OUT"
