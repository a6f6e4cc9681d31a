#!/usr/bin/env bash
# Installs the real .NET Core 3.1 test target used by the end-to-end tests
# (see tests/src/target.rs), into ${DIAGMON_TEST_CACHE:-<repo root>/.cache/test-target}:
#   - the C# compiler `mcs` (Debian package mono-mcs), if missing;
#   - the .NET Core 3.1.23 runtime, from the PyPI wheel dotnetcore2==3.1.23, in <cache>/dotnetcore2/bin;
#   - every tests/targets/*.cs (Worker, EventSourceApp, BigHeap, CounterApp, HeapKeeper) compiled to <cache>/bin/<Name>.dll + <Name>.runtimeconfig.json.
# Idempotent; a second run with nothing to do takes well under a second.
# Prints the cache path on success.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${DIAGMON_TEST_CACHE:-$root/.cache/test-target}"
version=3.1.23

fail() { echo "install.sh: error: $*" >&2; exit 1; }
trap 'fail "command failed (line $LINENO): $BASH_COMMAND"' ERR

mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
# One install at a time per cache.
exec 9>"$cache/.lock"
flock 9

# 1. The compiler.
if ! command -v mcs >/dev/null; then
    echo "installing mono-mcs..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q mono-mcs >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q mono-mcs >&2; } ||
        fail "could not install mono-mcs with apt-get"
fi

# 2. The runtime: unzip the wheel into a scratch folder, then move it in place, so that a
# half-done install is never taken for a finished one.
runtime="$cache/dotnetcore2/bin"
if [ ! -x "$runtime/dotnet" ]; then
    echo "installing the .NET Core $version runtime..." >&2
    mkdir -p "$cache/dl"
    wheel=("$cache"/dl/dotnetcore2-$version-*.whl)
    if [ ! -f "${wheel[0]}" ]; then
        python3 -m pip download -q --no-deps --only-binary=:all: --dest "$cache/dl" \
            "dotnetcore2==$version" >&2 || fail "pip download dotnetcore2==$version failed"
        wheel=("$cache"/dl/dotnetcore2-$version-*.whl)
    fi
    [ -f "${wheel[0]}" ] || fail "no dotnetcore2 wheel in $cache/dl after pip download"
    rm -rf "$cache/unpack" "$cache/dotnetcore2"
    unzip -q "${wheel[0]}" 'dotnetcore2/*' -d "$cache/unpack" || fail "could not unzip ${wheel[0]}"
    chmod +x "$cache/unpack/dotnetcore2/bin/dotnet" \
        "$cache/unpack/dotnetcore2/bin/shared/Microsoft.NETCore.App/$version/createdump"
    mv "$cache/unpack/dotnetcore2" "$cache/dotnetcore2"
    rm -rf "$cache/unpack" "$cache/dl"
fi
fw="$runtime/shared/Microsoft.NETCore.App/$version"
[ -f "$fw/System.Private.CoreLib.dll" ] || fail "runtime incomplete: no $fw/System.Private.CoreLib.dll (remove $cache and retry)"

# 3. The target programs, compiled against the .NET Core framework assemblies (not Mono's).
refs=()
for asm in System.Private.CoreLib System.Runtime System.Console System.Collections \
    System.Runtime.Extensions System.Threading System.Threading.Thread \
    System.Diagnostics.Tracing System.Diagnostics.Process System.IO.FileSystem; do
    refs+=("-r:$fw/$asm.dll")
done
mkdir -p "$cache/bin"
for src in "$here"/*.cs; do
    name="$(basename "$src" .cs)"
    dll="$cache/bin/$name.dll"
    if [ ! -f "$dll" ] || [ "$src" -nt "$dll" ]; then
        echo "compiling $name..." >&2
        mcs -nologo -nowarn:1702 -optimize+ -nostdlib "${refs[@]}" -out:"$dll.tmp" "$src" >&2 ||
            fail "could not compile $src"
        mv "$dll.tmp" "$dll"
    fi
    echo '{"runtimeOptions":{"tfm":"netcoreapp3.1","framework":{"name":"Microsoft.NETCore.App","version":"3.1.0"}}}' \
        >"$cache/bin/$name.runtimeconfig.json"
done

echo "$cache"
