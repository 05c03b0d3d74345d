#!/usr/bin/env bash
# The C suites under valgrind memcheck. Criterion forks a worker per test and the library
# forks a child per call, so every process is traced. Any error or definite leak fails.
# Usage: tests/valgrind.sh [test-program...]   (default: every tests/test-* program)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
progs=("$@")
((${#progs[@]})) || mapfile -t progs < <(ls tests/test-* | grep -v '\.[a-z]*$')
rc=0
for p in "${progs[@]}"; do
  log="$p.valgrind.log"
  # nouserintercepts: test-alloc defines malloc itself to fail allocations in turn; valgrind
  # still tracks the __libc_malloc calls behind it. Other suites define no allocator.
  # Timeouts are 10x longer under valgrind; Criterion's own timeout is off by default.
  if ! ./libtool --mode=execute valgrind -q --trace-children=yes --child-silent-after-fork=no \
      --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
      --soname-synonyms=somalloc=nouserintercepts \
      --show-leak-kinds=definite --suppressions="$src/tests/valgrind.supp" \
      --log-file="$log.%p" "$p" --jobs 1 >"$log" 2>&1; then
    echo "valgrind: $p FAILED"; cat "$log"; rc=1
  fi
  # Criterion reports a failing worker in its own output; valgrind's findings land per pid.
  if grep -l -E 'ERROR SUMMARY: [1-9]|definitely lost: [1-9]|Invalid (read|write)|uninitialised' "$log".* 2>/dev/null; then
    echo "valgrind: $p has findings"; grep -h -B2 -A20 -E 'Invalid|uninitialised|definitely lost' "$log".* | head -80; rc=1
  fi
  echo "valgrind: $p $(grep -h Synthesis "$log" | tail -1)"
  rm -f "$log".*
done
exit $rc
