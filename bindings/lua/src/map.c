/* ip.map(fn_or_task, list [, opts]): fn(list[i]) for every i, on a pool (its own, or the one
 * given) or a fork per item, the results in the list's order. A few calls per worker are in
 * flight at a time (the core's waitfor with a concurrency factor). The first failure it sees
 * stops it: nothing more starts, what is in flight is canceled, and the failure of the lowest
 * index seen is raised, its index in the error table and in its message. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "lip.h"
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

/* The in-flight list, freed by __gc whatever way ip.map ends. */
typedef struct map_state {
  ip_list *l;
} map_state;

static int map_gc(lua_State *L) {
  map_state *ms = (map_state *)luaL_checkudata(L, 1, LIP_MAP_MT);
  ip_list_free(ms->l); /* the futures stay Lua's, freed by their own __gc */
  ms->l = NULL;
  return 0;
}

static int cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 && n < INT_MAX ? (int)n : 1;
}

typedef struct map_opts {
  int workers;    /* 0: not given */
  int isolation;
  int timeout_ms; /* -1: not given */
  double timeout_s; /* the same, as given */
  int pool;       /* stack slot of the pool given, or 0 */
  int progress;   /* stack slot of the progress function */
} map_opts;

static void parse_opts(lua_State *L, int t, map_opts *o) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int v = lua_gettop(L);
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (k && strcmp(k, "workers") == 0) {
      double d = lua_type(L, v) == LUA_TNUMBER ? (double)lua_tonumber(L, v) : 0;
      if (!(d >= 1 && d <= 65536 && d == floor(d)))
        luaL_error(L, "ip.map: workers must be a positive integer, not %s",
                   lua_type(L, v) == LUA_TNUMBER ? lua_tostring(L, v)
                                                 : lua_pushfstring(L, "a %s", luaL_typename(L, v)));
      o->workers = (int)d;
    } else if (k && strcmp(k, "isolation") == 0) {
      if (lua_type(L, v) != LUA_TBOOLEAN)
        luaL_error(L, "ip.map: isolation must be a boolean, not a %s", luaL_typename(L, v));
      o->isolation = lua_toboolean(L, v);
    } else if (k && strcmp(k, "timeout") == 0) {
      o->timeout_ms = lip_task_timeout_ms(L, v, "ip.map");
      o->timeout_s = (double)lua_tonumber(L, v);
    } else if (k && strcmp(k, "pool") == 0) {
      lip_pool *lp = (lip_pool *)lip_testudata(L, v, &lip_pool_key);
      if (!lp) luaL_error(L, "ip.map: pool must be a pool from ip.pool, not a %s", luaL_typename(L, v));
      if (!lp->p) luaL_error(L, "ip.map: the pool is closed");
      lua_pushvalue(L, v);
      lua_replace(L, o->pool); /* its own slot, reserved by the caller */
    } else if (k && strcmp(k, "progress") == 0) {
      if (!lua_isfunction(L, v) && !lua_isnil(L, v))
        luaL_error(L, "ip.map: progress must be a function (called with the items done and "
                      "their total), not a %s", luaL_typename(L, v));
      lua_pushvalue(L, v);
      lua_replace(L, o->progress);
    } else if (k) {
      luaL_error(L, "ip.map: unknown option '%s' (known: workers, isolation, timeout, pool, "
                    "progress)", k);
    } else {
      luaL_error(L, "ip.map: option names are strings, not %s", luaL_typename(L, -2));
    }
    lua_settop(L, v - 1);
  }
}

/* Stack slots. */
enum { FN = 1, LIST, OPTS, RESULTS, TASK, POOL, PROGRESS, STATE, LIVE, INDEX, ERR };

/* The index of the future at the top of the stack's call, from INDEX. */
static int index_of(lua_State *L, ip_future *f) {
  lua_pushlightuserdata(L, f);
  lua_rawget(L, INDEX);
  int i = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return i;
}

