#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and fuzzes the link-format parser.
#   scripts/fuzz.sh [seconds] [extra libFuzzer flags...]     (default: 60 seconds)
# New inputs go to a scratch copy of the seed corpus, never into the repository. Crash
# reproducers land in $FUZZ_ARTIFACTS (default: <build dir>/artifacts); CI should keep them.
# Exits non-zero when the fuzzer finds something.
set -euo pipefail

seconds=${1:-60}
shift || true
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
export CC=${CC:-clang} CXX=${CXX:-clang++}

# The fuzzer needs none of the gateway's dependencies, so when the full project does not
# configure here (missing packages) build tests/fuzz on its own instead.
if cmake -S "$root" -B "$build" -DCOAP2MQTT_FUZZ=ON -DCOAP2MQTT_TESTS=ON >/dev/null; then
  binary=$build/tests/fuzz/fuzz_link_format
else
  echo "fuzz.sh: full project did not configure; using the standalone tests/fuzz project" >&2
  build=$build-standalone
  cmake -S "$root/tests/fuzz" -B "$build" >/dev/null
  binary=$build/fuzz_link_format
fi
cmake --build "$build" --target fuzz_link_format -j"$(nproc)"

artifacts=${FUZZ_ARTIFACTS:-$build/artifacts}
mkdir -p "$artifacts"
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
cp "$root"/tests/fuzz/corpus/link_format/* "$corpus"/

"$binary" -max_total_time="$seconds" -timeout=5 -print_final_stats=1 \
  -dict="$root/tests/fuzz/link_format.dict" -artifact_prefix="$artifacts/" "$@" "$corpus"
