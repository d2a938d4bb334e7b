#!/bin/sh
# The demo: a local Mosquitto on 127.0.0.1:18830, three simulated CoAP devices, the gateway
# on configs/demo/, and a live view of the MQTT traffic. Ctrl-C stops everything.
# DEMO_SECONDS=N ends it after N seconds (used by the tests).
set -eu
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# DEMO_BUILD_DIR=dir: use binaries already built there (the tests do), skip install/build.
if [ -z "${DEMO_BUILD_DIR:-}" ]; then
  scripts/deps.sh
  scripts/build.sh build
fi
BUILD="${DEMO_BUILD_DIR:-build}"

MQTT_PORT=18830
WORK="$(mktemp -d /tmp/coap2mqtt-demo.XXXXXX)"
chmod 0777 "$WORK"
pids=""
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MQTT_PORT" \
  >"$WORK/mosquitto.conf"
chmod 0644 "$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
pids="$pids $!"
i=0
until mosquitto_pub -p "$MQTT_PORT" -t coap2mqtt/demo/ping -m up 2>/dev/null; do
  i=$((i + 1))
  [ $i -gt 50 ] && { echo "mosquitto did not start:"; cat "$WORK/mosquitto.log"; exit 1; }
  sleep 0.1
done

"$BUILD/tests/sim/coap2mqtt-sim" --devices 3 --address 127.0.0.1 --port 5690 --interval 2000 \
  >"$WORK/sim.log" 2>&1 &
pids="$pids $!"

"$BUILD/gateway/coap2mqtt" -c "$ROOT/configs/demo/gateway.toml" 2>"$WORK/gateway.log" &
pids="$pids $!"

echo "Live MQTT traffic on 127.0.0.1:$MQTT_PORT (gateway log: $WORK/gateway.log)."
echo "Try:  mosquitto_pub -p $MQTT_PORT -t coap2mqtt/kitchen/actuators/led/set -m on"
if [ -n "${DEMO_SECONDS:-}" ]; then
  mosquitto_sub -p "$MQTT_PORT" -t 'coap2mqtt/#' -v -W "$DEMO_SECONDS" || true
else
  mosquitto_sub -p "$MQTT_PORT" -t 'coap2mqtt/#' -v
fi