/* Raises the failure at ERR, a copy of the call's error table with its index. */
static int raise_failure(lua_State *L, int index) {
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, ERR)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_getfield(L, ERR, "message");
  lua_pushfstring(L, "ip.map: item %d: %s", index, lua_tostring(L, -1));
  lua_setfield(L, -3, "message");
  lua_pop(L, 1);
  lua_pushinteger(L, index);
  lua_setfield(L, -2, "index");
  luaL_getmetatable(L, LIP_ERROR_MT);
  lua_setmetatable(L, -2);
  return lua_error(L);
}

/* Stops what is in flight: a pool of the map's own is closed (its workers end at once and every
 * call left fails ECANCELED), else each call in the list is canceled. */
static void stop_calls(lip_pool *lp, int own, ip_list *l) {
  if (own) {
    lip_pool_close(lp);
    return;
  }
  for (size_t k = 0; k < ip_list_len(l); k++) ip_future_cancel(ip_list_at(l, k));
}

int lip_map(lua_State *L) {
  int isfn = lua_isfunction(L, FN);
  lip_task *given = (lip_task *)lip_testudata(L, FN, &lip_task_key);
  if (!isfn && !given)
    return luaL_argerror(L, FN, lua_pushfstring(L, "a function or a task (ip.task) expected, got %s",
                                                luaL_typename(L, FN)));
  if (given && !given->t) return luaL_error(L, "inparallel: this task was already collected");
  luaL_checktype(L, LIST, LUA_TTABLE);
  if (!lua_isnoneornil(L, OPTS)) luaL_checktype(L, OPTS, LUA_TTABLE);
  lua_settop(L, OPTS);
  int n = (int)lua_rawlen(L, LIST);
  lua_createtable(L, n, 0); /* RESULTS */
  lua_pushnil(L);           /* TASK */
  lua_pushnil(L);           /* POOL */
  lua_pushnil(L);           /* PROGRESS */
  map_opts o = {0, 0, -1, 0, POOL, PROGRESS};
  if (lua_istable(L, OPTS)) parse_opts(L, OPTS, &o);
  lip_pool *lp = (lip_pool *)lip_testudata(L, POOL, &lip_pool_key);
  if (lp && o.isolation)
    return luaL_error(L, "ip.map: pool and isolation = true do not go together (isolation forks "
                         "a process per item)");
  if (lp && o.workers)
    return luaL_error(L, "ip.map: workers and pool do not go together (the pool has its workers)");
  if (lp && isfn)
    return luaL_error(L, "ip.map: with pool = p, pass a task made before p (ip.task(fn), then "
                         "ip.pool): p's workers run on a copy of the Lua state as it was when "
                         "ip.pool made them, and a function passed here would become a task "
                         "only now");
  if (lp && given->serial >= lp->epoch)
    return luaL_error(L, "ip.map: the task was made after the pool, and the pool's workers run "
                         "on a copy of the Lua state as it was when ip.pool made them, which "
                         "does not have it; make the task before the pool");
  if (n == 0) {
    lua_settop(L, RESULTS);
    return 1;
  }

  if (isfn) { /* a task of our own, before the pool of our own */
    lua_pushcfunction(L, lip_task_new);
    lua_pushvalue(L, FN);
    lua_createtable(L, 0, 1);
    if (o.timeout_ms >= 0) {
      lua_pushnumber(L, (lua_Number)o.timeout_s);
      lua_setfield(L, -2, "timeout");
    }
    lua_call(L, 2, 1);
  } else {
    lua_pushvalue(L, FN);
  }
  lua_replace(L, TASK);
  int timeout_ms = isfn ? -1 : o.timeout_ms; /* a given task's own, replaced for these calls */
  int workers = o.workers ? o.workers : cpu_count();
  int own = 0;
  if (!lp && !o.isolation) {
    lp = lip_pool_push_new(L, workers < n ? workers : n, 0, 0);
    lua_replace(L, POOL);
    own = 1;
  }
  int cf;
  if (lp) {
    int w = own ? lp->workers : ip_pool_workers(lp->p);
    cf = 2 * (w > 0 ? w : 1); /* the core sends each worker the call it runs and the next */
  } else {
    cf = workers;
  }

  map_state *ms = (map_state *)lua_newuserdata(L, sizeof *ms); /* STATE */
  ms->l = NULL;
  luaL_getmetatable(L, LIP_MAP_MT);
  lua_setmetatable(L, -2);
  if (!(ms->l = ip_list_new())) return luaL_error(L, "ip.map: out of memory");
  lua_newtable(L); /* LIVE: index -> future */
  lua_newtable(L); /* INDEX: ip_future* -> index */
  lua_pushnil(L);  /* ERR */

  ip_waitfor w = IP_WAITFOR_INIT;
  int next = 1, failed = 0, stopped = 0, done = 0, rc;
  ip_future *out;
  while ((rc = ip_waitfor_step(&w, ms->l, cf, -1, &out)) > 0) {
    if (rc == IP_WAITFOR_ASK) {
      if (stopped || next > n) continue;
      lua_rawgeti(L, LIST, next);
      int arg = lua_gettop(L);
      if (lp) lip_pool_call(L, POOL, TASK, arg, 1, timeout_ms);
      else lip_task_call(L, TASK, arg, 1, timeout_ms);
      lip_future *uf = (lip_future *)lua_touserdata(L, -1);
      if (ip_list_push(ms->l, uf->f) < 0) return luaL_error(L, "ip.map: out of memory");
      lua_pushlightuserdata(L, uf->f);
      lua_pushinteger(L, next);
      lua_rawset(L, INDEX);
      lua_rawseti(L, LIVE, next);
      lua_settop(L, ERR);
      next++;
      continue;
    }
    int i = index_of(L, out);
    lua_pushlightuserdata(L, out);
    lua_pushnil(L);
    lua_rawset(L, INDEX);
    lua_rawgeti(L, LIVE, i);
    lip_future *uf = (lip_future *)lua_touserdata(L, -1);
    lua_pushnil(L);
    lua_rawseti(L, LIVE, i);
    if (lip_future_settle(L, uf)) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, uf->err_ref);
      lua_getfield(L, -1, "code");
      /* once stopped, the calls canceled on the way out are not failures of their own */
      int canceled = stopped && strcmp(lua_tostring(L, -1), "ECANCELED") == 0;
      lua_pop(L, 1);
      if (!canceled && (!failed || i < failed)) {
        failed = i;
        lua_replace(L, ERR);
      }
      if (!stopped) {
        stopped = 1;
        stop_calls(lp, own, ms->l);
      }
    } else {
      if (lip_push_values(L, uf->vals_ref, uf->nvals) > 0) {
        lua_settop(L, ERR + 2); /* the future and the first value */
        lua_rawseti(L, RESULTS, i);
      }
      done++;
    }
    lip_future_release(L, uf);
    lua_settop(L, ERR);
    if (!stopped && !lua_isnil(L, PROGRESS)) {
      lua_pushvalue(L, PROGRESS);
      lua_pushinteger(L, done);
      lua_pushinteger(L, n);
      if (lua_pcall(L, 2, 0, 0) != 0) { /* stop as for a failure, then raise its error */
        stop_calls(lp, own, ms->l);
        return lua_error(L);
      }
    }
  }
  if (rc < 0) { /* a host's signal handler ran (EINTR): stop, and say so */
    stop_calls(lp, own, ms->l);
    if (rc == IP_EINTR)
      return lip_raise(L, rc, "ip.map: a signal handler ran while waiting for the calls; the "
                              "calls in flight were canceled");
    return lip_raise(L, rc, "ip.map: %s", ip_strerror(rc));
  }
  if (own) lip_pool_close(lp);
  if (failed) return raise_failure(L, failed);
  lua_settop(L, RESULTS);
  return 1;
}

void lip_map_open(lua_State *L) {
  luaL_newmetatable(L, LIP_MAP_MT);
  lua_pushcfunction(L, map_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
}
