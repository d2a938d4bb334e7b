#!/bin/sh
# Proves the Debian packages that scripts/package.sh built (dist/coap2mqtt_<version>_*.deb)
# on this machine, as root. Not part of ctest/CI: it takes a few minutes and installs and
# purges packages. Run it on a machine where coap2mqtt is not installed; it leaves it so.
#
# amd64: apt-get install, --version, check on the shipped /etc/coap2mqtt/gateway.toml, the
#   unit (systemd-analyze verify and security, the paths it passes), the daemon run on the
#   shipped config against a local mosquitto (state written where the unit's StateDirectory
#   puts it), an upgrade to a bumped version (an edited conffile survives, an unedited one
#   is updated), remove (state and conffiles kept), purge (nothing left).
# arm64: apt-get install of the arm64 package (Debian multiarch brings its :arm64 runtime
#   libraries, which proves its Depends), then under qemu-user-static: --version, check on
#   the shipped configs, and the arm64 gateway bridging Debian's coap-server-openssl (a
#   native CoAP device on loopback) to a local mosquitto: values arrive on MQTT. Purge.
#
# Output: one "ok"/"FAIL" line per check, then "check_packages: N passed, N failed".
# Usage: tests/package/check_packages.sh   (after scripts/package.sh)
#        CHECK_ARCHES=amd64 tests/package/check_packages.sh   (one of them only)
set -u
cd "$(dirname "$0")/../.." || exit 2
root=$(pwd)

version=$(sed -n 's/^project(coap2mqtt VERSION \([0-9][0-9.]*\).*/\1/p' CMakeLists.txt)
amd64_deb="$root/dist/coap2mqtt_${version}_amd64.deb"
arm64_deb="$root/dist/coap2mqtt_${version}_arm64.deb"
arches=${CHECK_ARCHES:-"amd64 arm64"}
want() { case " $arches " in *" $1 "*) return 0 ;; esac; return 1; }

die() {
  echo "check_packages: $*" >&2
  exit 2
}
[ "$(id -u)" -eq 0 ] || die "run as root: it installs and purges the packages"
for a in $arches; do
  [ -f "$root/dist/coap2mqtt_${version}_$a.deb" ] || die "no dist/coap2mqtt_${version}_$a.deb: run scripts/package.sh first"
done
if dpkg-query -W -f='${db:Status-Status}' coap2mqtt 2>/dev/null | grep -qv '^not-installed$'; then
  die "coap2mqtt is installed (or its conffiles are) on this machine; this script would purge it: remove it first"
fi
! want arm64 || dpkg --print-foreign-architectures | grep -qx arm64 || die "arm64 is not a dpkg architecture here: run scripts/package.sh first"

apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 "$@"
}
need=""
for p in qemu-user-static mosquitto mosquitto-clients libcoap3-bin systemd python3 binutils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
  # shellcheck disable=SC2086
  apt_get install --no-install-recommends $need >/dev/null || die "cannot install$need"
fi

