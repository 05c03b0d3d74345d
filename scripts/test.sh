#!/usr/bin/env bash
# Quick start, step 2: every test. Installs what is missing, builds, then runs the C suites
# (Criterion, via make check), the Ruby and Lua bindings' suites, and the C suites again
# under ASan+UBSan, ThreadSanitizer and valgrind.
# Ends with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh || exit 1
bash scripts/build.sh || exit 1

passed=0 failed=0
step() { # name command...
  local name=$1; shift
  echo "==> $name"
  if "$@"; then passed=$((passed + 1)); echo "--> $name: ok"
  else failed=$((failed + 1)); echo "--> $name: FAILED"; fi
}
c_suites() {
  make -s -j"$(nproc)" check >/dev/null 2>&1
  local rc=$?
  # Criterion's own summary lines, one per suite, then automake's totals.
  for log in tests/test-*.log; do
    printf '%-28s %s\n' "$(basename "$log" .log)" "$(grep -h 'Synthesis' "$log" | tail -1)"
  done
  grep -hE '^# (TOTAL|PASS|FAIL|ERROR|XPASS|SKIP)' tests/test-suite.log 2>/dev/null ||
    sed -n '/^# TOTAL/,/^# ERROR/p' test-suite.log
  if [ $rc -ne 0 ]; then cat test-suite.log; fi
  return $rc
}
step "C tests (Criterion)" c_suites
storm() { # issue 7's storm, bounded: one thread, then 8 threads on their own lists
  make -s tests/storm/storm >/dev/null &&
    tests/storm/storm --tasks 1000 --concurrency 64 &&
    tests/storm/storm --tasks 1000 --concurrency 64 --threads 8
}
step "Storm (1000 tasks, every kind of ending; 1 and 8 threads)" storm
ruby_suite() { (cd bindings/ruby && rake test); }
step "Ruby binding (minitest)" ruby_suite
lua_suite() { make -s check-lua; } # the modules `make` built, one per Lua found
step "Lua binding (busted, Lua 5.1, 5.3, 5.4, LuaJIT)" lua_suite
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
           tests/test-parentdeath tests/test-signals tests/test-exhaustion tests/test-alloc)
[ -x tests/test-msgpack ] && vg_suites+=(tests/test-msgpack)
[ -x tests/test-protobuf ] && vg_suites+=(tests/test-protobuf)
step "C tests under valgrind" bash tests/valgrind.sh "${vg_suites[@]}"
step "Storm under valgrind (100 calls, every child traced)" bash tests/storm/valgrind.sh

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
