/* Error values. Every failure the module raises is an error table with metatable
 * inparallel.error: {code = "ETIMEDOUT" (the code's name), message, traceback, kind, ...}, and
 * tostring() gives "CODE: message" followed by the traceback. The few functions that return
 * their failures instead (f:wait, f:cancel, ip.ready_fd) do it the luv way:
 * nil, "CODE: message", "CODE". Misuse (a wrong argument) raises Lua's usual string error.
 *
 * A value other than a string that a task raises (error({code = 42})) reaches the parent as
 * the error table's `value`. The child fails the call through the core's ip_raise_error, whose
 * strings are text, so the value travels in the message: the kind is VALUE_KIND and the
 * message is the base64 of the value's encoding by the task's serializer (msgpack for raw
 * tasks, whose serializer carries strings only), a newline, then what the value says about
 * itself. The parent decodes it and gives the table the kind "error" and that description as
 * its message. A value that cannot be encoded is not sent: the message is its description
 * with a note saying why. */
#include "lip.h"
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VALUE_KIND "lua-error-value"
/* The core cuts a longer message. */
#define MESSAGE_MAX (((size_t)1 << 20) - 1)

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

static int push_raised_value(lua_State *L, lip_future *uf, const char *b64, size_t n);

void lip_push_call_error(lua_State *L, lip_future *uf, const ip_error *e) {
  const char *nl;
  if (e->code == IP_ERAISED && strcmp(e->kind, VALUE_KIND) == 0 &&
      (nl = strchr(e->message, '\n')) != NULL) {
    const char *desc = nl + 1;
    if (push_raised_value(L, uf, e->message, (size_t)(nl - e->message)) == 0) {
      lip_push_error_fields(L, e->code, "error", desc, e->backtrace);
      lua_insert(L, -2);
      lua_setfield(L, -2, "value");
    } else {
      const char *m = lua_pushfstring(L, "%s (its value could not be decoded: %s)", desc,
                                      lua_tostring(L, -1));
      lip_push_error_fields(L, e->code, "error", m, e->backtrace);
      lua_replace(L, -3);
      lua_pop(L, 1);
    }
  } else {
    lip_push_error_fields(L, e->code, e->kind, e->message, e->backtrace);
  }
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

/* ---- raised values -------------------------------------------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_len(size_t n) { return (n + 2) / 3 * 4; }

/* Writes the base64 of in[0..n) to out (b64_len(n) bytes, no terminator). */
static void b64_encode(const unsigned char *in, size_t n, char *out) {
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
    if (i + 2 < n) v |= in[i + 2];
    *out++ = B64[v >> 18];
    *out++ = B64[(v >> 12) & 63];
    *out++ = i + 1 < n ? B64[(v >> 6) & 63] : '=';
    *out++ = i + 2 < n ? B64[v & 63] : '=';
  }
}

static int b64_digit(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Decodes in[0..n) into out (at least n / 4 * 3 bytes); returns the length, or -1 when it is
 * not base64. The text comes from another process: everything is checked. */
static long b64_decode(const char *in, size_t n, unsigned char *out) {
  if (n % 4) return -1;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 4) {
    int d[4], pad = 0;
    for (int k = 0; k < 4; k++) {
      if (in[i + k] == '=' && i + 4 == n && k >= 2) {
        d[k] = 0;
        pad++;
      } else if (pad || (d[k] = b64_digit(in[i + k])) < 0) {
        return -1;
      }
    }
    uint32_t v = (uint32_t)d[0] << 18 | (uint32_t)d[1] << 12 | (uint32_t)d[2] << 6 | (uint32_t)d[3];
    out[o++] = (unsigned char)(v >> 16);
    if (pad < 2) out[o++] = (unsigned char)(v >> 8);
    if (pad < 1) out[o++] = (unsigned char)v;
  }
  return (long)o;
}

static lip_task *task_of(lua_State *L, lip_future *uf) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, uf->task_ref);
  lip_task *lt = (lip_task *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return lt;
}

