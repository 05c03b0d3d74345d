/* Stand-ins for the 5.2+ auxiliary functions this module uses, on 5.1 and LuaJIT. */
#include "compat.h"
#include <string.h>

#if LUA_VERSION_NUM < 502
void lip_setfuncs(lua_State *L, const luaL_Reg *l) {
  for (; l->name; l++) {
    lua_pushcfunction(L, l->func);
    lua_setfield(L, -2, l->name);
  }
}

void *lip_testudata(lua_State *L, int i, const char *tname) {
  void *p = lua_touserdata(L, i);
  if (!p || !lua_getmetatable(L, i)) return NULL;
  lua_getfield(L, LUA_REGISTRYINDEX, tname);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? p : NULL;
}
#endif

void lip_traceback(lua_State *L, int level) {
#if LUA_VERSION_NUM >= 502 || defined(LUAJIT_VERSION)
  luaL_traceback(L, L, NULL, level);
#else
  /* Plain 5.1: debug.traceback("", level) gives "\nstack traceback:..."; drop the newline.
   * One more level, because debug.traceback counts itself. */
  lua_getglobal(L, "debug");
  if (lua_istable(L, -1)) lua_getfield(L, -1, "traceback");
  else lua_pushnil(L);
  lua_remove(L, -2);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "stack traceback: (not available: no debug library)");
    return;
  }
  lua_pushliteral(L, "");
  lua_pushinteger(L, level + 1);
  if (lua_pcall(L, 2, 1, 0) != 0 || !lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "stack traceback: (not available)");
    return;
  }
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  if (n && s[0] == '\n') {
    lua_pushlstring(L, s + 1, n - 1);
    lua_remove(L, -2);
  }
#endif
}

const char *lip_tolstring(lua_State *L, int i, size_t *len) {
  i = i < 0 && i > LUA_REGISTRYINDEX ? lua_gettop(L) + i + 1 : i;
  if (luaL_callmeta(L, i, "__tostring")) {
    if (!lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, i));
    }
  } else {
    switch (lua_type(L, i)) {
    case LUA_TSTRING:
    case LUA_TNUMBER:
      lua_pushvalue(L, i);
      lua_tostring(L, -1); /* converts the copy, never the original */
      break;
    case LUA_TBOOLEAN:
      lua_pushstring(L, lua_toboolean(L, i) ? "true" : "false");
      break;
    case LUA_TNIL:
      lua_pushliteral(L, "nil");
      break;
    default:
      lua_pushfstring(L, "%s: %p", luaL_typename(L, i), lua_topointer(L, i));
    }
  }
  return lua_tolstring(L, -1, len);
}
