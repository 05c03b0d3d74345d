#!/usr/bin/env bash
# The C suites and the storm built with ThreadSanitizer. The sources are copied to
# build-tsan/src and built there, so the normal in-tree build is left alone. Any report fails
# the run.
#
# What TSan sees: the processes that make calls, which is where the library's threads meet
# (callers, waiters that drive the supervisor loop, the supervisor thread, reaper threads). A
# call's child is forked from a process with threads (a Criterion worker always has some), and
# there the runtime turns itself off: only the forking thread survived a fork, so it checks
# nothing until an exec. If such a child starts a thread the runtime ends it
# (die_after_fork=1, the default); die_after_fork=0 would let the thread run on runtime state
# it calls unsupported, so the few tests whose subject is such a child skip under TSan instead
# (TSAN_SKIP_THREADS_IN_CHILDREN in tests/helpers.h), as does the failing allocator of
# test-alloc, since the runtime owns malloc. clang >= 19: its runtime takes its own locks
# around fork(), so a child never inherits one that another thread held.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dst="$top/build-tsan/src"

. "$top/tests/sanitizer-tree.sh"
flags="-O1 -g -fsanitize=thread -fno-omit-frame-pointer"
cc=$(san_cc tsan 19 "-fsanitize=thread" "older runtimes let a fork copy a lock another thread held" \
  ${TSAN_CC:-})
stamp="$cc $(san_major "$cc") tsan-1"
san_tree "$top" "$dst" "$stamp"
cd "$dst"

# Criterion's sandbox (BoxFort) maps each of its shared arenas (one at start-up, one per test)
# at base = 0x2000_0000_0000 + (rand_r() & 0x3fffff) * 16 MiB, and fails after 10 draws that
# land on mapped pages. TSan reserves most of that span for its shadow and the gaps around it;
# only 0x5500_0000_0000-0x5a00_0000_0000 (its application range) is free. So about one arena in
# two failed, and Criterion aborted ("Could not initialize inheritable arena") or crashed. This
# rand_r, linked into the test programs only, draws in that range; nothing else there uses it.
cat >criterion-tsan.c <<'EOF'
int rand_r(unsigned *seed);
int rand_r(unsigned *seed) {
  *seed = *seed * 1103515245u + 12345u;
  /* 0x350000 + [0, 0x50000) times 16 MiB, plus 0x2000_0000_0000: 0x5500_... to 0x59ff_... */
  return (int)(0x350000u + (*seed >> 8) % 0x50000u);
}
EOF
"$cc" $flags -c criterion-tsan.c -o criterion-tsan.o

[ -x configure ] || autoreconf -fi >/dev/null 2>&1
if [ ! -f Makefile ]; then
  ./configure -q --disable-shared --with-lua=no CC="$cc" CFLAGS="$flags" LDFLAGS="-fsanitize=thread" \
    CRITERION_LIBS="$(pkg-config --libs criterion) $dst/criterion-tsan.o"
  echo "$stamp" >.stamp
fi
# halt_on_error: the first report ends the process with exit status 66, so the test (or, in a
# child, the call) fails; the logs are searched as well. The suites check how children die of
# SIGSEGV, SIGABRT...: leave those signals alone.
TSAN_OPTIONS="halt_on_error=1:exitcode=66:second_deadlock_stack=1:die_after_fork=1"
TSAN_OPTIONS+=":handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0:handle_abort=0"
# The runtime looks for llvm-symbolizer-19 by name; any llvm-symbolizer will do.
sym="$(dirname "$(readlink -f "$(command -v "$cc")")")/llvm-symbolizer"
[ -x "$sym" ] || sym=$(command -v llvm-symbolizer || true)
[ -n "$sym" ] && TSAN_OPTIONS+=":external_symbolizer_path=$sym"
export TSAN_OPTIONS
make -s -j"$(nproc)" >/dev/null
. "$top/tests/tally.sh"
rm -f tests/*.log tests/*.trs
finding='ThreadSanitizer:' # every message of the runtime; the skip reasons have no colon
check_ok=1
make -s -j"$(nproc)" check >check.out 2>&1 || check_ok=0
if grep -q "$finding" tests/*.log; then check_ok=0; fi
tally_make_check .
if ((!check_ok)); then
  cat check.out
  for log in tests/*.log; do
    if grep -q -E "$finding|Assertion Failed|CRASH" "$log"; then
      echo "---- $log"; cat "$log"
    fi
  done
  ((TALLY_F > 0)) || tally_add 0 1 0
  tally_line
  exit 1
fi

# The storm, as the test command runs it: every kind of ending, one thread and then eight on
# their own lists (with a host SIGCHLD handler), forked and then on a 4-worker pool. Each run
# is a test.
for args in "--tasks 1000 --concurrency 64" "--tasks 1000 --concurrency 64 --threads 8 --host-sigchld" \
    "--tasks 1000 --concurrency 64 --pool 4" \
    "--tasks 1000 --concurrency 64 --threads 8 --host-sigchld --pool 4"; do
  # shellcheck disable=SC2086
  if ! tests/storm/storm $args >storm.out 2>&1 || grep -q "$finding" storm.out; then
    cat storm.out
    tally_add 0 1 0
    tally_line
    exit 1
  fi
  grep -E '^storm: seed|result' storm.out
  tally_add 1 0 0
done
tally_line
