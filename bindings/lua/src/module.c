/* luaopen_inparallel: the module table. */
#include "lip.h"

const char lip_task_key, lip_future_key, lip_pool_key;

void lip_class(lua_State *L, const char *tname, const void *key, const luaL_Reg *meta,
               const luaL_Reg *methods) {
  luaL_newmetatable(L, tname);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  luaL_setfuncs(L, meta, 0);
  if (methods) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pushstring(L, tname);
  lua_setfield(L, -2, "__name");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}

static int l_version(lua_State *L) {
  lua_pushstring(L, ip_version());
  return 1;
}

/* ip.ready_fd() -> a descriptor that becomes readable when any future completes (for event
 * loops; read 8 bytes to clear it), or nil, "CODE: message", "CODE". */
static int l_ready_fd(lua_State *L) {
  int fd = ip_ready_fd();
  if (fd == IP_EAGAIN) return lip_fail(L, fd, "the supervisor thread could not start");
  if (fd < 0) return lip_fail(L, fd, "%s", ip_strerror(fd));
  lua_pushinteger(L, fd);
  return 1;
}

/* The module's only exported symbol (declared here: no header of ours is installed). */
__attribute__((visibility("default"))) int luaopen_inparallel(lua_State *L);

int luaopen_inparallel(lua_State *L) {
  static const luaL_Reg fns[] = {{"task", lip_task_new},
                                 {"waitfor", lip_waitfor},
                                 {"pool", lip_pool_new},
                                 {"map", lip_map},
                                 {"version", l_version},
                                 {"ready_fd", l_ready_fd},
                                 {NULL, NULL}};
  lip_task_open(L);
  lip_future_open(L);
  lip_waitfor_open(L);
  lip_pool_open(L);
  lip_map_open(L);
  lip_errors_open(L);
  lip_api_open(L);
  lua_newtable(L);
  luaL_setfuncs(L, fns, 0);
  lua_pushliteral(L, "inparallel");
  lua_setfield(L, -2, "_NAME");
  lua_pushstring(L, ip_version()); /* the module ships with its core, so they share one */
  lua_setfield(L, -2, "_VERSION");
  /* The core's error codes, to compare with err.code: ip.ETIMEDOUT == "ETIMEDOUT", ... */
#define LIP_CODE(name, value, text) lua_pushliteral(L, #name); lua_setfield(L, -2, #name);
  IP_ERRNO_MAP(LIP_CODE)
#undef LIP_CODE
  /* ip.mpi: the inparallel_mpi module, loaded on first use (it loads MPI, which most
   * programs do not need). */
  static const char lazy_mpi[] =
      "local ip = ...\n"
      "setmetatable(ip, {__index = function(t, k)\n"
      "  if k ~= 'mpi' then return nil end\n"
      "  local m = require 'inparallel_mpi'\n"
      "  rawset(t, 'mpi', m)\n"
      "  return m\n"
      "end})";
  if (luaL_loadstring(L, lazy_mpi) != 0) return lua_error(L);
  lua_pushvalue(L, -2);
  lua_call(L, 1, 0);
  return 1;
}
