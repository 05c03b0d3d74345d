/* inparallel_mpi, the Lua face of libinparallel-mpi, which the main module loads as ip.mpi on
 * first use: only programs that use MPI load MPI.
 *
 *   mpi.init()                 on every rank, after its named tasks (ip.task(fn, {name = ...}))
 *   mpi.pool([root [, opts]])  the root's pool ({reuse = true}: a reused process per rank);
 *                              on the other ranks serves until the root closes it, then nil
 *   mpi.rank(), mpi.size()     of MPI_COMM_WORLD
 *   mpi.finalize()             closes the root's pools, ends MPI (also when Lua closes)
 *
 * The pool is the main module's pool object (its calls, futures and ip.waitfor as for
 * ip.pool's), made through the hooks it leaves in the registry (lip_api). A rank that serves
 * runs each call on its own Lua state, above this function's stack slots, as a pool worker
 * does (see pool.c). */
#include "lip.h"
#include <errno.h>
#include <inparallel/mpi.h>

static const lip_api *api(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LIP_API);
  const lip_api *a = (const lip_api *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!a || a->version != LIP_API_VERSION)
    luaL_error(L, "inparallel_mpi: load it as ip.mpi, after require \"inparallel\" of the same build");
  return a;
}

static bool started; /* ip_mpi_init ran: MPI may have started even when its check failed */
static const char pools_key = 0; /* the pools mpi.pool made, weakly: mpi.finalize closes them */

static int l_init(lua_State *L) {
  const lip_api *a = api(L);
  started = true;
  int rc = ip_mpi_init(NULL, NULL);
  if (rc < 0) return a->raise(L, rc, ip_mpi_errmsg());
  return 0;
}

static int l_pool(lua_State *L) {
  const lip_api *a = api(L);
  lua_Integer root = luaL_optinteger(L, 1, 0);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "reuse");
    ip_mpi_set_reuse(lua_toboolean(L, -1));
    lua_pop(L, 1);
  }
  if (root < 0 || root > 0x7fffffff) return luaL_error(L, "inparallel.mpi.pool: root must be a rank, not %d", (int)root);
  lua_settop(L, 2);
  a->set_home(L, lua_gettop(L)); /* a worker rank runs its calls above these slots */
  errno = 0;
  ip_pool *p = ip_mpi_pool(MPI_COMM_WORLD, (int)root);
  if (!p) {
    if (errno) return a->raise(L, -errno, ip_mpi_errmsg());
    lua_pushnil(L); /* served until the root closed its pool */
    return 1;
  }
  a->push_pool(L, p);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &pools_key);
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return 1;
}

static int l_rank(lua_State *L) {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  lua_pushinteger(L, r);
  return 1;
}

static int l_size(lua_State *L) {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  lua_pushinteger(L, n);
  return 1;
}

/* Closes the pools still open (their objects stay, closed), then ends MPI. */
static int finalize(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &pools_key);
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pop(L, 1);
      if (luaL_getmetafield(L, -1, "__index")) { /* 5.1 returns 1, later ones the type */
        if (lua_istable(L, -1)) {
          lua_getfield(L, -1, "close");
          lua_pushvalue(L, -3);
          lua_call(L, 1, 0);
        }
        lua_pop(L, 1);
      }
    }
  }
  lua_pop(L, 1);
  if (!started) return 0;
  started = false;
  int rc = ip_mpi_finalize();
  if (rc < 0) return api(L)->raise(L, rc, ip_mpi_errmsg());
  return 0;
}

/* The module's only exported symbol. */
__attribute__((visibility("default"))) int luaopen_inparallel_mpi(lua_State *L);

int luaopen_inparallel_mpi(lua_State *L) {
  static const luaL_Reg fns[] = {{"init", l_init}, {"pool", l_pool}, {"rank", l_rank},
                                 {"size", l_size}, {"finalize", finalize}, {NULL, NULL}};
  api(L);
  lua_newtable(L); /* pool -> true, weak keys */
  lua_newtable(L);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &pools_key);
  /* Lua closing ends MPI too, after the pools (made later, so finalized earlier): a rank that
   * leaves without MPI_Finalize makes mpirun fail the job. */
  lua_newuserdata(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, finalize);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "inparallel_mpi.sentinel");
  lua_newtable(L);
  luaL_setfuncs(L, fns, 0);
  return 1;
}
