/* bench-core: what one call costs, measured against baselines taken in the same run.
 *
 *   fork   (i) the machine's fork floor: a hand-rolled socketpair + fork + poll + read +
 *              waitpid loop in plain C, next to (ii) the library doing the same work with
 *              ip_call + ip_waitfor_next, at concurrency 1, 2, 8 and 64. Target: >= 0.8x.
 *   large  (iii) 100 MiB and 1 GiB results, in place (ip_bytes_alloc in the child, a memfd
 *              mapped by the parent) and streamed (a malloc'ed buffer sent over the socket),
 *              against memcpy into a fresh buffer. Target for in place: >= 0.5x memcpy.
 *   idle   (iv) the parent's CPU while 200 children block and it waits 1 s for nothing.
 *              Target: < 5 ms of CPU per second.
 *
 * Machines are noisy, so every figure is the median of a few repetitions, and the baselines
 * are interleaved with the library runs. The floor runs in a helper process forked before the
 * library is first used, so it pays none of the library's at-fork handlers.
 *
 * Usage: bench-core [--quick] [--only=fork|large|idle[,...]] [--reps=N] [--tasks=N]
 *                   [--conc=1,2,8,64] [--side=floor|lib|both]
 *   --quick   1000 tasks per concurrency instead of 5000, and no 1 GiB case
 *   --help    all options. Per-run figures go to stderr, the tables to stdout.
 */
#define _GNU_SOURCE
#include <inparallel.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_REPS 31
#define PAGE 4096u

enum { ONLY_FORK = 1, ONLY_LARGE = 2, ONLY_IDLE = 4 };

static struct {
  bool quick;
  int only;
  int reps;
  int tasks;
} opt = {false, ONLY_FORK | ONLY_LARGE | ONLY_IDLE, 3, 0};

#define MAX_CONC 16
static int concurrencies[MAX_CONC] = {1, 2, 8, 64};
static int N_CONC = 4;
/* Which side of the fork section runs: both (the default), or one alone for profiling. */
enum { SIDE_BOTH = 3, SIDE_FLOOR = 1, SIDE_LIB = 2 };
static int side = SIDE_BOTH;

/* ---- small helpers -------------------------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static _Noreturn void die(const char *what) {
  fprintf(stderr, "bench-core: %s: %s\n", what, strerror(errno));
  exit(2);
}

static _Noreturn void fail(const char *fmt, const char *detail) {
  fprintf(stderr, "bench-core: ");
  fprintf(stderr, fmt, detail);
  fputc('\n', stderr);
  exit(2);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median, min and max of n samples (n >= 1). */
struct stat3 {
  double med, min, max;
};

static struct stat3 stats(const double *v, int n) {
  double s[MAX_REPS];
  memcpy(s, v, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  struct stat3 r = {n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, s[0], s[n - 1]};
  return r;
}

static const char *verdict(bool ok) { return ok ? "meets" : "MISSES"; }

/* CPU seconds of this process (all threads) plus its reaped children. A run's CPU per task is
 * the part of the comparison that other processes on a busy machine disturb least. */
static double cpu_with_children(void) {
  struct rusage a, b;
  getrusage(RUSAGE_SELF, &a);
  getrusage(RUSAGE_CHILDREN, &b);
  return (double)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) +
         (double)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec +
                  b.ru_stime.tv_usec) / 1e6;
}

/* One run: tasks per second of wall time, and CPU microseconds per task (parent + children). */
struct rate {
  double per_s, cpu_us;
};

/* ---- (i) the fork floor, in plain C ------------------------------------------------------- */

/* Runs `n` tasks keeping `c` in flight; returns tasks per second. Each task: socketpair, fork;
 * the child writes 8 bytes and _exit(0)s; the parent polls the sockets, reads the 8 bytes,
 * closes its end and reaps exactly that pid. */