tmp=$(mktemp -d /tmp/check_packages.XXXXXX)
chmod 755 "$tmp"
passed=0
failed=0
pids=""
ok() {
  passed=$((passed + 1))
  echo "ok   - $*"
}
bad() {
  failed=$((failed + 1))
  echo "FAIL - $*"
}
check() { # DESCRIPTION COMMAND...: ok when the command succeeds
  what=$1
  shift
  if "$@" >"$tmp/last.out" 2>&1; then ok "$what"; else
    bad "$what"
    sed 's/^/       /' "$tmp/last.out" | tail -n 20
  fi
}
stop_pid() { # PID: SIGTERM, then SIGKILL after 15 s; its exit status in $stopped_rc
  kill -TERM "$1" 2>/dev/null
  i=0
  while kill -0 "$1" 2>/dev/null && [ $i -lt 150 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  kill -KILL "$1" 2>/dev/null
  wait "$1"
  stopped_rc=$?
}
cleanup() {
  for p in $pids; do kill -KILL "$p" 2>/dev/null; done
  # Leave the machine as it was: coap2mqtt was not installed when we started.
  if dpkg-query -W -f='${db:Status-Status}' coap2mqtt 2>/dev/null | grep -qv '^not-installed$'; then
    apt_get purge coap2mqtt >/dev/null 2>&1
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { # tcp|udp
  python3 -c "import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_STREAM if sys.argv[1]=='tcp' else socket.SOCK_DGRAM)
s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"
}
wait_for() { # SECONDS COMMAND...: retries every 0.2 s
  deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}
start_broker() { # sets broker_port
  broker_port=$(free_port tcp)
  mkdir -p "$tmp/mosquitto"
  chmod 777 "$tmp/mosquitto"
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$broker_port" \
    >"$tmp/mosquitto/mosquitto.conf"
  mosquitto -c "$tmp/mosquitto/mosquitto.conf" >"$tmp/mosquitto/log" 2>&1 &
  broker_pid=$!
  pids="$pids $broker_pid"
  wait_for 10 mosquitto_pub -p "$broker_port" -t check/ping -m x
}
hardened() { # ELF: a position-independent executable, bound now, with a RELRO segment
  readelf -h "$1" | grep -q 'Type:.*DYN' && readelf -d "$1" | grep -q 'FLAGS_1.*NOW.*PIE' &&
    readelf -lW "$1" | grep -q GNU_RELRO
}
status_of() { dpkg-query -W -f='${db:Status-Abbrev}' coap2mqtt 2>/dev/null | tr -d ' '; }

echo "check_packages: coap2mqtt $version"
for a in $arches; do
  deb="$root/dist/coap2mqtt_${version}_$a.deb"
  echo "  $(basename "$deb"): $(stat -c %s "$deb") bytes, Installed-Size $(dpkg-deb -f "$deb" Installed-Size) KiB"
  echo "    Depends: $(dpkg-deb -f "$deb" Depends)"
done

# ===================================== amd64 ==============================================
if want amd64; then
echo "== amd64: install"
check "apt-get install ./dist/$(basename "$amd64_deb") (with its dependencies)" \
  apt_get install --no-install-recommends "$amd64_deb"
check "dpkg says installed, version $version" sh -c \
  "[ \"\$(dpkg-query -W -f='\${db:Status-Abbrev}\${Version}' coap2mqtt)\" = 'ii $version' ]"
dpkg -L coap2mqtt | sort >"$tmp/files.before"
echo "  dpkg -L coap2mqtt ($(wc -l <"$tmp/files.before") entries):"
sed 's/^/    /' "$tmp/files.before"
for f in /usr/bin/coap2mqtt /lib/systemd/system/coap2mqtt.service /etc/coap2mqtt/gateway.toml \
  /etc/coap2mqtt/rules.d/example.toml /usr/share/man/man8/coap2mqtt.8.gz \
  /usr/share/doc/coap2mqtt/copyright /usr/share/doc/coap2mqtt/changelog.gz \
  /usr/share/doc/coap2mqtt/README.md.gz; do
  check "ships $f" grep -qx "$f" "$tmp/files.before"
done
dpkg-query -W -f='${Conffiles}\n' coap2mqtt | awk 'NF {print $1}' | sort >"$tmp/conffiles"
check "conffiles are /etc/coap2mqtt/gateway.toml and rules.d/example.toml" sh -c \
  "printf '/etc/coap2mqtt/gateway.toml\n/etc/coap2mqtt/rules.d/example.toml\n' | cmp -s - '$tmp/conffiles'"
check "postinst enabled the unit (multi-user.target.wants)" \
  test -L /etc/systemd/system/multi-user.target.wants/coap2mqtt.service
check "coap2mqtt --version says $version" sh -c \
  "[ \"\$(coap2mqtt --version)\" = 'coap2mqtt $version' ]"
check "coap2mqtt check -c /etc/coap2mqtt/gateway.toml" coap2mqtt check -c /etc/coap2mqtt/gateway.toml
echo "    $(cat "$tmp/last.out")"
check "built with Debian's hardening: PIE, BIND_NOW, RELRO" hardened /usr/bin/coap2mqtt
check "man coap2mqtt renders (section 8)" sh -c "man -P cat 8 coap2mqtt 2>&1 | grep -q 'CoAP to MQTT border gateway'"

echo "== amd64: the unit"
unit=/lib/systemd/system/coap2mqtt.service
check "systemd-analyze verify $unit (silent)" sh -c \
  "out=\$(systemd-analyze verify $unit 2>&1) && [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
check "systemd-analyze security --offline=true: exposure 2.0 or better" \
  systemd-analyze security --offline=true --threshold=20 "$unit"
echo "    $(grep 'Overall exposure level' "$tmp/last.out")"
check "ExecStart runs /usr/bin/coap2mqtt on the shipped /etc/coap2mqtt/gateway.toml" \
  grep -qx 'ExecStart=/usr/bin/coap2mqtt run -c /etc/coap2mqtt/gateway.toml' "$unit"
state_dir_unit=/var/lib/$(sed -n 's/^StateDirectory=//p' "$unit")
state_dir_conf=$(sed -n 's/^state_dir *= *"\([^"]*\)".*/\1/p' /etc/coap2mqtt/gateway.toml)
check "the config's state_dir ($state_dir_conf) is the unit's StateDirectory ($state_dir_unit)" \
  test "$state_dir_conf" = "$state_dir_unit"

echo "== amd64: the installed daemon on the shipped config"
# As systemd lays out a DynamicUser's StateDirectory: /var/lib/coap2mqtt -> private/coap2mqtt.
mkdir -p /var/lib/private
chmod 700 /var/lib/private
mkdir -p /var/lib/private/coap2mqtt
ln -sfn private/coap2mqtt /var/lib/coap2mqtt
if start_broker; then ok "mosquitto on 127.0.0.1:$broker_port"; else bad "mosquitto did not start"; fi
# The shipped file, pointed at this broker (and at the shipped rule files by absolute path).
sed -e "s|^uri = \"mqtt://127.0.0.1:1883\"|uri = \"mqtt://127.0.0.1:$broker_port\"|" \
  -e 's|^rules = \["rules.d/\*.toml"\]|rules = ["/etc/coap2mqtt/rules.d/*.toml"]|' \
  /etc/coap2mqtt/gateway.toml >"$tmp/gateway.toml"
mosquitto_sub -p "$broker_port" -t coap2mqtt/bridge/state -C 1 -W 30 >"$tmp/state.out" 2>&1 &
sub_pid=$!
coap2mqtt run -c "$tmp/gateway.toml" >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
pids="$pids $daemon_pid $sub_pid"
wait "$sub_pid"
check "bridge/state online on MQTT" grep -qx '{"state":"online"}' "$tmp/state.out"
check "registry.db written under /var/lib/coap2mqtt (= /var/lib/private/coap2mqtt)" \
  test -f /var/lib/private/coap2mqtt/registry.db
stop_pid "$daemon_pid"
rc=$stopped_rc
check "SIGTERM: the daemon exits 0" test "$rc" -eq 0
[ "$rc" -eq 0 ] || tail -n 20 "$tmp/daemon.log"

echo "== amd64: upgrade to $version+check1 (a conffile edit survives)"
echo "# edited by check_packages.sh" >>/etc/coap2mqtt/gateway.toml
bumped="$tmp/coap2mqtt_${version}+check1_amd64.deb"
rm -rf "$tmp/pkg"
dpkg-deb -R "$amd64_deb" "$tmp/pkg"
sed -i "s/^Version: .*/Version: $version+check1/" "$tmp/pkg/DEBIAN/control"
echo "# new in $version+check1" >>"$tmp/pkg/etc/coap2mqtt/gateway.toml"
echo "# new in $version+check1" >>"$tmp/pkg/etc/coap2mqtt/rules.d/example.toml"
(cd "$tmp/pkg" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z |
  xargs -0 md5sum >DEBIAN/md5sums)
dpkg-deb --root-owner-group -b "$tmp/pkg" "$bumped" >/dev/null
check "apt-get install the bumped package (--force-confold: keep edited conffiles)" \
  apt_get -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  install "$bumped"
check "dpkg says installed, version $version+check1" sh -c \
  "[ \"\$(dpkg-query -W -f='\${db:Status-Abbrev}\${Version}' coap2mqtt)\" = 'ii $version+check1' ]"
check "the edited gateway.toml kept the user's edit" \
  grep -qx '# edited by check_packages.sh' /etc/coap2mqtt/gateway.toml
check "the new gateway.toml is beside it as gateway.toml.dpkg-dist" \
  grep -qx "# new in $version+check1" /etc/coap2mqtt/gateway.toml.dpkg-dist
check "the unedited rules.d/example.toml was updated" \
  grep -qx "# new in $version+check1" /etc/coap2mqtt/rules.d/example.toml
check "the state survived the upgrade" test -f /var/lib/private/coap2mqtt/registry.db
check "coap2mqtt check on the kept config" coap2mqtt check -c /etc/coap2mqtt/gateway.toml

echo "== amd64: remove (state and conffiles kept)"
check "apt-get remove coap2mqtt" apt_get remove coap2mqtt
check "dpkg status rc (removed, config files remain): $(status_of)" test "$(status_of)" = rc
check "/usr/bin/coap2mqtt is gone" test ! -e /usr/bin/coap2mqtt
check "/etc/coap2mqtt/gateway.toml (edited) is kept" \
  grep -qx '# edited by check_packages.sh' /etc/coap2mqtt/gateway.toml
check "the state is kept: /var/lib/coap2mqtt/registry.db" test -f /var/lib/coap2mqtt/registry.db

echo "== amd64: purge (nothing left)"
check "apt-get purge coap2mqtt" apt_get purge coap2mqtt
check "dpkg no longer knows coap2mqtt" sh -c "! dpkg -L coap2mqtt >/dev/null 2>&1"
left=""
while read -r f; do
  # Our files and folders must be gone; folders such as /usr/bin stay.
  if [ -e "$f" ] || [ -L "$f" ]; then
    case "$f" in
      *coap2mqtt*) left="$left $f" ;;
      *) [ -d "$f" ] || left="$left $f" ;;
    esac
  fi
