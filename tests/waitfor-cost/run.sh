#!/usr/bin/env bash
# A waitfor step costs the same however long the list is, in C, Lua and Ruby: each language's
# drain (drain.c, drain.lua, drain.rb) makes N calls on a pool, lets them all complete, then
# hands them back one waitfor step at a time. callgrind counts the instructions executed
# inside the step function only (ip_waitfor_step; the Lua iterator's wf_step; Ruby's
# Waiter#step, waiter_step), for N = 100 and N = 10,000. The cost per step at 10,000 must be
# within 1.5x of that at 100. Instructions, not time: the count does not move with the
# machine's load, and a step that walks the list (the cost this guards against) costs ~100x.
#
# Run from the top of a built tree (scripts/build.sh). A test per language; one whose build
# or interpreter is missing is skipped, saying why.
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/tally.sh
here=tests/waitfor-cost
work=$(mktemp -d "${TMPDIR:-/tmp}/waitfor-cost.XXXXXX")
trap 'rm -rf "$work"' EXIT
small=100 large=10000 limit=1.5

# instructions NAME FN CMD...: the instructions callgrind counted inside FN (and what it
# calls) while CMD ran, on stdout; CMD's output and callgrind's in $work/NAME.log.
instructions() {
  local name=$1 fn=$2; shift 2
  valgrind --tool=callgrind --toggle-collect="$fn" --vgdb=no \
    --callgrind-out-file="$work/$name.out" "$@" >"$work/$name.log" 2>&1 || return 1
  grep -q '^drained ' "$work/$name.log" || return 1
  sed -n 's/^summary: //p' "$work/$name.out"
}

# check WHAT FN CMD...: CMD is run with N appended, for both sizes.
check() {
  local what=$1 fn=$2; shift 2
  local a b
  if ! a=$(instructions "$what-$small" "$fn" "$@" $small) ||
     ! b=$(instructions "$what-$large" "$fn" "$@" $large) || [[ -z $a || -z $b ]]; then
    echo "FAIL: $what: the drain did not run:"; cat "$work/$what"-*.log
    tally_add 0 1 0; return
  fi
  local verdict
  verdict=$(awk -v a="$a" -v b="$b" -v s=$small -v l=$large -v lim=$limit 'BEGIN {
    pa = a / s; pb = b / l; r = pb / pa
    printf "%.0f instructions per step at %d, %.0f at %d: %.2fx (limit %.1fx)\n", pa, s, pb, l, r, lim
    exit !(r <= lim) }')
  local rc=$?
  if ((rc == 0)); then echo "ok: $what: $verdict"; tally_add 1 0 0
  else echo "FAIL: $what: $verdict"; tally_add 0 1 0; fi
}

if ! command -v valgrind >/dev/null; then
  for what in C Lua Ruby; do echo "skipped: $what waitfor step cost: no valgrind here"; done
  tally_add 0 0 3; tally_line; exit 0
fi

if make -s $here/drain >"$work/make.log" 2>&1; then
  check C ip_waitfor_step $here/drain
else
  echo "FAIL: C: $here/drain did not build:"; cat "$work/make.log"; tally_add 0 1 0
fi

if [[ -f bindings/lua/5.4/.libs/inparallel.so ]] && command -v lua5.4 >/dev/null; then
  LUA_CPATH="bindings/lua/5.4/.libs/?.so;;" check "Lua 5.4" wf_step lua5.4 $here/drain.lua
else
  echo "skipped: Lua 5.4 waitfor step cost: no lua5.4 or no module built for it"; tally_add 0 0 1
fi

if compgen -G 'bindings/ruby/lib/inparallel/inparallel.*' >/dev/null && command -v ruby >/dev/null; then
  check Ruby waiter_step ruby -I bindings/ruby/lib $here/drain.rb
else
  echo "skipped: Ruby waitfor step cost: no ruby or no extension built"; tally_add 0 0 1
fi

tally_line
((TALLY_F == 0))