/* Parent: pushes the value the base64 text b64[0..n) holds, decoded as the future's task
 * encoded it, and returns 0; or pushes why not and returns -1. */
static int push_raised_value(lua_State *L, lip_future *uf, const char *b64, size_t n) {
  unsigned char *bytes = malloc(n / 4 * 3 + 1);
  if (!bytes) {
    lua_pushliteral(L, "out of memory");
    return -1;
  }
  long len = b64_decode(b64, n, bytes);
  if (len < 0) {
    free(bytes);
    lua_pushliteral(L, "its encoding is damaged");
    return -1;
  }
  lip_task *lt = task_of(L, uf);
  if (uf->ser != LIP_SER_CUSTOM || !lt || lt->dec_ref == LUA_NOREF) {
    int rc = lip_msgpack_push_value(L, bytes, (size_t)len);
    free(bytes);
    return rc;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->dec_ref);
  lua_pushlstring(L, (const char *)bytes, (size_t)len);
  free(bytes);
  if (lua_pcall(L, 1, 1, 0) != 0) { /* error value */
    lua_pushfstring(L, "the serializer's decode function failed: %s", lip_describe(L, -1));
    lua_replace(L, -3); /* why, description */
    lua_pop(L, 1);
    return -1;
  }
  return 0;
}

/* Child: the encoding of the value at v by the task's serializer, malloc()ed, or NULL with why
 * pushed. At most `max` bytes. */
static char *encode_raised_value(lua_State *L, lip_task *lt, int v, size_t max, size_t *len) {
  if (lt->ser != LIP_SER_CUSTOM) {
    char why[700];
    char *buf = lip_msgpack_pack_value(L, v, max, len, why, sizeof why);
    if (!buf) lua_pushstring(L, why);
    return buf;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->enc_ref);
  lua_pushvalue(L, v);
  if (lua_pcall(L, 1, 1, 0) != 0) {
    const char *d = lip_describe(L, -1);
    lua_pushfstring(L, "the serializer's encode function failed: %s", d);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING) {
    lua_pushfstring(L, "the serializer's encode function returned a %s, not a string",
                    luaL_typename(L, -1));
    return NULL;
  }
  const char *s = lua_tolstring(L, -1, len);
  if (*len > max) {
    lua_pushfstring(L, "its encoding takes more than %d bytes", (int)max);
    return NULL;
  }
  char *buf = malloc(*len + 1);
  if (!buf) {
    lua_pushliteral(L, "out of memory");
    return NULL;
  }
  memcpy(buf, s, *len);
  return buf;
}

void lip_child_raise(lua_State *L, lip_task *lt, int v, const char *traceback) {
  v = lua_absindex(L, v);
  size_t dlen;
  lip_describe(L, v);
  const char *desc = lua_tolstring(L, -1, &dlen);
  int t = lua_type(L, v);
  if (t == LUA_TSTRING || t == LUA_TNIL) ip_raise_error(IP_ERAISED, 0, "error", desc, traceback);

  /* What fits in the message next to the description, once in base64. */
  size_t room = dlen + 1 < MESSAGE_MAX ? (MESSAGE_MAX - dlen - 1) / 4 * 3 : 0;
  size_t len = 0;
  char *bytes = encode_raised_value(L, lt, v, room, &len);
  if (!bytes) {
    const char *m = lua_pushfstring(L, "%s (the value was not sent: %s)", desc, lua_tostring(L, -1));
    ip_raise_error(IP_ERAISED, 0, "error", m, traceback);
  }
  size_t n = b64_len(len);
  char *msg = malloc(n + 1 + dlen + 1);
  if (!msg) {
    const char *m = lua_pushfstring(L, "%s (the value was not sent: out of memory)", desc);
    ip_raise_error(IP_ERAISED, 0, "error", m, traceback);
  }
  b64_encode((const unsigned char *)bytes, len, msg);
  msg[n] = '\n';
  memcpy(msg + n + 1, desc, dlen + 1);
  ip_raise_error(IP_ERAISED, 0, VALUE_KIND, msg, traceback);
}
