/* ip.pool(workers [, opts]): the pool userdata, pool:call, and how a call's arguments travel.
 *
 * A pool's workers are forks of a template that the core forks in ip_pool_new, so each worker
 * runs on a copy of this process as it was then: the Lua state included, stopped inside the
 * ip.pool call that made the pool. A worker runs its calls on that Lua thread, above the
 * stack slots ip.pool had in use: the task's function is found through its registry
 * reference (made when the task was made, so it is in the copy), its arguments are decoded
 * and pushed there, and its results leave through the task's serializer as a forked call's
 * do. The stack is cut back to those slots before each call.
 *
 * Arguments always travel as msgpack: an array of the call's arguments, encoded in the caller
 * from its stack while ip_pool_call copies them into the call's message. */
#include "lip.h"
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

static _Atomic unsigned long serials = 1;

unsigned long lip_next_serial(void) { return serials++; }

/* ---- the arguments' serializer ---------------------------------------------------------------- */

/* What ip_pool_call hands the serializer's encode: the arguments on the caller's stack. */
typedef struct args_ref {
  lua_State *L;
  int first, nargs;
  char why[700]; /* why they could not be encoded, if they could not */
} args_ref;

static int args_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  (void)s;
  args_ref *a = (args_ref *)value;
  int rc = lip_msgpack_pack_args(a->L, a->first, a->nargs, w, ctx, a->why, sizeof a->why);
  if (rc != 0 && !a->why[0]) snprintf(a->why, sizeof a->why, "%s", ip_strerror(rc));
  return rc != 0 ? IP_EENCODE : 0;
}

/* Where a worker runs its calls: the Lua thread that called ip.pool, and the stack slots it
 * had in use. Set by ip.pool just before ip_pool_new forks the template; the template and its
 * workers keep the values of that moment (each pool's workers their own pool's), and the
 * thread that forks is the thread that set them. */
static _Thread_local struct {
  lua_State *L;
  int base;
} home;

/* The state of the call a worker runs (see lip_call in lip.h). */
static lip_call worker_call;

typedef struct blob {
  const void *buf;
  size_t len;
} blob;

static int push_args(lua_State *L) {
  const blob *b = (const blob *)lua_touserdata(L, 1);
  lua_pop(L, 1);
  int n = lip_msgpack_push_args(L, b->buf, b->len);
  if (n < 0) return lua_error(L);
  return n;
}

/* In a worker: pushes the call's arguments onto the worker's Lua stack and hands the task
 * function (lip_child_main) the call's state. The serializer is the task's own copy, so it
 * leads to the task. A failure here fails the call alone with IP_EDECODE (the worker says
 * which serializer failed on how many bytes; a Lua message would have no way through). */
static int args_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  lip_task *lt = (lip_task *)(void *)((char *)(uintptr_t)s - offsetof(lip_task, args));
  lua_State *L = home.L;
  if (!L) return IP_EDECODE; /* not a worker of a pool that ip.pool made */
  lua_settop(L, home.base);
  blob b = {buf, len};
  lua_pushcfunction(L, push_args);
  lua_pushlightuserdata(L, &b);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != 0) {
    lua_settop(L, home.base);
    return IP_EDECODE;
  }
  memset(&worker_call, 0, sizeof worker_call);
  worker_call.L = L;
  worker_call.task = lt;
  worker_call.first_arg = home.base + 1;
  worker_call.nargs = lua_gettop(L) - home.base;
  *value = &worker_call;
  return 0;
}

static const ip_serializer args_serializer = {
    .abi = IP_SERIALIZER_ABI,
    .name = "lua-msgpack-args",
    .encode = args_encode,
    .decode = args_decode,
};

const ip_serializer *lip_args_serializer(void) { return &args_serializer; }

/* ---- the pool --------------------------------------------------------------------------------- */

static lip_pool *check_pool(lua_State *L, int i) {
  return (lip_pool *)lip_checkudata(L, i, &lip_pool_key, LIP_POOL_MT);
}

void lip_pool_close(lip_pool *lp) {
  if (lp->p) {
    ip_pool *p = lp->p;
    lp->p = NULL;
    ip_pool_free(p); /* fails the calls still queued or running with ECANCELED */
  }
}

lip_pool *lip_pool_push_new(lua_State *L, int workers, unsigned max_calls, size_t max_rss) {
  lip_pool *lp = (lip_pool *)lua_newuserdata(L, sizeof *lp);
  lp->p = NULL;
  lp->workers = workers;
  lip_setmetatable(L, &lip_pool_key);
  lp->epoch = lip_next_serial();
  home.L = L;
  home.base = lua_gettop(L);
  ip_pool *p = ip_pool_new(workers);
  if (!p) {
    int code = -errno;
    lip_raise(L, code, "inparallel.pool: could not start %d workers: %s", workers,
              ip_strerror(code));
  }
  if (max_calls) ip_pool_set_max_calls(p, max_calls);
  if (max_rss) ip_pool_set_max_rss(p, max_rss);
  lp->p = p;
  return lp;
}

static void set_home(lua_State *L, int base) {
  home.L = L;
  home.base = base;
}

static void push_pool(lua_State *L, ip_pool *p) {
  lip_pool *lp = (lip_pool *)lua_newuserdata(L, sizeof *lp);
  lp->p = p;
  lp->workers = ip_pool_workers(p);
  lp->epoch = (unsigned long)-1; /* its workers find tasks by name, however new */
  lip_setmetatable(L, &lip_pool_key);
}

static int raise_msg(lua_State *L, int code, const char *msg) {
  return lip_raise(L, code, "%s", msg);
}

