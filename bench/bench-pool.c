/* bench-pool: what a pool buys, each figure a ratio against a baseline measured in the same
 * run (absolute rates drift on a shared machine; ratios do much less).
 *
 *   trivial calls   a 2-worker ip_pool through ip_waitfor_next (concurrency factor 8)
 *                   against a bare pre-forked pool doing the same round trips: 2 workers, a
 *                   socketpair each, 4 requests in flight per worker, poll() for whichever
 *                   answered. Target >= 0.5x.
 *                   And against the library's fork per call (ip_call). Target >= 20x.
 *   big caller      the same pool rate when the caller touched 1 GiB before making the pool,
 *                   against the small caller's rate. Target >= 0.8x.
 *   100 MiB result  a worker copies 100 MiB into an ip_bytes_alloc buffer and returns it;
 *                   the caller gets the value and reads every page. Against memcpy of the
 *                   same 100 MiB into a fresh buffer. Target >= 0.5x.
 *   per-call memory the caller's RSS after 100,000 pool calls against after 1,000. Target:
 *                   within 2 MiB.
 *
 * Usage: bench-pool [--calls=N] [--reps=N] [--no-big-caller]
 */
#define _GNU_SOURCE
#include <inparallel.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)
#define BIG (100 * MIB)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

static _Noreturn void die(const char *what, int rc) {
  fprintf(stderr, "bench-pool: %s: %s\n", what, rc ? ip_strerror(rc) : strerror(errno));
  exit(1);
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
  if (f) fclose(f);
  return kib;
}

/* ---- the tasks ----------------------------------------------------------------------------- */

static void *trivial(void *arg) {
  (void)arg;
  static ip_bytes ok = {"ok", 2};
  return &ok;
}

static unsigned char *big_src; /* filled before the pools are made: the workers have it */

static void *big_result(void *arg) {
  (void)arg;
  ip_bytes *b = ip_bytes_alloc(BIG);
  if (b) memcpy(b->data, big_src, BIG);
  return b;
}

/* ---- the bare pool: what a hand-written pre-forked pool does ------------------------------ */

#define BARE_WORKERS 2
#define BARE_DEPTH 4

static double bare_rate(long calls) {
  int fds[BARE_WORKERS];
  pid_t pids[BARE_WORKERS];
  for (int i = 0; i < BARE_WORKERS; i++) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair", 0);
    if ((pids[i] = fork()) == 0) {
      close(sv[0]);
      for (int j = 0; j < i; j++) close(fds[j]); /* else their workers never see EOF */
      char req[8], rep[8] = "ok";
      while (read(sv[1], req, sizeof req) == (ssize_t)sizeof req)
        if (write(sv[1], rep, sizeof rep) != (ssize_t)sizeof rep) break;
      _exit(0);
    }
    close(sv[1]);
    fds[i] = sv[0];
  }
  char req[8] = "go", rep[8];
  long sent = 0, got = 0, out[BARE_WORKERS] = {0};
  double t0 = now_s();
  for (int i = 0; i < BARE_WORKERS; i++)
    for (int d = 0; d < BARE_DEPTH && sent < calls; d++, sent++, out[i]++)
      if (write(fds[i], req, sizeof req) != (ssize_t)sizeof req) die("write", 0);
  while (got < calls) {
    struct pollfd pf[BARE_WORKERS];
    for (int i = 0; i < BARE_WORKERS; i++) pf[i] = (struct pollfd){out[i] ? fds[i] : -1, POLLIN, 0};
    if (poll(pf, BARE_WORKERS, -1) < 0) die("poll", 0);
    for (int i = 0; i < BARE_WORKERS; i++) {
      if (!(pf[i].revents & POLLIN)) continue;
      if (read(fds[i], rep, sizeof rep) != (ssize_t)sizeof rep) die("read", 0);
      got++, out[i]--;
      if (sent < calls) {
        if (write(fds[i], req, sizeof req) != (ssize_t)sizeof req) die("write", 0);
        sent++, out[i]++;
      }
    }
  }
  double t = now_s() - t0;
  for (int i = 0; i < BARE_WORKERS; i++) {
    close(fds[i]);
    waitpid(pids[i], NULL, 0);
  }
  return (double)calls / t;
}

/* ---- the library ---------------------------------------------------------------------------- */

/* Calls/s of `calls` trivial calls through ip_waitfor_next with concurrency factor 8, on the
 * pool p, or forked when p is NULL. */
static double lib_rate(ip_pool *p, ip_task *t, long calls) {
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  long started = 0, done = 0;
  int rc;
  double t0 = now_s();
  while ((rc = ip_waitfor_next(&w, l, 8, -1, &f)) > 0) {
    if (!f) {
      if (started < calls) {
        ip_list_push(l, p ? ip_pool_call(p, t, NULL) : ip_call(t, NULL));
        started++;
      }
      continue;
    }
    if (ip_future_status(f) != 0) die("a call", ip_future_status(f));
    ip_future_free(f);
    done++;
  }
  double s = now_s() - t0;
  if (rc < 0 || done != calls) die("ip_waitfor_next", rc);
  ip_list_free(l);
  return (double)calls / s;
}

static double pool_rate(ip_task *t, long calls) {
  ip_pool *p = ip_pool_new(2);
  if (!p) die("ip_pool_new", 0);
  lib_rate(p, t, calls / 10 + 1); /* warm: first faults in the workers */
  double r = lib_rate(p, t, calls);
  ip_pool_free(p);
  return r;
}

