#!/usr/bin/env bash
# libinparallel-mpi under a real mpirun, 4 ranks on this machine (--oversubscribe): the C suite
# (tests/mpi/suite.c) case by case, then the Lua one (suite.lua, ip.mpi) under every Lua the
# build made inparallel_mpi for, then the Ruby one (suite.rb, InParallel::MPI) with the
# extension in bindings/ruby/lib. Run from a configured, built tree; prints a line per test
# and "tally: ..." (tests/tally.sh). Skips, saying why, where configure found no MPI or no
# mpirun, or the Ruby extension was built without MPI.
#
#   calls        1,000 calls through waitfor with a concurrency factor, each result once
#   failures     raise, crash, timeout and cancel each fail their call alone
#   reuse        both again with ip_mpi_set_reuse(1)
#   free-busy    ip_pool_free with calls out and queued
#   large        a result and an argument over 2 GiB (MPI counts are ints: pieces)
#   mismatch     a rank with another task: every rank stops with the same message
#   rank-death   a rank killed outright: mpirun ends the job, non-zero
#   one-rank     mpirun -np 1: ip_mpi_pool says no rank is left to serve
#   rank-term    Ruby: a serving rank that gets SIGTERM ends at once (not a signal noted and
#                never acted on), and mpirun ends the job
#   serializer-mismatch  Ruby: a task whose Ruby serializer differs on a rank is a difference
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/tally.sh
mpirun=$(sed -n 's/^MPIRUN = //p' Makefile 2>/dev/null)
if [ ! -x tests/mpi/suite ]; then
  echo "skipped: MPI suite: every case: configure found no MPI (see its summary; Debian: libopenmpi-dev openmpi-bin)"
  tally_add 0 0 1; tally_line; exit 0
fi
if [ -z "$mpirun" ] || [ "$mpirun" = no ]; then
  echo "skipped: MPI suite: every case: no mpirun (Debian: openmpi-bin)"
  tally_add 0 0 1; tally_line; exit 0
fi
# Open MPI refuses root unless told twice; CI runs as root.
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ip-mpi.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The suite to run: a command line, set per language below; $label names it in the output.
suite=(tests/mpi/suite)
label=C

# run NP CASE: the suite under mpirun, with a guard against a hang; sets $rc.
run() {
  timeout -k 5 300 "$mpirun" --oversubscribe -np "$1" "${suite[@]}" "$2" >"$work/out" 2>"$work/err"
  rc=$?
}

show() { sed 's/^/  | /' "$work/out" "$work/err" | grep -v '^  | -*$' | tail -30; }

# A case whose root reports its checks: each "ok"/"not ok" line is a test, and the run must
# end with "done" and exit 0.
checked() { # NP CASE
  run "$1" "$2"
  local p f
  p=$(grep -c '^ok - ' "$work/out")
  f=$(grep -c '^not ok - ' "$work/out")
  grep '^\(not \)\?ok - ' "$work/out" | sed "s/^/$label $2: /"
  if [ "$rc" -ne 0 ] || ! grep -qx done "$work/out"; then
    echo "$label $2: FAIL: mpirun exited $rc$(grep -qx done "$work/out" || echo ', before the root was done')"
    show; f=$((f + 1))
  elif [ "$f" -gt 0 ]; then show; fi
  tally_add "$p" "$f" 0
}

# A case that must end the job with a non-zero status and, on stderr, a line matching $3 from
# each of the NP ranks ($4 of them; 0: none is asked for).
refused() { # NP CASE PATTERN COUNT WHAT
  run "$1" "$2"
  local n
  n=$(grep -c -- "$3" "$work/err")
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 -o "$2" = rank-death ] && [ "$n" -ge "$4" ] &&
     ! grep -qx done "$work/out"; then
    echo "$label $2: ok - $5"; tally_add 1 0 0
  else
    echo "$label $2: FAIL - $5 (mpirun exited $rc, $n of $1 ranks said it)"; show; tally_add 0 1 0
  fi
}

checked 4 calls
checked 4 failures
checked 4 reuse
checked 4 free-busy
checked 2 large
refused 4 mismatch 'task "only_on_rank_2" is named on rank 2 but not on rank 0' 4 \
  "a rank that named another task: every rank stops with one message naming it"