static struct rate floor_run(int c, int n) {
  struct pollfd *pfd = calloc((size_t)c, sizeof *pfd);
  pid_t *pids = calloc((size_t)c, sizeof *pids);
  if (!pfd || !pids) die("calloc");
  int inflight = 0, started = 0, done = 0;
  uint64_t sum = 0;
  double c0 = cpu_with_children(), t0 = now_s();
  while (done < n) {
    while (inflight < c && started < n) {
      int sv[2];
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair");
      uint64_t v = (uint64_t)started + 1;
      pid_t pid = fork();
      if (pid < 0) die("fork");
      if (pid == 0) {
        close(sv[0]);
        ssize_t w = write(sv[1], &v, sizeof v);
        _exit(w == (ssize_t)sizeof v ? 0 : 1);
      }
      close(sv[1]);
      pfd[inflight] = (struct pollfd){.fd = sv[0], .events = POLLIN};
      pids[inflight] = pid;
      inflight++, started++;
    }
    if (poll(pfd, (nfds_t)inflight, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    for (int i = 0; i < inflight;) {
      if (!pfd[i].revents) {
        i++;
        continue;
      }
      uint64_t v = 0;
      ssize_t r;
      while ((r = read(pfd[i].fd, &v, sizeof v)) < 0 && errno == EINTR) {
      }
      if (r != (ssize_t)sizeof v) fail("floor: short read from a child%s", "");
      close(pfd[i].fd);
      int st;
      while (waitpid(pids[i], &st, 0) < 0)
        if (errno != EINTR) die("waitpid");
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail("floor: a child failed%s", "");
      sum += v;
      pfd[i] = pfd[inflight - 1];
      pids[i] = pids[inflight - 1];
      inflight--, done++;
    }
  }
  double t = now_s() - t0, cpu = cpu_with_children() - c0;
  if (sum != (uint64_t)n * ((uint64_t)n + 1) / 2) fail("floor: wrong results%s", "");
  free(pfd);
  free(pids);
  return (struct rate){n / t, cpu * 1e6 / n};
}

/* The floor runs in a helper forked before the library is first used (no at-fork handlers,
 * no supervisor thread), on request, so its runs interleave with the library's. */
static struct {
  pid_t pid;
  int cmd, res;
} worker = {0, -1, -1};

static void worker_start(void) {
  int a[2], b[2];
  if (pipe2(a, O_CLOEXEC) < 0 || pipe2(b, O_CLOEXEC) < 0) die("pipe");
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(a[1]);
    close(b[0]);
    int req[2];
    while (read(a[0], req, sizeof req) == (ssize_t)sizeof req && req[0] > 0) {
      struct rate r = floor_run(req[0], req[1]);
      if (write(b[1], &r, sizeof r) != (ssize_t)sizeof r) _exit(1);
    }
    _exit(0);
  }
  close(a[0]);
  close(b[1]);
  worker.pid = pid;
  worker.cmd = a[1];
  worker.res = b[0];
}

static struct rate floor_remote(int c, int n) {
  int req[2] = {c, n};
  struct rate r;
  if (write(worker.cmd, req, sizeof req) != (ssize_t)sizeof req) die("floor worker (write)");
  if (read(worker.res, &r, sizeof r) != (ssize_t)sizeof r) fail("the floor worker died%s", "");
  return r;
}

static void worker_stop(void) {
  if (worker.pid <= 0) return;
  close(worker.cmd);
  close(worker.res);
  while (waitpid(worker.pid, NULL, 0) < 0 && errno == EINTR) {
  }
  worker.pid = 0;
}

/* ---- (ii) the library, same work -------------------------------------------------------- */

static void *small_task(void *arg) {
  uint64_t v = (uint64_t)(uintptr_t)arg;
  return ip_bytes_copy(&v, sizeof v);
}

static struct rate lib_run(ip_task *t, int c, int n) {
  ip_list *l = ip_list_new();
  if (!l) die("ip_list_new");
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  int rc, started = 0, done = 0;
  uint64_t sum = 0;
  double c0 = cpu_with_children(), t0 = now_s();
  while ((rc = ip_waitfor_next(&w, l, c, -1, &f)) == 1) {
    if (!f) {
      if (started < n) {
        ip_future *nf = ip_call(t, (void *)(uintptr_t)(started + 1));
        if (!nf || ip_list_push(l, nf) < 0) die("ip_call");
        started++;
      }
      continue;
    }
    const ip_bytes *b = ip_future_value(f);
    if (!b || b->len != sizeof(uint64_t))
      fail("library: a call failed: %s", b ? "wrong length" : ip_future_error(f)->message);
    uint64_t v;
    memcpy(&v, b->data, sizeof v);
    sum += v;
    ip_future_free(f);
    done++;
  }
  double el = now_s() - t0, cpu = cpu_with_children() - c0;
  if (rc < 0) fail("ip_waitfor_next: %s", ip_strerror(rc));
  if (done != n || sum != (uint64_t)n * ((uint64_t)n + 1) / 2) fail("library: wrong results%s", "");
  ip_list_free(l);
  return (struct rate){n / el, cpu * 1e6 / n};
}

static struct {
  struct stat3 floor[MAX_CONC], lib[MAX_CONC], ratio[MAX_CONC];
  struct stat3 floor_cpu[MAX_CONC], lib_cpu[MAX_CONC], cpu_ratio[MAX_CONC];
} fork_res;

static void bench_fork(void) {
  int n = opt.tasks;
  ip_task *t = ip_task_new(small_task, NULL);
  if (!t) die("ip_task_new");
  /* Warm-up: start the supervisor, fault in both code paths. */
  if (side & SIDE_FLOOR) floor_remote(8, 200);
  if (side & SIDE_LIB) lib_run(t, 8, 200);

  static double fl[MAX_CONC][MAX_REPS], li[MAX_CONC][MAX_REPS], ra[MAX_CONC][MAX_REPS];
  static double flc[MAX_CONC][MAX_REPS], lic[MAX_CONC][MAX_REPS], rac[MAX_CONC][MAX_REPS];
  printf("(i)+(ii) fork floor vs library: %d tasks per run, 8-byte result, median of %d runs\n"
         "  ratio = median of the per-run ratios (each run pairs a floor and a library measurement\n"
         "  taken back to back). CPU = parent + children per task, user + system; its ratio\n"
         "  (floor CPU / library CPU) is what a busy machine disturbs least.\n",
         n, opt.reps);
  fflush(stdout);
  for (int r = 0; r < opt.reps; r++) {
    for (int k = 0; k < N_CONC; k++) {
      int c = concurrencies[k];
      struct rate a = {1, 1}, b = {1, 1}; /* a side that does not run reads as 1 */
      /* Alternate the order so neither side always runs on a warmer machine. */
      if (r % 2 == 0) {
        if (side & SIDE_FLOOR) a = floor_remote(c, n);
        if (side & SIDE_LIB) b = lib_run(t, c, n);
      } else {
        if (side & SIDE_LIB) b = lib_run(t, c, n);
        if (side & SIDE_FLOOR) a = floor_remote(c, n);
      }
      fl[k][r] = a.per_s, flc[k][r] = a.cpu_us;
      li[k][r] = b.per_s, lic[k][r] = b.cpu_us;
      ra[k][r] = b.per_s / a.per_s;
      rac[k][r] = a.cpu_us / b.cpu_us;
      fprintf(stderr, "  run %d  c=%-3d floor %6.0f/s %6.0f us CPU  library %6.0f/s %6.0f us CPU  "
              "ratio %.2f (CPU %.2f)\n", r + 1, c, a.per_s, a.cpu_us, b.per_s, b.cpu_us, ra[k][r],
              rac[k][r]);
    }
  }
  printf("  %4s  %13s  %13s  %6s  %11s  %11s  %11s  %9s  %s\n", "c", "floor tasks/s",
         "lib tasks/s", "ratio", "min - max", "floor CPU", "lib CPU", "CPU ratio",
         "target >= 0.8x");
  for (int k = 0; k < N_CONC; k++) {
    fork_res.floor[k] = stats(fl[k], opt.reps);
    fork_res.lib[k] = stats(li[k], opt.reps);
    fork_res.ratio[k] = stats(ra[k], opt.reps);
    fork_res.floor_cpu[k] = stats(flc[k], opt.reps);
    fork_res.lib_cpu[k] = stats(lic[k], opt.reps);
    fork_res.cpu_ratio[k] = stats(rac[k], opt.reps);
    printf("  %4d  %13.0f  %13.0f  %5.2fx  %4.2f - %4.2f  %8.0f us  %8.0f us  %8.2fx  %s\n",
           concurrencies[k], fork_res.floor[k].med, fork_res.lib[k].med, fork_res.ratio[k].med,
           fork_res.ratio[k].min, fork_res.ratio[k].max, fork_res.floor_cpu[k].med,
           fork_res.lib_cpu[k].med, fork_res.cpu_ratio[k].med,
           verdict(fork_res.ratio[k].med >= 0.8));
  }
  printf("  (wall time per task: floor %.1f us, library %.1f us at c=%d; %.1f vs %.1f us at c=%d)\n\n",
         1e6 / fork_res.floor[0].med, 1e6 / fork_res.lib[0].med, concurrencies[0],
         1e6 / fork_res.floor[N_CONC - 1].med, 1e6 / fork_res.lib[N_CONC - 1].med,
         concurrencies[N_CONC - 1]);
  ip_task_free(t);
}

/* ---- (iii) large results ---------------------------------------------------------------- */

static const unsigned char *g_src; /* filled by the parent before each call; children inherit it */
static size_t g_len;

static void *inplace_task(void *arg) {
  ip_bytes *b = ip_bytes_alloc(g_len);
  if (!b) ip_raise(ENOMEM, "ip_bytes_alloc(%zu) failed", g_len);
  memcpy(b->data, g_src, g_len);
  return b;
}

static void *streamed_task(void *arg) {
  static ip_bytes b;
  b.data = malloc(g_len);
  if (!b.data) ip_raise(ENOMEM, "malloc(%zu) failed", g_len);
  memcpy(b.data, g_src, g_len);
  b.len = g_len;
  return &b;
}

static void *map_anon(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die("mmap");
  return p;
}

/* Reads one byte per page: what a consumer pays to fault a fresh result in. */
static uint64_t touch_pages(const unsigned char *p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; i += PAGE) s += ((const volatile unsigned char *)p)[i];
  return s;
}