static double big_result_s(ip_pool *p, ip_task *t) {
  double t0 = now_s();
  ip_future *f = ip_pool_call(p, t, NULL);
  const ip_bytes *v = ip_future_value(f);
  if (!v || v->len != BIG) die("the 100 MiB call", ip_future_status(f));
  volatile unsigned sum = 0;
  for (size_t i = 0; i < v->len; i += 4096) sum += ((const unsigned char *)v->data)[i];
  double s = now_s() - t0;
  ip_future_free(f);
  return s;
}

static double memcpy_s(void) {
  double t0 = now_s();
  unsigned char *dst = malloc(BIG);
  if (!dst) die("malloc", 0);
  memcpy(dst, big_src, BIG);
  volatile unsigned sum = 0;
  for (size_t i = 0; i < BIG; i += 4096) sum += dst[i];
  double s = now_s() - t0;
  free(dst);
  return s;
}

static const char *verdict(int ok) { return ok ? "meets" : "MISSES"; }

int main(int argc, char **argv) {
  long calls = 20000;
  int reps = 5;
  int big_caller = 1;
  for (int i = 1; i < argc; i++) {
    if (!strncmp(argv[i], "--calls=", 8)) calls = atol(argv[i] + 8);
    else if (!strncmp(argv[i], "--reps=", 7)) reps = atoi(argv[i] + 7);
    else if (!strcmp(argv[i], "--no-big-caller")) big_caller = 0;
    else {
      fprintf(stderr, "usage: bench-pool [--calls=N] [--reps=N] [--no-big-caller]\n");
      return 2;
    }
  }
  if (calls < 100 || reps < 1 || reps > 51) {
    fprintf(stderr, "bench-pool: bad --calls or --reps\n");
    return 2;
  }
  ip_task *t = ip_task_new(trivial, NULL), *tb = ip_task_new(big_result, NULL);
  if (!t || !tb) die("ip_task_new", 0);

  /* Rounds interleave what they compare, so drift on a noisy machine hits them alike. */
  double bare[51], pool[51], forked[51];
  long fork_calls = calls / 20 > 200 ? calls / 20 : 200;
  for (int r = 0; r < reps; r++) {
    bare[r] = bare_rate(calls);
    pool[r] = pool_rate(t, calls);
    forked[r] = lib_rate(NULL, t, fork_calls);
  }
  double mb = median(bare, reps), mp = median(pool, reps), mf = median(forked, reps);

  double big[51], mbig = 0;
  if (big_caller) {
    /* 1 GiB the caller touched: a fork per call copies its page tables each time; a pool
     * copies them when it forks its template, and its workers fork from that. The baseline
     * is the pool rate above: the same process before it grew. */
    size_t gib = (size_t)1 << 30;
    unsigned char *ballast = malloc(gib);
    if (!ballast) die("malloc 1 GiB", 0);
    memset(ballast, 1, gib);
    for (int r = 0; r < reps; r++) big[r] = pool_rate(t, calls);
    mbig = median(big, reps);
    free(ballast);
  }

  /* Made only now: the trivial rates above are those of a small caller. */
  if (!(big_src = malloc(BIG))) die("malloc", 0);
  for (size_t i = 0; i < BIG; i++) big_src[i] = (unsigned char)(i * 31);
  ip_pool *p = ip_pool_new(1);
  if (!p) die("ip_pool_new", 0);
  double res[51], cpy[51];
  big_result_s(p, tb); /* warm */
  for (int r = 0; r < reps; r++) {
    cpy[r] = memcpy_s();
    res[r] = big_result_s(p, tb);
  }
  double mres = median(res, reps), mcpy = median(cpy, reps);

  /* The caller's memory per call: RSS after 1,000 and after 100,000 calls. */
  ip_pool_free(p);
  p = ip_pool_new(2);
  if (!p) die("ip_pool_new", 0);
  lib_rate(p, t, 1000);
  long rss1k = rss_kib();
  lib_rate(p, t, 99000);
  long rss100k = rss_kib();
  ip_pool_free(p);

  printf("| what | rate | baseline | ratio | target |\n|---|---:|---:|---:|---|\n");
  printf("| trivial calls, 2-worker pool vs bare pre-forked pool | %.0f calls/s | %.0f calls/s "
         "| %.2fx | >= 0.5x: %s |\n", mp, mb, mp / mb, verdict(mp / mb >= 0.5));
  printf("| trivial calls, 2-worker pool vs fork per call | %.0f calls/s | %.0f calls/s | %.1fx "
         "| >= 20x: %s |\n", mp, mf, mp / mf, verdict(mp / mf >= 20));
  if (big_caller)
    printf("| trivial calls, caller touched 1 GiB vs small caller | %.0f calls/s | %.0f calls/s "
           "| %.2fx | >= 0.8x: %s |\n", mbig, mp, mbig / mp, verdict(mbig / mp >= 0.8));
  printf("| 100 MiB result from a worker vs memcpy | %.0f MiB/s | %.0f MiB/s | %.2fx | >= 0.5x: "
         "%s |\n", 100 / mres, 100 / mcpy, mcpy / mres, verdict(mcpy / mres >= 0.5));
  printf("| caller RSS after 100,000 calls vs after 1,000 | %ld KiB | %ld KiB | %+ld KiB | "
         "within 2048 KiB: %s |\n", rss100k, rss1k, rss100k - rss1k,
         verdict(rss100k - rss1k <= 2048));
  printf("\n(median of %d rounds; %ld trivial calls per pool round, %ld per fork round)\n", reps,
         calls, fork_calls);
  ip_task_free(t);
  ip_task_free(tb);
  free(big_src);
  return 0;
}
