#!/usr/bin/env bash
# Installs the real object-storage servers that the object-storage egress tests run against
# (see tests/src/storage.rs), into ${DIAGMON_STORAGE_CACHE:-<repo root>/.cache/object-storage}:
#   - Azurite 3.35.0 (Azure Blob Storage), from npm, in <cache>/azurite;
#   - moto 5.2.5 `moto_server` (S3) and boto3 (the independent client the tests read back with),
#     from PyPI, in the virtualenv <cache>/moto.
# The tests start their own servers on free loopback ports, one per test, and stop them; this
# script only installs. Idempotent: a second run with nothing to do takes well under a second.
# Prints the cache path on success.
#
# Why these versions: Azurite 3.36 and later declare Node >= 21 (Node 20 here) and 3.37 uploads
# 3x slower; moto is the S3 server that checks SigV4 once its IAM auth is switched on.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${DIAGMON_STORAGE_CACHE:-$root/.cache/object-storage}"
azurite_version=3.35.0
moto_version=5.2.5
boto3_version=1.44.8

fail() { echo "tests/services/install.sh: error: $*" >&2; exit 1; }
trap 'fail "command failed (line $LINENO): $BASH_COMMAND"' ERR

mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
# One install at a time per cache.
exec 9>"$cache/.lock"
flock 9

# 1. Azurite. Installed into a scratch folder and moved in place, so that a half-done install is
# never taken for a finished one; the stamp names the version.
azurite="$cache/azurite"
if [ "$(cat "$azurite/.installed" 2>/dev/null)" != "$azurite_version" ]; then
    command -v npm >/dev/null || fail "npm is missing (Node.js 20 or later is needed for Azurite)"
    echo "installing azurite@$azurite_version..." >&2
    rm -rf "$cache/azurite.partial"
    mkdir -p "$cache/azurite.partial"
    npm install --prefix "$cache/azurite.partial" --no-audit --no-fund --loglevel=error \
        "azurite@$azurite_version" >&2 || fail "npm install azurite@$azurite_version failed"
    [ -x "$cache/azurite.partial/node_modules/.bin/azurite-blob" ] ||
        fail "npm installed no azurite-blob"
    echo "$azurite_version" >"$cache/azurite.partial/.installed"
    rm -rf "$azurite"
    mv "$cache/azurite.partial" "$azurite"
fi

# 2. moto and boto3, in a virtualenv of their own. The stamp is written last: a half-done
# install has none and is started over.
moto="$cache/moto"
if [ "$(cat "$moto/.installed" 2>/dev/null)" != "$moto_version $boto3_version" ]; then
    echo "installing moto[server]==$moto_version and boto3==$boto3_version..." >&2
    rm -rf "$moto"
    python3 -m venv "$moto" >&2 || fail "python3 -m venv failed"
    "$moto/bin/python" -m pip install -q "moto[server]==$moto_version" "boto3==$boto3_version" >&2 ||
        fail "pip install moto[server]==$moto_version boto3==$boto3_version failed"
    [ -x "$moto/bin/moto_server" ] || fail "pip installed no moto_server"
    echo "$moto_version $boto3_version" >"$moto/.installed"
fi

echo "$cache"
