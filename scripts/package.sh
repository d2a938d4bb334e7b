#!/bin/sh
# Builds the Debian packages dist/coap2mqtt_<version>_amd64.deb and _arm64.deb and runs
# lintian on them; one command on a Debian 12 amd64 machine, as root or with sudo.
#
#   scripts/package.sh                 # both
#   PACKAGE_ARCHES=arm64 scripts/package.sh   # only these (the build machine's own or arm64)
#
# It installs what it needs with apt-get: debhelper, dpkg-dev, lintian, the build
# dependencies from debian/control, and for arm64 (cross-built: Debian's multiarch,
# `dpkg --add-architecture arm64`) crossbuild-essential-arm64 and the -dev:arm64 libraries,
# which install next to the amd64 ones. debhelper's cmake build system passes the cross
# compiler, CMAKE_SYSTEM_NAME/PROCESSOR and aarch64-linux-gnu-pkg-config itself, so no
# toolchain file is needed.
#
# The build is out of tree: the tracked (and new, not ignored) files are copied to
# build-pkg/<arch>/coap2mqtt-<version>/, built there, and the .deb copied to dist/. The
# version comes from CMakeLists.txt (project(... VERSION ...)), the one place it is kept:
# this script writes debian/changelog into the copy. The package is Debian-native (format
# 3.0 (native)): its version is the project's.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)

version=$(sed -n 's/^project(coap2mqtt VERSION \([0-9][0-9.]*\).*/\1/p' CMakeLists.txt)
if [ -z "$version" ]; then
  echo "package.sh: no 'project(coap2mqtt VERSION x.y.z ...)' in CMakeLists.txt" >&2
  exit 1
fi
build_arch=$(dpkg --print-architecture)
arches=${PACKAGE_ARCHES:-"amd64 arm64"}

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
mkdir -p "$root/build-pkg"
apt_log="$root/build-pkg/apt.log"
: >"$apt_log"
apt_get() { # quiet; the output goes to build-pkg/apt.log, shown when apt-get fails
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get -y -q -o DPkg::Lock::Timeout=600 "$@" \
    >>"$apt_log" 2>&1; then
    tail -n 30 "$apt_log"
    echo "package.sh: apt-get $* failed; the whole log is $apt_log" >&2
    exit 1
  fi
}

# --- the tree to build, out of the source tree -------------------------------------------
stage() { # ARCH -> prints the staged source directory
  dir="$root/build-pkg/$1/coap2mqtt-$version"
  rm -rf "$root/build-pkg/$1"
  mkdir -p "$dir"
  git -C "$root" ls-files -z --cached --others --exclude-standard |
    (cd "$root" && xargs -0 tar -cf - --no-recursion) | tar -xf - -C "$dir"
  commit=$(git -C "$root" rev-parse --short HEAD)
  dirty=""
  [ -n "$(git -C "$root" status --porcelain)" ] && dirty=" with uncommitted changes"
  # The commit's date, not now: the same commit gives the same changelog (and the same
  # SOURCE_DATE_EPOCH, which dpkg takes from it).
  date=$(date -R -d "@$(git -C "$root" log -1 --format=%ct)")
  cat >"$dir/debian/changelog" <<EOF
coap2mqtt ($version) bookworm; urgency=medium

  * coap2mqtt $version, built from git commit $commit$dirty.

 -- coap2mqtt maintainers <maintainers@coap2mqtt.example>  $date
EOF
  echo "$dir"
}

# --- tools and build dependencies ---------------------------------------------------------
tools="build-essential debhelper dpkg-dev lintian git"
need_cross=no
for a in $arches; do
  case "$a" in
    "$build_arch") ;;
    arm64) need_cross=yes ;;
    *)
      echo "package.sh: cannot build for $a on $build_arch (only $build_arch and arm64)" >&2
      exit 1
      ;;
  esac
done
if [ "$need_cross" = yes ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "package.sh: adding the arm64 architecture (dpkg --add-architecture arm64)"
  $SUDO dpkg --add-architecture arm64
fi
[ "$need_cross" = yes ] && tools="$tools crossbuild-essential-arm64"
echo "package.sh: installing the build tools and dependencies (apt-get)"
apt_get update
# shellcheck disable=SC2086  # word lists
apt_get install --no-install-recommends $tools

mkdir -p "$root/dist"
summary=""
for arch in $arches; do
  src=$(stage "$arch")
  if [ "$arch" = "$build_arch" ]; then
    apt_get build-dep --no-install-recommends "$src"
    set -- -B
  else
    # The -dev:arm64 libraries (Multi-Arch: same) next to the amd64 ones; the header-only
    # ones and cmake are Multi-Arch: foreign.
    apt_get build-dep --no-install-recommends -a "$arch" -P cross,nocheck "$src"
    # prometheus-cpp-dev:arm64 would push the build machine's prometheus-cpp-dev and civetweb
    # out (see debian/rules): its files are unpacked into a sysroot of their own instead,
    # its libraries being the installed :arm64 ones (Build-Depends, profile cross).
    sysroot="$root/build-pkg/$arch/sysroot"
    mkdir -p "$sysroot"
    if ! (cd "$root/build-pkg/$arch" && apt-get download "prometheus-cpp-dev:$arch") \
      >>"$apt_log" 2>&1; then
      tail -n 5 "$apt_log"
      echo "package.sh: apt-get download prometheus-cpp-dev:$arch failed" >&2
      exit 1
    fi
    dpkg-deb -x "$root/build-pkg/$arch"/prometheus-cpp-dev_*_"$arch".deb "$sysroot"
    multiarch=$(dpkg-architecture -a "$arch" -qDEB_HOST_MULTIARCH 2>/dev/null)
    for lib in /usr/lib/"$multiarch"/libprometheus-cpp-*.so.*; do
      ln -sf "$lib" "$sysroot/usr/lib/$multiarch/"
    done
    export COAP2MQTT_CMAKE_ARGS="-Dprometheus-cpp_DIR=$sysroot/usr/lib/$multiarch/cmake/prometheus-cpp"
    set -- -B -a "$arch" --build-profiles=cross,nocheck
  fi
  echo "package.sh: building coap2mqtt $version for $arch in ${src#"$root"/}"
  start=$(date +%s)
  log="$root/build-pkg/$arch/build.log"
  if ! (cd "$src" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" \
    dpkg-buildpackage "$@" -us -uc) >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "package.sh: the $arch build failed; the whole log is $log" >&2
    exit 1
  fi
  seconds=$(($(date +%s) - start))
  deb="coap2mqtt_${version}_${arch}.deb"
  cp "$root/build-pkg/$arch/$deb" "$root/dist/$deb"
  echo "package.sh: dist/$deb ($(du -k "$root/dist/$deb" | cut -f1) KiB) built in ${seconds} s"
  summary="$summary
  dist/$deb  $(stat -c %s "$root/dist/$deb") bytes, built in ${seconds} s"
done

# --- lintian: no errors; warnings and info are printed ------------------------------------
status=0
for arch in $arches; do
  deb="dist/coap2mqtt_${version}_${arch}.deb"
  echo "package.sh: lintian $deb"
  lintian --fail-on error --display-info "$deb" || status=1
done
echo "package.sh: done$summary"
[ "$status" -eq 0 ] || echo "package.sh: lintian reported errors" >&2
exit "$status"
