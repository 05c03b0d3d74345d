#!/usr/bin/env bash
# The MPI backend against mpi4py.futures (MPIPoolExecutor().map), 4 ranks on this machine
# (rank 0 submits, 3 worker ranks), in interleaved rounds: per round, bench/bench-mpi (a fork
# per call, the default), bench/bench-mpi4py.py, bench/bench-mpi --reuse
# (ip_mpi_set_reuse(1)), each a fresh mpirun. Prints each run's figures to stderr and a table
# of medians over the rounds to stdout; a ratio is the median of the rounds' ratios, each
# inparallel against the mpi4py run of its own round (higher = inparallel better).
#
# What is timed, on the root, for both (pool start-up excluded, each part warmed first by an
# untimed run of a tenth of its calls): from the first submit to the last result taken.
#   trivial   N calls of "return the argument + 1" (an int64 / a Python int): calls/s.
#             inparallel: ip_pool_call + ip_waitfor_step (concurrency factor 64) +
#             ip_future_value; mpi4py: sum(executor.map(fn, range(N))) with the default
#             chunksize=1 (the same per-call work), and, labelled, chunksize=64.
#   10 MiB    M calls each returning 10 MiB (ip_bytes_alloc + memset in the child, sent
#             zero-copy from its memfd; bytes([i]) * 10 MiB): MiB/s of results received.
#   floor     (for the fork per call) the worker ranks' fork floor, before the pool: for T ms
#             each worker rank at once forks a child that _exits, and waits for it: forks/s.
#   root CPU  3 calls sleeping T ms each, one per worker rank: the root process's CPU time
#             (getrusage RUSAGE_SELF, all threads) per second of wall time. Target < 20 ms/s.
#
# Usage: bench/bench-mpi.sh [--quick] [--rounds=R] [--calls=N] [--big-calls=M] [--sleep-ms=T]
#   default: 5 rounds, N 20,000, M 40, T 2000; --quick: 3 rounds, N 2,000, M 8, T 1000.
# Needs a built tree (bash scripts/build.sh, configure having found MPI) and mpi4py for a
# python3: $PYTHON if set, else the first of python3, /usr/bin/python3 that has it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

rounds=5 calls=20000 big=40 sleep_ms=2000 chunk=64 floor_ms=2000
for a in "$@"; do
  case $a in
    --quick) rounds=3 calls=2000 big=8 sleep_ms=1000 floor_ms=500 ;;
    --rounds=*) rounds=${a#*=} ;;
    --calls=*) calls=${a#*=} ;;
    --big-calls=*) big=${a#*=} ;;
    --sleep-ms=*) sleep_ms=${a#*=} ;;
    *) sed -n 's/^# Usage: //p; s/^#   default/  default/p' "$0" >&2; exit 2 ;;
  esac
done

mpirun=$(sed -n 's/^MPIRUN = //p' Makefile 2>/dev/null)
[ -n "$mpirun" ] && [ "$mpirun" != no ] || mpirun=$(command -v mpirun || command -v mpiexec)
if [ ! -x bench/bench-mpi ] || [ -z "$mpirun" ]; then
  echo "bench-mpi: needs bench/bench-mpi (configure found no MPI?) and mpirun: run bash scripts/build.sh" >&2
  exit 1
fi
python=
for p in ${PYTHON:-python3 /usr/bin/python3}; do
  if "$p" -c 'import mpi4py.futures' 2>/dev/null; then python=$p; break; fi
done
if [ -z "$python" ]; then
  echo "bench-mpi: no python3 with mpi4py (Debian: python3-mpi4py; or set PYTHON)" >&2
  exit 1
fi
flags=(-np 4)
if "$mpirun" --version 2>/dev/null | grep -q 'Open MPI'; then
  flags+=(--oversubscribe) # 4 ranks on fewer cores
  # Open MPI refuses root unless told twice.
  if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ip-bench-mpi.XXXXXX")
trap 'rm -rf "$work"' EXIT
args=(--calls="$calls" --big-calls="$big" --sleep-ms="$sleep_ms")

# run NAME CMD...: one run, its "key value" lines appended to $work/NAME.KEY.
run() {
  local name=$1 out=$work/out
  shift
  if ! timeout -k 5 900 "$mpirun" "${flags[@]}" "$@" >"$out" 2>"$work/err"; then
    echo "bench-mpi: $name failed:" >&2
    cat "$out" "$work/err" >&2
    exit 1
  fi
  echo "  $name: $(tr '\n' ' ' <"$out")" >&2
  while read -r k v; do echo "$v" >>"$work/$name.$k"; done <"$out"
}

