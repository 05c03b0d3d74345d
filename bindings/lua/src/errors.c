/* Error values: what a raised value says about itself. */
#include "lip.h"

static int call_tostring(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

const char *lip_describe(lua_State *L, int i) {
  i = lua_absindex(L, i);
  int t = lua_type(L, i);
  if (t == LUA_TSTRING || t == LUA_TNUMBER) {
    lua_pushvalue(L, i);
    return lua_tostring(L, -1); /* converts the copy, never the original */
  }
  if (luaL_getmetafield(L, i, "__tostring") != LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushcfunction(L, call_tostring);
    lua_pushvalue(L, i);
    if (lua_pcall(L, 1, 1, 0) == 0 && lua_type(L, -1) == LUA_TSTRING) return lua_tostring(L, -1);
    lua_pop(L, 1); /* a __tostring that failed, or gave no string */
  }
  return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, i));
}
