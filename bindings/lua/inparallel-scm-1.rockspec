-- luarocks make                       (from bindings/lua/, against an installed libinparallel)
-- In-tree, against the build in ../../:
--   luarocks --lua-version=5.4 make INPARALLEL_INCDIR=../../include \
--     INPARALLEL_LIBDIR=../../lib/.libs INPARALLEL_MSGPACK_INCDIR=../../include \
--     INPARALLEL_MSGPACK_LIBDIR=../../serializers/msgpack/.libs
-- (luarocks links with an rpath to each libdir, so the module finds the in-tree libraries).
-- Lua 5.1 and LuaJIT also need lua-compat-5.3's C header compat-5.3.h (Debian:
-- lua-compat53-dev). Debian puts it in /usr/include/lua5.1, which a Lua 5.1 build searches
-- already; for LuaJIT, add it:  luarocks --lua-version=5.1 make CFLAGS="-O2 -fPIC -I/usr/include/lua5.1"
rockspec_format = "3.0"
package = "inparallel"
version = "scm-1"
source = {
  url = "git+https://github.com/inparallel/inparallel.git",
}
description = {
  summary = "Run a Lua function in a forked child and get a future for its results",
  detailed = [[
    ip.task(fn) returns a callable; each call forks, runs fn(...) in the child (a copy of
    your Lua state: arguments and upvalues need no serialization) and returns a future at
    once. Results travel as MessagePack (or raw bytes, or your own encode/decode); errors,
    crashes, exits and timeouts come back as error tables with the child's traceback.
    ip.waitfor(list, cf) drives a list of futures in completion order with a concurrency
    factor. ip.pool(n) forks n workers once for many small calls (the same futures), and
    ip.map(fn, list) runs fn over a list on a pool, results in order. A thin binding over
    the libinparallel C library (Linux 5.3+).
  ]],
  homepage = "https://github.com/inparallel/inparallel",
  license = "BSD-3-Clause",
  labels = { "parallel", "fork", "future", "process" },
}
supported_platforms = { "linux" }
dependencies = {
  "lua >= 5.1",
}
external_dependencies = {
  INPARALLEL = { header = "inparallel.h", library = "inparallel" },
  INPARALLEL_MSGPACK = { header = "inparallel/msgpack.h", library = "inparallel-msgpack" },
  MSGPACK = { header = "msgpack.h", library = "msgpackc" },
}
build = {
  type = "builtin",
  modules = {
    inparallel = {
      sources = {
        "src/errors.c", "src/msgpack_values.c", "src/task.c", "src/future.c",
        "src/waitfor.c", "src/pool.c", "src/map.c", "src/module.c",
      },
      incdirs = { "$(INPARALLEL_INCDIR)", "$(INPARALLEL_MSGPACK_INCDIR)", "$(MSGPACK_INCDIR)" },
      libdirs = { "$(INPARALLEL_LIBDIR)", "$(INPARALLEL_MSGPACK_LIBDIR)", "$(MSGPACK_LIBDIR)" },
      libraries = { "inparallel-msgpack", "inparallel", "msgpackc", "m" },
    },
  },
}
test = {
  type = "busted",
}