done <"$tmp/files.before"
check "none of the $(wc -l <"$tmp/files.before") paths of dpkg -L is left (but shared dirs)" test -z "$left"
[ -z "$left" ] || echo "       left:$left"
found=$(find /etc/coap2mqtt /var/lib/coap2mqtt /var/lib/private/coap2mqtt 2>/dev/null)
check "find /etc/coap2mqtt /var/lib/coap2mqtt /var/lib/private/coap2mqtt: nothing" test -z "$found"
[ -z "$found" ] || echo "$found" | sed 's/^/       /'
check "no enablement symlink left" test ! -e /etc/systemd/system/multi-user.target.wants/coap2mqtt.service

fi

# ===================================== arm64 ==============================================
if want arm64; then
echo "== arm64: install (multiarch) and run under qemu-aarch64-static"
qemu() { qemu-aarch64-static -L / "$@"; }
check "apt-get install ./dist/$(basename "$arm64_deb") (brings its :arm64 runtime libraries)" \
  apt_get install --no-install-recommends "$arm64_deb"
check "dpkg says installed: coap2mqtt:arm64 $version" sh -c \
  "[ \"\$(dpkg-query -W -f='\${db:Status-Abbrev}\${Architecture} \${Version}' coap2mqtt)\" = 'ii arm64 $version' ]"
