#!/usr/bin/env bash
# The C suites built with AddressSanitizer + UndefinedBehaviorSanitizer in build-asan/ (an
# out-of-tree build, so the normal one is untouched). Any finding fails the run.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
[ -x configure ] || autoreconf -fi >/dev/null
mkdir -p build-asan
cd build-asan
flags="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
[ -f Makefile ] || "$src/configure" -q --disable-shared CFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=97
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=98
make -s -j"$(nproc)" >/dev/null
if make -s -j"$(nproc)" check >check.out 2>&1; then
  grep -E '^# (TOTAL|PASS|FAIL|ERROR)' check.out || true
else
  cat check.out
  for log in tests/*.log; do grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error' "$log" && cat "$log"; done
  exit 1
fi
