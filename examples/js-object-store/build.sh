#!/bin/sh
# Builds the provider into js_object_store.wasm, a component (about 12 MB): installs the pinned
# componentize-js (package-lock.json) on first use, then compiles provider.js against the
# contract. Needs Node.js 18 or later and npm; nothing is downloaded at run time (no `--aot`).
set -e
cd "$(dirname "$0")"
[ -x node_modules/.bin/componentize-js ] || npm ci --no-audit --no-fund
WIT=${WIT:-../../wit/diagmon-egress@0.1.0}
node_modules/.bin/componentize-js provider.js --wit "$WIT" -n object-storage-provider \
    -d http fetch-event -o js_object_store.wasm
echo "built $(pwd)/js_object_store.wasm"
