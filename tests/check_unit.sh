#!/bin/sh
# Checks systemd/coap2mqtt.service (ctest Service.UnitFile):
# - `systemd-analyze verify` says nothing, on a copy whose /usr/bin/coap2mqtt is the binary
#   just built (the package installs it there; this machine need not have it);
# - `systemd-analyze security --offline=true` rates the unit 2.0 or better.
# Usage: tests/check_unit.sh SYSTEMD_ANALYZE UNIT_FILE COAP2MQTT_BINARY
set -eu
analyze=$1
unit=$2
binary=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/bin/coap2mqtt|$binary|g" "$unit" >"$tmp/coap2mqtt.service"
if ! out=$("$analyze" verify "$tmp/coap2mqtt.service" 2>&1) || [ -n "$out" ]; then
  echo "systemd-analyze verify: $out"
  exit 1
fi
echo "systemd-analyze verify: OK"
# --threshold=20: exit non-zero when the exposure is above 2.0.
if ! out=$("$analyze" security --offline=true --threshold=20 "$unit" 2>&1); then
  echo "$out"
  echo "exposure above 2.0"
  exit 1
fi
echo "$out" | grep 'Overall exposure level'
