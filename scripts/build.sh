#!/bin/sh
# Configures and builds coap2mqtt. Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]
# Warnings are errors here (development, the demo, the tests, CI); a plain cmake build, e.g.
# a packager's, leaves COAP2MQTT_WERROR off.
set -eu
cd "$(dirname "$0")/.."
dir="${1:-build}"
[ $# -gt 0 ] && shift
# -g1 (line tables) rather than -g: backtraces, perf and ASan reports keep file:line, and -O2
# code compiles 40-45 % faster (gateway/main.cpp 21 -> 12 s, bridge_topics.cpp 16 -> 9 s).
# For gdb with locals, pass -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g -DNDEBUG" after the dir.
# Ninja where it is installed (scripts/deps.sh installs it): on 2 cores a whole build took
# 283 s with it and 352 s with make, whose recursive dependency scanning runs between the
# compilers. A build directory keeps the generator it was made with.
generator=""
if [ ! -f "$dir/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then
  generator="-GNinja"
fi
# shellcheck disable=SC2086  # empty or one word
# Unity build (batches of 8 sources as one compiler run): each of our files parses the same
# heavy headers (spdlog and fmt, nlohmann-json, gtest) and instantiates the same templates;
# batched, the gateway library took 255 CPU-s instead of 560 (2026-12-04, -j1 side by side).
# C2M_UNITY=OFF for a tree where an edit recompiles only its own file.
cmake -S . -B "$dir" $generator -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOAP2MQTT_WERROR=ON \
  -DCMAKE_UNITY_BUILD="${C2M_UNITY:-ON}" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
  "$@" >/dev/null
# BUILD_TARGETS="a b": only these (and what they need) instead of everything.
# shellcheck disable=SC2086  # a word list
cmake --build "$dir" -j"$(nproc)" ${BUILD_TARGETS:+--target $BUILD_TARGETS}
