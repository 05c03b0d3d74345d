-- luarocks make                       (from bindings/lua/, against an installed libinparallel)
-- The core and its msgpack plugin install side by side, so one variable names them for a
-- prefix luarocks does not search:  luarocks --lua-version=5.4 make INPARALLEL_DIR=$HOME/.local
-- (luarocks links with an rpath to that prefix's lib/). In the source tree, `make` builds the
-- module for every Lua it found instead.
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
  -- The msgpack plugin's header and library: found, they find the core's beside them.
  INPARALLEL = { header = "inparallel/msgpack.h", library = "inparallel-msgpack" },
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
      incdirs = { "$(INPARALLEL_INCDIR)", "$(MSGPACK_INCDIR)" },
      libdirs = { "$(INPARALLEL_LIBDIR)", "$(MSGPACK_LIBDIR)" },
      libraries = { "inparallel-msgpack", "inparallel", "msgpackc", "m" },
    },
  },
}
test = {
  type = "busted",
}
