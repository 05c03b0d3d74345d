#!/usr/bin/env bash
# The C suites built with AddressSanitizer + UndefinedBehaviorSanitizer. The sources are
# copied to build-asan/src and built there, so the normal in-tree build is left alone.
# Any finding fails the run.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dst="$top/build-asan/src"
mkdir -p "$dst"
# Tracked and new (not ignored) files: what a commit of this tree would hold.
(cd "$top" && git ls-files -z --cached --others --exclude-standard) |
  (cd "$top" && xargs -0 cp --parents -u -t "$dst" 2>/dev/null || true)
cd "$dst"
flags="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
[ -x configure ] || autoreconf -fi >/dev/null 2>&1
[ -f Makefile ] || ./configure -q --disable-shared CFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined"
# Leak checking is off here: LeakSanitizer's at-exit check in a child forked from a
# multi-threaded parent (a task child that calls exit()) can stall until the test's hang
# guard fires. Leaks are checked by the valgrind run instead.
# The suites check how children die of SIGSEGV, SIGABRT...: leave those signals alone.
export ASAN_OPTIONS=detect_leaks=0:exitcode=97:handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0:handle_abort=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
make -s -j"$(nproc)" >/dev/null
if make -s -j"$(nproc)" check >check.out 2>&1; then
  grep -E '^# (TOTAL|PASS|FAIL|ERROR)' check.out || true
else
  cat check.out
  for log in tests/*.log; do
    if grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error|Assertion Failed|CRASH' "$log"; then
      echo "---- $log"; cat "$log"
    fi
  done
  exit 1
fi
