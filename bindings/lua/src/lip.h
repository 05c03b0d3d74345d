/* What the files of the Lua module share: the userdata layouts and the functions that cross
 * file boundaries. Everything here has hidden visibility; the module exports only
 * luaopen_inparallel. */
#ifndef LIP_H
#define LIP_H

#include <sys/types.h>
#include <inparallel.h>
#include <msgpack.h>
#include "compat.h"

#define LIP_TASK_MT "inparallel.task"
#define LIP_FUTURE_MT "inparallel.future"
#define LIP_ERROR_MT "inparallel.error"
#define LIP_WAITFOR_MT "inparallel.waitfor"
#define LIP_POOL_MT "inparallel.pool"
#define LIP_MAP_MT "inparallel.map"

/* The metatables of the types every call touches are also in the registry under the address
 * of one of these keys: lip_testudata and lip_setmetatable look them up by address
 * (lua_rawgetp), which costs a good deal less than luaL_testudata's lookup by name, and a call
 * does several. */
extern const char lip_task_key, lip_future_key, lip_pool_key;

/* luaL_testudata by key. */
static inline void *lip_testudata(lua_State *L, int i, const void *key) {
  void *p = lua_touserdata(L, i);
  if (!p || !lua_getmetatable(L, i)) return NULL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? p : NULL;
}

/* luaL_checkudata by key (its error, naming tname, when it is not one). */
static inline void *lip_checkudata(lua_State *L, int i, const void *key, const char *tname) {
  void *p = lip_testudata(L, i, key);
  return p ? p : luaL_checkudata(L, i, tname);
}

/* Sets the metatable stored under key on the value on top of the stack. */
static inline void lip_setmetatable(lua_State *L, const void *key) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  lua_setmetatable(L, -2);
}

/* luaL_newmetatable(tname), also stored under key; leaves it on the stack. */
/* Registers a userdata class: its metatable under `tname` (also its __name) and under `key`
 * (for lookups by address), with the metamethods `meta`, the methods `methods` (may be NULL)
 * as __index, and a __metatable of false so scripts cannot reach or replace it. */
void lip_class(lua_State *L, const char *tname, const void *key, const luaL_Reg *meta,
               const luaL_Reg *methods);

/* How a task's results travel. */
enum lip_ser { LIP_SER_MSGPACK, LIP_SER_RAW, LIP_SER_CUSTOM };

typedef struct lip_task {
  ip_task *t;      /* NULL once collected */
  int fn_ref;      /* the task function, in the registry */
  int enc_ref;     /* custom serializer: encode (child) and decode (parent) functions */
  int dec_ref;
  enum lip_ser ser;
  int timeout_ms;  /* the timeout option (0: none), for ip.map to put back after its own */
  unsigned long serial; /* the order tasks and pools were made in (pool.c) */
  /* How the arguments of a pool call travel: msgpack, encoded from the caller's stack and
   * pushed onto the worker's (pool.c). Each task has its own copy, so that the worker finds
   * the task from the serializer the core hands it. */
  ip_serializer args;
} lip_task;

typedef struct lip_pool {
  ip_pool *p;      /* NULL once closed */
  unsigned long epoch; /* tasks whose serial is below this one are in the workers' copy */
  int workers;     /* as asked for */
} lip_pool;

typedef struct lip_future {
  ip_future *f;    /* NULL once collected */
  enum lip_ser ser;
  int task_ref;    /* a custom serializer's task, for its decode function (else LUA_NOREF) */
  int pool_ref;    /* a pool call's pool, kept open while the future lives */
  int args_ref;    /* the arguments of the call (see lip_values_ref) */
  int vals_ref;    /* the decoded results, once result() decoded them (LUA_NOREF before) */
  int nargs, nvals; /* how many each holds */
  int err_ref;     /* the error table, once built */
  int wf_index;    /* its index in the table of the waitfor that mirrors it (waitfor.c) */
} lip_future;