for ((r = 1; r <= rounds; r++)); do
  echo "round $r/$rounds" >&2
  run fork bench/bench-mpi "${args[@]}" --floor-ms="$floor_ms"
  run py "$python" -m mpi4py.futures bench/bench-mpi4py.py "${args[@]}" --chunksize="$chunk"
  run reuse bench/bench-mpi --reuse "${args[@]}"
done

median() { sort -g "$1" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# ratio A B [inverse]: the median over the rounds of A/B (of B/A with "inverse").
ratio() {
  paste "$work/$1" "$work/$2" |
    awk -v inv="${3:-}" '{print (inv ? $2 / $1 : $1 / $2)}' >"$work/ratio"
  median "$work/ratio"
}
# fmt X [DECIMALS]: X with thousands separated by commas.
fmt() {
  LC_ALL=C printf "%.${2:-0}f" "$1" |
    awk -F. '{i = $1; s = ""; while (length(i) > 3) { s = "," substr(i, length(i) - 2) s
      i = substr(i, 1, length(i) - 3) } printf "%s%s%s", i, s, (NF > 1 ? "." $2 : "")}'
}
verdict() { awk -v x="$1" -v op="$2" -v t="$3" 'BEGIN {
  ok = op == ">=" ? x >= t : x < t; print ok ? "meets" : "MISSES" }'; }

echo "| what | inparallel | mpi4py.futures | inparallel / mpi4py | target |"
echo "|---|---:|---:|---:|---|"
for mode in fork reuse; do
  label=$([ $mode = fork ] && echo "fork per call (default)" || echo "ip_mpi_set_reuse(1)")
  rt=$(ratio $mode.trivial py.trivial)
  echo "| trivial calls, $label vs map(chunksize=1) | $(fmt "$(median "$work/$mode.trivial")") calls/s" \
    "| $(fmt "$(median "$work/py.trivial")") calls/s | $(fmt "$rt" 2)x | >= 1.0x: $(verdict "$rt" ">=" 1) |"
done
rt=$(ratio fork.trivial fork.floor)
echo "| trivial calls, fork per call vs the worker ranks' fork floor (fork + _exit + waitpid, the 3 at once) |" \
  "$(fmt "$(median "$work/fork.trivial")") calls/s | $(fmt "$(median "$work/fork.floor")") forks/s | $(fmt "$rt" 2)x | (what bounds a fork per call) |"
rt=$(ratio reuse.trivial py.chunked)
echo "| trivial calls, ip_mpi_set_reuse(1) vs map(chunksize=$chunk) | $(fmt "$(median "$work/reuse.trivial")") calls/s" \
  "| $(fmt "$(median "$work/py.chunked")") calls/s | $(fmt "$rt" 2)x | (for scale: chunks are batches) |"
for mode in fork reuse; do
  label=$([ $mode = fork ] && echo "fork per call" || echo "ip_mpi_set_reuse(1)")
  rt=$(ratio $mode.big py.big)
  echo "| 10 MiB results, $label | $(fmt "$(median "$work/$mode.big")") MiB/s" \
    "| $(fmt "$(median "$work/py.big")") MiB/s | $(fmt "$rt" 2)x | >= 1.0x: $(verdict "$rt" ">=" 1) |"
done
for mode in fork reuse; do
  label=$([ $mode = fork ] && echo "fork per call" || echo "ip_mpi_set_reuse(1)")
  c=$(median "$work/$mode.cpu")
  rt=$(ratio $mode.cpu py.cpu inverse)
  echo "| root CPU while 3 calls sleep $((sleep_ms / 1000)).$((sleep_ms % 1000 / 100)) s, $label (ratio: mpi4py / inparallel)" \
    "| $(fmt "$c" 1) ms/s | $(fmt "$(median "$work/py.cpu")" 1) ms/s | $(fmt "$rt" 2)x | < 20 ms/s: $(verdict "$c" "<" 20) |"
done
echo
echo "(medians of $rounds interleaved rounds, 4 ranks: 3 worker ranks; $calls trivial calls, $big" \
  "calls of 10 MiB per run; $("$mpirun" --version 2>/dev/null | head -1);" \
  "mpi4py $("$python" -c 'import mpi4py; print(mpi4py.__version__)'), $("$python" --version 2>&1))"
