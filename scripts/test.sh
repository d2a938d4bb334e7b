#!/bin/sh
# The whole test suite: installs what is missing, builds warning-free, runs every test under
# AddressSanitizer + UndefinedBehaviorSanitizer, the tests that cross threads under
# ThreadSanitizer (scripts/tsan.sh), the fuzzers briefly, then every test on the normal build.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh --test

# Most integration tests wait on timers rather than compute: three per core.
jobs=$(($(nproc) * 3))

scripts/build.sh build-asan -DCOAP2MQTT_SANITIZE=ON

# The ASan tests mostly wait on timers (about a fifth of two cores busy), so the TSan tree
# builds beside them at the lowest priority (nice 19: the tests keep the CPU they ask for).
# That hides most of the TSan job's build time (3.5 of its 5 minutes, clean, on 2 cores).
tsan_build_log=$(mktemp)
nice -n 19 scripts/tsan.sh --build-only >"$tsan_build_log" 2>&1 &
tsan_build=$!
echo "== tests under ASan+UBSan"
asan_status=0
(cd build-asan && ASAN_OPTIONS=detect_leaks=0 ctest --output-on-failure -j"$jobs") ||
  asan_status=$?
tsan_build_status=0
wait "$tsan_build" || tsan_build_status=$?
if [ "$tsan_build_status" -ne 0 ]; then
  echo "== the TSan build failed:"
  cat "$tsan_build_log"
fi
rm -f "$tsan_build_log"
[ "$asan_status" -eq 0 ] || exit "$asan_status"
[ "$tsan_build_status" -eq 0 ] || exit "$tsan_build_status"

scripts/tsan.sh

if [ -x scripts/fuzz.sh ]; then
  echo "== fuzzing"
  scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
fi

scripts/build.sh build
echo "== tests"
cd build && ctest --output-on-failure -j"$jobs"
