#!/bin/sh
# Builds the Lua module once per installed Lua: build/<version>/inparallel.so, for
# version in 5.1 5.3 5.4 luajit (or the ones given as arguments).
#
# The module links the core and the msgpack plugin as shared libraries, with an rpath to the
# in-tree build, so the specs run without LD_LIBRARY_PATH and one process has one supervisor
# thread however many bindings load the core. To build against an installed core instead:
#   CORE_INC=/usr/include CORE_LIB=/usr/lib/x86_64-linux-gnu MSGPACK_LIB=$CORE_LIB ./build.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
CC=${CC:-cc}
CFLAGS=${CFLAGS:--O2 -g -Wall -Wextra -Wno-unused-parameter}
CORE_INC=${CORE_INC:-$top/include}
CORE_LIB=${CORE_LIB:-$top/lib/.libs}
MSGPACK_LIB=${MSGPACK_LIB:-$top/serializers/msgpack/.libs}
SRC="compat.c mpack.c task.c future.c waitfor.c module.c"

lua_inc() {
  case $1 in
    luajit) echo /usr/include/luajit-2.1 ;;
    *) echo /usr/include/lua$1 ;;
  esac
}

versions=${*:-5.1 5.3 5.4 luajit}
built=
for v in $versions; do
  inc=$(lua_inc "$v")
  if [ ! -f "$inc/lua.h" ]; then
    echo "build.sh: skipping Lua $v (no $inc/lua.h; install liblua$v-dev or libluajit-5.1-dev)" >&2
    continue
  fi
  out=$here/build/$v
  mkdir -p "$out"
  set -x
  $CC -std=gnu11 -fPIC -shared -fvisibility=hidden $CFLAGS \
    -I"$inc" -I"$CORE_INC" -o "$out/inparallel.so" \
    $(for f in $SRC; do echo "$here/src/$f"; done) \
    -L"$CORE_LIB" -L"$MSGPACK_LIB" -Wl,-rpath,"$CORE_LIB" -Wl,-rpath,"$MSGPACK_LIB" \
    -linparallel-msgpack -linparallel -lmsgpackc -lm
  { set +x; } 2>/dev/null
  built="$built $v"
done
echo "built:${built:- nothing}"
