#!/bin/sh
# The whole test suite: installs what is missing, builds warning-free, runs every test, then
# the same again under AddressSanitizer + UndefinedBehaviorSanitizer, then the fuzzers briefly.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh --test

# Most integration tests wait on timers rather than compute: three per core.
jobs=$(($(nproc) * 3))

scripts/build.sh build-asan -DCOAP2MQTT_SANITIZE=ON
echo "== tests under ASan+UBSan"
(cd build-asan && ASAN_OPTIONS=detect_leaks=0 ctest --output-on-failure -j"$jobs")

if [ -x scripts/fuzz.sh ]; then
  echo "== fuzzing"
  scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
fi

scripts/build.sh build
echo "== tests"
cd build && ctest --output-on-failure -j"$jobs"
