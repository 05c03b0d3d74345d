/* ip.task(fn [, opts]): the task userdata, its __call (the fork) and what the child does. */
#include "lip.h"
#include <limits.h>
#include <math.h>
#include <string.h>

/* ---- in the child --------------------------------------------------------------------------- */

/* Message handler of the child's pcalls: {value, traceback}, the traceback taken while the
 * failing stack still exists. */
static int child_msgh(lua_State *L) {
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  luaL_traceback(L, L, NULL, 1);
  lua_rawseti(L, -2, 2);
  return 1;
}

/* Fails the call with what a pcall that returned `status` left at the top of the stack: the
 * task's own error (code IP_ERAISED, its value sent along) or, with a prefix, an error of the
 * task's encode function (code and kind as given, the value only described). Does not
 * return. */
static _Noreturn void raise_pcall_error(lua_State *L, lip_task *lt, int status, int code,
                                        const char *kind, const char *prefix) {
  const char *tb = NULL;
  if (status == LUA_ERRRUN && lua_istable(L, -1)) { /* child_msgh's */
    lua_rawgeti(L, -1, 2);
    tb = lua_tostring(L, -1);
    lua_rawgeti(L, -2, 1);
  } /* else the handler did not run (LUA_ERRMEM) or failed (LUA_ERRERR): a message */
  if (!prefix) lip_child_raise(L, lt, -1, tb);
  const char *msg = lua_pushfstring(L, "%s%s", prefix, lip_describe(L, -1));
  ip_raise_error(code, 0, kind, msg, tb);
}

static const char *results_shape(lua_State *L, const lip_call *c) {
  if (c->nres != 1) return lua_pushfstring(L, "%d values", c->nres);
  return lua_pushfstring(L, "a %s", luaL_typename(L, c->first_res));
}

/* The ip_fn of every Lua task. In a forked child it runs on the stack of the __call that
 * forked (a copy of it); in a pool worker on the stack of the ip.pool that made the pool (a
 * copy of it too), where the argument decoder has just pushed the call's arguments. */
void *lip_child_main(void *arg) {
  lip_call *c = arg;
  lua_State *L = c->L;
  lip_task *lt = c->task;
  if (!lua_checkstack(L, c->nargs + 8)) ip_raise_error(IP_ENOMEM, 0, NULL, "no Lua stack for the arguments", NULL);
  lua_pushcfunction(L, child_msgh);
  int h = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->fn_ref);
  for (int i = 0; i < c->nargs; i++) lua_pushvalue(L, c->first_arg + i);
  int status = lua_pcall(L, c->nargs, LUA_MULTRET, h);
  if (status != 0) raise_pcall_error(L, lt, status, IP_ERAISED, "error", NULL);
  c->first_res = h + 1;
  c->nres = lua_gettop(L) - h;

  switch (lt->ser) {
  case LIP_SER_MSGPACK:
    return c;
  case LIP_SER_RAW:
    if (c->nres != 1 || lua_type(L, c->first_res) != LUA_TSTRING) {
      const char *got = results_shape(L, c);
      const char *msg = lua_pushfstring(L, "a task with the raw serializer must return exactly one "
                                           "string; it returned %s", got);
      ip_raise_error(IP_EENCODE, 0, "EENCODE", msg, NULL);
    }
    c->raw.data = (void *)lua_tolstring(L, c->first_res, &c->raw.len);
    /* Streamed from Lua's own memory: measured faster than copying into ip_bytes_alloc's
     * in-place memfd, since the parent has to copy into a Lua string anyway. */
    return &c->raw;
  case LIP_SER_CUSTOM:
  default: {
    if (!lua_checkstack(L, c->nres + 4)) ip_raise_error(IP_ENOMEM, 0, NULL, "no Lua stack for encode", NULL);
    lua_pushcfunction(L, child_msgh);
    int h2 = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lt->enc_ref);
    for (int i = 0; i < c->nres; i++) lua_pushvalue(L, c->first_res + i);
    status = lua_pcall(L, c->nres, 1, h2);
    if (status != 0)
      raise_pcall_error(L, lt, status, IP_EENCODE, "EENCODE", "the serializer's encode function failed: ");
    if (lua_type(L, -1) != LUA_TSTRING) {
      const char *msg = lua_pushfstring(L, "the serializer's encode function must return a string, "
                                           "not a %s", luaL_typename(L, -1));
      ip_raise_error(IP_EENCODE, 0, "EENCODE", msg, NULL);
    }
    c->raw.data = (void *)lua_tolstring(L, -1, &c->raw.len);
    return &c->raw;
  }
  }
}

