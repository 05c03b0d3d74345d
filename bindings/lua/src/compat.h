/* The few Lua C API differences between 5.1 (and LuaJIT), 5.2, 5.3 and 5.4 that this module
 * meets, behind names of our own so nothing clashes with a host's compat layer. */
#ifndef LIP_COMPAT_H
#define LIP_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM >= 502
#define lip_rawlen(L, i) lua_rawlen(L, i)
#define lip_setfuncs(L, l) luaL_setfuncs(L, l, 0)
#define lip_testudata(L, i, tn) luaL_testudata(L, i, tn)
#else
#define lip_rawlen(L, i) lua_objlen(L, i)
void lip_setfuncs(lua_State *L, const luaL_Reg *l);
void *lip_testudata(lua_State *L, int i, const char *tname);
#endif

/* 5.3+ has an integer subtype; before it every number is a double. */
#if LUA_VERSION_NUM >= 503
#define LIP_HAS_INTEGERS 1
#define lip_isinteger(L, i) lua_isinteger(L, i)
#else
#define LIP_HAS_INTEGERS 0
#define lip_isinteger(L, i) 0
#endif

/* Pushes the traceback of L from `level` on ("stack traceback:\n\t..."). */
void lip_traceback(lua_State *L, int level);
/* Pushes what tostring() would give for the value at i (never raises for plain values). */
const char *lip_tolstring(lua_State *L, int i, size_t *len);

#endif
