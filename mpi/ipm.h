/* Private to libinparallel-mpi: what its files share. Names are ipm_*. */
#ifndef IPM_H
#define IPM_H

#include "config.h"
#include <inparallel/mpi.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "wire.h"

/* How many calls a worker rank holds at once: the one it runs and the next, so it never waits
 * for the root between two calls. */
#define IPM_DEPTH 2

/* How far apart a thread that polls MPI looks while it waits for something (root.c: results
 * of calls out; serve.c: the root's messages while a call runs). MPI gives no descriptor to
 * sleep on; each look is a wake-up. After `step` looks in a row found nothing, `quiet` ns since
 * the first of them: doubling from 1 us to about a millisecond (some 2 ms in all), then a 32nd
 * of the quiet time, so what comes is seen at most about 3% of the wait late, and never more
 * than IPM_LOOK_MAX late. */
#define IPM_LOOK_MAX 10000000L /* ns */
static inline int64_t ipm_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
static inline long ipm_look_ns(unsigned step, int64_t quiet) {
  long ns = 1000L << (step < 10 ? step : 10); /* 1 us .. about 1 ms */
  if (step >= 10 && quiet / 32 > ns)
    ns = quiet / 32 < IPM_LOOK_MAX ? (long)(quiet / 32) : IPM_LOOK_MAX;
  return ns;
}

/* ip_mpi_set_fork's: how serve.c forks the reused process of a rank. */
extern ip_fork_fn ipm_fork_fn;
extern void *ipm_fork_ud;

/* Records the message ip_mpi_errmsg gives and returns code (a negative IP_ code). */
int ipm_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same for an MPI error code: "what: MPI's own words". Returns IP_EPROTO. */
int ipm_mpi_fail(int mpi_rc, const char *what);

/* The ranks' tasks, checked alike (registry.c). */
struct ipm_registry {
  ip_task **tasks; /* on every rank: its own task for each of the root's, in the root's order */
  uint32_t n;
  bool reuse;      /* the root's ip_mpi_set_reuse */
};
/* Collective over comm: every rank compares its named tasks (name, serializer, argument
 * serializer) with root's. 0 and *reg filled on every rank, or the same IP_EINVAL (tasks
 * differ; ip_mpi_errmsg names the first difference) or IP_EPROTO on every rank. `reg` may be
 * NULL to check only. `reuse` is the root's setting, handed to every rank in reg. */
int ipm_registry_check(MPI_Comm comm, int root, bool reuse, struct ipm_registry *reg);
void ipm_registry_free(struct ipm_registry *reg);

/* The root's pool over comm (root.c), which it owns from here on. NULL with errno. */
ip_pool *ipm_root_pool(MPI_Comm comm, int root, struct ipm_registry *reg);
/* Frees every root pool not freed yet (ip_mpi_finalize). */
void ipm_root_pools_free(void);
/* A worker rank's service until the root's STOP (serve.c). Takes comm and reg. 0 or a code. */
int ipm_serve(MPI_Comm comm, int root, struct ipm_registry *reg);

/* MPI counts are ints: sends and receives of up to IPM_CHUNK bytes (wire.h). */
int ipm_send_more(const unsigned char *p, uint64_t len, int dest, MPI_Comm comm);
int ipm_recv_more(unsigned char *p, uint64_t len, int src, MPI_Comm comm);

#endif
