/* Error values. Every failure the module raises is an error table with metatable
 * inparallel.error: {code = "ETIMEDOUT" (the code's name), message, traceback, kind, ...}, and
 * tostring() gives "CODE: message" followed by the traceback. The few functions that return
 * their failures instead (f:wait, f:cancel, ip.ready_fd) do it the luv way:
 * nil, "CODE: message", "CODE". Misuse (a wrong argument) raises Lua's usual string error. */
#include "lip.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

/* ---- error tables --------------------------------------------------------------------------- */

static void set_str(lua_State *L, const char *k, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

void lip_push_error_fields(lua_State *L, int code, const char *kind, const char *message,
                           const char *traceback) {
  lua_createtable(L, 0, 10);
  set_str(L, "code", ip_err_name(code));
  set_str(L, "kind", kind ? kind : ip_err_name(code));
  set_str(L, "message", message ? message : ip_strerror(code));
  set_str(L, "traceback", traceback);
  luaL_getmetatable(L, LIP_ERROR_MT);
  lua_setmetatable(L, -2);
}

void lip_push_error(lua_State *L, int code, const char *message) {
  luaL_traceback(L, L, NULL, 1);
  lip_push_error_fields(L, code, NULL, message, lua_tostring(L, -1));
  lua_remove(L, -2);
}

int lip_raise(lua_State *L, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const char *msg = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lip_push_error(L, code, msg);
  return lua_error(L);
}

int lip_fail(lua_State *L, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const char *msg = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  const char *name = ip_err_name(code);
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", name, msg);
  lua_pushstring(L, name);
  lua_remove(L, -4);
  return 3;
}

void lip_push_call_error(lua_State *L, const ip_error *e) {
  lip_push_error_fields(L, e->code, e->kind, e->message, e->backtrace);
  if (e->pid) set_int(L, "pid", e->pid);
  if (e->signal) set_int(L, "signal", e->signal);
  if (e->exit_status >= 0) set_int(L, "exit_status", e->exit_status);
  if (e->raised_code) set_int(L, "raised_code", e->raised_code);
  lua_pushboolean(L, e->core_dumped);
  lua_setfield(L, -2, "core_dumped");
}

/* "CODE: message", then the stack: Lua's own "stack traceback:", or a crashed child's C
 * frames. */
static int error_tostring(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "code");
  lua_getfield(L, 1, "message");
  lua_getfield(L, 1, "traceback");
  const char *code = lua_tostring(L, -3), *m = lua_tostring(L, -2), *tb = lua_tostring(L, -1);
  if (!code) code = "ERROR";
  if (!m) m = "(no message)";
  if (!tb || !*tb) lua_pushfstring(L, "%s: %s", code, m);
  else if (strncmp(tb, "stack traceback:", 16) == 0) lua_pushfstring(L, "%s: %s\n%s", code, m, tb);
  else lua_pushfstring(L, "%s: %s\nchild backtrace:\n%s", code, m, tb);
  return 1;
}

void lip_errors_open(lua_State *L) {
  luaL_newmetatable(L, LIP_ERROR_MT);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "inparallel.error");
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
}

const char *lip_seconds_text(char *buf, double seconds) {
  snprintf(buf, 32, "%g", seconds);
  return buf;
}