/* ---- in the parent -------------------------------------------------------------------------- */

static lip_task *check_task(lua_State *L) {
  return (lip_task *)lip_checkudata(L, 1, &lip_task_key, LIP_TASK_MT);
}

lip_task *lip_task_check(lua_State *L, int i) {
  return (lip_task *)lip_checkudata(L, i, &lip_task_key, LIP_TASK_MT);
}

lip_future *lip_future_for(lua_State *L, int task, int first, int nargs) {
  lip_task *lt = (lip_task *)lua_touserdata(L, task);
  lip_future *uf = lip_future_new(L, lt->ser);
  uf->args_ref = lip_values_ref(L, first, nargs);
  uf->nargs = nargs;
  if (lt->ser == LIP_SER_CUSTOM) { /* its decode function decodes the results */
    lua_pushvalue(L, task);
    uf->task_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return uf;
}

void lip_task_call(lua_State *L, int task, int first, int nargs, int timeout_ms) {
  lip_task *lt = (lip_task *)lua_touserdata(L, task);
  lip_future *uf = lip_future_for(L, task, first, nargs);

  lip_call c;
  memset(&c, 0, sizeof c);
  c.L = L;
  c.task = lt;
  c.first_arg = first;
  c.nargs = nargs;
  if (timeout_ms >= 0) ip_task_set_timeout(lt->t, timeout_ms);
  ip_future *f = ip_call(lt->t, &c); /* the child never comes back from here */
  if (timeout_ms >= 0) ip_task_set_timeout(lt->t, lt->timeout_ms);
  if (!f) lip_raise(L, IP_ENOMEM, "out of memory for a future");
  uf->f = f; /* a call that could not start is a failed future, as in C */
}

/* task(...): fork, return a future at once. */
static int task_call(lua_State *L) {
  lip_task *lt = check_task(L);
  if (!lt->t) return luaL_error(L, "inparallel: this task was already collected");
  lip_task_call(L, 1, 2, lua_gettop(L) - 1, -1);
  return 1;
}

static int task_gc(lua_State *L) {
  lip_task *lt = check_task(L);
  if (lt->t) {
    ip_task_free(lt->t);
    lt->t = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, lt->fn_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, lt->enc_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, lt->dec_ref);
    lt->fn_ref = lt->enc_ref = lt->dec_ref = LUA_NOREF;
  }
  return 0;
}

static const char *const ser_names[] = {"msgpack", "raw", "custom"};

static int task_tostring(lua_State *L) {
  lip_task *lt = check_task(L);
  char secs[32] = "";
  if (lt->timeout_ms > 0) lip_seconds_text(secs, lt->timeout_ms / 1000.0);
  lua_pushfstring(L, "inparallel.task (%s%s%s%s): %p", ser_names[lt->ser],
                  *secs ? ", timeout " : "", secs, *secs ? " s" : "", (void *)lt);
  return 1;
}

/* The rule is lip.h's: > 0 seconds, math.huge for none, 0 and the rest raise. */
int lip_task_timeout_ms(lua_State *L, int idx, const char *who) {
  double s = lua_type(L, idx) == LUA_TNUMBER ? (double)lua_tonumber(L, idx) : -1;
  if (!(s > 0))
    return luaL_error(L, "%s: timeout must be a number of seconds > 0 (math.huge or nil = none), "
                         "not %s", who, lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx)
                         : lua_pushfstring(L, "a %s", luaL_typename(L, idx)));
  if (isinf(s)) return 0;
  double ms = ceil(s * 1000.0);
  return ms > INT_MAX ? INT_MAX : (int)ms;
}

