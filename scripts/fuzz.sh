#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and fuzzes each one in turn: the link-format parser
# (fuzz_link_format) and the Content-Format conversions (fuzz_transform).
#   scripts/fuzz.sh [seconds] [extra libFuzzer flags...]     (default: 60 seconds per target)
# New inputs go to a scratch copy of each seed corpus, never into the repository. Crash
# reproducers land in $FUZZ_ARTIFACTS (default: <build dir>/artifacts), named
# <target>-crash-..., and CI should keep them. Every target runs even when an earlier one
# found something; the script exits non-zero when any of them did.
set -euo pipefail

seconds=${1:-60}
shift || true
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
export CC=${CC:-clang} CXX=${CXX:-clang++}

# The fuzzers need none of the gateway's libraries, so when the full project does not
# configure here (missing packages) build tests/fuzz on its own instead. There,
# fuzz_transform needs nlohmann-json (header-only) and is skipped without it.
if cmake -S "$root" -B "$build" -DCOAP2MQTT_FUZZ=ON -DCOAP2MQTT_TESTS=ON -DCOAP2MQTT_WERROR=ON \
  >/dev/null; then
  bin_dir=$build/tests/fuzz
else
  echo "fuzz.sh: full project did not configure; using the standalone tests/fuzz project" >&2
  build=$build-standalone
  cmake -S "$root/tests/fuzz" -B "$build" >/dev/null
  bin_dir=$build
fi

targets=(fuzz_link_format)
# (Not "| grep -q": with pipefail, cmake's SIGPIPE when grep stops early fails the test.)
help=$(cmake --build "$build" --target help)
if grep -qw fuzz_transform <<<"$help"; then
  targets+=(fuzz_transform)
else
  echo "fuzz.sh: fuzz_transform is not configured (no nlohmann-json); skipping it" >&2
fi
cmake --build "$build" --target "${targets[@]}" -j"$(nproc)"

artifacts=${FUZZ_ARTIFACTS:-$build/artifacts}
mkdir -p "$artifacts"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Per target: seed corpus directory, dictionary, and flags of its own.
declare -A seeds=([fuzz_link_format]=link_format [fuzz_transform]=transform)
declare -A dicts=([fuzz_link_format]=link_format.dict [fuzz_transform]=transform.dict)
# Payloads are single CoAP messages (block-wise transfers aside): 4 KiB is plenty to reach
# every path, deep nesting included, and keeps the executions fast.
declare -A flags=([fuzz_link_format]="" [fuzz_transform]="-max_len=4096")

failed=()
for target in "${targets[@]}"; do
  corpus=$scratch/$target
  mkdir -p "$corpus"
  cp "$root/tests/fuzz/corpus/${seeds[$target]}"/* "$corpus"/
  echo "fuzz.sh: $target for ${seconds}s" >&2
  # shellcheck disable=SC2086  # flags[...] is a word list
  if ! "$bin_dir/$target" -max_total_time="$seconds" -timeout=5 -print_final_stats=1 \
    -dict="$root/tests/fuzz/${dicts[$target]}" -artifact_prefix="$artifacts/$target-" \
    ${flags[$target]} "$@" "$corpus"; then
    failed+=("$target")
  fi
done

if ((${#failed[@]} > 0)); then
  echo "fuzz.sh: found something: ${failed[*]} (reproducers in $artifacts)" >&2
  exit 1
fi
