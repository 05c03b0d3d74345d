/* bench-mpi: one run of the MPI backend's side of bench/bench-mpi.sh, which runs it and
 * bench/bench-mpi4py.py in interleaved rounds and prints the table. Run under mpirun:
 *
 *     mpirun -np 4 bench/bench-mpi [--reuse] [--calls=N] [--big-calls=M] [--sleep-ms=T]
 *                                  [--floor-ms=T]
 *
 * Rank 0 makes the pool (ip_mpi_pool over MPI_COMM_WORLD); the 3 others serve. Pool start-up
 * is not timed; each part runs warm (a tenth of its calls, untimed) before it is timed.
 *
 *   trivial   N calls (default 20,000) of a task that returns its argument, a 64-bit integer,
 *             plus one. Timed on the root from the first ip_pool_call to the last result
 *             taken (ip_waitfor_step, concurrency factor 64, each result decoded with
 *             ip_future_value and summed, then checked). Prints "trivial CALLS_PER_S".
 *   big       M calls (default 40) each returning 10 MiB: ip_bytes_alloc in the child (a
 *             memfd, no copy to the worker rank), filled with memset, sent to the root; timed
 *             the same way, the root checking each result's length and first and last byte.
 *             Prints "big MIB_PER_S".
 *   cpu       3 calls, each sleeping T ms (default 2000) on a worker rank: the root's CPU
 *             time (getrusage RUSAGE_SELF: every thread, the backend's included) from before
 *             the first call to after the last result, per second of that wall time. Prints
 *             "cpu MS_PER_S".
 *   floor     with --floor-ms=T (before the pool is made, after MPI is): the fork floor of the
 *             worker ranks, what bounds a fork per call there: for T ms every worker rank at
 *             once forks a child that _exits at once and waits for it, in a loop; the root
 *             sleeps. An MPI rank maps hundreds of regions (Open MPI's plugins), which fork
 *             and exit copy and tear down each time. Prints "floor FORKS_PER_S", the sum over
 *             the worker ranks.
 *
 * --reuse sets ip_mpi_set_reuse(1) before ip_mpi_pool: a pre-forked process per worker rank
 * instead of a fork per call. Figures go to stdout, one "name value" line each.
 */
#define _GNU_SOURCE
#include <inparallel/mpi.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)
#define BIG (10 * MIB)
#define FACTOR 64

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static _Noreturn void die(const char *what, int rc) {
  fprintf(stderr, "bench-mpi: %s: %s\n", what, rc ? ip_strerror(rc) : strerror(errno));
  MPI_Abort(MPI_COMM_WORLD, 1);
  exit(1);
}

/* ---- the tasks (raw bytes: an int64 in, bytes out) ------------------------------------------ */

static int64_t arg_i64(const void *arg) {
  const ip_bytes *b = arg;
  int64_t x = 0;
  if (b && b->len == sizeof x) memcpy(&x, b->data, sizeof x);
  return x;
}

static void *plus_one(void *arg) {
  int64_t y = arg_i64(arg) + 1;
  return ip_bytes_copy(&y, sizeof y);
}

static void *ten_mib(void *arg) {
  ip_bytes *b = ip_bytes_alloc(BIG);
  if (!b) ip_raise(ENOMEM, "no 10 MiB");
  memset(b->data, (int)(arg_i64(arg) & 0xff), BIG);
  return b;
}

static void *sleeper(void *arg) {
  int64_t ms = arg_i64(arg);
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
  return NULL;
}

static ip_task *t_plus_one, *t_ten_mib, *t_sleeper;

static ip_task *named(ip_fn fn, const char *name) {
  ip_task *t = ip_task_new(fn, NULL);
  if (!t || ip_task_set_name(t, name) != 0) die("ip_task_new", 0);
  return t;
}

static ip_future *call_i64(ip_pool *p, ip_task *t, int64_t x) {
  ip_bytes b = {&x, sizeof x}; /* copied by the call */
  ip_future *f = ip_pool_call(p, t, &b);
  if (!f) die("ip_pool_call", 0);
  return f;
}

/* ---- the fork floor (every rank, before the pool) ------------------------------------------ */

/* Waits for a nonblocking MPI operation without spinning: Open MPI's MPI_Wait polls, which
 * would take a CPU from the ranks still forking. */