static void option_serializer(lua_State *L, int v, lip_task *lt) {
  if (lua_type(L, v) == LUA_TSTRING) {
    const char *s = lua_tostring(L, v);
    if (strcmp(s, "msgpack") == 0) lt->ser = LIP_SER_MSGPACK;
    else if (strcmp(s, "raw") == 0) lt->ser = LIP_SER_RAW;
    else luaL_error(L, "inparallel.task: unknown serializer \"%s\" (use \"msgpack\", \"raw\" or "
                       "{encode = f, decode = g})", s);
    return;
  }
  if (!lua_istable(L, v))
    luaL_error(L, "inparallel.task: serializer must be \"msgpack\", \"raw\" or {encode = f, "
                  "decode = g}, not a %s", luaL_typename(L, v));
  lua_getfield(L, v, "encode");
  lua_getfield(L, v, "decode");
  if (!lua_isfunction(L, -2) || !lua_isfunction(L, -1))
    luaL_error(L, "inparallel.task: a serializer table needs encode and decode functions (got "
                  "encode = %s, decode = %s)", luaL_typename(L, -2), luaL_typename(L, -1));
  lt->dec_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lt->enc_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lt->ser = LIP_SER_CUSTOM;
}

/* The RLIMIT_* resources this platform has, by lower-case name. */
static const struct {
  const char *name;
  int resource;
} rlimits[] = {
#ifdef RLIMIT_AS
    {"as", RLIMIT_AS},
#endif
#ifdef RLIMIT_CORE
    {"core", RLIMIT_CORE},
#endif
#ifdef RLIMIT_CPU
    {"cpu", RLIMIT_CPU},
#endif
#ifdef RLIMIT_DATA
    {"data", RLIMIT_DATA},
#endif
#ifdef RLIMIT_FSIZE
    {"fsize", RLIMIT_FSIZE},
#endif
#ifdef RLIMIT_LOCKS
    {"locks", RLIMIT_LOCKS},
#endif
#ifdef RLIMIT_MEMLOCK
    {"memlock", RLIMIT_MEMLOCK},
#endif
#ifdef RLIMIT_MSGQUEUE
    {"msgqueue", RLIMIT_MSGQUEUE},
#endif
#ifdef RLIMIT_NICE
    {"nice", RLIMIT_NICE},
#endif
#ifdef RLIMIT_NOFILE
    {"nofile", RLIMIT_NOFILE},
#endif
#ifdef RLIMIT_NPROC
    {"nproc", RLIMIT_NPROC},
#endif
#ifdef RLIMIT_RSS
    {"rss", RLIMIT_RSS},
#endif
#ifdef RLIMIT_RTPRIO
    {"rtprio", RLIMIT_RTPRIO},
#endif
#ifdef RLIMIT_RTTIME
    {"rttime", RLIMIT_RTTIME},
#endif
#ifdef RLIMIT_SIGPENDING
    {"sigpending", RLIMIT_SIGPENDING},
#endif
#ifdef RLIMIT_STACK
    {"stack", RLIMIT_STACK},
#endif
};
#define N_RLIMITS (sizeof rlimits / sizeof *rlimits)

/* What ip.task's options ask of the core; applied once the task exists. */
typedef struct task_opts {
  int timeout_ms;      /* 0: none */
  uint64_t max_result; /* 0: the core's default */
  int stdio;           /* -1: the core's default */
  const char *name;    /* NULL: none; the string lives in the options table */
  size_t nrl;
  struct {
    int resource;
    rlim_t soft, hard;
  } rl[N_RLIMITS];
} task_opts;

/* Pushes and returns how an option's bad value reads in a message: a number's text, a quoted
 * string, else "a <type>". */
static const char *bad_value(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER) return lip_describe(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING) return lua_pushfstring(L, "\"%s\"", lua_tostring(L, idx));
  return lua_pushfstring(L, "a %s", luaL_typename(L, idx));
}

/* One limit: a whole number >= 0, or math.huge for none (RLIM_INFINITY). */
static rlim_t rlimit_number(lua_State *L, int idx, const char *name, const char *which) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
#if LIP_HAS_INTEGERS
    if (lua_isinteger(L, idx) && lua_tointeger(L, idx) >= 0) return (rlim_t)lua_tointeger(L, idx);
