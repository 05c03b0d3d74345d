#!/usr/bin/env bash
# The storm under valgrind memcheck, every forked child traced.
#
# Usage: tests/storm/valgrind.sh [STORM] [storm options...]
#   STORM defaults to tests/storm/storm; options default to --tasks 100 --concurrency 16.
#   e.g. tests/storm/valgrind.sh tests/storm/storm --tasks 100 --concurrency 16 --threads 4
#
# Why a script and not just valgrind's exit code:
#  - No --error-exitcode: valgrind would replace a child's exit status with it whenever the
#    child has a finding, and the storm checks children's exit statuses (exit(3), the 0 after
#    ip_raise), so the storm itself would fail for valgrind's reason.
#  - Leak records are judged in the parent only. A forked child's heap is a copy that it
#    never frees (it _exit()s), and in a child of a multi-threaded parent everything only the
#    other threads pointed to (their futures, lists, the library's per-thread waiters, which
#    the library's atfork handler forgets) looks "definitely lost". That is not a leak of
#    anything real, so children are checked for memory errors (invalid reads and writes,
#    uninitialised values, bad frees, ...) but not for leaks.
#  - The storm's own exit status (all outcomes exact, nothing left behind) must be 0.
#  - --vgdb=no: valgrind's gdbserver files in $TMPDIR are named by pid, and a child the storm
#    kills cannot remove its own; left in /tmp they make a later process with that pid and
#    another owner fail to start under valgrind (see tests/valgrind.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
storm=$here/storm
if [[ -n ${1:-} && ${1:-} != -* ]]; then storm=$1; shift; fi
args=("$@")
((${#args[@]})) || args=(--tasks 100 --concurrency 16)
logs=$(mktemp -d "${TMPDIR:-/tmp}/storm-valgrind.XXXXXX")
start=$(date +%s)
valgrind -q --trace-children=yes --vgdb=no --child-silent-after-fork=no --leak-check=full \
  --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --suppressions="$here/storm.supp" --log-file="$logs/vg.%p" \
  "$storm" "${args[@]}" >"$logs/out" 2>&1 &
parent=$!   # valgrind exec()s its tool: the storm runs with this pid
wait $parent
rc=$?
took=$(($(date +%s) - start))
cat "$logs/out"
fail=0
((rc == 0)) || { echo "valgrind-storm: the storm exited $rc"; fail=1; }
# Blocks of a log are separated by "==PID== " lines; -q leaves only findings. The
# "--PID-- WARNING: unhandled syscall 434" lines are pidfd_open, which valgrind lacks (the
# library then falls back on a reaper thread per call).
findings() { # file, 1 = skip leak records
  awk -v skipleaks="$2" '
    /^==[0-9]+== *$/ { if (blk != "" && !(skipleaks && leak)) printf "%s\n", blk; blk = ""; leak = 0; next }
    /^==[0-9]+==/ { if (blk == "" && $0 ~ /(definitely|indirectly|possibly) lost in|still reachable in/) leak = 1
                    blk = blk $0 "\n" }
    END { if (blk != "" && !(skipleaks && leak)) printf "%s", blk }' "$1"
}
nchild=0
for f in "$logs"/vg.*; do
  pid=${f##*.}
  if [[ $pid == "$parent" ]]; then out=$(findings "$f" 0); else out=$(findings "$f" 1); nchild=$((nchild + 1)); fi
  if [[ -n $out ]]; then
    echo "valgrind-storm: findings in $([[ $pid == "$parent" ]] && echo parent || echo child) $pid:"
    echo "$out" | head -60
    fail=1
  fi
done
echo "valgrind-storm: ${took}s, parent $parent and $nchild children traced, logs in $logs: $( ((fail)) && echo FAIL || echo clean)"
((fail)) || rm -rf "$logs"
exit $fail
