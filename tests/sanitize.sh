#!/usr/bin/env bash
# The C suites built with AddressSanitizer + UndefinedBehaviorSanitizer, leak checking on.
# The sources are copied to build-asan/src and built there, so the normal in-tree build is
# left alone. Any finding fails the run.
#
# Why clang >= 18 and not gcc 12: the suites fork from multi-threaded processes (the library's
# supervisor thread, and tests that call from several threads). ASan's allocator, thread
# registry and stack depot take internal locks; a runtime without fork handlers (gcc 12's
# libasan, clang <= 17) lets fork() copy such a lock while another thread holds it, and the
# child then blocks forever in its first malloc/free or thread start, or in LeakSanitizer's
# exit-time check. LLVM 18 added pthread_atfork handlers that take those locks around fork
# (llvm-project PR 75290). Debian 12 ships clang-19 (bookworm point release).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dst="$top/build-asan/src"

. "$top/tests/sanitizer-tree.sh"
flags="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
cc=$(san_cc sanitize 18 "-fsanitize=address,undefined" \
  "gcc 12's libasan deadlocks in fork children" ${ASAN_CC:-})
stamp="$cc $(san_major "$cc") leak-hooks-1 tap-1"
san_tree "$top" "$dst" "$stamp"
cd "$dst"

# LeakSanitizer asks __lsan_is_turned_off() before its exit-time check. The library always
# _exit()s in a task's child (no check), but a task function may call exit() itself
# (test-errors does): that child would check the heap it inherited from a multi-threaded
# parent, whose other threads no longer exist, so memory only they pointed to would look
# lost. Children skip the check; the test processes themselves are checked.
cat >lsan-hooks.c <<'EOF'
#include <inparallel.h>
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void) { return ip_in_child(); }
EOF
"$cc" $flags -Iinclude -c lsan-hooks.c -o lsan-hooks.o

[ -x configure ] || autoreconf -fi >/dev/null 2>&1
if [ ! -f Makefile ]; then
  ./configure -q --disable-shared --with-lua=no CC="$cc" CFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined" \
    CRITERION_LIBS="$(pkg-config --libs criterion) $dst/lsan-hooks.o"
  echo "$stamp" >.stamp
fi
# The suites check how children die of SIGSEGV, SIGABRT...: leave those signals alone.
export ASAN_OPTIONS=detect_leaks=1:exitcode=97:allow_addr2line=1:handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0:handle_abort=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
sym="$(dirname "$(readlink -f "$(command -v "$cc")")")/llvm-symbolizer"
[ -x "$sym" ] && export ASAN_SYMBOLIZER_PATH="$sym"
make -s -j"$(nproc)" >/dev/null
. "$top/tests/tally.sh"
rm -f tests/*.log tests/*.trs
# A leak found at a test worker's exit does not fail the Criterion test (its result was
# already sent), so the logs are searched whatever make check says.
check_ok=1
make -s -j"$(nproc)" check >check.out 2>&1 || check_ok=0
if grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error' tests/*.log; then check_ok=0; fi
tally_make_check .
if ((!check_ok)); then
  cat check.out
  for log in tests/*.log; do
    if grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error|Assertion Failed|CRASH' "$log"; then
      echo "---- $log"; cat "$log"
    fi
  done
  ((TALLY_F > 0)) || tally_add 0 1 0
  tally_line
  exit 1
fi

# The storm, smaller than the test command's (ASan makes each call several times dearer):
# every kind of ending, one thread and then four on their own lists, forked and then on a
# 4-worker pool. Each run is a test.
for args in "--tasks 300 --concurrency 32" "--tasks 300 --concurrency 32 --threads 4" \
    "--tasks 300 --concurrency 32 --pool 4" "--tasks 300 --concurrency 32 --threads 4 --pool 4"; do
  # shellcheck disable=SC2086
  if ! tests/storm/storm $args >storm.out 2>&1 ||
      grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error' storm.out; then
    cat storm.out
    tally_add 0 1 0
    tally_line
    exit 1
  fi
  grep -E '^storm: seed|result' storm.out
  tally_add 1 0 0
done
tally_line
