#!/usr/bin/env bash
# Configures (once) and builds the tree in place.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x configure ] || { mkdir -p m4 && autoreconf -fi >/dev/null; }
[ -f Makefile ] || ./configure -q --enable-werror
make -s -j"$(nproc)"
