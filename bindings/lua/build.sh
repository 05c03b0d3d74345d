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
SRC="errors.c msgpack_values.c task.c future.c waitfor.c pool.c map.c module.c"
# lua-compat-5.3's compat-5.3.h, which the 5.1 and LuaJIT builds include (Debian:
# lua-compat53-dev puts it in /usr/include/lua5.1).
COMPAT53_INC=${COMPAT53_INC:-/usr/include/lua5.1}

lua_inc() {
  case $1 in
    luajit) echo /usr/include/luajit-2.1 ;;
    *) echo /usr/include/lua$1 ;;
  esac
}

# Include flags: the Lua's own headers, then (for the 5.1 ABI) compat-5.3.h's directory.
lua_cflags() {
  case $1 in
    5.1 | luajit) echo "-I$2 -I$COMPAT53_INC" ;;
    *) echo "-I$2" ;;
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
  case $v in
    5.1 | luajit)
      if [ ! -f "$COMPAT53_INC/compat-5.3.h" ]; then
        echo "build.sh: skipping Lua $v (no $COMPAT53_INC/compat-5.3.h; install lua-compat53-dev or set COMPAT53_INC)" >&2
        continue
      fi ;;
  esac
  out=$here/build/$v
  mkdir -p "$out"
  set -x
  $CC -std=gnu11 -fPIC -shared -fvisibility=hidden $CFLAGS \
    $(lua_cflags "$v" "$inc") -I"$CORE_INC" -o "$out/inparallel.so" \
    $(for f in $SRC; do echo "$here/src/$f"; done) \
    -L"$CORE_LIB" -L"$MSGPACK_LIB" -Wl,-rpath,"$CORE_LIB" -Wl,-rpath,"$MSGPACK_LIB" \
    -linparallel-msgpack -linparallel -lmsgpackc -lm
  { set +x; } 2>/dev/null
  built="$built $v"
done
echo "built:${built:- nothing}"