/* The child-side state of one call. A forked call's lives on the parent's C stack in the
 * task's __call, which the child inherits intact (it is a fork), so nothing in it needs
 * copying; a pool call's is the worker's own, filled in by the argument decoder (pool.c),
 * which pushes the decoded arguments onto the worker's Lua stack. */
typedef struct lip_call {
  lua_State *L;
  lip_task *task;
  int first_arg, nargs; /* stack slots of the call's arguments */
  int first_res, nres;  /* stack slots of the task function's results (in the child) */
  ip_bytes raw;         /* the string a raw or custom task sends */
} lip_call;

/* errors.c */
/* Pushes what the value at i says about itself, and returns it: a string or number as is,
 * else what its __tostring gives, else "(error object is a <type> value)". Never raises. */
const char *lip_describe(lua_State *L, int i);
/* Pushes an error table {code = ip_err_name(code), kind, message, traceback} (kind NULL: the
 * code's name; message NULL: ip_strerror(code); traceback NULL: none). */
void lip_push_error_fields(lua_State *L, int code, const char *kind, const char *message,
                           const char *traceback);
/* Pushes the error table of a failure of the module itself, with this Lua stack's traceback. */
void lip_push_error(lua_State *L, int code, const char *message);
/* Raises such an error table, its message formatted as lua_pushfstring does. */
int lip_raise(lua_State *L, int code, const char *fmt, ...);
/* The luv way of returning a failure: pushes nil, "NAME: message", "NAME"; returns 3. */
int lip_fail(lua_State *L, int code, const char *fmt, ...);
/* Pushes the error table of uf's failed call (fields from the core's ip_error, and the value
 * the task raised, decoded). */
void lip_push_call_error(lua_State *L, lip_future *uf, const ip_error *e);
/* Child: fails the call with the error value at v, which the task raised, and its
 * traceback. A value other than a string or nil travels with the error (see errors.c). */
_Noreturn void lip_child_raise(lua_State *L, lip_task *lt, int v, const char *traceback);
void lip_errors_open(lua_State *L);
/* "0.05": seconds for a message (buf of at least 32 bytes). */
const char *lip_seconds_text(char *buf, double seconds);

/* msgpack_values.c */
const ip_serializer *lip_msgpack_serializer(void);
/* Packs the value at idx on its own (a raised error value), at most `max` bytes: returns a
 * malloc()ed buffer and its length, or NULL with why (e.g. "cannot encode err.value.f: a
 * function cannot be serialized"). */
char *lip_msgpack_pack_value(lua_State *L, int idx, size_t max, size_t *len, char *why,
                             size_t whylen);
/* Pushes the one value that such bytes hold and returns 0, or pushes why not and returns -1. */
int lip_msgpack_push_value(lua_State *L, const void *buf, size_t len);
/* Packs the nargs values from stack slot first on as a msgpack array (the arguments of a
 * pool call) through w(ctx, ...): 0, or -1 with why (e.g. "cannot encode args[2].f: a
 * function cannot be serialized"), or the write's own negative code. */
int lip_msgpack_pack_args(lua_State *L, int first, int nargs, ip_write_fn w, void *ctx,
                          char *why, size_t whylen);
/* Pushes the values such bytes hold and returns how many, or pushes why not and returns -1. */
int lip_msgpack_push_args(lua_State *L, const void *buf, size_t len);
/* Pushes the values a msgpack result holds (our envelope: an array of the results);
 * returns how many, or -1 with an error message pushed. */
int lip_msgpack_push(lua_State *L, const msgpack_object *o);

/* future.c */
void lip_future_open(lua_State *L);
lip_future *lip_future_check(lua_State *L, int i);
lip_future *lip_future_test(lua_State *L, int i);
lip_future *lip_future_new(lua_State *L, enum lip_ser ser);
/* The timeout argument at i in milliseconds: nil (or none) -1 = forever, else a number of
 * seconds >= 0 (a float is fine), rounded up; raises an argument error for anything else
 * (a numeric string too). */
