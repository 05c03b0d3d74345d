/* ip.waitfor(list [, cf]) for a generic `for`. Each step mirrors the caller's table into an
 * ip_list and lets the core's ip_waitfor_next decide, so the rules and
 * the blocking wait (no polling) are the C library's own; the future it hands back is then
 * removed from the caller's table the way table.remove would. */
#include "lip.h"
#include <math.h>

typedef struct wf_state {
  ip_waitfor w;
  ip_list *mirror;
  int cf;
} wf_state;

static int wf_gc(lua_State *L) {
  wf_state *s = (wf_state *)luaL_checkudata(L, 1, LIP_WAITFOR_MT);
  ip_list_free(s->mirror);
  s->mirror = NULL;
  return 0;
}

/* Removes list[i] keeping the order of the rest (table.remove without __index/__newindex). */
static void remove_at(lua_State *L, int list, int i, int n) {
  for (; i < n; i++) {
    lua_rawgeti(L, list, i + 1);
    lua_rawseti(L, list, i);
  }
  lua_pushnil(L);
  lua_rawseti(L, list, n);
}

/* The iterator: upvalue 1 is the caller's table, upvalue 2 the state. */
static int wf_step(lua_State *L) {
  int list = lua_upvalueindex(1);
  wf_state *s = (wf_state *)lua_touserdata(L, lua_upvalueindex(2));
  while (ip_list_len(s->mirror) > 0) ip_list_remove(s->mirror, ip_list_len(s->mirror) - 1);
  int n = (int)lip_rawlen(L, list);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    lip_future *uf = lip_future_test(L, -1);
    if (!uf) return luaL_error(L, "inparallel.waitfor: list[%d] is a %s, not a future", i, luaL_typename(L, -1));
    if (!uf->f) return luaL_error(L, "inparallel.waitfor: list[%d] is a collected future", i);
    if (ip_list_push(s->mirror, uf->f) < 0) return luaL_error(L, "inparallel.waitfor: out of memory");
    lua_pop(L, 1);
  }
  ip_future *out = NULL;
  int rc = ip_waitfor_next(&s->w, s->mirror, s->cf, -1, &out);
  if (rc == 0) {
    lua_pushnil(L);
    return 1;
  }
  if (rc == IP_EINTR) return lip_interrupted(L);
  if (rc < 0) return luaL_error(L, "inparallel.waitfor: %s", ip_strerror(rc));
  if (!out) {
    lua_pushboolean(L, 0);
    return 1;
  }
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    lip_future *uf = (lip_future *)lua_touserdata(L, -1);
    if (uf->f == out) {
      remove_at(L, list, i, n);
      return 1;
    }
    lua_pop(L, 1);
  }
  return luaL_error(L, "inparallel.waitfor: internal error: the completed future left the list");
}

/* ip.waitfor(list [, concurrency_factor]) -> iterator */
int lip_waitfor(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int cf = 0;
  if (!lua_isnoneornil(L, 2)) {
    if (lua_type(L, 2) != LUA_TNUMBER) luaL_argerror(L, 2, "the concurrency factor must be a positive integer or nil");
    double d = (double)lua_tonumber(L, 2);
    if (!(d >= 0) || d != floor(d) || d > 1e9)
      luaL_argerror(L, 2, "the concurrency factor must be a positive integer or nil");
    cf = (int)d;
  }
  lua_settop(L, 1);
  wf_state *s = (wf_state *)lua_newuserdata(L, sizeof *s);
  s->mirror = NULL;
  luaL_getmetatable(L, LIP_WAITFOR_MT);
  lua_setmetatable(L, -2);
  s->w = (ip_waitfor)IP_WAITFOR_INIT;
  s->cf = cf;
  if (!(s->mirror = ip_list_new())) return luaL_error(L, "inparallel.waitfor: out of memory");
  lua_pushcclosure(L, wf_step, 2);
  return 1;
}

void lip_waitfor_open(lua_State *L) {
  luaL_newmetatable(L, LIP_WAITFOR_MT);
  lua_pushcfunction(L, wf_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
}