static void check_copy(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i += PAGE * 251)
    if (p[i] != g_src[i]) fail("large: the result differs from its source%s", "");
  if (p[n - 1] != g_src[n - 1]) fail("large: the result differs from its source%s", "");
}

enum { L_MEMCPY_FRESH, L_MEMCPY_WARM, L_INPLACE, L_INPLACE_TOUCH, L_STREAM, L_STREAM_TOUCH, L_N };
static const char *const l_names[L_N] = {
    "memcpy, fresh buffer (baseline)", "memcpy, pre-faulted buffer", "in place, value ready",
    "in place, + touch every page",    "streamed, value ready",      "streamed, + touch every page"};

static struct {
  int n_sizes;
  size_t size[2];
  struct stat3 sec[2][L_N];
  struct stat3 ratio[2][L_N]; /* memcpy (fresh) time / path time, paired run by run */
} large_res;

/* One library call returning a g_len-byte result; times[0] = ip_call to value ready,
 * times[1] = the same plus reading one byte per page. */
static void large_call(ip_task *t, double times[2]) {
  double t0 = now_s();
  ip_future *f = ip_call(t, NULL);
  if (!f) die("ip_call");
  const ip_bytes *b = ip_future_value(f);
  double t1 = now_s();
  if (!b) fail("large: the call failed: %s", ip_future_error(f)->message);
  if (b->len != g_len) fail("large: wrong result length%s", "");
  volatile uint64_t s = touch_pages(b->data, b->len);
  (void)s;
  double t2 = now_s();
  check_copy(b->data, b->len);
  ip_future_free(f);
  times[0] = t1 - t0;
  times[1] = t2 - t0;
}

