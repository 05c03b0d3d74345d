#!/usr/bin/env bash
# Every code block of the READMEs runs as written. Run from a configured git checkout after
# `make` (scripts/build.sh); prints "tally: ..." (tests/tally.sh), one test per block.
#
# The repository README's "Build and install" commands run first, as a user would type them,
# in a copy of the tracked files with HOME a new directory; then each ```c block compiles
# against that install with `cc -Wall -Werror ... $(pkg-config --cflags --libs inparallel)`
# and runs, each ```lua block runs under lua5.4 with the installed module (LUA_CPATH as the
# README says), and each ```ruby block runs with the extension built in bindings/ruby. A
# block passes when it exits 0.
#
# An HTML comment on the line before a block (invisible on the rendered page) says how to run
# what cannot run alone:
#   <!-- readme-test: harness NAME -->   a fragment: spliced into tests/readme/NAME.c (.lua,
#                                        .ruby) at the line "README BLOCK"; the harness
#                                        declares what the fragment uses
#   <!-- readme-test: install -->        the install commands above
#   <!-- readme-test: not run: WHY -->   reported as skipped, with WHY
# A block indented in a list item counts too, its comment indented alike.
# A ```sh block must carry one, so that a new one cannot go unrun unnoticed. Blocks in
# "ssh HOST cmd" examples reach no host: an ssh on PATH runs cmd here instead.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/tally.sh
top=$PWD
readmes=(README.md bindings/lua/README.md bindings/ruby/README.md)
work=$(mktemp -d "${TMPDIR:-/tmp}/ip-readme.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Each block as $work/blocks/N.LANG, with "N LANG FILE LINE ANNOTATION" in $work/index.
mkdir -p "$work/blocks"
awk -v dir="$work/blocks" '
  # A block may be indented (in a list item): its fence and lines lose the fence indent.
  function unindent(line,   i) {
    for (i = 0; i < ind && substr(line, 1, 1) == " "; i++) line = substr(line, 2)
    return line
  }
  FNR == 1 { note = "" }
  !inb && /^ *<!-- readme-test: .* -->$/ { note = $0; sub(/^ *<!-- readme-test: /, "", note); sub(/ -->$/, "", note); next }
  !inb && /^ *```[a-z]+$/ {
    ind = index($0, "`") - 1
    lang = substr($0, ind + 4)
    if (lang == "text") { skiptext = 1; inb = 1; next }
    n++; inb = 1; out = dir "/" n "." lang
    printf "" > out
    print n, lang, FILENAME, FNR, (note == "" ? "-" : note)
    note = ""; next
  }
  inb && /^ *```$/ { inb = 0; if (!skiptext) close(out); skiptext = 0; next }
  inb && !skiptext { print unindent($0) > out; next }
  !inb && /^ *```$/ { printf "%s:%d: a code block without a language (```text for output)\n", FILENAME, FNR > "/dev/stderr"; bad = 1 }
  !inb && !/^[[:space:]]*$/ { note = "" }
  END { exit bad }' "${readmes[@]}" >"$work/index" || { tally_add 0 1 0; tally_line; exit 1; }

pass() { echo "PASS: $1"; tally_add 1 0 0; }
fail() { echo "FAIL: $1"; [ -s "$work/log" ] && sed 's/^/  | /' "$work/log" | tail -40; tally_add 0 1 0; }
skip() { echo "skipped: $1: $2"; tally_add 0 0 1; }

mkdir -p "$work/bin"
printf '#!/bin/sh\n# ssh HOST CMD...: runs CMD here\nshift\nexec sh -c "$*"\n' >"$work/bin/ssh"
chmod +x "$work/bin/ssh"
export PATH="$work/bin:$PATH"

# The install block, in a copy of the tracked files (a clone's view of the tree).
home="$work/home"
installed=0
install_block() { # N FILE LINE
  local what="$2:$3 (sh, the install commands)"
  if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    skip "$what" "not a git checkout: no list of the files a clone has"; return
  fi
  mkdir -p "$work/tree" "$home"
  git ls-files -z | xargs -0 cp --parents -t "$work/tree" 2>"$work/log" || { fail "$what"; return; }
  if (cd "$work/tree" && HOME="$home" timeout 900 bash -euo pipefail "$work/blocks/$1.sh") >"$work/log" 2>&1; then
    installed=1; pass "$what"
  else
    fail "$what"
  fi
}

# source_of N LANG NOTE: the file to run for block N: the block itself, or with "harness
# NAME" the harness tests/readme/NAME.LANG with the block in place of its "README BLOCK" line.
source_of() {
  local block="$work/blocks/$1.$2"
  if [[ $3 == harness\ * ]]; then
    awk -v block="$block" '/README BLOCK/ { while ((getline l < block) > 0) print l; next } { print }' \
      "tests/readme/${3#harness }.$2" >"$work/blocks/$1-whole.$2"
    block="$work/blocks/$1-whole.$2"
  fi
  echo "$block"
}

c_block() { # N FILE LINE NOTE
  local what="$2:$3 (c)" src
  if ((!installed)); then skip "$what" "the install commands did not run"; return; fi
  src=$(source_of "$1" c "$4")
  (
    export PKG_CONFIG_PATH="$home/.local/lib/pkgconfig" LD_LIBRARY_PATH="$home/.local/lib"
    # shellcheck disable=SC2046
    cc -Wall -Werror -o "$work/prog" "$src" $(pkg-config --cflags --libs inparallel) &&
      cd "$work" && timeout 120 ./prog
  ) >"$work/log" 2>&1 && pass "$what" || fail "$what"
}

lua_block() { # N FILE LINE NOTE
  local what="$2:$3 (lua)"
  if ((!installed)); then skip "$what" "the install commands did not run"; return; fi
  if ! command -v lua5.4 >/dev/null; then skip "$what" "no lua5.4 here"; return; fi
  LUA_CPATH="$home/.local/lib/lua/5.4/?.so;;" timeout 120 lua5.4 "$(source_of "$1" lua "$4")" \
    >"$work/log" 2>&1 && pass "$what" || fail "$what"
}

ruby_block() { # N FILE LINE NOTE
  local what="$2:$3 (ruby)"
  if [ ! -f bindings/ruby/lib/inparallel/inparallel.so ]; then
    skip "$what" "the Ruby extension is not built (scripts/build.sh builds it)"; return
  fi
  # stdin from /dev/null: a block must not wait for a terminal (progress bars draw on one).
  timeout 120 ruby -I "$top/bindings/ruby/lib" "$(source_of "$1" ruby "$4")" </dev/null >"$work/log" 2>&1 &&
    pass "$what" || fail "$what"
}

while read -r n lang file line note; do
  : >"$work/log"
  case "$note" in
    "not run:"*) skip "$file:$line ($lang)" "${note#not run: }"; continue ;;
    install) install_block "$n" "$file" "$line"; continue ;;
  esac
  case "$lang" in
    c) c_block "$n" "$file" "$line" "$note" ;;
    lua) lua_block "$n" "$file" "$line" "$note" ;;
    ruby) ruby_block "$n" "$file" "$line" "$note" ;;
    *) echo "$file:$line: a \`\`\`$lang block needs a readme-test comment saying how to run it" >"$work/log"
       fail "$file:$line ($lang)" ;;
  esac
done <"$work/index"
tally_line
((TALLY_F == 0))
