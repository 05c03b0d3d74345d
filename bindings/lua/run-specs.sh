#!/bin/sh
# Runs the busted specs once per Lua the module was built for (./build.sh first):
#   ./run-specs.sh                 every build/<version>/ present
#   ./run-specs.sh 5.4 luajit      just these
# BUILD_DIR=dir takes the modules from dir/<version>/inparallel.so or, as `make check-lua`
# builds them, dir/<version>/.libs/inparallel.so (default: build/ here).
# Debian installs busted's own modules for Lua 5.1 only (its dependencies exist for every
# version), so busted's runner is started under each interpreter with /usr/share/lua/5.1
# appended to package.path, after that version's own directories.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
BUILD_DIR=${BUILD_DIR:-$here/build}
versions=${*:-$(ls "$BUILD_DIR" 2>/dev/null)}
BUSTED=${BUSTED:-$(command -v busted)}
BUSTED_ARGS=${BUSTED_ARGS:-}
status=0
for v in $versions; do
  case $v in luajit) lua=luajit ;; *) lua=lua$v ;; esac
  dir=$BUILD_DIR/$v
  [ -f "$dir/inparallel.so" ] || dir=$BUILD_DIR/$v/.libs
  if ! command -v "$lua" >/dev/null || [ ! -f "$dir/inparallel.so" ]; then
    # In the form scripts/test.sh counts and lists as a skip.
    echo "skipped: Lua $v: every spec: no $lua or no $BUILD_DIR/$v/inparallel.so" >&2
    continue
  fi
  echo "== $lua ($dir/inparallel.so)"
  LUA_CPATH="$dir/?.so;;" "$lua" \
    -e 'package.path = package.path .. ";/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"' \
    "$BUSTED" --lpath="$here/?.lua" $BUSTED_ARGS spec || status=1
done 2>&1
exit $status
