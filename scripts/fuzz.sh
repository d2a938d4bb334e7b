#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and fuzzes each one in turn, one per parser that sees
# outside bytes: link-format (fuzz_link_format), the Content-Format conversions
# (fuzz_transform), the Resource Directory's queries and bodies (fuzz_resource_directory),
# command topics and payloads (fuzz_command), rule files and gateway.toml (fuzz_config), /ps
# request paths and the [[inbound]] allow-list (fuzz_ps_path).
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
# Ninja where it is installed, as scripts/build.sh (a build directory keeps its generator).
generator=()
if [[ ! -f $build/CMakeCache.txt ]] && command -v ninja >/dev/null; then generator=(-GNinja); fi
if cmake -S "$root" -B "$build" "${generator[@]}" -DCOAP2MQTT_FUZZ=ON -DCOAP2MQTT_TESTS=ON -DCOAP2MQTT_WERROR=ON \
  >/dev/null; then
  bin_dir=$build/tests/fuzz
else
  echo "fuzz.sh: full project did not configure; using the standalone tests/fuzz project" >&2
  build=$build-standalone
  cmake -S "$root/tests/fuzz" -B "$build" >/dev/null
  bin_dir=$build
fi

# Every target this configuration has (fuzz_transform, fuzz_command and fuzz_config need
# nlohmann-json or toml11, which the standalone project may lack).
# (Not "| grep -q": with pipefail, cmake's SIGPIPE when grep stops early fails the test.)
help=$(cmake --build "$build" --target help)
targets=()
for target in fuzz_link_format fuzz_transform fuzz_resource_directory fuzz_command fuzz_config fuzz_ps_path; do
  if grep -qw "$target" <<<"$help"; then
    targets+=("$target")
  else
    echo "fuzz.sh: $target is not configured here; skipping it" >&2
  fi
done
cmake --build "$build" --target "${targets[@]}" -j"$(nproc)"

artifacts=${FUZZ_ARTIFACTS:-$build/artifacts}
mkdir -p "$artifacts"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Per target: seed corpus directory (tests/fuzz/corpus/<seeds>), dictionary (optional) and
# flags of its own.
declare -A seeds=([fuzz_link_format]=link_format [fuzz_transform]=transform
  [fuzz_resource_directory]=resource_directory [fuzz_command]=command [fuzz_config]=config
  [fuzz_ps_path]=ps_path)
declare -A dicts=([fuzz_link_format]=link_format.dict [fuzz_transform]=transform.dict)
# Payloads are single CoAP messages (block-wise transfers aside): 4 KiB is plenty to reach
# every path, deep nesting included, and keeps the executions fast. A config file is read
# from disk on each execution: a short -timeout still holds.
declare -A flags=([fuzz_link_format]="" [fuzz_transform]="-max_len=4096"
  [fuzz_resource_directory]="-max_len=4096" [fuzz_command]="-max_len=1024"
  [fuzz_config]="-max_len=4096" [fuzz_ps_path]="-max_len=1024")

# One fuzzer per core at a time (each is single-threaded); each one's output goes to its own
# log, printed whole when it has ended, and its exit status to <target>.status.
fuzz_one() {  # target
  local target=$1 corpus=$scratch/$1 status=0
  mkdir -p "$corpus"
  cp "$root/tests/fuzz/corpus/${seeds[$target]}"/* "$corpus"/
  # shellcheck disable=SC2086  # flags[...] is a word list
  "$bin_dir/$target" -max_total_time="$seconds" -timeout=5 -print_final_stats=1 \
    ${dicts[$target]:+-dict="$root/tests/fuzz/${dicts[$target]}"} -artifact_prefix="$artifacts/$target-" \
    ${flags[$target]} "${extra[@]}" "$corpus" >"$scratch/$target.log" 2>&1 || status=$?
  echo "$status" >"$scratch/$target.status"
}
extra=("$@")
failed=()
running=()
reap() {  # reports the running targets that have ended and keeps the others
  local still=() target
  for target in "${running[@]}"; do
    if [[ -f $scratch/$target.status ]]; then
      echo "fuzz.sh: $target for ${seconds}s" >&2
      cat "$scratch/$target.log" >&2
      if [[ $(cat "$scratch/$target.status") != 0 ]]; then failed+=("$target"); fi
    else
      still+=("$target")
    fi
  done
  running=("${still[@]}")
}
for target in "${targets[@]}"; do
  while ((${#running[@]} >= $(nproc))); do
    wait -n || true
    reap
  done
  fuzz_one "$target" &
  running+=("$target")
done
wait
reap

if ((${#failed[@]} > 0)); then
  echo "fuzz.sh: found something: ${failed[*]} (reproducers in $artifacts)" >&2
  exit 1
fi