static void wait_gently(MPI_Request *req) {
  int done = 0;
  while (MPI_Test(req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done) {
    struct timespec ts = {0, 1000000L};
    nanosleep(&ts, NULL);
  }
}

static double fork_floor(long ms) {
  int me;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  MPI_Request req;
  MPI_Ibarrier(MPI_COMM_WORLD, &req);
  wait_gently(&req);
  double forks = 0, t0 = now_s(), end = t0 + (double)ms / 1000;
  if (me != 0) {
    while (now_s() < end) {
      pid_t pid = fork();
      if (pid == 0) _exit(0);
      if (pid < 0 || waitpid(pid, NULL, 0) != pid) die("fork", 0);
      forks++;
    }
  }
  double rate = me ? forks / (now_s() - t0) : 0, sum = 0;
  MPI_Ireduce(&rate, &sum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD, &req);
  wait_gently(&req);
  return sum;
}

/* ---- the parts (on the root) ----------------------------------------------------------------- */

/* n calls of t with arguments 0..n-1 through waitfor (factor FACTOR); take(f) takes each
 * result and returns what it adds to the sum. Seconds from the first call to the last result. */
static double run_calls(ip_pool *p, ip_task *t, long n, int64_t (*take)(ip_future *),
                        int64_t *sum) {
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  long next = 0, done = 0;
  int rc;
  *sum = 0;
  double t0 = now_s();
  while ((rc = ip_waitfor_step(&w, l, FACTOR, -1, &f)) > 0) {
    if (rc == IP_WAITFOR_ASK) {
      if (next < n) ip_list_push(l, call_i64(p, t, next++));
      continue;
    }
    *sum += take(f);
    ip_future_free(f);
    done++;
  }
  double s = now_s() - t0;
  if (rc < 0 || done != n) die("ip_waitfor_step", rc);
  ip_list_free(l);
  return s;
}

static int64_t take_plus_one(ip_future *f) {
  const ip_bytes *v = ip_future_value(f);
  if (!v || v->len != sizeof(int64_t)) die("a trivial call", ip_future_status(f));
  int64_t y;
  memcpy(&y, v->data, sizeof y);
  return y;
}

static int64_t take_ten_mib(ip_future *f) {
  const ip_bytes *v = ip_future_value(f);
  if (!v || v->len != BIG) die("a 10 MiB call", ip_future_status(f));
  const unsigned char *d = v->data;
  if (d[0] != d[BIG - 1]) die("a 10 MiB result: first and last bytes differ", 0);
  return d[0];
}

static int64_t take_none(ip_future *f) {
  if (ip_future_status(f) != 0) die("a sleeping call", ip_future_status(f));
  return 0;
}

int main(int argc, char **argv) {
  long calls = 20000, big_calls = 40, sleep_ms = 2000, floor_ms = 0;
  int reuse = 0;
  t_plus_one = named(plus_one, "plus_one");
  t_ten_mib = named(ten_mib, "ten_mib");
  t_sleeper = named(sleeper, "sleeper");
  if (ip_mpi_init(&argc, &argv) < 0) {
    fprintf(stderr, "bench-mpi: %s\n", ip_mpi_errmsg());
    return 1;
  }
  for (int i = 1; i < argc; i++) {
    if (!strncmp(argv[i], "--calls=", 8)) calls = atol(argv[i] + 8);
    else if (!strncmp(argv[i], "--big-calls=", 12)) big_calls = atol(argv[i] + 12);
    else if (!strncmp(argv[i], "--sleep-ms=", 11)) sleep_ms = atol(argv[i] + 11);
    else if (!strncmp(argv[i], "--floor-ms=", 11)) floor_ms = atol(argv[i] + 11);
    else if (!strcmp(argv[i], "--reuse")) reuse = 1;
    else {
      fprintf(stderr, "usage: mpirun -np 4 bench-mpi [--reuse] [--calls=N] [--big-calls=M] "
              "[--sleep-ms=T] [--floor-ms=T]\n");
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
  }
  if (calls < 10 || big_calls < 1 || sleep_ms < 0 || floor_ms < 0) {
    fprintf(stderr, "bench-mpi: bad --calls, --big-calls, --sleep-ms or --floor-ms\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  if (floor_ms) {
    double floor = fork_floor(floor_ms);
    int me;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    if (me == 0) printf("floor %.1f\n", floor), fflush(stdout);
  }
  ip_mpi_set_reuse(reuse); /* the root's setting is the one that counts */
  ip_pool *p = ip_mpi_pool(MPI_COMM_WORLD, 0);
  if (!p) { /* a worker rank, after the root's ip_pool_free; or a failure */
    int e = errno;
    if (e) fprintf(stderr, "bench-mpi: %s\n", ip_mpi_errmsg());
    ip_mpi_finalize();
    return e ? 1 : 0;
  }
  int workers = ip_pool_workers(p);
  int64_t sum;

  run_calls(p, t_plus_one, calls / 10, take_plus_one, &sum); /* warm */
  double s = run_calls(p, t_plus_one, calls, take_plus_one, &sum);
  if (sum != (int64_t)calls * (calls + 1) / 2) die("trivial calls: wrong sum", 0);
  printf("trivial %.1f\n", (double)calls / s);
  fflush(stdout);

  run_calls(p, t_ten_mib, big_calls / 10 > workers ? big_calls / 10 : workers, take_ten_mib, &sum);
  s = run_calls(p, t_ten_mib, big_calls, take_ten_mib, &sum);
  int64_t want = 0;
  for (long i = 0; i < big_calls; i++) want += i & 0xff;
  if (sum != want) die("10 MiB calls: wrong bytes", 0);
  printf("big %.1f\n", (double)big_calls * 10 / s);
  fflush(stdout);

  ip_future *fs[3];
  double c0 = cpu_s(), t0 = now_s();
  for (int i = 0; i < 3; i++) fs[i] = call_i64(p, t_sleeper, sleep_ms);
  for (int i = 0; i < 3; i++) ip_future_wait(fs[i], -1);
  double wall = now_s() - t0, cpu = cpu_s() - c0;
  for (int i = 0; i < 3; i++) take_none(fs[i]), ip_future_free(fs[i]);
  printf("cpu %.2f\n", cpu * 1000 / wall);
  printf("cpu_wall %.3f\n", wall);
  fflush(stdout);

  ip_pool_free(p);
  ip_mpi_finalize();
  return 0;
}