static void bench_large(void) {
  ip_task *ti = ip_task_new(inplace_task, NULL), *ts = ip_task_new(streamed_task, NULL);
  if (!ti || !ts) die("ip_task_new");
  size_t sizes[2] = {(size_t)100 << 20, (size_t)1 << 30};
  large_res.n_sizes = opt.quick ? 1 : 2;
  printf("(iii) large results: median of %d runs; GB/s = 10^9 bytes/s; ratio = median over the\n"
         "  runs of (memcpy into a fresh buffer, same run) / (this path)\n", opt.reps);
  for (int s = 0; s < large_res.n_sizes; s++) {
    size_t n = sizes[s];
    large_res.size[s] = n;
    unsigned char *src = map_anon(n);
    for (size_t i = 0; i < n; i += 8) {
      uint64_t v = i * UINT64_C(0x9E3779B97F4A7C15);
      memcpy(src + i, &v, 8);
    }
    g_src = src;
    g_len = n;
    double v[L_N][MAX_REPS];
    for (int r = 0; r < opt.reps; r++) {
      /* memcpy into a fresh buffer: its page faults are part of producing a new result. */
      unsigned char *dst = map_anon(n);
      double t0 = now_s();
      memcpy(dst, src, n);
      v[L_MEMCPY_FRESH][r] = now_s() - t0;
      check_copy(dst, n);
      /* The same copy again, now that every page is there: the raw copy speed. */
      t0 = now_s();
      memcpy(dst, src, n);
      v[L_MEMCPY_WARM][r] = now_s() - t0;
      munmap(dst, n);

      double tt[2];
      large_call(ti, tt);
      v[L_INPLACE][r] = tt[0];
      v[L_INPLACE_TOUCH][r] = tt[1];
      large_call(ts, tt);
      v[L_STREAM][r] = tt[0];
      v[L_STREAM_TOUCH][r] = tt[1];
      fprintf(stderr, "  run %d  %4zu MiB  memcpy %.1f ms (warm %.1f)  in place %.1f / %.1f ms  "
              "streamed %.1f / %.1f ms\n", r + 1, n >> 20, v[0][r] * 1e3, v[1][r] * 1e3,
              v[2][r] * 1e3, v[3][r] * 1e3, v[4][r] * 1e3, v[5][r] * 1e3);
    }
    munmap(src, n);
    g_src = NULL;
    for (int k = 0; k < L_N; k++) {
      double ra[MAX_REPS];
      for (int r = 0; r < opt.reps; r++) ra[r] = v[L_MEMCPY_FRESH][r] / v[k][r];
      large_res.sec[s][k] = stats(v[k], opt.reps);
      large_res.ratio[s][k] = stats(ra, opt.reps);
    }
    printf("  %s\n", n >= ((size_t)1 << 30) ? "1 GiB" : "100 MiB");
    printf("    %-32s %9s %8s %7s  %s\n", "path", "ms", "GB/s", "ratio", "target");
    for (int k = 0; k < L_N; k++) {
      double sec = large_res.sec[s][k].med, ratio = large_res.ratio[s][k].med;
      const char *target = "";
      if (k == L_INPLACE || k == L_INPLACE_TOUCH)
        target = ratio >= 0.5 ? "meets >= 0.5x" : "MISSES >= 0.5x";
      printf("    %-32s %9.1f %8.2f %6.2fx  %s\n", l_names[k], sec * 1e3, n / sec / 1e9, ratio,
             target);
    }
  }
  printf("\n");
  ip_task_free(ti);
  ip_task_free(ts);
}

