#!/usr/bin/env bash
# The manual: after `make install`, `man -w` finds a page for every function and type the
# public headers declare, and inparallel(3); each page renders without a groff warning. Run
# from a configured build tree; prints "tally: ..." (tests/tally.sh): one test per name, or a
# skip where configure found no scdoc or perl.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/tally.sh
top=$(sed -n 's/^abs_top_srcdir = //p' Makefile)
if ! grep -q '^all-local: doc/man3.stamp' Makefile; then
  echo "skipped: man pages: every page: configure found no scdoc or perl (see its summary)"
  tally_add 0 0 1; tally_line; exit 0
fi
if ! command -v man >/dev/null; then
  echo "skipped: man pages: every page: no man(1) here (Debian: man-db)"
  tally_add 0 0 1; tally_line; exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ip-man.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ! make -s install DESTDIR="$work/root" >"$work/log" 2>&1; then
  cat "$work/log"; echo "man pages: make install failed"; tally_add 0 1 0; tally_line; exit 1
fi
mandir=$(dirname "$(find "$work/root" -type d -name man3 | head -1)")
headers=("$top/include/inparallel.h" "$top/include/inparallel/msgpack.h" "$top/include/inparallel/protobuf.h" "$top/include/inparallel/mpi.h")
# Every function declared IP_EXTERN, and every ip_ type: typedef'd handles, structs, function types.
names=$(cat "${headers[@]}" | awk '/^IP_EXTERN/{f=1; s=""} f{s=s $0 " "} f&&/;/{f=0; print s}' |
          grep -o 'ip_[a-z0-9_]*[[:space:]]*(' | tr -d ' (' ;
        cat "${headers[@]}" | grep -oE '^typedef struct ip_[a-z0-9_]+ ip_[a-z0-9_]+;|^\} ip_[a-z0-9_]+;|\(\*ip_[a-z0-9_]+\)' |
          grep -oE 'ip_[a-z0-9_]+' | sort -u; echo inparallel)
p=0 f=0
for n in $(echo "$names" | sort -u); do
  page=$(man -M "$mandir" -w 3 "$n" 2>/dev/null)
  if [ -z "$page" ]; then
    echo "man pages: no page for $n"; f=$((f + 1)); continue
  fi
  warn=$(zcat -f "$page" | groff -man -Tutf8 -ww -z 2>&1)
  if [ -n "$warn" ]; then
    echo "man pages: $n: groff warns: $warn"; f=$((f + 1)); continue
  fi
  p=$((p + 1))
done
echo "man pages: $p pages found and clean, $f not"
tally_add "$p" "$f" 0
tally_line
[ "$f" -eq 0 ]