#endif
    double d = (double)lua_tonumber(L, idx);
    if (isinf(d) && d > 0) return RLIM_INFINITY;
    if (d >= 0 && d == floor(d) && d < 18446744073709551615.0) return (rlim_t)d;
  }
  luaL_error(L, "inparallel.task: rlimit.%s%s must be a whole number >= 0 (math.huge = "
                "unlimited), not %s", name, which, bad_value(L, idx));
  return 0;
}

/* rlimit = {nofile = 64, core = 0, as = {soft, hard}, ...} */
static void option_rlimit(lua_State *L, int v, task_opts *o) {
  if (!lua_istable(L, v))
    luaL_error(L, "inparallel.task: rlimit must be a table such as {nofile = 64, as = {soft, "
                  "hard}}, not a %s", luaL_typename(L, v));
  lua_pushnil(L);
  while (lua_next(L, v)) {
    int val = lua_gettop(L);
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    size_t r = 0;
    while (name && r < N_RLIMITS && strcmp(rlimits[r].name, name) != 0) r++;
    if (!name || r == N_RLIMITS) {
      const char *what = bad_value(L, val - 1);
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (size_t i = 0; i < N_RLIMITS; i++) {
        if (i) luaL_addstring(&b, ", ");
        luaL_addstring(&b, rlimits[i].name);
      }
      luaL_pushresult(&b);
      luaL_error(L, "inparallel.task: unknown rlimit %s (this platform has: %s)", what,
                 lua_tostring(L, -1));
    }
    rlim_t soft, hard;
    if (lua_istable(L, val)) {
      lua_rawgeti(L, val, 1);
      lua_rawgeti(L, val, 2);
      if (lua_rawlen(L, val) != 2)
        luaL_error(L, "inparallel.task: rlimit.%s must be a number or {soft, hard}", name);
      soft = rlimit_number(L, val + 1, name, "[1] (soft)");
      hard = rlimit_number(L, val + 2, name, "[2] (hard)");
      if (soft > hard)
        luaL_error(L, "inparallel.task: rlimit.%s: the soft limit is above the hard one", name);
    } else {
      soft = hard = rlimit_number(L, val, name, "");
    }
    o->rl[o->nrl].resource = rlimits[r].resource;
    o->rl[o->nrl].soft = soft;
    o->rl[o->nrl].hard = hard;
    o->nrl++;
    lua_settop(L, val - 1);
  }
}

/* The stdio policies, named after the C flags (IP_STDIO_*), as the Ruby gem names them. */
static int stdio_flag(lua_State *L, int idx) {
  const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
  if (s && strcmp(s, "purge_inherited") == 0) return IP_STDIO_PURGE_INHERITED;
  if (s && strcmp(s, "flush_std") == 0) return IP_STDIO_FLUSH_STD;
  if (s && strcmp(s, "flush_all") == 0) return IP_STDIO_FLUSH_ALL;
  if (s && strcmp(s, "none") == 0) return 0;
  return luaL_error(L, "inparallel.task: unknown stdio policy %s (use \"purge_inherited\", "
                       "\"flush_std\", \"flush_all\", \"none\" or a list of them)", bad_value(L, idx));
}

/* stdio = "purge_inherited" | "flush_std" | "flush_all" | "none" | {"purge_inherited", ...}: the
 * names of the C flags (IP_STDIO_*), as the Ruby gem takes them */
static void option_stdio(lua_State *L, int v, task_opts *o) {
  if (!lua_istable(L, v)) {
    o->stdio = stdio_flag(L, v);
    return;
  }
  o->stdio = 0;
  int n = (int)lua_rawlen(L, v);
  lua_pushnil(L);
  while (lua_next(L, v)) { /* a list, nothing else */
    if (!(lua_type(L, -2) == LUA_TNUMBER && lua_tonumber(L, -2) >= 1 && lua_tonumber(L, -2) <= n))
      luaL_error(L, "inparallel.task: stdio must be a policy or a list of policies, such as "
                    "{\"purge_inherited\", \"flush_std\"}");
    o->stdio |= stdio_flag(L, -1);
    lua_pop(L, 1);
  }
}

