#!/bin/sh
# The demo: a local Mosquitto on 127.0.0.1:18830 (or the next free port, said out loud),
# three simulated CoAP devices, the gateway on configs/demo/, and a live view of the MQTT
# traffic. Ctrl-C stops everything.
# DEMO_SECONDS=N ends it after N seconds (used by the tests).
# DEMO_MQTT_PORT=N: this port or nothing (fails when it is taken).
set -eu
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# DEMO_BUILD_DIR=dir: use binaries already built there (the tests do), skip install/build.
if [ -z "${DEMO_BUILD_DIR:-}" ]; then
  scripts/deps.sh
  # Only what the demo runs: the whole tree with its tests takes minutes more.
  BUILD_TARGETS="coap2mqtt coap2mqtt-sim" scripts/build.sh build
fi
BUILD="${DEMO_BUILD_DIR:-build}"

WORK="$(mktemp -d /tmp/coap2mqtt-demo.XXXXXX)"
chmod 0777 "$WORK"
pids=""
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Our own broker, on a port nobody else holds: with another broker on it the demo would show
# that broker's traffic, retained messages of other runs included. Mosquitto itself tells:
# it says "running" once it listens, and exits on "Address already in use".
start_mosquitto() {
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$1" \
    >"$WORK/mosquitto.conf"
  chmod 0644 "$WORK/mosquitto.conf"
  mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
  mosquitto_pid=$!
  i=0
  while ! grep -q ' running' "$WORK/mosquitto.log"; do
    if ! kill -0 "$mosquitto_pid" 2>/dev/null; then
      wait "$mosquitto_pid" 2>/dev/null || true
      return 1
    fi
    i=$((i + 1))
    [ $i -gt 50 ] && { echo "mosquitto did not start:"; cat "$WORK/mosquitto.log"; exit 1; }
    sleep 0.1
  done
  pids="$pids $mosquitto_pid"
}
if [ -n "${DEMO_MQTT_PORT:-}" ]; then
  MQTT_PORT=$DEMO_MQTT_PORT
  start_mosquitto "$MQTT_PORT" || {
    echo "Port $MQTT_PORT is taken:"
    cat "$WORK/mosquitto.log"
    exit 1
  }
else
  MQTT_PORT=18830
  until start_mosquitto "$MQTT_PORT"; do
    grep -q 'Address already in use' "$WORK/mosquitto.log" || {
      echo "mosquitto did not start:"
      cat "$WORK/mosquitto.log"
      exit 1
    }
    echo "Port $MQTT_PORT is taken (another broker?); trying $((MQTT_PORT + 1))."
    MQTT_PORT=$((MQTT_PORT + 1))
    [ "$MQTT_PORT" -gt 18849 ] && { echo "Ports 18830-18849 are all taken."; exit 1; }
  done
fi

# configs/demo/, with the broker's port.
mkdir -p "$WORK/config"
cp -r "$ROOT/configs/demo/." "$WORK/config/"
sed -i "s|mqtt://127.0.0.1:18830|mqtt://127.0.0.1:$MQTT_PORT|" "$WORK/config/gateway.toml"
# The web page: 18080, or the next port no one listens on.
WEB_PORT="${DEMO_WEB_PORT:-18080}"
while ss -Hltn "sport = :$WEB_PORT" 2>/dev/null | grep -q .; do WEB_PORT=$((WEB_PORT + 1)); done
sed -i "s|127.0.0.1:18080|127.0.0.1:$WEB_PORT|" "$WORK/config/gateway.toml"

"$BUILD/tests/sim/coap2mqtt-sim" --devices 3 --address 127.0.0.1 --port 5690 --interval 2000 \
  >"$WORK/sim.log" 2>&1 &
pids="$pids $!"

"$BUILD/gateway/coap2mqtt" -c "$WORK/config/gateway.toml" 2>"$WORK/gateway.log" &
pids="$pids $!"

echo "Live MQTT traffic on 127.0.0.1:$MQTT_PORT (gateway log: $WORK/gateway.log)."
echo "Try:  mosquitto_pub -p $MQTT_PORT -t coap2mqtt/kitchen/actuators/led/set -m on"
echo "Web page: http://127.0.0.1:$WEB_PORT/  (devices, live values, commands, rules, health)"
if [ -n "${DEMO_SECONDS:-}" ]; then
  mosquitto_sub -p "$MQTT_PORT" -t 'coap2mqtt/#' -v -W "$DEMO_SECONDS" || true
else
  mosquitto_sub -p "$MQTT_PORT" -t 'coap2mqtt/#' -v
fi
