/* libinparallel-mpi under a real mpirun: tests/mpi/run.sh starts this program once per case,
 * `mpirun -np 4 suite CASE`, and reads what the root prints: a line "ok - what" or
 * "not ok - what: why" per check, then "done". Every rank names the same tasks (but in the
 * "mismatch" case) and the worker ranks serve until the root frees its pool.
 *
 * Cases: calls, failures, reuse, large, free-busy, mismatch, rank-death, one-rank. */
#include <inparallel/mpi.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failed;

static void check(int ok, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(int ok, const char *what, const char *fmt, ...) {
  if (ok) {
    printf("ok - %s\n", what);
  } else {
    char why[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    printf("not ok - %s: %s\n", what, why);
    failed = 1;
  }
  fflush(stdout);
}

/* ---- the tasks: raw bytes in and out ---------------------------------------------------------- */

static long arg_long(void *arg) {
  const ip_bytes *b = arg;
  char s[32] = "";
  memcpy(s, b->data, b->len < sizeof s - 1 ? b->len : sizeof s - 1);
  return atol(s);
}

static void *square(void *arg) {
  long x = arg_long(arg);
  char out[64];
  int n = snprintf(out, sizeof out, "%ld %d", x * x, (int)getpid());
  return ip_bytes_copy(out, (size_t)n);
}

static void *raise_it(void *arg) { ip_raise(ECONNREFUSED, "cannot reach host %ld", arg_long(arg)); }

static void *crash(void *arg) {
  (void)arg;
  raise(SIGSEGV);
  return NULL;
}

static void *sleepy(void *arg) {
  (void)arg;
  for (;;) pause();
  return NULL;
}

static void *kill_rank(void *arg) { /* ends the whole rank that runs it, not just this child */
  (void)arg;
  kill(getppid(), SIGKILL);
  for (;;) pause();
  return NULL;
}

static void *big(void *arg) { /* arg: MiB */
  size_t n = (size_t)arg_long(arg) << 20;
  ip_bytes *b = ip_bytes_alloc(n);
  if (!b) ip_raise(ENOMEM, "no %zu bytes", n);
  unsigned char *p = b->data;
  for (size_t i = 0; i < n; i += 4096) p[i] = (unsigned char)(i >> 12);
  p[n - 1] = 0x5a;
  return b;
}

static void *echo_len(void *arg) { /* the argument's length and last byte, as text */
  const ip_bytes *b = arg;
  char out[64];
  int n = snprintf(out, sizeof out, "%zu %d", b->len, b->len ? ((unsigned char *)b->data)[b->len - 1] : -1);
  return ip_bytes_copy(out, (size_t)n);
}

static ip_task *t_square, *t_raise, *t_crash, *t_sleepy, *t_timeout, *t_kill, *t_big, *t_echo;

static ip_task *named(ip_fn fn, const char *name) {
  ip_task *t = ip_task_new(fn, NULL);
  if (!t || ip_task_set_name(t, name) != 0) {
    fprintf(stderr, "cannot make task %s\n", name);
    exit(2);
  }
  return t;
}

static ip_future *call_long(ip_pool *p, ip_task *t, long x) {
  char s[32];
  ip_bytes b = {s, (size_t)snprintf(s, sizeof s, "%ld", x)};
  return ip_pool_call(p, t, &b);
}

/* ---- the cases (on the root) -------------------------------------------------------------------- */

/* 1,000 calls through waitfor with a concurrency factor: each result right, each once. */
static void case_calls(ip_pool *p) {
  enum { N = 1000 };
  static char seen[N];
  ip_list *active = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  long next = 0;
  int rc, good = 0, bad = 0, pids_ok = 1;
  char first_bad[200] = "";
  while ((rc = ip_waitfor_step(&w, active, 16, -1, &f)) > 0) {
    if (rc == IP_WAITFOR_ASK) {
      if (next < N) ip_list_push(active, call_long(p, t_square, next++));
      continue;
    }
    const ip_bytes *out = ip_future_value(f);
    long got = -1;
    int pid = 0;
    if (out) {
      char text[64] = "";
      memcpy(text, out->data, out->len < sizeof text - 1 ? out->len : sizeof text - 1);
      sscanf(text, "%ld %d", &got, &pid);
    }
    /* The argument's bytes went with the call; the future keeps the pointer, now stale: the
     * result says which call it was instead. */
    long i = -1;
    for (long k = 0; k < N && i < 0; k++)
      if (k * k == got) i = k;
    if (i >= 0 && !seen[i]) {
      seen[i] = 1;
      good++;
    } else if (bad++ == 0) {
      snprintf(first_bad, sizeof first_bad, "%s", out ? "a result twice or wrong"
               : ip_future_error(f)->message);
    }
    if (ip_future_pid(f) <= 0 || ip_future_pid(f) != pid || pid == getpid()) {
      if (pids_ok) fprintf(stderr, "pid %d, child says %d, root %d\n", (int)ip_future_pid(f), pid, (int)getpid());
      pids_ok = 0;
    }
    ip_future_free(f);
  }
  check(rc == IP_WAITFOR_END && good == N && bad == 0, "1000 calls through waitfor(16)",
        "%d right, %d wrong (%s), end %d", good, bad, first_bad, rc);
  check(pids_ok, "ip_future_pid is the child's pid on its rank", "a pid did not match");
  ip_list_free(active);
}

/* Each kind of failure fails its call alone: the calls around it succeed, the rank serves on. */
static void case_failures(ip_pool *p) {
  ip_future *ok1 = call_long(p, t_square, 7);
  ip_future *r = call_long(p, t_raise, 42);
  ip_future *c = call_long(p, t_crash, 0);
  ip_future *to = call_long(p, t_timeout, 0); /* a 300 ms timeout, on every rank */
  const ip_error *e = ip_future_error((ip_future_wait(r, -1), r));
  check(e && e->code == IP_ERAISED && e->raised_code == ECONNREFUSED &&
            strstr(e->message, "cannot reach host 42") && strcmp(e->kind, "ECONNREFUSED") == 0 &&
            e->backtrace && e->pid > 0,
        "ip_raise on a rank fails its call with code, kind, message and backtrace",
        "%s", e ? e->message : "it succeeded");
  ip_future_wait(c, -1);
  e = ip_future_error(c);
  check(e && e->code == IP_ESIGNALED && e->signal == SIGSEGV && e->backtrace && e->pid > 0,
        "a crash on a rank fails its call with the signal and the child's stack",
        "%s", e ? e->message : "it succeeded");
  ip_future_wait(to, -1);
  e = ip_future_error(to);
  check(e && e->code == IP_ETIMEDOUT, "a task timeout on a rank fails its call",
        "%s", e ? e->message : "it succeeded");
  ip_future *s1 = call_long(p, t_sleepy, 1);
  ip_future *s2 = call_long(p, t_sleepy, 2);
  ip_future *s3 = call_long(p, t_sleepy, 3);
  ip_future *s4 = call_long(p, t_sleepy, 4); /* three ranks: one of these waits its turn */
  int rc = ip_future_cancel(s1);
  e = ip_future_error(s1);
  check(rc == 0 && e && e->code == IP_ECANCELED, "ip_future_cancel of a call out on a rank",
        "rc %d, %s", rc, e ? e->message : "it succeeded");
  for (ip_future *q[] = {s2, s3, s4}, **x = q; x < q + 3; x++) ip_future_cancel(*x);
  check(ip_future_status(s2) == IP_ECANCELED && ip_future_status(s3) == IP_ECANCELED &&
            ip_future_status(s4) == IP_ECANCELED,
        "ip_future_cancel of calls out and queued", "statuses %d %d %d",
        ip_future_status(s2), ip_future_status(s3), ip_future_status(s4));
  ip_future *ok2 = call_long(p, t_square, 8);
  const ip_bytes *v1 = ip_future_value(ok1), *v2 = ip_future_value(ok2);
  check(v1 && strncmp(v1->data, "49 ", 3) == 0 && v2 && strncmp(v2->data, "64 ", 3) == 0,
        "the calls around the failures succeed", "%s / %s",
        v1 ? "ok" : ip_future_error(ok1)->message, v2 ? "ok" : ip_future_error(ok2)->message);
  check(ip_pool_workers(p) == 3, "ip_pool_workers is the worker ranks", "%d", ip_pool_workers(p));
  ip_future *fs[] = {ok1, r, c, to, s1, s2, s3, s4, ok2};
  for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) ip_future_free(fs[i]);
  ip_task *unnamed = ip_task_new(square, NULL);
  ip_future *u = call_long(p, unnamed, 1);
  e = ip_future_error((ip_future_wait(u, -1), u));
  check(e && e->code == IP_EINVAL && strstr(e->message, "no name"),
        "a call of an unnamed task fails with a message that says so", "%s", e ? e->message : "ok");
  ip_future_free(u);
  ip_task_free(unnamed);
}

/* Results and arguments larger than an MPI count (2 GiB) travel in pieces. */
static void case_large(ip_pool *p) {
  long mib = 2048 + 3;
  ip_future *f = call_long(p, t_big, mib);
  const ip_bytes *v = ip_future_value(f);
  size_t n = (size_t)mib << 20;
  int ok = v && v->len == n && ((unsigned char *)v->data)[n - 1] == 0x5a;
  for (size_t i = 0; ok && i < n - 1; i += 4096) ok = ((unsigned char *)v->data)[i] == (unsigned char)(i >> 12);
  check(ok, "a 2051 MiB result", "%s", v ? "wrong bytes" : ip_future_error(f)->message);
  ip_future_free(f);
  ip_bytes a = {malloc(n), n};
  if (!a.data) {
    check(0, "a 2051 MiB argument", "no memory here");
    return;
  }
  memset(a.data, 1, n);
  ((unsigned char *)a.data)[n - 1] = 0x77;
  f = ip_pool_call(p, t_echo, &a);
  free(a.data);
  v = ip_future_value(f);
  char want[64];
  snprintf(want, sizeof want, "%zu %d", n, 0x77);
  check(v && v->len == strlen(want) && memcmp(v->data, want, v->len) == 0, "a 2051 MiB argument",
        "%s", v ? "wrong length" : ip_future_error(f)->message);
  ip_future_free(f);
  f = call_long(p, t_big, 10);
  v = ip_future_value(f);
  check(v && v->len == (size_t)10 << 20, "a 10 MiB result", "%s", v ? "wrong" : ip_future_error(f)->message);
  ip_future_free(f);
}

/* ip_pool_free while calls are out and queued: they fail, the ranks stop, nothing hangs. */
static void case_free_busy(ip_pool *p) {
  ip_future *fs[8];
  for (int i = 0; i < 8; i++) fs[i] = call_long(p, t_sleepy, i);
  ip_pool_free(p);
  int canceled = 0;
  for (int i = 0; i < 8; i++) canceled += ip_future_status(fs[i]) == IP_ECANCELED;
  check(canceled == 8, "ip_pool_free fails the calls out and queued", "%d of 8", canceled);
  for (int i = 0; i < 8; i++) ip_future_free(fs[i]);
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "calls";
  t_square = named(square, "square");
  t_raise = named(raise_it, "raise");
  t_crash = named(crash, "crash");
  t_sleepy = named(sleepy, "sleepy");
  t_timeout = named(sleepy, "sleepy_300ms");
  ip_task_set_timeout(t_timeout, 300);
  t_kill = named(kill_rank, "kill_rank");
  t_big = named(big, "big");
  t_echo = named(echo_len, "echo_len");
  if (strcmp(what, "reuse") == 0) ip_mpi_set_reuse(1);
  int rc = ip_mpi_init(&argc, &argv);
  int me = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  if (strcmp(what, "mismatch") == 0 && rc == 0) {
    /* Named after the check of ip_mpi_init, on one rank only: ip_mpi_pool's check sees it. */
    if (me == 2) named(square, "only_on_rank_2");
    ip_pool *p = ip_mpi_pool(MPI_COMM_WORLD, 0);
    fprintf(stderr, "rank %d: %s\n", me, p ? "no failure" : ip_mpi_errmsg());
    ip_mpi_finalize();
    return p ? 0 : 3;
  }
  if (rc < 0) {
    fprintf(stderr, "rank %d: %s\n", me, ip_mpi_errmsg());
    return 3;
  }
  ip_pool *p = ip_mpi_pool(MPI_COMM_WORLD, 0);
  if (!p) {
    int e = errno;
    if (e) fprintf(stderr, "rank %d: %s\n", me, ip_mpi_errmsg());
    ip_mpi_finalize();
    return e ? 3 : 0;
  }
  if (strcmp(what, "calls") == 0) case_calls(p);
  else if (strcmp(what, "failures") == 0) case_failures(p);
  else if (strcmp(what, "reuse") == 0) {
    case_calls(p);
    case_failures(p);
  } else if (strcmp(what, "large") == 0) case_large(p);
  else if (strcmp(what, "free-busy") == 0) {
    case_free_busy(p);
    p = NULL;
  } else if (strcmp(what, "rank-death") == 0) {
    ip_future *f = call_long(p, t_kill, 0);
    ip_future_wait(f, -1); /* mpirun ends the job first */
    check(0, "the job ended when a rank died", "the root lived on: %s",
          ip_future_error(f) ? ip_future_error(f)->message : "ok");
  }
  ip_pool_free(p);
  printf("done\n");
  ip_mpi_finalize();
  return failed;
}
