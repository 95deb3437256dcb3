#!/usr/bin/env bash
# System packages for the C++ scanner client example and its test (tests/serve/test_cxx_client.py):
# a C++ toolchain, CMake, gRPC C++ and protobuf from the distribution, OpenSlide's C API.
# Installs only what is missing, and only as root with apt-get (CI); elsewhere it says what to install and
# the test skips with the same message.
set -euo pipefail
PKGS="cmake g++ pkg-config libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libopenslide-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[cxx] installing:$missing" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
else
  echo "[cxx] missing:$missing (the C++ client test will be skipped; install them with apt-get as root)" >&2
fi
