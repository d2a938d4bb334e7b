#!/bin/sh
# Installs, with apt-get only, whatever of coap2mqtt's build and test dependencies is missing.
# Usage: scripts/deps.sh [--test]   (--test adds what the test suite needs)
set -eu

PACKAGES="build-essential cmake pkg-config libcoap3-dev libcoap3-bin libpaho-mqttpp-dev
libpaho-mqtt-dev libtoml11-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
libsqlite3-dev libsystemd-dev libgtest-dev mosquitto mosquitto-clients"
if [ "${1:-}" = "--test" ]; then
  # websockify: a WebSocket front for mosquitto (Debian's has none) in the ws:// tests
  # libmosquitto-dev: bench_outbox's comparison with a second MQTT client library
  # systemd: systemd-analyze checks the unit (verify, security)
  PACKAGES="$PACKAGES systemd clang libclang-rt-14-dev iproute2 nftables websockify libmosquitto-dev"
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
