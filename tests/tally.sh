# Sourced by scripts/test.sh, tests/sanitize.sh and tests/valgrind.sh: what the C suites
# passed, failed and skipped, in the lines scripts/test.sh adds up across its steps:
#
#   skipped: WHAT: WHY                       one per test that could not run here
#   tally: N passed / N failed / N skipped   a step's totals (its last such line counts)
#
# Criterion leaves a skipped test (cr_skip_test) out of its own "Synthesis: Tested: N" count
# and prints nothing about it unless asked, so the counts here come from its TAP report, where
# each test is "ok", "not ok" or "ok ... # SKIP why".

TALLY_P=0 TALLY_F=0 TALLY_S=0

# tally_add P F S: adds to the totals.
tally_add() {
  TALLY_P=$((TALLY_P + $1)) TALLY_F=$((TALLY_F + $2)) TALLY_S=$((TALLY_S + $3))
}

# tally_line: the totals, in the format scripts/test.sh reads.
tally_line() {
  echo "tally: $TALLY_P passed / $TALLY_F failed / $TALLY_S skipped"
}

tally_header_() {
  printf '  %-20s %5s %5s %5s   %s\n' suite pass fail skip "Criterion's own count (no skipped test in it)"
}

# tally_row_ SUITE P F S LOG: prints a suite's line and adds to the totals.
tally_row_() {
  local synth
  synth=$(grep -h 'Synthesis:' "$5" 2>/dev/null | tail -1 | sed 's/.*Synthesis: //; s/ *$//')
  printf '  %-20s %5d %5d %5d   %s\n' "$1" "$2" "$3" "$4" "${synth:-(none)}"
  tally_add "$2" "$3" "$4"
}

# tally_make_check DIR: the suites `make check` ran in the build directory DIR. automake's
# TAP driver (see Makefile.am) leaves DIR/tests/test-X.trs with a ":test-result: R" line per
# test and DIR/tests/test-X.log with "SKIP: tests/test-X N - suite::test # SKIP why". An
# ERROR (no TAP plan, a non-zero exit) counts as a failure when no test of the suite failed.
# Callers remove DIR/tests/test-*.trs before make check, so only this run's suites count.
tally_make_check() {
  local dir=$1 trs log p f e s
  tally_header_
  for trs in "$dir"/tests/test-*.trs; do
    [ -e "$trs" ] || continue
    log=${trs%.trs}.log
    p=$(grep -c '^:test-result: PASS' "$trs" || true)
    f=$(grep -c -E '^:test-result: (FAIL|XPASS)' "$trs" || true)
    e=$(grep -c '^:test-result: ERROR' "$trs" || true)
    s=$(grep -c '^:test-result: SKIP' "$trs" || true)
    ((f > 0)) || f=$e
    tally_row_ "$(basename "$trs" .trs)" "$p" "$f" "$s" "$log"
  done
  for trs in "$dir"/tests/test-*.trs; do
    [ -e "$trs" ] || continue
    sed -n 's/^SKIP: [^ ]* [0-9]* - \(.*[^ ]\) *# SKIP \(.*\)$/skipped: \1: \2/p' "${trs%.trs}.log"
  done
}

# tally_tap SUITE TAP LOG [EXTRA_FAILURES]: one suite's Criterion TAP report (written with
# --tap=FILE); LOG is its usual output, for Criterion's own count.
# EXTRA_FAILURES (0 or 1) counts a failure the report does not show (a finding of valgrind,
# a bad exit status) when no test failed. Prints the suite's line; the "skipped:" lines
# come from tally_tap_skips.
tally_tap() {
  local ok s f
  ok=$(grep -c '^ok ' "$2" 2>/dev/null || true)
  s=$(grep -c -E '^ok .*# SKIP' "$2" 2>/dev/null || true)
  f=$(grep -c '^not ok ' "$2" 2>/dev/null || true)
  ((f > 0)) || f=${4:-0}
  tally_row_ "$1" "$((ok - s))" "$f" "$s" "$3"
}

# tally_tap_skips TAP SUFFIX: a "skipped:" line per skipped test of a TAP report, SUFFIX
# appended to the reason.
tally_tap_skips() {
  sed -n "s/^ok [0-9]* *- \(.*[^ ]\) *# SKIP \(.*\)\$/skipped: \1: \2$2/p" "$1" 2>/dev/null || true
}