check "/usr/bin/coap2mqtt is an AArch64 executable" sh -c \
  "readelf -h /usr/bin/coap2mqtt | grep -q 'Machine:.*AArch64'"
check "built with Debian's hardening: PIE, BIND_NOW, RELRO" hardened /usr/bin/coap2mqtt
check "qemu: coap2mqtt --version says $version" sh -c \
  "[ \"\$(qemu-aarch64-static -L / /usr/bin/coap2mqtt --version)\" = 'coap2mqtt $version' ]"
check "qemu: coap2mqtt check -c /etc/coap2mqtt/gateway.toml (the shipped configs)" \
  qemu /usr/bin/coap2mqtt check -c /etc/coap2mqtt/gateway.toml
echo "    $(cat "$tmp/last.out")"
printf '[mqtt]\nuri = "mqtt://127.0.0.1:1883"\nkepalive = "30s"\n' >"$tmp/bad.toml"
qemu /usr/bin/coap2mqtt check -c "$tmp/bad.toml" >"$tmp/bad.out" 2>&1
rc=$?
check "qemu: check on a bad config exits 1 and names file:line:col" sh -c \
  "[ $rc -eq 1 ] && grep -q '^$tmp/bad.toml:3:[0-9]*: ' '$tmp/bad.out'"
echo "    $(head -n 1 "$tmp/bad.out")"

