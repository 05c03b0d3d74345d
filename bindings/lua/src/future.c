/* The future userdata: result, error, done, wait, cancel, pid, args, __gc, __close. A call's
 * outcome is settled once, at the first result() or error(): its values, or its error table
 * (errors.c builds it). */
#include "lip.h"
#include <limits.h>
#include <math.h>
#include <string.h>

lip_future *lip_future_new(lua_State *L, enum lip_ser ser) {
  lip_future *uf = (lip_future *)lua_newuserdata(L, sizeof *uf);
  uf->f = NULL;
  uf->ser = ser;
  uf->task_ref = uf->pool_ref = uf->args_ref = uf->vals_ref = uf->err_ref = LUA_NOREF;
  uf->wf_index = 0;
  uf->nargs = uf->nvals = 0;
  lip_setmetatable(L, &lip_future_key);
  return uf;
}

lip_future *lip_future_test(lua_State *L, int i) {
  return (lip_future *)lip_testudata(L, i, &lip_future_key);
}

lip_future *lip_future_check(lua_State *L, int i) {
  lip_future *uf = (lip_future *)lip_checkudata(L, i, &lip_future_key, LIP_FUTURE_MT);
  if (!uf->f) luaL_error(L, "inparallel: this future was already collected");
  return uf;
}

/* ---- waiting ------------------------------------------------------------------------------- */

int lip_timeout_arg(lua_State *L, int i) {
  if (lua_isnoneornil(L, i)) return -1;
  static const char *const what = "the timeout must be a number of seconds >= 0 (nil = forever)";
  if (lua_type(L, i) != LUA_TNUMBER)
    luaL_argerror(L, i, lua_pushfstring(L, "%s, not %s", what, luaL_typename(L, i)));
  double s = (double)lua_tonumber(L, i);
  if (!(s >= 0)) luaL_argerror(L, i, lua_pushfstring(L, "%s, not %f", what, (lua_Number)s));
  double ms = ceil(s * 1000.0);
  return ms > INT_MAX ? -1 : (int)ms;
}

/* f:wait([seconds]) -> true, or nil, "ETIMEDOUT: ...", "ETIMEDOUT" (or "EINTR" when a signal
 * handler ran). */
static int f_wait(lua_State *L) {
  lip_future *uf = lip_future_check(L, 1);
  int rc = ip_future_wait(uf->f, lip_timeout_arg(L, 2));
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (rc == IP_ETIMEDOUT) {
    char s[32];
    return lip_fail(L, rc, "the call did not complete within %s s",
                    lip_seconds_text(s, (double)lua_tonumber(L, 2)));
  }
  if (rc == IP_EINTR) return lip_fail(L, rc, "a signal handler ran while waiting for the call");
  return lip_fail(L, rc, "%s", ip_strerror(rc));
}

static int f_done(lua_State *L) {
  lua_pushboolean(L, ip_future_done(lip_future_check(L, 1)->f));
  return 1;
}

int lip_values_ref(lua_State *L, int first, int n) {
  if (n == 0) return LUA_REFNIL;
  first = lua_absindex(L, first);
  if (n == 1) {
    lua_pushvalue(L, first);
  } else {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
      lua_pushvalue(L, first + i);
      lua_rawseti(L, -2, i + 1);
    }
  }
  return luaL_ref(L, LUA_REGISTRYINDEX); /* nil: LUA_REFNIL, which pushes nil */
}

int lip_push_values(lua_State *L, int ref, int n) {
  luaL_checkstack(L, n + 1, "too many values");
  if (n == 0) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  if (n == 1) return 1;
  for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -n - 1);
  return n;
}

/* Stores the n values on top of the stack as uf's results, leaving them there. */
static void cache_values(lua_State *L, lip_future *uf, int n) {
  uf->vals_ref = lip_values_ref(L, -n, n);
  uf->nvals = n;
}