refused 4 rank-death 'exited on signal 9' 1 "a rank killed outright ends the job (mpirun exits non-zero)"
refused 1 one-rank 'no rank is left to serve calls' 1 "one rank: ip_mpi_pool says why it cannot serve"

# The examples, as the README runs them: each must end well (one server is down on purpose).
example() { # WHAT COMMAND...
  local what=$1; shift
  timeout -k 5 120 "$mpirun" --oversubscribe -np 4 "$@" >"$work/out" 2>"$work/err"
  rc=$?
  if [ "$rc" -eq 0 ] && grep -q 'FAILED.*cannot reach kilo.local' "$work/out"; then
    echo "$what: ok - the uname fan-out over 3 worker ranks"; tally_add 1 0 0
  else
    echo "$what: FAIL - the uname fan-out over 3 worker ranks (mpirun exited $rc)"; show; tally_add 0 1 0
  fi
}
example "C example" examples/uname-mpi

# The bindings' suites: the cases that are theirs to get right (a call's life, failures as
# their values, the check of the tasks, a rank's death); pieces and pool ends are the core's.
binding_cases() {
  checked 4 calls
  checked 4 failures
  checked 4 reuse
  refused 4 mismatch 'task "only_on_rank_2" is named on rank 2 but not on rank 0' 4 \
    "a rank that named another task: every rank stops with one message naming it"
  refused 4 rank-death 'exited on signal 9' 1 "a rank killed outright ends the job"
}
for v in 5.4 5.3 5.1 luajit; do
  lua=lua$v
  [ "$v" = luajit ] && lua=luajit
  [ -f "bindings/lua/$v/.libs/inparallel_mpi.so" ] || continue
  if ! command -v "$lua" >/dev/null; then
    echo "skipped: MPI suite: Lua $v: no $lua here"; tally_add 0 0 1; continue
  fi
  export LUA_CPATH="$PWD/bindings/lua/$v/.libs/?.so;;"
  suite=("$lua" tests/mpi/suite.lua) label="Lua $v"
  binding_cases
  [ "$v" = 5.4 ] && example "Lua 5.4 example" lua5.4 examples/uname-mpi.lua
done
# Ruby: the extension scripts/build.sh made in bindings/ruby/lib, where extconf.rb found MPI.
rlib=$PWD/bindings/ruby/lib
if ! command -v ruby >/dev/null; then
  echo "skipped: MPI suite: Ruby: no ruby"; tally_add 0 0 1
elif ! ruby -I "$rlib" -e 'require "inparallel"' 2>/dev/null; then
  echo "skipped: MPI suite: Ruby: the extension is not built (cd bindings/ruby && rake compile)"; tally_add 0 0 1
elif ! ruby -I "$rlib" -e 'require "inparallel"; exit(InParallel::MPI.available? ? 0 : 1)'; then
  echo "skipped: MPI suite: Ruby: the extension was built without MPI (extconf.rb found no pkg-config ompi-c or mpich, or INPARALLEL_MPI=0)"
  tally_add 0 0 1
else
  suite=(ruby -I "$rlib" tests/mpi/suite.rb) label=Ruby
  binding_cases
  refused 4 serializer-mismatch 'task "cube" has the argument serializer ruby :marshal on rank 0 but ruby :msgpack on rank 2' 4 \
    "a task with another Ruby serializer on a rank: every rank stops with one message naming it"
  refused 4 rank-term 'exited on signal 15' 1 "a serving rank that gets SIGTERM ends at once, and the job with it"
  # The README's example: a line per server from rank 0, one of them the expected failure.
  suite=(ruby -I "$rlib" examples/uname-mpi.rb)
  run 4 example
  if [ "$rc" -eq 0 ] && [ "$(grep -c '^[a-z]*\.local ' "$work/out")" -eq 12 ] && grep -q 'FAILED \[HostUnreachable\]' "$work/out"; then
    echo "Ruby example: ok - examples/uname-mpi.rb: every server once, from the ranks"; tally_add 1 0 0
  else
    echo "Ruby example: FAIL - examples/uname-mpi.rb (mpirun exited $rc)"; show; tally_add 0 1 0
  fi
fi
tally_line
((TALLY_F == 0))
