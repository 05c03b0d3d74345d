#!/usr/bin/env bash
# The rules C, Lua and Ruby share are stated once, in one table: the README, the Lua README
# and the Ruby README each hold it ("One behaviour in C, Lua and Ruby"), the same table to
# the byte, and the header's comment (include/inparallel.h) lists the same rules, in the same
# order. A row changed in one place and not the others fails here. A test each.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/tally.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/shared-rules.XXXXXX")
trap 'rm -rf "$work"' EXIT

# table FILE: the Markdown table under the heading "One behaviour in C, Lua and Ruby".
table() {
  awk '/^#+ One behaviour in C, Lua and Ruby$/ { under = 1; next }
       under && /^#/ { exit }
       under && /^\|/ { print; seen = 1; next }
       seen { exit }' "$1"
}

table README.md >"$work/README.md"
if [[ -s $work/README.md ]]; then
  echo "ok: README.md has the table ($(wc -l <"$work/README.md") lines)"; tally_add 1 0 0
else
  echo "FAIL: README.md: no table under \"One behaviour in C, Lua and Ruby\""; tally_add 0 1 0
fi
for f in bindings/lua/README.md bindings/ruby/README.md; do
  if table "$f" | diff -u "$work/README.md" - >"$work/diff"; then
    echo "ok: $f holds README.md's table"; tally_add 1 0 0
  else
    echo "FAIL: $f's table differs from README.md's:"; cat "$work/diff"; tally_add 0 1 0
  fi
done

# The header lists each rule as a line of its own ("<3 spaces><the rule>"), between the line
# that introduces the table and the end of that paragraph of the comment.
awk -F' \\| ' 'NR > 2 { sub(/^\| /, "", $1); print $1 }' "$work/README.md" >"$work/rows"
awk '/^ \* The same rules in the Lua module and the Ruby gem/ { on = 1; next }
     on && /^ \*   [^ ]/ { sub(/^ \*   /, ""); print; next }
     on && /^ \*\// { exit }
     on && /^ \* [^ ]/ { exit }' include/inparallel.h >"$work/header-rows"
if diff -u "$work/rows" "$work/header-rows" >"$work/diff"; then
  echo "ok: include/inparallel.h lists the table's $(wc -l <"$work/rows") rules, in order"; tally_add 1 0 0
else
  echo "FAIL: include/inparallel.h's rules differ from the README table's rows:"; cat "$work/diff"
  tally_add 0 1 0
fi
tally_line
((TALLY_F == 0))
