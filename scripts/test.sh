#!/usr/bin/env bash
# Quick start, step 2: every test. Installs what is missing, builds, then runs the C suites
# (Criterion, via make check), the storm, the Ruby and Lua bindings' suites, the MPI backend
# under mpirun (C, Lua, Ruby), the release tarball's contents, the manual, the READMEs' code
# blocks, the C suites and the storm under ASan+UBSan and ThreadSanitizer, the C suites and
# the storm again under valgrind, and last the Debian packages (built, installed, purged).
#
# Each step ends with "--> STEP: ok|FAILED (N passed, N failed, N skipped)", counting tests.
# A test that cannot run here (no user namespaces, no pids cgroup, an ASan or valgrind run,
# no shared library, ...) is skipped, never counted as passed: the summary lists each one
# with its reason, then the last line is "N passed, N failed, N skipped" over every step. A
# step that fails without naming a failed test (a build error, a sanitizer or valgrind
# finding) counts as one failed test. The exit status is non-zero when anything failed;
# skips are not failures.
#
# Steps report through the lines tests/tally.sh describes: "skipped: WHAT: WHY" per skipped
# test and "tally: N passed / N failed / N skipped" for the step's totals.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh || exit 1
bash scripts/build.sh || exit 1
. tests/tally.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/ip-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
: >"$work/skipped"
passed=0 failed=0 skipped=0 steps_failed=0

step() { # name command...
  local name=$1; shift
  echo "==> $name"
  "$@" 2>&1 | tee "$work/out"
  local rc=${PIPESTATUS[0]} p=0 f=0 s=0 line
  line=$(grep -E '^tally: [0-9]+ passed / [0-9]+ failed / [0-9]+ skipped$' "$work/out" | tail -1)
  if [[ $line =~ ^tally:\ ([0-9]+)\ passed\ /\ ([0-9]+)\ failed\ /\ ([0-9]+)\ skipped$ ]]; then
    p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]} s=${BASH_REMATCH[3]}
  fi
  ((rc == 0 || f > 0)) || f=1
  grep '^skipped: ' "$work/out" | sed "s/^skipped: /  $name: /" >>"$work/skipped"
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
  if ((rc == 0 && f == 0)); then echo "--> $name: ok ($p passed, $f failed, $s skipped)"
  else steps_failed=$((steps_failed + 1)); echo "--> $name: FAILED ($p passed, $f failed, $s skipped)"; fi
}

c_suites() {
  rm -f tests/test-*.trs
  make -s -j"$(nproc)" check >/dev/null 2>&1
  local rc=$?
  # A line per suite (automake's TAP driver records each test: see Makefile.am), the
  # skipped tests with their reasons, the totals; automake's summary; its log on failure.
  tally_make_check .
  tally_line
  grep -hE '^# (TOTAL|PASS|FAIL|ERROR|XPASS|SKIP)' test-suite.log 2>/dev/null
  if [ $rc -ne 0 ]; then cat test-suite.log; fi
  return $rc
}
step "C tests (Criterion)" c_suites

storm() { # the storm, bounded: one thread, then 8 threads on their own lists, under a host
  # SIGCHLD handler (no step may return IP_EINTR); forked, then on a pool of 4; a test each
  make -s tests/storm/storm >/dev/null || return 1
  local rc=0 args
  for args in "" "--threads 8 --host-sigchld" "--pool 4" "--pool 4 --threads 8 --host-sigchld"; do
    # shellcheck disable=SC2086
    if tests/storm/storm --tasks 1000 --concurrency 64 $args; then tally_add 1 0 0
    else tally_add 0 1 0; rc=1; fi
  done
  tally_line
  return $rc
}
step "Storm (1000 tasks, every kind of ending; 1 thread, then 8 with a host SIGCHLD handler; forked, then on a pool)" storm

ruby_suite() {
  (cd bindings/ruby && rake test) 2>&1 | tee "$work/ruby"
  local rc=${PIPESTATUS[0]} line
  # "N runs, N assertions, N failures, N errors, N skips"; test_helper.rb names each skip.
  line=$(grep -E '^[0-9]+ runs, [0-9]+ assertions, [0-9]+ failures, [0-9]+ errors, [0-9]+ skips' "$work/ruby" | tail -1)
  if [[ $line =~ ^([0-9]+)\ runs,\ [0-9]+\ assertions,\ ([0-9]+)\ failures,\ ([0-9]+)\ errors,\ ([0-9]+)\ skips ]]; then
    local runs=${BASH_REMATCH[1]} fl=${BASH_REMATCH[2]} er=${BASH_REMATCH[3]} sk=${BASH_REMATCH[4]}
    tally_add $((runs - fl - er - sk)) $((fl + er)) "$sk"
  fi
  tally_line
  return $rc
}
step "Ruby binding (minitest)" ruby_suite