echo "== arm64: end to end: coap-server-openssl -> arm64 gateway (qemu) -> mosquitto"
if [ -z "${broker_pid:-}" ]; then
  if start_broker; then ok "mosquitto on 127.0.0.1:$broker_port"; else bad "mosquitto did not start"; fi
fi
coap_port=$(free_port udp)
coap-server-openssl -A 127.0.0.1 -p "$coap_port" >"$tmp/coap-server.log" 2>&1 &
pids="$pids $!"
check "coap-server-openssl answers on 127.0.0.1:$coap_port" wait_for 10 sh -c \
  "coap-client-openssl -B 2 coap://127.0.0.1:$coap_port/time | grep -q ."
mkdir -p "$tmp/state" "$tmp/rules.d"
# The shipped gateway.toml with this broker, a state dir of its own, the shipped rules and
# one more rule file; the device is the libcoap server's clock (/time, observable, a
# notification every second).
sed -e "s|^uri = \"mqtt://127.0.0.1:1883\"|uri = \"mqtt://127.0.0.1:$broker_port\"|" \
  -e "s|^state_dir = .*|state_dir = \"$tmp/state\"|" \
  -e "s|^rules = .*|rules = [\"/etc/coap2mqtt/rules.d/*.toml\", \"$tmp/rules.d/*.toml\"]|" \
  /etc/coap2mqtt/gateway.toml >"$tmp/e2e.toml"
printf '\n[[coap.device]]\nname = "clock"\nuri = "coap://127.0.0.1:%s"\n' "$coap_port" >>"$tmp/e2e.toml"
printf '[[rule]]\nname = "clock"\nmatch = { device = "clock", path = "/time" }\nmode = "observe"\ninterval = "60s"\ntopic = "coap2mqtt/{device}/{path}"\npayload = "raw"\n' \
  >"$tmp/rules.d/clock.toml"
check "qemu: check on the end-to-end config" qemu /usr/bin/coap2mqtt check -c "$tmp/e2e.toml"
# Three values within 30 s while polling is set to every 60 s: observe notifications.
mosquitto_sub -p "$broker_port" -t coap2mqtt/clock/time -v -C 3 -W 30 >"$tmp/values.out" 2>&1 &
sub_pid=$!
pids="$pids $sub_pid"
start=$(date +%s)
qemu-aarch64-static -L / /usr/bin/coap2mqtt run -c "$tmp/e2e.toml" >"$tmp/e2e.log" 2>&1 &
daemon_pid=$!
pids="$pids $daemon_pid"
wait "$sub_pid"
sub_rc=$?
check "3 values of the arm64 gateway arrived on coap2mqtt/clock/time (mosquitto_sub -C 3 -W 30)" \
  sh -c "[ $sub_rc -eq 0 ] && [ \$(grep -c '^coap2mqtt/clock/time .' '$tmp/values.out') -eq 3 ]"
echo "    after $(($(date +%s) - start)) s:"
sed 's/^/      /' "$tmp/values.out"
stop_pid "$daemon_pid"
rc=$stopped_rc
check "qemu: SIGTERM, the arm64 gateway exits 0" test "$rc" -eq 0
if [ "$sub_rc" -ne 0 ] || [ "$rc" -ne 0 ]; then tail -n 30 "$tmp/e2e.log"; fi

echo "== arm64: purge"
check "apt-get purge coap2mqtt:arm64" apt_get purge coap2mqtt
found=$(find /usr/bin/coap2mqtt /etc/coap2mqtt /var/lib/coap2mqtt /usr/share/doc/coap2mqtt 2>/dev/null)
check "nothing left" test -z "$found"
fi

echo "check_packages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
