/* The Lua 5.3 C API on every Lua this module builds for.
 *
 * Lua 5.1 and LuaJIT get what they lack (lua_rawlen, luaL_setfuncs, luaL_testudata,
 * luaL_traceback, luaL_tolstring, lua_absindex, ...) from lua-compat-5.3's C API, as packaged
 * (Debian: lua-compat53-dev, which puts compat-5.3.h in /usr/include/lua5.1; configure and
 * build.sh add that directory for LuaJIT). Included without COMPAT53_PREFIX, its functions
 * are static in each file that uses them: nothing is exported, so nothing clashes with a
 * host's own copy. compat-5.3.h refuses Lua 5.4, which needs none of it, so it is included for
 * 5.1 only (5.3 needs none of it either). */
#ifndef LIP_COMPAT_H
#define LIP_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
#include <compat-5.3.h>
#endif

/* 5.3+ has an integer subtype; before it every number is a double (compat-5.3's
 * lua_isinteger there only says whether a double is integral). */
#if LUA_VERSION_NUM >= 503
#define LIP_HAS_INTEGERS 1
#else
#define LIP_HAS_INTEGERS 0
#endif

#endif