int lip_timeout_arg(lua_State *L, int i);

/* Waits for the call (forever) and settles its outcome once, as result() does: returns 1
 * when it failed (its error table is then at err_ref), 0 when it succeeded (its values at
 * vals_ref). Raises EINTR when a signal handler ran. */
int lip_future_settle(lua_State *L, lip_future *uf);
/* A registry reference to the n values from stack slot `first` on, for lip_push_values: none
 * for 0 values (LUA_REFNIL), the value itself for 1 (LUA_REFNIL for nil), else a list. The
 * values stay where they are. */
int lip_values_ref(lua_State *L, int first, int n);
/* Pushes the n values of such a reference; returns n. */
int lip_push_values(lua_State *L, int ref, int n);
/* What __gc does: frees the core's future (canceling a call still running) and drops its
 * references. */
void lip_future_release(lua_State *L, lip_future *uf);

/* waitfor.c */
int lip_waitfor(lua_State *L);
void lip_waitfor_open(lua_State *L);

/* task.c */
int lip_task_new(lua_State *L);
void lip_task_open(lua_State *L);
lip_task *lip_task_check(lua_State *L, int i);
/* Forks a call of the task at stack slot `task` with the nargs values from stack slot first
 * on, and pushes its future. timeout_ms >= 0 replaces the task's timeout for this call. */
void lip_task_call(lua_State *L, int task, int first, int nargs, int timeout_ms);
/* A task's timeout option at stack slot idx, in milliseconds for ip_task_set_timeout (0 =
 * none): a number of seconds > 0, floats too, rounded up; math.huge means none. Raises an
 * error starting with `who` for anything else, 0 included (leave the option out for none). */
int lip_task_timeout_ms(lua_State *L, int idx, const char *who);
/* Pushes a new future for a call of the task at stack index `task` with the nargs values from
 * slot first on, keeping the arguments (and a task with a custom serializer) referenced. */
lip_future *lip_future_for(lua_State *L, int task, int first, int nargs);
/* The ip_fn of every Lua task (a forked child's, a pool worker's). */
void *lip_child_main(void *arg);

/* pool.c */
int lip_pool_new(lua_State *L);
void lip_pool_open(lua_State *L);
/* The next serial of a task or pool. */
unsigned long lip_next_serial(void);
/* Makes a pool of `workers` with these options (0: none) and pushes it; raises on failure. */
lip_pool *lip_pool_push_new(lua_State *L, int workers, unsigned max_calls, size_t max_rss);
/* Sends a call of the task at stack slot `task` to the pool at slot `pool`, with the nargs
 * values from slot first on, and pushes its future. timeout_ms as for lip_task_call. */
void lip_pool_call(lua_State *L, int pool, int task, int first, int nargs, int timeout_ms);
void lip_pool_close(lip_pool *lp);
/* The argument serializer each task starts with (its copy goes into lip_task.args). */
const ip_serializer *lip_args_serializer(void);

/* What the module gives the inparallel_mpi module (a separate library, so that only it
 * loads MPI), as a light userdata in the registry under LIP_API. */
#define LIP_API "inparallel.api"
#define LIP_API_VERSION 1
typedef struct lip_api {
  int version;
  /* Where calls run when this process serves them: the Lua thread L, above slot base (see
   * pool.c). Set before a rank serves calls. */
  void (*set_home)(lua_State *L, int base);
  /* Pushes a pool object for p, a pool of another process's making that takes any task. */
  void (*push_pool)(lua_State *L, ip_pool *p);
  /* Raises the module's error table for code, with message msg. */
  int (*raise)(lua_State *L, int code, const char *msg);
} lip_api;
void lip_api_open(lua_State *L);

/* map.c */
int lip_map(lua_State *L);
void lip_map_open(lua_State *L);

#endif