void lip_api_open(lua_State *L) {
  static const lip_api api = {LIP_API_VERSION, set_home, push_pool, raise_msg};
  lua_pushlightuserdata(L, (void *)&api);
  lua_setfield(L, LUA_REGISTRYINDEX, LIP_API);
}

/* A whole number >= lo (lua_Integer or an integral float), or raises with `what`. */
static double whole_number(lua_State *L, int idx, double lo, double hi, const char *what) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
    double d = (double)lua_tonumber(L, idx);
    if (d >= lo && d <= hi && d == floor(d)) return d;
    luaL_error(L, "%s, not %s", what, lua_tostring(L, idx));
  }
  luaL_error(L, "%s, not a %s", what, luaL_typename(L, idx));
  return 0;
}

/* ip.pool(workers [, {max_calls = n, max_rss = bytes}]) -> pool */
int lip_pool_new(lua_State *L) {
  if (lua_type(L, 1) != LUA_TNUMBER)
    return luaL_argerror(L, 1, lua_pushfstring(L, "the number of workers must be a positive "
                                                  "integer, not a %s", luaL_typename(L, 1)));
  double w = (double)lua_tonumber(L, 1);
  if (!(w >= 1 && w <= 65536 && w == floor(w)))
    return luaL_argerror(L, 1, lua_pushfstring(L, "the number of workers must be a positive "
                                                  "integer (at most 65536), not %s",
                                               lua_tostring(L, 1)));
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  unsigned max_calls = 0;
  size_t max_rss = 0;
  if (lua_istable(L, 2)) {
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
      if (k && strcmp(k, "max_calls") == 0)
        max_calls = (unsigned)whole_number(L, -1, 0, 4294967295.0, "inparallel.pool: max_calls "
                                           "must be a whole number >= 0 (0 = no limit)");
      else if (k && strcmp(k, "max_rss") == 0)
        max_rss = (size_t)whole_number(L, -1, 0, 9007199254740992.0, "inparallel.pool: max_rss "
                                       "must be a whole number of bytes >= 0 (0 = no limit)");
      else if (k)
        luaL_error(L, "inparallel.pool: unknown option '%s' (known: max_calls, max_rss)", k);
      else
        luaL_error(L, "inparallel.pool: option names are strings, not %s", luaL_typename(L, -2));
      lua_pop(L, 1);
    }
  }
  lip_pool_push_new(L, (int)w, max_calls, max_rss);
  return 1;
}

void lip_pool_call(lua_State *L, int pool, int task, int first, int nargs, int timeout_ms) {
  lip_pool *lp = (lip_pool *)lua_touserdata(L, pool);
  lip_task *lt = (lip_task *)lua_touserdata(L, task);
  lip_future *uf = lip_future_for(L, task, first, nargs);
  lua_pushvalue(L, pool);
  uf->pool_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  args_ref a;
  a.L = L;
  a.first = first;
  a.nargs = nargs;
  a.why[0] = '\0';
  if (timeout_ms >= 0) ip_task_set_timeout(lt->t, timeout_ms);
  ip_future *f = ip_pool_call(lp->p, lt->t, &a);
  if (timeout_ms >= 0) ip_task_set_timeout(lt->t, lt->timeout_ms);
  if (!f) lip_raise(L, IP_ENOMEM, "out of memory for a future");
  uf->f = f;
  /* The core failed these calls at once, in its own words; say it in the binding's. */
  const char *why = NULL;
  int code = 0;
  if (a.why[0]) {
    code = IP_EENCODE, why = a.why;
  } else if (lt->serial >= lp->epoch) {
    code = IP_EINVAL;
    why = "pool:call: the task was made after the pool, and the pool's workers run on a copy of "
          "the Lua state as it was when ip.pool made them, which does not have it; make the "
          "task before the pool";
  }
  if (why) {
    lip_push_error_fields(L, code, NULL, why, NULL);
    uf->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

/* pool:call(task, ...) -> future */
static int pool_call(lua_State *L) {
  lip_pool *lp = check_pool(L, 1);
  lip_task *lt = lip_task_check(L, 2);
  if (!lp->p) return luaL_error(L, "inparallel: pool:call on a closed pool");
  if (!lt->t) return luaL_error(L, "inparallel: this task was already collected");
  lip_pool_call(L, 1, 2, 3, lua_gettop(L) - 2, -1);
  return 1;
}

/* pool:workers() -> how many workers the pool has now (0 once closed) */
static int pool_workers(lua_State *L) {
  lip_pool *lp = check_pool(L, 1);
  int n = lp->p ? ip_pool_workers(lp->p) : 0;
  lua_pushinteger(L, n < 0 ? 0 : n);
  return 1;
}

/* pool:close(), __close and __gc: fails the calls still queued or running with ECANCELED,
 * ends the workers. Idempotent. */
static int pool_close(lua_State *L) {
  lip_pool_close(check_pool(L, 1));
  return 0;
}

static int pool_tostring(lua_State *L) {
  lip_pool *lp = check_pool(L, 1);
  if (lp->p) lua_pushfstring(L, "inparallel.pool (%d workers): %p", lp->workers, (void *)lp);
  else lua_pushfstring(L, "inparallel.pool (closed): %p", (void *)lp);
  return 1;
}

void lip_pool_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"call", pool_call}, {"workers", pool_workers}, {"close", pool_close}, {NULL, NULL}};
  static const luaL_Reg mt[] = {
      {"__gc", pool_close}, {"__close", pool_close}, {"__tostring", pool_tostring}, {NULL, NULL}};
  lip_class(L, LIP_POOL_MT, &lip_pool_key, mt, methods);
}
