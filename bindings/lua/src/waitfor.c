/* ip.waitfor(list [, cf [, seconds]]) for a generic `for`. The core's ip_waitfor_next makes every decision
 * (and blocks without polling) over an ip_list that mirrors the caller's table; the future it
 * hands back is then taken out of the table, the table's last element moving into its slot.
 *
 * A step costs O(1), however long the table: the mirror is kept from step to step, and only
 * what was appended since is pushed into it. Anything else the caller did to the table (took a
 * future out, put another in its place) is noticed from the table's length, its last element,
 * or a mirror that disagrees with it, and the mirror is then rebuilt: O(n) once. Keeping the
 * table's order would cost a shift of the whole table per step; a waitfor table is a set of
 * calls in flight, so its order is not kept. */
#include "lip.h"
#include <limits.h>
#include <math.h>

typedef struct wf_state {
  ip_waitfor w;
  ip_list *mirror;
  int cf;
  int timeout_ms; /* each wait for a completion; -1: none */
  double seconds; /* the same, as given, for the message */
  int synced; /* list[1..synced] are in the mirror, each at the index `where` gives */
} wf_state;

/* Upvalues of the iterator. */
#define LIST lua_upvalueindex(1)
#define STATE lua_upvalueindex(2)
#define WHERE lua_upvalueindex(3) /* ip_future* (light userdata) -> its future userdata */

static int wf_gc(lua_State *L) {
  wf_state *s = (wf_state *)luaL_checkudata(L, 1, LIP_WAITFOR_MT);
  ip_list_free(s->mirror);
  s->mirror = NULL;
  return 0;
}

/* Records that the future at `ud` on the stack is mirrored, at list[index]. */
static void note(lua_State *L, lip_future *uf, int index, int ud) {
  ud = ud < 0 ? lua_gettop(L) + ud + 1 : ud;
  uf->wf_index = index;
  lua_pushlightuserdata(L, uf->f);
  lua_pushvalue(L, ud);
  lua_rawset(L, WHERE);
}

/* The future at list[i], checked. */
static lip_future *element(lua_State *L, int i) {
  lua_rawgeti(L, LIST, i);
  lip_future *uf = lip_future_test(L, -1);
  if (!uf)
    luaL_error(L, "inparallel.waitfor: list[%d] is a %s, not a future", i, luaL_typename(L, -1));
  if (!uf->f) luaL_error(L, "inparallel.waitfor: list[%d] is a collected future", i);
  return uf;
}

/* Mirrors list[from..n]. */
static void push_range(lua_State *L, wf_state *s, int from, int n) {
  for (int i = from; i <= n; i++) {
    lip_future *uf = element(L, i);
    int rc = ip_list_push(s->mirror, uf->f);
    if (rc == IP_EALREADY)
      luaL_error(L, "inparallel.waitfor: list[%d] is a future the list already holds", i);
    if (rc < 0) luaL_error(L, "inparallel.waitfor: out of memory");
    note(L, uf, i, -1);
    lua_pop(L, 1);
  }
  s->synced = n;
}

static void rebuild(lua_State *L, wf_state *s, int n) {
  while (ip_list_len(s->mirror)) ip_list_remove(s->mirror, ip_list_len(s->mirror) - 1);
  lua_newtable(L);
  lua_replace(L, WHERE);
  push_range(L, s, 1, n);
}

/* Brings the mirror up to date with the caller's table. */
static void sync_mirror(lua_State *L, wf_state *s) {
  int n = (int)lua_rawlen(L, LIST);
  bool same = n >= s->synced;
  if (same && s->synced > 0) { /* the last mirrored element is where it was */
    lua_rawgeti(L, LIST, s->synced);
    lip_future *uf = lip_future_test(L, -1);
    same = uf && uf->f && uf->wf_index == s->synced;
    lua_pop(L, 1);
  }
  if (same) push_range(L, s, s->synced + 1, n);
  if (!same || ip_list_len(s->mirror) != (size_t)n) rebuild(L, s, n);
}

/* Takes f out of the caller's table and leaves its userdata on the stack. False (nothing
 * left) when the table no longer holds it: the caller took it out behind the mirror's back. */
