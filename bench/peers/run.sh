#!/usr/bin/env bash
# The peer chart: the same two workloads through inparallel and through the tools users
# would pick instead, all in one run, every figure a ratio to inparallel's C fork per call
# measured in the same run. Writes peers.md (the table) and peers.png (the chart) to docs/.
#
#   bash bench/peers/run.sh [--quick] [--rounds=R] [--out=DIR] [--replot]
#
#   --quick    a smoke run: a tenth of the calls, 1 round, written to a temporary directory
#              (docs/ keeps the figures of a full run)
#   --rounds=R rounds (default 7; the figures are medians over them)
#   --out=DIR  where peers.md, peers.png and the raw lines go (default docs/)
#   --replot   measure nothing: remake peers.md and peers.png from DIR/peers.raw
#
# Workloads: trivial calls (x -> x + 1) at concurrency 2 and 8, in calls/s; one call
# returning 100 MiB, in MiB/s. Each contender is a small program in this directory that
# prints one line per measurement (peer=... workload=... conc=... n=|bytes=... seconds=...);
# each file's header says exactly what it times. One round runs every contender once per
# workload, in an order that rotates from round to round, so a machine whose speed drifts
# moves every contender alike; the table gives medians over the rounds of each figure and
# of its ratio to the floor's figure of the same round.
#
# Installs what it needs and lacks from Debian (apt-get, as root or through sudo), then
# builds the tree (scripts/build.sh; its own build dependencies come from scripts/deps.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"

quick=0 rounds="" out="" replot=0
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    --rounds=*) rounds=${a#--rounds=} ;;
    --out=*) out=${a#--out=} ;;
    --replot) replot=1 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $a (see --help)" >&2; exit 2 ;;
  esac
done

# Debian's python3, not one on PATH (pyenv and the like): its stdlib is the contender.
PY=/usr/bin/python3
report() { # from $out/peers.raw: peers.md and peers.png
  "$PY" "$here/report.py" "$out/peers.raw" "$out/peers.md" "$out/peers.dat"
  gnuplot -e "dat='$out/peers.dat'; png='$out/peers.png'; $(cat "$out/peers.dat.range")" "$here/peers.gp"
  rm -f "$out/peers.dat" "$out/peers.dat.range"
}
if ((replot)); then
  out=${out:-docs}
  report
  exit 0
fi

# ---- what it needs ---------------------------------------------------------------------------
pkgs=(python3 ruby ruby-parallel lua5.3 lua-posix parallel gnuplot-nox)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "peers: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
bash scripts/build.sh

# ---- the run's size --------------------------------------------------------------------------
# A call per item costs a fork (C, Lua, luaposix) or a fork and an exec of a shell (GNU
# parallel); a pool runs items far faster. N is set per kind so that each measurement takes
# about a second on a 2-core machine, and a full run (7 rounds) about 3 minutes.
if ((quick)); then
  n_fork=200 n_pool=2000 n_gnu=50
  : "${rounds:=1}"
  [ -n "$out" ] || out=$(mktemp -d "${TMPDIR:-/tmp}/ip-peers.XXXXXX")
else
  n_fork=2000 n_pool=20000 n_gnu=500
  : "${rounds:=7}"
  [ -n "$out" ] || out=docs
fi
bytes=$((100 << 20))
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --rounds wants a positive integer" >&2; exit 2; }
mkdir -p "$out"

# ---- the contenders: name, N for trivial calls, command (the workload's arguments follow) ----
lua_ip=(env "LUA_CPATH=$top/bindings/lua/5.3/.libs/?.so;;" lua5.3 "$here/lua-ip.lua")
declare -A cmd n_of
add() { local name=$1 n=$2; shift 2; cmd[$name]=$(printf '%q ' "$@"); n_of[$name]=$n; order+=("$name"); }
order=()
add c-fork        "$n_fork" "$here/c-fork"
add c-pool        "$n_pool" "$here/c-pool"
add lua-ip-fork   "$n_fork" "${lua_ip[@]}" fork
add lua-ip-map    "$n_pool" "${lua_ip[@]}" map
add lua-posix     "$n_fork" lua5.3 "$here/lua-posix.lua"
add ruby-ip-map   "$n_pool" ruby "$here/ruby-ip.rb" map
add ruby-ip-pool  "$n_pool" ruby "$here/ruby-ip.rb" pool
add ruby-parallel "$n_pool" ruby "$here/ruby-parallel.rb"
add py-executor   "$n_pool" "$PY" "$here/py-executor.py"
add py-mpool      "$n_pool" "$PY" "$here/py-mpool.py"
add gnu-parallel  "$n_gnu"  bash "$here/gnu-parallel.sh"

raw="$out/peers.raw"
: >"$raw"
{
  echo "meta nproc=$(nproc)"
  echo "meta date=$(date -u +%Y-%m-%d)"
  echo "meta kernel=$(uname -r)"
  echo "meta cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "meta inparallel=$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- . ':!docs' 2>/dev/null || echo ' with local changes')"
  echo "meta python3=$("$PY" -c 'import platform; print(platform.python_version())')"
  echo "meta ruby=$(ruby -e 'print RUBY_VERSION')"
  echo "meta ruby-parallel=$(ruby -rparallel -e 'print Parallel::VERSION')"
  echo "meta lua=$(lua5.3 -v 2>&1 | awk '{print $2}')"
  echo "meta lua-posix=$(dpkg-query -W -f='${Version}' lua-posix)"
  echo "meta parallel=$(parallel --will-cite --version | awk 'NR == 1 {print $3}')"
  echo "meta gnuplot=$(gnuplot --version | awk '{print $2 "." $4}')"
  echo "meta load_start=$(cut -d' ' -f1 /proc/loadavg)"
  echo "meta rounds=$rounds"
  echo "meta quick=$quick"
} >>"$raw"

# A contender that fails or hangs loses that figure for the round, not the run.
measure() { # round name workload-args...
  local r=$1 name=$2 line
  shift 2
  if line=$(eval "timeout -k 10 300 ${cmd[$name]} $*" 2>"$out/peers.err") && [[ $line == peer=$name\ * ]]; then
    echo "round=$r $line" >>"$raw"
    printf '  %-14s %s\n' "$name" "${line#* workload=}" >&2
  else
    echo "  $name $*: FAILED" >&2
    sed 's/^/    /' "$out/peers.err" >&2
    echo "round=$r peer=$name failed=$*" >>"$raw"
  fi
}

t_start=$SECONDS
k=${#order[@]}
for ((r = 1; r <= rounds; r++)); do
  echo "round $r of $rounds" >&2
  for work in "trivial 2" "trivial 8" "big"; do
    for ((i = 0; i < k; i++)); do
      name=${order[(i + r - 1) % k]}
      case $work in
        trivial*) measure "$r" "$name" trivial "${n_of[$name]}" "${work#trivial }" ;;
        big) measure "$r" "$name" big "$bytes" ;;
      esac
    done
  done
done
rm -f "$out/peers.err"
{
  echo "meta seconds=$((SECONDS - t_start))"
  echo "meta load_end=$(cut -d' ' -f1 /proc/loadavg)"
} >>"$raw"

report
echo "peers: $out/peers.md, $out/peers.png (raw lines: $out/peers.raw), $((SECONDS - t_start)) s" >&2