lua_suite() { # the modules `make` built, one per Lua found
  make -s check-lua 2>&1 | tee "$work/lua"
  local rc=${PIPESTATUS[0]}
  # busted: "N successes / N failures / N errors / N pending" per Lua, each pending spec as
  # "Pending -> FILE @ LINE", its name, then its message (if any) up to a blank line.
  # run-specs.sh and check-lua announce a Lua they cannot run as "skipped: ..." themselves.
  local counts
  counts=$(awk '
    function flush() {
      if (pend) print "skipped: " lua ": " name ": " (msg == "" ? "pending (" where ")" : msg) > "/dev/stderr"
      pend = 0
    }
    /^== / { flush(); lua = $2 }
    /^[0-9]+ success(es)? \/ [0-9]+ failures? \/ [0-9]+ errors? \/ [0-9]+ pending/ {
      flush(); split($0, w, " "); p += w[1]; f += w[4] + w[7]; s += w[10]; next
    }
    /^Pending -> / { flush(); pend = 1; name = ""; msg = ""; where = $3 " line " $5; next }
    /^$/ || /^(Failure|Error) -> / { flush(); next }
    pend && name == "" { name = $0; next }
    pend && msg == "" { msg = $0 }
    END { flush(); print p + 0, f + 0, s + 0 }' "$work/lua" 2>"$work/lua-skips")
  cat "$work/lua-skips"
  # shellcheck disable=SC2086
  tally_add $counts
  tally_add 0 0 "$(grep -c '^skipped: ' "$work/lua" || true)"
  tally_line
  return $rc
}
step "Lua binding (busted, Lua 5.1, 5.3, 5.4, LuaJIT)" lua_suite
step "A waitfor step costs the same at 10,000 futures as at 100 (instructions, callgrind; C, Lua, Ruby)" bash tests/waitfor-cost/run.sh
step "MPI backend under mpirun (4 ranks on this machine)" bash tests/mpi/run.sh
step "Release tarball holds every tracked file" bash tests/dist-contents.sh
step "Manual pages after make install (man -w, groff -ww)" bash tests/man-pages.sh
step "README code blocks run as written (install, then C with -Wall -Werror, Lua, Ruby)" bash tests/readme-blocks.sh
step "One table of the shared rules (three READMEs and the header agree)" bash tests/shared-rules.sh

# ASan+UBSan with leak checking, built with clang 19 in build-asan/ (gcc 12's libasan has no
# fork handlers and deadlocks in children of multi-threaded processes; see tests/sanitize.sh).
step "C tests under ASan+UBSan" bash tests/sanitize.sh
# ThreadSanitizer, clang 19 in build-tsan/: the suites and the storm, every process that makes
# calls checked for data races (a call's child is not; see tests/tsan.sh).
step "C tests under ThreadSanitizer" bash tests/tsan.sh

# valgrind slows the fork- and thread-heavy suites (hygiene, fork, large) past their hang
# guards on a busy 2-core machine; they run under ASan above. `bash tests/valgrind.sh` with
# no arguments runs every suite.
vg_suites=(tests/test-task tests/test-waitfor tests/test-errors tests/test-cancel
           tests/test-badinput tests/test-exports tests/test-serializer tests/test-frames
           tests/test-parentdeath tests/test-signals tests/test-exhaustion tests/test-alloc
           tests/test-pool tests/test-backend)
[ -x tests/test-msgpack ] && vg_suites+=(tests/test-msgpack)
[ -x tests/test-protobuf ] && vg_suites+=(tests/test-protobuf)
step "C tests under valgrind" bash tests/valgrind.sh "${vg_suites[@]}"

storm_valgrind() { # a test each: forked calls, then a pool's
  local args
  for args in "" "--pool 4"; do
    # shellcheck disable=SC2086
    if bash tests/storm/valgrind.sh tests/storm/storm --tasks 100 --concurrency 16 $args; then
      tally_add 1 0 0
    else tally_add 0 1 0; fi
  done
  tally_line
  ((TALLY_F == 0))
}
step "Storm under valgrind (100 calls, every child traced; forked, then on a pool)" storm_valgrind
# Last: it installs the built packages (and purges them again), so nothing above can test
# them by mistake instead of the tree.
step "Debian packages (dpkg-buildpackage, lintian, install: C, Lua, Ruby, MPI, man; purge)" bash tests/debian-package.sh

echo
if ((skipped)); then
  echo "Skipped, with the reason ($skipped):"
  cat "$work/skipped"
fi
((steps_failed == 0)) || echo "Steps that failed: $steps_failed"
echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0 && steps_failed == 0))
