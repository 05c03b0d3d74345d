#!/usr/bin/env bash
# The release tarball holds every file of the repository (but .gitignore files): what the
# READMEs, examples, benches and scripts/test.sh use ships with them. Run from a configured
# tree that is a git checkout; prints "tally: ..." (tests/tally.sh): one test, or a skip where
# there is no git checkout to compare with.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/tally.sh
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1 || [ ! -f Makefile ]; then
  echo "skipped: dist contents: not a configured git checkout (a release tree has no list to compare with)"
  tally_add 0 0 1
  tally_line
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ip-dist.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ! make -s distdir distdir="$work/tree" >"$work/log" 2>&1; then
  cat "$work/log"
  echo "dist contents: make distdir failed"
  tally_add 0 1 0
  tally_line
  exit 1
fi
(cd "$work/tree" && find . -type f | sed 's#^\./##' | sort) >"$work/shipped"
git ls-files | grep -v '\(^\|/\)\.gitignore$' | sort >"$work/tracked"
missing=$(comm -13 "$work/shipped" "$work/tracked")
n=$(wc -l <"$work/tracked")
if [ -n "$missing" ]; then
  echo "dist contents: tracked files missing from the tarball:"
  echo "$missing" | sed 's/^/  /'
  tally_add 0 1 0
  tally_line
  exit 1
fi
echo "dist contents: all $n tracked files ship"
tally_add 1 0 0
tally_line