/* ---- (iv) idle cost --------------------------------------------------------------------- */

#define IDLE_CHILDREN 200

static int block_fd[2] = {-1, -1};

static void *blocking_task(void *arg) {
  close(block_fd[1]); /* so closing the parent's end is the children's EOF */
  char ch;
  while (read(block_fd[0], &ch, 1) < 0 && errno == EINTR) {
  }
  return ip_bytes_copy("ok", 2);
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static struct stat3 idle_res;

static void bench_idle(void) {
  ip_task *t = ip_task_new(blocking_task, NULL);
  ip_list *l = ip_list_new();
  if (!t || !l) die("ip_task_new");
  if (pipe2(block_fd, O_CLOEXEC) < 0) die("pipe");
  for (int i = 0; i < IDLE_CHILDREN; i++) {
    ip_future *f = ip_call(t, NULL);
    if (!f || ip_list_push(l, f) < 0) die("ip_call");
    if (ip_future_done(f)) fail("idle: a call failed to start: %s", ip_future_error(f)->message);
  }
  usleep(200 * 1000); /* let the children settle into read() */

  double per_s[MAX_REPS];
  ip_waitfor w = IP_WAITFOR_INIT;
  for (int r = 0; r < opt.reps; r++) {
    ip_future *f;
    double c0 = cpu_s(), t0 = now_s();
    int rc = ip_waitfor_next(&w, l, 0, 1000, &f);
    double wall = now_s() - t0, cpu = cpu_s() - c0;
    if (rc != IP_ETIMEDOUT) fail("idle: ip_waitfor_next returned %s, not ETIMEDOUT", ip_err_name(rc));
    per_s[r] = cpu * 1e3 / wall;
    fprintf(stderr, "  run %d  waited %.0f ms, CPU %.3f ms -> %.3f ms/s\n", r + 1, wall * 1e3,
            cpu * 1e3, per_s[r]);
  }
  idle_res = stats(per_s, opt.reps);

  /* Release the children and collect them; cancel any that do not finish. */
  close(block_fd[1]);
  block_fd[1] = -1;
  ip_future *f;
  int rc, ok = 0, failed = 0;
  while ((rc = ip_waitfor_next(&w, l, 0, 10000, &f)) == 1) {
    if (ip_future_value(f)) ok++;
    else failed++;
    ip_future_free(f);
  }
  for (size_t i = ip_list_len(l); i-- > 0;) {
    ip_future *g = ip_list_remove(l, i);
    ip_future_cancel(g);
    ip_future_free(g);
    failed++;
  }
  close(block_fd[0]);
  ip_list_free(l);
  ip_task_free(t);

  printf("(iv) idle: %d blocked children, parent waits 1000 ms in ip_waitfor_next; median of %d\n",
         IDLE_CHILDREN, opt.reps);
  printf("    CPU %.3f ms/s (min %.3f, max %.3f)   target < 5 ms/s: %s\n", idle_res.med,
         idle_res.min, idle_res.max, verdict(idle_res.med < 5));
  printf("    released: %d completed, %d failed or canceled\n\n", ok, failed);
  if (failed) fail("idle: %s", "some children did not complete after release");
}

/* ---- the markdown summary ---------------------------------------------------------------- */

static void print_markdown(void) {
  printf("Markdown summary (medians of %d runs, %s mode):\n\n", opt.reps, opt.quick ? "quick" : "full");
  if (opt.only & ONLY_FORK) {
    printf("| concurrency | floor tasks/s | inparallel tasks/s | ratio | CPU/task floor | CPU/task "
           "inparallel | CPU ratio | target >= 0.8x |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|:---|\n");
    for (int k = 0; k < N_CONC; k++)
      printf("| %d | %.0f | %.0f | %.2fx | %.0f us | %.0f us | %.2fx | %s |\n", concurrencies[k],
             fork_res.floor[k].med, fork_res.lib[k].med, fork_res.ratio[k].med,
             fork_res.floor_cpu[k].med, fork_res.lib_cpu[k].med, fork_res.cpu_ratio[k].med,
             verdict(fork_res.ratio[k].med >= 0.8));
    printf("\n");
  }
  if (opt.only & ONLY_LARGE) {
    printf("| result | path | ms | GB/s | vs memcpy (fresh) | target |\n");
    printf("|---|---|---:|---:|---:|:---|\n");
    for (int s = 0; s < large_res.n_sizes; s++) {
      size_t n = large_res.size[s];
      for (int k = 0; k < L_N; k++) {
        double sec = large_res.sec[s][k].med, ratio = large_res.ratio[s][k].med;
        const char *target = "";
        if (k == L_INPLACE || k == L_INPLACE_TOUCH)
          target = ratio >= 0.5 ? "meets >= 0.5x" : "MISSES >= 0.5x";
        printf("| %s | %s | %.1f | %.2f | %.2fx | %s |\n",
               n >= ((size_t)1 << 30) ? "1 GiB" : "100 MiB", l_names[k], sec * 1e3, n / sec / 1e9,
               ratio, target);
      }
    }
    printf("\n");
  }
  if (opt.only & ONLY_IDLE) {
    printf("| idle | parent CPU | target < 5 ms/s |\n|---|---:|:---|\n");
    printf("| %d blocked children, 1 s wait | %.3f ms/s | %s |\n\n", IDLE_CHILDREN, idle_res.med,
           verdict(idle_res.med < 5));
  }
}

/* ---- main -------------------------------------------------------------------------------- */

/* The 1-minute load average, to tell a quiet machine from a busy one in the output. */
static double loadavg(void) {
  double l = -1;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf", &l) != 1) l = -1;
    fclose(f);
  }
  return l;
}