static uint64_t option_max_result(lua_State *L, int v) {
  if (lua_type(L, v) == LUA_TNUMBER) {
    double d = (double)lua_tonumber(L, v);
    if (isinf(d) && d > 0) return UINT64_MAX;
    if (d >= 1 && d == floor(d)) return d >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)d;
  }
  luaL_error(L, "inparallel.task: max_result must be a whole number of bytes >= 1 (math.huge = "
                "no limit), not %s", bad_value(L, v));
  return 0;
}

/* ip.task(fn [, opts]) -> callable task */
int lip_task_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lip_task *lt = (lip_task *)lua_newuserdata(L, sizeof *lt);
  lt->t = NULL;
  lt->fn_ref = lt->enc_ref = lt->dec_ref = LUA_NOREF;
  lt->ser = LIP_SER_MSGPACK;
  lt->timeout_ms = 0;
  lt->serial = 0;
  memset(&lt->args, 0, sizeof lt->args);
  lip_setmetatable(L, &lip_task_key); /* from here on __gc releases whatever the options took */

  task_opts o;
  memset(&o, 0, sizeof o);
  o.stdio = -1;
  if (lua_istable(L, 2)) {
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
      int v = lua_gettop(L);
      if (k && strcmp(k, "serializer") == 0) option_serializer(L, v, lt);
      else if (k && strcmp(k, "timeout") == 0) o.timeout_ms = lip_task_timeout_ms(L, v, "inparallel.task");
      else if (k && strcmp(k, "max_result") == 0) o.max_result = option_max_result(L, v);
      else if (k && strcmp(k, "rlimit") == 0) option_rlimit(L, v, &o);
      else if (k && strcmp(k, "stdio") == 0) option_stdio(L, v, &o);
      else if (k && strcmp(k, "name") == 0) o.name = luaL_checkstring(L, v);
      else if (k)
        luaL_error(L, "inparallel.task: unknown option '%s' (known: serializer, timeout, "
                      "max_result, rlimit, stdio, name)", k);
      else
        luaL_error(L, "inparallel.task: option names are strings, not %s", luaL_typename(L, -2));
      lua_settop(L, v - 1);
    }
  }
  const ip_serializer *s = lt->ser == LIP_SER_MSGPACK ? lip_msgpack_serializer() : ip_serializer_raw();
  lt->t = ip_task_new(lip_child_main, s);
  if (!lt->t) return lip_raise(L, -errno, "inparallel.task: %s", ip_strerror(-errno));
  lt->serial = lip_next_serial();
  lt->args = *lip_args_serializer();
  ip_task_set_arg_serializer(lt->t, &lt->args);
  lt->timeout_ms = o.timeout_ms;
  if (o.timeout_ms > 0) ip_task_set_timeout(lt->t, o.timeout_ms);
  if (o.max_result) ip_task_set_max_result(lt->t, o.max_result);
  if (o.stdio >= 0) ip_task_set_stdio(lt->t, o.stdio);
  for (size_t i = 0; i < o.nrl; i++) {
    int rc = ip_task_set_rlimit(lt->t, o.rl[i].resource, o.rl[i].soft, o.rl[i].hard);
    if (rc == IP_ENOMEM)
      return luaL_error(L, "inparallel.task: rlimit sets at most 8 limits, not %d", (int)o.nrl);
    if (rc < 0) return luaL_error(L, "inparallel.task: rlimit: %s", ip_strerror(rc));
  }
  if (o.name) {
    int rc = ip_task_set_name(lt->t, o.name);
    if (rc == IP_EALREADY)
      return lip_raise(L, rc, "inparallel.task: another task is named \"%s\" already", o.name);
    if (rc < 0)
      return lip_raise(L, rc, "inparallel.task: name must be 1 to 255 bytes, not %d",
                       (int)strlen(o.name));
  }
  lua_pushvalue(L, 1);
  lt->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

void lip_task_open(lua_State *L) {
  static const luaL_Reg mt[] = {
      {"__call", task_call}, {"__gc", task_gc}, {"__tostring", task_tostring}, {NULL, NULL}};
  lip_class(L, LIP_TASK_MT, &lip_task_key, mt, NULL);
}