/* Caches an EDECODE error table as uf's outcome. */
static void decode_failed(lua_State *L, lip_future *uf, const char *msg, const char *tb) {
  lip_push_error_fields(L, IP_EDECODE, NULL, msg, tb);
  lua_pushinteger(L, ip_future_pid(uf->f));
  lua_setfield(L, -2, "pid");
  uf->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static int decode_msgh(lua_State *L) {
  lua_createtable(L, 2, 0);
  lip_describe(L, 1);
  lua_rawseti(L, -2, 1);
  luaL_traceback(L, L, NULL, 1);
  lua_rawseti(L, -2, 2);
  return 1;
}

/* Turns the value of a call that succeeded into Lua values and caches them, or caches the
 * EDECODE error when they cannot be decoded. Leaves the stack as it found it. */
static void decode_values(lua_State *L, lip_future *uf) {
  int top = lua_gettop(L);
  const void *v = ip_future_value(uf->f);
  int n;
  switch (uf->ser) {
  case LIP_SER_MSGPACK:
    n = lip_msgpack_push(L, v);
    if (n < 0) {
      decode_failed(L, uf, lua_tostring(L, -1), NULL);
      lua_settop(L, top);
      return;
    }
    break;
  case LIP_SER_RAW: {
    const ip_bytes *b = v;
    lua_pushlstring(L, b->len ? (const char *)b->data : "", b->len);
    n = 1;
    break;
  }
  case LIP_SER_CUSTOM:
  default: {
    const ip_bytes *b = v;
    lua_pushcfunction(L, decode_msgh);
    lua_rawgeti(L, LUA_REGISTRYINDEX, uf->task_ref);
    lip_task *lt = (lip_task *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lt->dec_ref);
    lua_pushlstring(L, b->len ? (const char *)b->data : "", b->len);
    if (lua_pcall(L, 1, LUA_MULTRET, top + 1) != 0) {
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      const char *m = lua_pushfstring(L, "the serializer's decode function failed: %s", lua_tostring(L, -2));
      decode_failed(L, uf, m, lua_tostring(L, -2));
      lua_settop(L, top);
      return;
    }
    lua_remove(L, top + 1);
    n = lua_gettop(L) - top;
  }
  }
  cache_values(L, uf, n);
  lua_settop(L, top);
}

/* Waits for the call (up to the seconds at stack slot `secs`, nil = forever; raises an
 * ETIMEDOUT error table when they pass, EINTR when a signal handler ran) and settles its
 * outcome once: its values, or its error table. Returns 1 when it failed. */
static int settle(lua_State *L, lip_future *uf, int secs) {
  if (uf->vals_ref == LUA_NOREF && uf->err_ref == LUA_NOREF) {
    int rc = ip_future_wait(uf->f, lip_timeout_arg(L, secs));
    if (rc == IP_ETIMEDOUT) {
      char s[32];
      lip_raise(L, rc, "the call did not complete within %s s (it still runs)",
                lip_seconds_text(s, (double)lua_tonumber(L, secs)));
    }
    if (rc == IP_EINTR)
      lip_raise(L, rc, "a signal handler ran while waiting for the call (call again to resume)");
    if (ip_future_status(uf->f) != 0) {
      lip_push_call_error(L, uf, ip_future_error(uf->f));
      uf->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
      decode_values(L, uf);
    }
  }
  return uf->err_ref != LUA_NOREF;
}

int lip_future_settle(lua_State *L, lip_future *uf) {
  lua_pushnil(L);
  int failed = settle(L, uf, lua_gettop(L));
  lua_pop(L, 1);
  return failed;
}

/* f:result([seconds]) -> the values fn returned, or raises the error table. */
static int f_result(lua_State *L) {
  lip_future *uf = lip_future_check(L, 1);
  if (settle(L, uf, 2)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, uf->err_ref);
    return lua_error(L);
  }
  return lip_push_values(L, uf->vals_ref, uf->nvals);
}

/* f:error([seconds]) -> nil when the call succeeded, or its error table. Waits as result()
 * does. */
static int f_error(lua_State *L) {
  lip_future *uf = lip_future_check(L, 1);
  if (settle(L, uf, 2)) lua_rawgeti(L, LUA_REGISTRYINDEX, uf->err_ref);
  else lua_pushnil(L);
  return 1;
}

/* f:cancel() -> true once the call is canceled, or nil, "EALREADY: ...", "EALREADY" when it had
 * already completed. */
static int f_cancel(lua_State *L) {
  lip_future *uf = lip_future_check(L, 1);
  int rc = ip_future_cancel(uf->f);
  if (rc == IP_EALREADY) return lip_fail(L, rc, "the call had already completed");
  if (rc < 0) return lip_fail(L, rc, "%s", ip_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

static int f_pid(lua_State *L) {
  pid_t pid = ip_future_pid(lip_future_check(L, 1)->f);
  if (pid) lua_pushinteger(L, pid);
  else lua_pushnil(L);
  return 1;
}

/* f:args() -> the arguments the call was made with. */
static int f_args(lua_State *L) {
  lip_future *uf = lip_future_check(L, 1);
  return lip_push_values(L, uf->args_ref, uf->nargs);
}

void lip_future_release(lua_State *L, lip_future *uf) {
  if (uf->f) {
    ip_future_free(uf->f); /* cancels and reaps a child still running */
    uf->f = NULL;
  }
  int *refs[] = {&uf->task_ref, &uf->pool_ref, &uf->args_ref, &uf->vals_ref, &uf->err_ref};
  for (size_t i = 0; i < sizeof refs / sizeof *refs; i++) {
    luaL_unref(L, LUA_REGISTRYINDEX, *refs[i]);
    *refs[i] = LUA_NOREF;
  }
}

static int f_gc(lua_State *L) {
  lip_future_release(L, (lip_future *)lip_checkudata(L, 1, &lip_future_key, LIP_FUTURE_MT));
  return 0;
}

/* `local f <close> = t(x)`: leaving the scope cancels a call still running. */
static int f_close(lua_State *L) {
  lip_future *uf = (lip_future *)luaL_checkudata(L, 1, LIP_FUTURE_MT);
  if (uf->f && !ip_future_done(uf->f)) ip_future_cancel(uf->f);
  return 0;
}

static int f_tostring(lua_State *L) {
  lip_future *uf = (lip_future *)luaL_checkudata(L, 1, LIP_FUTURE_MT);
  if (!uf->f) {
    lua_pushfstring(L, "inparallel.future (collected): %p", (void *)uf);
    return 1;
  }
  int st = ip_future_status(uf->f);
  const char *state = st == IP_EAGAIN ? "running" : st == 0 ? "done" : ip_err_name(st);
  lua_pushfstring(L, "inparallel.future (pid %d, %s): %p", (int)ip_future_pid(uf->f), state, (void *)uf);
  return 1;
}

void lip_future_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"result", f_result}, {"done", f_done},   {"wait", f_wait}, {"cancel", f_cancel},
      {"pid", f_pid},       {"error", f_error}, {"args", f_args}, {NULL, NULL}};
  static const luaL_Reg mt[] = {
      {"__gc", f_gc}, {"__close", f_close}, {"__tostring", f_tostring}, {NULL, NULL}};
  lip_class(L, LIP_FUTURE_MT, &lip_future_key, mt, methods);
}
