#!/bin/sh
# Runs the busted specs once per Lua the module was built for (./build.sh first):
#   ./run-specs.sh                 every build/<version>/ present
#   ./run-specs.sh 5.4 luajit      just these
# Debian installs busted's own modules for Lua 5.1 only (its dependencies exist for every
# version), so busted's runner is started under each interpreter with /usr/share/lua/5.1
# appended to package.path, after that version's own directories.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
versions=${*:-$(ls build 2>/dev/null)}
BUSTED=${BUSTED:-$(command -v busted)}
BUSTED_ARGS=${BUSTED_ARGS:-}
status=0
for v in $versions; do
  case $v in luajit) lua=luajit ;; *) lua=lua$v ;; esac
  if ! command -v "$lua" >/dev/null || [ ! -f "build/$v/inparallel.so" ]; then
    echo "run-specs.sh: skipping $v (no $lua or no build/$v/inparallel.so)" >&2
    continue
  fi
  echo "== $lua"
  LUA_CPATH="$here/build/$v/?.so;;" "$lua" \
    -e 'package.path = package.path .. ";/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"' \
    "$BUSTED" --lpath="$here/?.lua" $BUSTED_ARGS spec || status=1
done 2>&1
exit $status
