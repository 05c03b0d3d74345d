#!/usr/bin/env bash
# GNU parallel (Debian package parallel), as a shell user runs it, with its defaults: a job
# per item, each job a command line run through a shell (GNU parallel uses the shell that
# started it: bash here), each job's output buffered in a temporary file (--group) and
# copied to parallel's stdout when the job ends. The whole command is timed: its own start
# (a Perl program) is what it costs to start, as a pool's start is for the pools.
#   trivial N C  seq 1 N | parallel -j C 'echo $(( {} + 1 ))' | awk (sums the lines)
#   big BYTES    parallel -j 1 'head -c {} /dev/zero' ::: BYTES | wc -c
#                (the job makes its bytes as it writes them; the caller, wc, reads them all)
# Before the timed run, the same at a tenth of the size, untimed.
#
#   bash bench/peers/gnu-parallel.sh trivial N C | big BYTES
# Prints one line: peer=gnu-parallel workload=... conc=C n=N|bytes=B seconds=S
set -euo pipefail

# bash has no monotonic clock; a step of the wall clock during a run would show as one
# outlier round, which the medians of run.sh leave out.
seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.6f", b - a }'; }

trivial() { # n c -> seconds
  local n=$1 c=$2 t0 sum s
  t0=$EPOCHREALTIME
  sum=$(seq 1 "$n" | parallel --will-cite -j "$c" 'echo $(( {} + 1 ))' |
        awk '{ s += $1 } END { printf "%d", s }')
  s=$(seconds_since "$t0")
  if [ "$sum" -ne $((n * (n + 1) / 2 + n)) ]; then
    echo "gnu-parallel: wrong sum $sum" >&2
    exit 1
  fi
  echo "$s"
}

big() { # bytes -> seconds
  local bytes=$1 t0 got s
  t0=$EPOCHREALTIME
  got=$(parallel --will-cite -j 1 'head -c {} /dev/zero' ::: "$bytes" | wc -c)
  s=$(seconds_since "$t0")
  if [ "$got" -ne "$bytes" ]; then
    echo "gnu-parallel: got $got bytes, not $bytes" >&2
    exit 1
  fi
  echo "$s"
}

case "${1:-}:$#" in
  trivial:3)
    trivial $(($2 / 10 + 1)) "$3" >/dev/null
    echo "peer=gnu-parallel workload=trivial conc=$3 n=$2 seconds=$(trivial "$2" "$3")"
    ;;
  big:2)
    big $(($2 / 10)) >/dev/null
    echo "peer=gnu-parallel workload=big conc=1 bytes=$2 seconds=$(big "$2")"
    ;;
  *)
    echo "usage: gnu-parallel.sh trivial N C | big BYTES" >&2
    exit 2
    ;;
esac
