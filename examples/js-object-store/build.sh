#!/bin/sh
# Builds the provider into js_object_store.wasm, a component (about 12 MB): installs the pinned
# componentize-js (package-lock.json) on first use, then compiles provider.js against the
# contract. Needs Node.js 20.19 or later and npm; nothing is downloaded at run time (no `--aot`).
# OUT, WIT and COMPONENTIZE_JS override the output, the contract folder and the tool.
set -e
cd "$(dirname "$0")"
OUT=${OUT:-js_object_store.wasm}
WIT=${WIT:-../../wit/diagmon-egress@0.1.0}
COMPONENTIZE_JS=${COMPONENTIZE_JS:-node_modules/.bin/componentize-js}
if [ ! -x "$COMPONENTIZE_JS" ]; then
    npm ci --no-audit --no-fund
    COMPONENTIZE_JS=node_modules/.bin/componentize-js
fi
# -d http fetch-event: the provider makes no HTTP requests, so the component does not import
# wasi:http (which diagmon links only for a provider granted `allowed_outbound_hosts`).
"$COMPONENTIZE_JS" provider.js --wit "$WIT" -n object-storage-provider -d http fetch-event -o "$OUT"
echo "built $OUT"