static _Noreturn void usage(int rc) {
  fprintf(rc ? stderr : stdout,
          "usage: bench-core [--quick] [--only=fork|large|idle[,...]] [--reps=N] [--tasks=N]\n"
          "                  [--conc=1,2,8,64] [--side=floor|lib|both]\n"
          "  --quick    1000 tasks per concurrency (instead of 5000), no 1 GiB case\n"
          "  --only=    run only these sections (comma-separated)\n"
          "  --reps=N   repetitions per figure; the median is reported (default 3, max %d)\n"
          "  --tasks=N  tasks per concurrency level in the fork section\n"
          "  --conc=LIST      concurrency levels of the fork section (default 1,2,8,64)\n"
          "  --side=floor|lib run one side of the fork section alone (for profiling)\n"
          "Per-run figures go to stderr, the tables to stdout.\n",
          MAX_REPS);
  exit(rc);
}

int main(int argc, char **argv) {
  bool only_set = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--quick")) opt.quick = true;
    else if (!strcmp(a, "--full")) opt.quick = false;
    else if (!strncmp(a, "--reps=", 7)) opt.reps = atoi(a + 7);
    else if (!strncmp(a, "--tasks=", 8)) opt.tasks = atoi(a + 8);
    else if (!strncmp(a, "--conc=", 7)) {
      N_CONC = 0;
      for (const char *p = a + 7; *p && N_CONC < MAX_CONC;) {
        char *end;
        long c = strtol(p, &end, 10);
        if (end == p || c < 1 || c > 4096) usage(1);
        concurrencies[N_CONC++] = (int)c;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') usage(1);
      }
      if (!N_CONC) usage(1);
    } else if (!strcmp(a, "--side=floor")) side = SIDE_FLOOR;
    else if (!strcmp(a, "--side=lib")) side = SIDE_LIB;
    else if (!strcmp(a, "--side=both")) side = SIDE_BOTH;
    else if (!strncmp(a, "--only=", 7)) {
      if (!only_set) opt.only = 0;
      only_set = true;
      char *list = strdup(a + 7), *save = NULL;
      for (char *w = strtok_r(list, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
        if (!strcmp(w, "fork")) opt.only |= ONLY_FORK;
        else if (!strcmp(w, "large")) opt.only |= ONLY_LARGE;
        else if (!strcmp(w, "idle")) opt.only |= ONLY_IDLE;
        else usage(1);
      }
      free(list);
    } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) usage(0);
    else usage(1);
  }
  if (opt.reps < 1 || opt.reps > MAX_REPS || !opt.only) usage(1);
  if (opt.tasks <= 0) opt.tasks = opt.quick ? 1000 : 5000;

  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  double t_start = now_s();
  printf("bench-core: inparallel %s, %ld CPUs, load average %.2f, %s mode, %d repetitions\n\n",
         ip_version(), cpus, loadavg(), opt.quick ? "quick" : "full", opt.reps);
  fflush(stdout);

  if ((opt.only & ONLY_FORK) && (side & SIDE_FLOOR)) worker_start(); /* before any ip_ call */
  if (opt.only & ONLY_FORK) bench_fork();
  worker_stop();
  fflush(stdout);
  if (opt.only & ONLY_LARGE) bench_large();
  fflush(stdout);
  if (opt.only & ONLY_IDLE) bench_idle();
  print_markdown();
  printf("Took %.0f s; load average at the end %.2f (other processes compete for the %ld CPUs: "
         "compare ratios, not absolute rates).\n", now_s() - t_start, loadavg(), cpus);
  return 0;
}
