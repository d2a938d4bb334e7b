#!/bin/sh
# Installs, with apt-get only, whatever of coap2mqtt's build and test dependencies is missing.
# Usage: scripts/deps.sh [--test] [--promtool]
#   --test      adds what the test suite needs
#   --promtool  adds Debian's prometheus package for `promtool check metrics` in
#               test_metrics (96 MB installed, a 19 MB download: optional; without it that
#               sub-check is skipped, and says so)
set -eu
test_deps=false
promtool=false
for arg in "$@"; do
  case "$arg" in
    --test) test_deps=true ;;
    --promtool) promtool=true ;;
    *) echo "usage: $0 [--test] [--promtool]" >&2; exit 2 ;;
  esac
done

PACKAGES="build-essential cmake ninja-build pkg-config libcoap3-dev libcoap3-bin libpaho-mqttpp-dev
libpaho-mqtt-dev libtoml11-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
libsqlite3-dev libsystemd-dev libgtest-dev mosquitto mosquitto-clients
prometheus-cpp-dev libcpp-httplib-dev libssl-dev"
if $test_deps; then
  # websockify: a WebSocket front for mosquitto (Debian's has none) in the ws:// tests
  # libmosquitto-dev: bench_outbox's comparison with a second MQTT client library
  # systemd: systemd-analyze checks the unit (verify, security)
  # curl: test_metrics scrapes the Prometheus endpoint with a real HTTP client
  # chromium, chromium-driver, python3-selenium: test_web's browser test (headless)
  PACKAGES="$PACKAGES systemd clang libclang-rt-14-dev iproute2 nftables websockify libmosquitto-dev
curl chromium chromium-driver python3-selenium"
fi
if $promtool; then
  PACKAGES="$PACKAGES prometheus"
fi

missing=""
for p in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "Installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
