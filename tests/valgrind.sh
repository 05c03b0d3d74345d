#!/usr/bin/env bash
# The C suites under valgrind memcheck. Criterion forks a worker per test and the library
# forks a child per call, so every process is traced. Any error or definite leak fails.
# Usage: tests/valgrind.sh [test-program...]   (default: every tests/test-* program)
# Prints a line per suite, a "skipped: suite::test: why" line per test that could not run,
# and the totals as "tally: N passed / N failed / N skipped" (see tests/tally.sh).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
. tests/tally.sh
progs=("$@")
((${#progs[@]})) || mapfile -t progs < <(ls tests/test-* | grep -v '\.[a-z]*$')
# Valgrind's logs (one per traced process), each suite's output and TAP report. Anyone may
# write here (sticky, like /tmp): a test that gives up root for nobody (test-exhaustion's
# RLIMIT_NPROC storm) forks processes that valgrind must give a log file too.
logs=$(mktemp -d "${TMPDIR:-/tmp}/ip-valgrind.XXXXXX")
chmod 1777 "$logs"
trap 'rm -rf "$logs"' EXIT
rc=0
tally_header_
for p in "${progs[@]}"; do
  name=$(basename "$p")
  out="$logs/$name.out" tap="$logs/$name.tap" bad=0
  # nouserintercepts: test-alloc defines malloc itself to fail allocations in turn; valgrind
  # still tracks the __libc_malloc calls behind it. Other suites define no allocator.
  # Timeouts are 10x longer under valgrind; Criterion's own timeout is off by default.
  # --vgdb=no: otherwise every traced process makes its gdbserver files in $TMPDIR, named
  # by pid (/tmp/vgdb-pipe-shared-mem-vgdb-PID-by-LOGNAME-on-HOST, the rest the same for
  # every process here), and one that is killed, or that gave up root before it exited
  # (test-exhaustion's subject), cannot remove them. A process of the user nobody that later
  # gets that pid cannot open root's file, and valgrind ends it with status 1 before the
  # child runs a line ("cannot create shared_mem file ...: Permission denied").
  if ! ./libtool --mode=execute valgrind -q --trace-children=yes --vgdb=no \
      --child-silent-after-fork=no --error-exitcode=99 --leak-check=full \
      --errors-for-leak-kinds=definite --soname-synonyms=somalloc=nouserintercepts \
      --show-leak-kinds=definite --suppressions="$src/tests/valgrind.supp" \
      --log-file="$logs/$name.vg.%p" "$p" --jobs 1 --tap="$tap" >"$out" 2>&1; then
    echo "valgrind: $p FAILED"; cat "$out"; bad=1
  fi
  # Criterion reports a failing worker in its own output; valgrind's findings land per pid.
  if grep -l -E 'ERROR SUMMARY: [1-9]|definitely lost: [1-9]|Invalid (read|write)|uninitialised' "$logs/$name.vg."* 2>/dev/null; then
    echo "valgrind: $p has findings"
    grep -h -B2 -A20 -E 'Invalid|uninitialised|definitely lost' "$logs/$name.vg."* | head -80
    bad=1
  fi
  ((bad == 0)) || rc=1
  tally_tap "$name" "$tap" "$out" "$bad"
  tally_tap_skips "$tap" " (under valgrind)" >>"$logs/skipped"
  rm -f "$logs/$name.vg."*
done
cat "$logs/skipped" 2>/dev/null || true
tally_line
exit $rc