static bool take_out(lua_State *L, wf_state *s, ip_future *f) {
  lua_pushlightuserdata(L, f);
  lua_rawget(L, WHERE);
  lip_future *uf = lip_future_test(L, -1);
  lua_pushlightuserdata(L, f);
  lua_pushnil(L);
  lua_rawset(L, WHERE);
  int n = (int)lua_rawlen(L, LIST), i = uf ? uf->wf_index : 0;
  bool there = false;
  if (i >= 1 && i <= n) {
    lua_rawgeti(L, LIST, i);
    there = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
  }
  for (i = there ? i : 1; !there && i <= n; i++) { /* moved: look for it */
    lua_rawgeti(L, LIST, i);
    there = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    if (there) break;
  }
  if (!there) {
    lua_pop(L, 1);
    s->synced = -1; /* the table changed: rebuild at the next step */
    return false;
  }
  if (i < n) { /* the last element takes the slot */
    lua_rawgeti(L, LIST, n);
    lip_future *moved = lip_future_test(L, -1);
    if (moved && moved->f) moved->wf_index = i;
    lua_rawseti(L, LIST, i);
  }
  lua_pushnil(L);
  lua_rawseti(L, LIST, n);
  if (s->synced >= 0) s->synced = n - 1;
  return true;
}

static int wf_step(lua_State *L) {
  wf_state *s = (wf_state *)lua_touserdata(L, STATE);
  for (;;) {
    if (s->synced < 0) rebuild(L, s, (int)lua_rawlen(L, LIST));
    else sync_mirror(L, s);
    ip_future *out = NULL;
    int rc = ip_waitfor_next(&s->w, s->mirror, s->cf, s->timeout_ms, &out);
    if (rc == IP_ETIMEDOUT) {
      char secs[32];
      return lip_raise(L, rc, "no call completed within %s s (call the iterator again to go on "
                              "waiting)", lip_seconds_text(secs, s->seconds));
    }
    if (rc == IP_EINTR)
      return lip_raise(L, rc, "a signal handler ran while waiting for a call to complete (call "
                              "the iterator again to resume)");
    if (rc < 0) return lip_raise(L, rc, "inparallel.waitfor: %s", ip_strerror(rc));
    if (rc == 1 && out) {
      if (take_out(L, s, out)) return 1;
      continue; /* no longer the caller's: not its to hand back */
    }
    if (rc == 0) {
      lua_pushnil(L);
      return 1;
    }
    lua_pushboolean(L, 0);
    return 1;
  }
}

/* ip.waitfor(list [, concurrency_factor [, seconds]]) -> iterator */
int lip_waitfor(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int cf = 0; /* the core's "none" */
  if (!lua_isnoneornil(L, 2)) {
    static const char *const what = "the concurrency factor must be a positive integer (nil = none)";
    if (lua_type(L, 2) != LUA_TNUMBER)
      luaL_argerror(L, 2, lua_pushfstring(L, "%s, not %s", what, luaL_typename(L, 2)));
    double d = (double)lua_tonumber(L, 2);
    if (!(d >= 1) || d != floor(d) || d > INT_MAX)
      luaL_argerror(L, 2, lua_pushfstring(L, "%s, not %f", what, (lua_Number)d));
    cf = (int)d;
  }
  int timeout_ms = lip_timeout_arg(L, 3);
  double seconds = timeout_ms < 0 ? 0 : (double)lua_tonumber(L, 3);
  lua_settop(L, 1);
  wf_state *s = (wf_state *)lua_newuserdata(L, sizeof *s);
  s->mirror = NULL;
  luaL_getmetatable(L, LIP_WAITFOR_MT);
  lua_setmetatable(L, -2);
  s->w = (ip_waitfor)IP_WAITFOR_INIT;
  s->cf = cf;
  s->timeout_ms = timeout_ms;
  s->seconds = seconds;
  s->synced = 0;
  if (!(s->mirror = ip_list_new())) return luaL_error(L, "inparallel.waitfor: out of memory");
  lua_newtable(L);
  lua_pushcclosure(L, wf_step, 3);
  return 1;
}

void lip_waitfor_open(lua_State *L) {
  luaL_newmetatable(L, LIP_WAITFOR_MT);
  lua_pushcfunction(L, wf_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
}
