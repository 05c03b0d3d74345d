/* Pools: reused worker processes (include/inparallel.h, "Pools"). Every test runs real
 * processes: a template forked by ip_pool_new, workers forked by the template. What a worker
 * did is seen through pipes made before the pool (a worker inherits them, as it inherits the
 * rest of the caller's memory as it was then): each run of a task function writes its tag to
 * the run log, a call that blocks says so on the `started` pipe first and then waits at the
 * gate. Waits are on those pipes and on futures; time appears only in hang guards. */
#define _GNU_SOURCE
#include "helpers.h"
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/stat.h>

/* A guard against hangs only (valgrind is slow, and a few tests move tens of MiB). */
TestSuite(pool, .timeout = 300);

/* ---- pipes the workers inherit --------------------------------------------------------------- */

static struct gate G;              /* gated calls wait here for a byte each */
static int runs[2] = {-1, -1};     /* each run of a task function writes its tag byte */
static int started[2] = {-1, -1};  /* a gated call writes 's' before it waits */
static int never[2] = {-1, -1};    /* nobody writes: a call that reads it blocks for good */

/* Opens the pipes; call before ip_pool_new, so that the workers have them. */
static void setup_pipes(void) {
  gate_open(&G);
  cr_assert_eq(pipe2(runs, O_CLOEXEC), 0);
  cr_assert_eq(pipe2(started, O_CLOEXEC), 0);
  cr_assert_eq(pipe2(never, O_CLOEXEC), 0);
  /* The test's end only: the workers write, and a log is read once the runs are over. */
  cr_assert_eq(fcntl(runs[0], F_SETFL, O_NONBLOCK), 0);
}

static void close_pipes(void) {
  gate_close(&G);
  close(runs[0]), close(runs[1]);
  close(started[0]), close(started[1]);
  close(never[0]), close(never[1]);
}

/* Waits (guarded) until n gated calls have started. */
static void await_started(int n) {
  int64_t deadline = now_ms() + guard_ms(30000);
  int got = 0;
  while (got < n) {
    struct pollfd p = {started[0], POLLIN, 0};
    int r = poll(&p, 1, left_ms(deadline));
    if (r < 0 && errno == EINTR) continue;
    cr_assert_gt(r, 0, "only %d of %d gated calls started", got, n);
    char c;
    if (read(started[0], &c, 1) == 1) got++;
  }
}

/* The run log so far, NUL-terminated. Read once the runs it must show are over. */
static const char *run_log(void) {
  static char buf[4096];
  static size_t have;
  ssize_t r;
  while (have < sizeof buf - 1 && (r = read(runs[0], buf + have, sizeof buf - 1 - have)) > 0)
    have += (size_t)r;
  buf[have] = '\0';
  return buf;
}

static int runs_of(char tag) {
  int n = 0;
  for (const char *p = run_log(); *p; p++) n += *p == tag;
  return n;
}

/* ---- processes ------------------------------------------------------------------------------- */

static int have_children_files(void) {
  char path[96];
  snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)getpid(), (int)getpid());
  return access(path, R_OK) == 0;
}

#define SKIP_WITHOUT_CHILDREN_FILES()                                                          \
  do {                                                                                          \
    if (!have_children_files())                                                                 \
      cr_skip_test("/proc/<pid>/task/<tid>/children is missing (kernel without "               \
                   "CONFIG_PROC_CHILDREN): the template and the workers cannot be listed");    \
  } while (0)

/* The pool's template: right after ip_pool_new, the test process's only child. */
static pid_t template_pid(void) {
  pid_t kids[8];
  int n = children_of(getpid(), kids, 8);
  cr_assert_eq(n, 1, "the test process should have exactly one child, the template (has %d)", n);
  return kids[0];
}

/* The template's children, i.e. the workers, sorted. */
static int workers_of(pid_t tpl, pid_t *out, int max) {
  int n = children_of(tpl, out, max);
  cr_assert_geq(n, 0);
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
      pid_t x = out[j];
      out[j] = out[j - 1];
      out[j - 1] = x;
    }
  return n;
}

static int pid_in(pid_t pid, const pid_t *set, int n) {
  for (int i = 0; i < n; i++)
    if (set[i] == pid) return 1;
  return 0;
}

/* Reaps `pid` (a child of this process, or an orphan it adopted as a subreaper) within
 * limit_ms: 1 reaped, 0 still there when the guard ran out, -1 not a child (ECHILD). The pause
 * between looks only paces the watching. */
static int reap_within(pid_t pid, int limit_ms, int *status) {
  int64_t deadline = now_ms() + limit_ms;
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) return 1;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno == ECHILD ? -1 : 0;
    if (left_ms(deadline) == 0) return 0;
    poll(NULL, 0, 1);
  }
}

/* ---- task functions (they run in workers) ---------------------------------------------------- */

static char tag_of(const void *arg) {
  const ip_bytes *b = arg;
  return b && b->len ? ((const char *)b->data)[0] : '?';
}

static void note_run(const void *arg) {
  char c = tag_of(arg);
  ssize_t w = write(runs[1], &c, 1);
  (void)w;
}

static void wait_gate(void) {
  char c = 's';
  ssize_t r = write(started[1], &c, 1);
  while ((r = read(G.fd[0], &c, 1)) < 0 && errno == EINTR) {
  }
}

static ip_bytes *pid_bytes(void) {
  pid_t me = getpid();
  return ip_bytes_copy(&me, sizeof me);
}

/* Returns the worker's pid. */
static void *fn_pid(void *arg) {
  note_run(arg);
  return pid_bytes();
}

/* Says it started, waits at the gate, returns the worker's pid. */
static void *fn_gated(void *arg) {
  note_run(arg);
  wait_gate();
  return pid_bytes();
}

/* Says it started and blocks for good. */
static void *fn_forever(void *arg) {
  note_run(arg);
  char c = 's';
  ssize_t r = write(started[1], &c, 1);
  while ((r = read(never[0], &c, 1)) < 0 && errno == EINTR) {
  }
  return pid_bytes();
}

/* The ways a worker dies, each after the gate, so that the test can queue calls behind it.
 * The null store is the point. The function has test-errors' name, so that the entry of
 * tests/valgrind.supp for that deliberate crash covers this one too. */
void *segfault_here(void *arg);
__attribute__((no_sanitize("undefined"))) void *segfault_here(void *arg) {
  note_run(arg);
  wait_gate();
  volatile int *p = NULL;
  *p = 1;
  return pid_bytes();
}
static void *fn_abort(void *arg) {
  note_run(arg);
  wait_gate();
  abort();
}
static void *fn_exit3(void *arg) {
  note_run(arg);
  wait_gate();
  _exit(3);
}
static void *fn_kill_self(void *arg) {
  note_run(arg);
  wait_gate();
  kill(getpid(), SIGKILL);
  for (;;) pause();
  return NULL;
}

/* Crashes at once (no gate). */
static void *fn_crash_now(void *arg) {
  note_run(arg);
  abort();
}

static void *fn_raise(void *arg) {
  note_run(arg);
  ip_raise(4242, "pool raise %c in %d", tag_of(arg), (int)getpid());
}

/* Says what it got. */
static void *fn_describe(void *arg) {
  const ip_bytes *b = arg;
  char buf[64];
  if (!b) return bytes_of("NULL");
  snprintf(buf, sizeof buf, "len=%zu data=%s", b->len, b->data ? "set" : "NULL");
  return bytes_of(buf);
}

/* ---- caller side ----------------------------------------------------------------------------- */

static ip_task *task(ip_fn fn) {
  ip_task *t = ip_task_new(fn, NULL);
  cr_assert_not_null(t);
  return t;
}

static ip_pool *pool(int n) {
  ip_pool *p = ip_pool_new(n);
  cr_assert_not_null(p, "ip_pool_new(%d): %s", n, strerror(errno));
  return p;
}

/* A pool call whose argument is one tag byte, from a buffer gone when this returns. */
static ip_future *pcall(ip_pool *p, ip_task *t, char tag) {
  char c = tag;
  ip_bytes b = {&c, 1};
  ip_future *f = ip_pool_call(p, t, &b);
  cr_assert_not_null(f);
  return f;
}

/* Waits for f, which must have succeeded with a pid as its value, equal to ip_future_pid. */
static pid_t value_pid(ip_future *f) {
  cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0, "the call never completed");
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "the call failed: %s: %s", ip_err_name(ip_future_status(f)), why(f));
  cr_assert_eq(b->len, sizeof(pid_t));
  pid_t pid;
  memcpy(&pid, b->data, sizeof pid);
  cr_assert_gt(pid, 0);
  cr_assert_eq(ip_future_pid(f), pid, "ip_future_pid %d, but the call ran in %d",
               (int)ip_future_pid(f), (int)pid);
  return pid;
}

/* One call of t, waited for and freed: the worker's pid. */
static pid_t run_pid(ip_pool *p, ip_task *t, char tag) {
  ip_future *f = pcall(p, t, tag);
  pid_t pid = value_pid(f);
  ip_future_free(f);
  return pid;
}

/* Waits for f, which must have failed with `code`; returns its error. */
static const ip_error *failed_with(ip_future *f, int code) {
  cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0, "the call never completed");
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e, "succeeded where %s was expected", ip_err_name(code));
  cr_assert_eq(e->code, code, "want %s, got %s: %s", ip_err_name(code), ip_err_name(e->code),
               e->message);
  cr_assert_eq(ip_future_status(f), code);
  cr_assert_null(ip_future_value(f));
  return e;
}

/* f failed already, without any wait: ip_future_status never waits. */
static const ip_error *failed_at_once(ip_future *f, int code) {
  int st = ip_future_status(f);
  cr_assert_neq(st, IP_EAGAIN, "the call did not fail at once");
  cr_assert_eq(st, code, "want %s, got %s: %s", ip_err_name(code), ip_err_name(st), why(f));
  return failed_with(f, code);
}

/* ==== 1. construction and misuse ============================================================== */

Test(pool, new_with_zero_or_negative_workers_is_einval_and_forks_nothing) {
  int bad[] = {0, -1, -1000};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    errno = 0;
    cr_assert_null(ip_pool_new(bad[i]), "ip_pool_new(%d)", bad[i]);
    cr_assert_eq(errno, EINVAL, "ip_pool_new(%d): errno %d", bad[i], errno);
  }
  cr_assert(no_children(), "a refused pool forked something");
}

Test(pool, workers_is_n_right_after_new_and_each_is_a_process) {
  SKIP_WITHOUT_CHILDREN_FILES();
  for (int n = 1; n <= 4; n += 3) {
    ip_pool *p = pool(n);
    cr_assert_eq(ip_pool_workers(p), n);
    pid_t tpl = template_pid();
    pid_t w[8];
    cr_assert_eq(workers_of(tpl, w, 8), n, "the template should have %d children", n);
    ip_pool_free(p);
    cr_assert(no_children());
    cr_assert(pid_gone(tpl));
    for (int i = 0; i < n; i++) cr_assert(pid_gone(w[i]), "worker %d left", (int)w[i]);
  }
}

Test(pool, setters_and_accessors_reject_null) {
  cr_assert_eq(ip_pool_workers(NULL), IP_EINVAL);
  cr_assert_eq(ip_pool_set_max_calls(NULL, 3), IP_EINVAL);
  cr_assert_eq(ip_pool_set_max_rss(NULL, 1 << 20), IP_EINVAL);
  cr_assert_eq(ip_task_set_arg_serializer(NULL, NULL), IP_EINVAL);
  ip_pool_free(NULL);
}

Test(pool, call_with_a_null_pool_or_task_fails_with_einval_at_once) {
  setup_pipes();
  ip_task *t = task(fn_pid);
  ip_pool *p = pool(1);
  ip_future *f = pcall(NULL, t, 'a');
  const ip_error *e = failed_at_once(f, IP_EINVAL);
  cr_assert_eq(e->pid, 0);
  cr_assert_eq(ip_future_pid(f), 0);
  ip_future_free(f);
  f = ip_pool_call(p, NULL, NULL);
  cr_assert_not_null(f);
  failed_at_once(f, IP_EINVAL);
  cr_assert_eq(ip_future_pid(f), 0);
  ip_future_free(f);
  /* Neither reached a worker, and the pool is unharmed. */
  run_pid(p, t, 'b');
  cr_assert_eq(runs_of('a'), 0);
  cr_assert_eq(runs_of('b'), 1);
  ip_pool_free(p);
  ip_task_free(t);
  close_pipes();
  cr_assert(no_children());
}

/* ==== 2. the snapshot ========================================================================= */

static int snapshot_value;

static void *fn_snapshot(void *arg) {
  note_run(arg);
  int v[2] = {snapshot_value, (int)getpid()};
  return ip_bytes_copy(v, sizeof v);
}

static int snapshot_read(ip_pool *p, ip_task *t, pid_t *pid) {
  ip_future *f = pcall(p, t, 'r');
  cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0, "never completed");
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s", why(f));
  cr_assert_eq(b->len, 2 * sizeof(int));
  int v[2];
  memcpy(v, b->data, sizeof v);
  *pid = (pid_t)v[1];
  cr_assert_eq(ip_future_pid(f), *pid);
  ip_future_free(f);
  return v[0];
}

Test(pool, workers_see_the_callers_memory_as_it_was_at_ip_pool_new_also_after_a_crash) {
  setup_pipes();
  ip_task *rd = task(fn_snapshot), *die = task(fn_crash_now);
  snapshot_value = 7; /* before the pool: the workers have this */
  ip_pool *p = pool(1);
  snapshot_value = 8; /* after: they never see it */
  pid_t a, b;
  cr_assert_eq(snapshot_read(p, rd, &a), 7);
  ip_future *f = pcall(p, die, 'd');
  const ip_error *e = failed_with(f, IP_ESIGNALED);
  cr_assert_eq(e->signal, SIGABRT);
  cr_assert_eq(e->pid, a);
  ip_future_free(f);
  /* The replacement is a fork of the template, not of this process as it is now. */
  cr_assert_eq(snapshot_read(p, rd, &b), 7, "the replacement worker saw the caller's new value");
  cr_assert_neq(b, a, "the worker was not replaced");
  cr_assert_eq(snapshot_value, 8);
  ip_pool_free(p);
  ip_task_free(rd);
  ip_task_free(die);
  close_pipes();
}

/* ==== 3. tasks and serializers made or changed after the pool ================================= */

/* A serializer for pool arguments: a `const int *`, sent as the magic "INT" and the int; the
 * worker refuses negative ones (so decode can fail there). Encode refuses NULL. Each encode
 * counts itself in the process that ran it, decode notes the pid it ran in. */
static int int_encodes;
static pid_t int_decoded_in;

static int int_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  if (!value) return ip_encode_error(IP_EINVAL, "no int to encode");
  int_encodes++;
  int rc = w(ctx, "INT", 3);
  return rc ? rc : w(ctx, value, sizeof(int));
}

static int int_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  int_decoded_in = getpid();
  if (len != 3 + sizeof(int) || memcmp(buf, "INT", 3) != 0) return IP_EDECODE;
  int v;
  memcpy(&v, (const char *)buf + 3, sizeof v);
  if (v < 0) return IP_EDECODE;
  int *p = malloc(sizeof *p);
  if (!p) return IP_ENOMEM;
  *p = v;
  *value = p;
  return 0;
}

static void int_free(const ip_serializer *s, void *value) { free(value); }

static const ip_serializer int_ser = {
    .abi = IP_SERIALIZER_ABI,
    .name = "pooltest-int",
    .encode = int_encode,
    .decode = int_decode,
    .free_value = int_free,
};

/* fn for int arguments: {2 * arg, the pid decode ran in, this pid}. */
static void *fn_double(void *arg) {
  const int *v = arg;
  char c = 'i';
  ssize_t w = write(runs[1], &c, 1);
  (void)w;
  int out[3] = {v ? 2 * *v : -1, (int)int_decoded_in, (int)getpid()};
  return ip_bytes_copy(out, sizeof out);
}

Test(pool, a_task_made_after_the_pool_fails_at_once_with_einval_saying_why) {
  setup_pipes();
  ip_task *before = task(fn_pid);
  ip_pool *p = pool(1);
  ip_task *after = task(fn_pid);
  ip_future *f = pcall(p, after, 'a');
  const ip_error *e = failed_at_once(f, IP_EINVAL);
  cr_assert_not_null(strstr(e->message, "made after the pool"), "message: %s", e->message);
  cr_assert_eq(ip_future_pid(f), 0);
  ip_future_free(f);
  run_pid(p, before, 'b');
  cr_assert_eq(runs_of('a'), 0, "the task made after the pool ran");
  cr_assert_eq(runs_of('b'), 1);
  ip_pool_free(p);
  ip_task_free(before);
  ip_task_free(after);
  close_pipes();
}

Test(pool, changing_the_arg_serializer_after_the_pool_fails_its_calls_with_einval) {
  setup_pipes();
  ip_task *t = task(fn_double), *other = task(fn_pid);
  ip_pool *p = pool(1);
  pid_t w = run_pid(p, other, 'o');
  cr_assert_eq(ip_task_set_arg_serializer(t, &int_ser), 0);
  int v = 21;
  ip_future *f = ip_pool_call(p, t, &v);
  const ip_error *e = failed_with(f, IP_EINVAL);
  cr_assert_not_null(strstr(e->message, "serializer"), "message: %s", e->message);
  ip_future_free(f);
  cr_assert_eq(run_pid(p, other, 'o'), w, "the refusal ended the worker");
  cr_assert_eq(runs_of('i'), 0, "fn ran with an argument its worker cannot read");
  ip_pool_free(p);
  ip_task_free(t);
  ip_task_free(other);
  close_pipes();
}

/* A task's max_result is read at each call, so a change after the pool counts. */
static void *fn_hundred(void *arg) {
  static char buf[100];
  memset(buf, 'h', sizeof buf);
  return ip_bytes_copy(buf, sizeof buf);
}

Test(pool, max_result_set_after_the_pool_applies_to_its_calls) {
  ip_task *t = task(fn_hundred);
  ip_pool *p = pool(1);
  cr_assert_eq(ip_task_set_max_result(t, 10), 0);
  ip_future *f = ip_pool_call(p, t, NULL);
  const ip_error *e = failed_with(f, IP_E2BIG);
  pid_t w = e->pid;
  cr_assert_gt(w, 0);
  ip_future_free(f);
  cr_assert_eq(ip_task_set_max_result(t, 100), 0);
  f = ip_pool_call(p, t, NULL);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s", why(f));
  cr_assert_eq(b->len, 100);
  cr_assert_eq(ip_future_pid(f), w, "the too-large result ended the worker");
  ip_future_free(f);
  ip_pool_free(p);
  ip_task_free(t);
}

/* ==== 4. arguments ============================================================================ */

static unsigned char arg_byte(size_t i) { return (unsigned char)(i * 131u + (i >> 9) + 7u); }

Test(pool, a_raw_argument_is_copied_during_the_call_so_the_caller_may_free_it_at_once) {
  enum { LEN = (1 << 20) + 17 }; /* more than a socket buffer: it is sent in pieces */
  setup_pipes();
  ip_task *gated = task(fn_gated), *echo = task(echo_bytes);
  ip_pool *p = pool(1);
  /* The worker is busy with two calls, so the echo waits in the caller's queue, long after
   * its buffer is gone. */
  ip_future *g1 = pcall(p, gated, '1'), *g2 = pcall(p, gated, '2');
  unsigned char *buf = malloc(LEN);
  cr_assert_not_null(buf);
  for (size_t i = 0; i < LEN; i++) buf[i] = arg_byte(i);
  ip_bytes *arg = malloc(sizeof *arg);
  cr_assert_not_null(arg);
  *arg = (ip_bytes){buf, LEN};
  ip_future *f = ip_pool_call(p, echo, arg);
  cr_assert_not_null(f);
  cr_assert_eq(ip_future_arg(f), arg, "ip_future_arg is the pointer given");
  memset(buf, 0xee, LEN); /* overwritten, then freed */
  free(buf);
  arg->data = NULL;
  arg->len = 3;
  free(arg);
  gate_release(&G, 2);
  value_pid(g1);
  value_pid(g2);
  cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0, "never completed");
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s: %s", ip_err_name(ip_future_status(f)), why(f));
  cr_assert_eq(b->len, LEN);
  const unsigned char *got = b->data;
  for (size_t i = 0; i < LEN; i++)
    if (got[i] != arg_byte(i)) cr_assert_fail("byte %zu: %#x, want %#x", i, got[i], arg_byte(i));
  ip_future_free(f);
  ip_future_free(g1);
  ip_future_free(g2);
  ip_pool_free(p);
  ip_task_free(gated);
  ip_task_free(echo);
  close_pipes();
}

Test(pool, a_null_argument_arrives_as_empty_bytes) {
  ip_task *t = task(fn_describe);
  ip_pool *p = pool(1);
  ip_future *f = ip_pool_call(p, t, NULL);
  cr_assert_null(ip_future_arg(f));
  cr_assert_str_eq(str_of(f), "len=0 data=set", "%s", why(f));
  ip_future_free(f);
  ip_bytes empty = {NULL, 0};
  f = ip_pool_call(p, t, &empty);
  cr_assert_eq(ip_future_arg(f), &empty);
  cr_assert_str_eq(str_of(f), "len=0 data=set", "%s", why(f));
  ip_future_free(f);
  ip_pool_free(p);
  ip_task_free(t);
}

Test(pool, a_user_arg_serializer_encodes_in_the_caller_and_decodes_in_the_worker) {
  setup_pipes();
  ip_task *t = task(fn_double);
  cr_assert_eq(ip_task_set_arg_serializer(t, &int_ser), 0);
  ip_pool *p = pool(1);
  int_encodes = 0;
  int v = 21;
  ip_future *f = ip_pool_call(p, t, &v);
  cr_assert_eq(int_encodes, 1, "the argument is encoded in the caller, during ip_pool_call");
  cr_assert_eq(ip_future_arg(f), &v);
  v = -1; /* too late to matter */
  cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0, "never completed");
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s: %s", ip_err_name(ip_future_status(f)), why(f));
  cr_assert_eq(b->len, 3 * sizeof(int));
  int out[3];
  memcpy(out, b->data, sizeof out);
  cr_assert_eq(out[0], 42);
  cr_assert_eq(out[1], out[2], "decoded in %d, run in %d", out[1], out[2]);
  cr_assert_eq((pid_t)out[2], ip_future_pid(f));
  cr_assert_neq((pid_t)out[2], getpid());
  cr_assert_eq(int_decoded_in, 0, "decode ran in the caller");
  ip_future_free(f);
  ip_pool_free(p);
  ip_task_free(t);
  close_pipes();
}

Test(pool, an_arg_that_fails_to_encode_fails_the_call_at_once_with_eencode) {
  setup_pipes();
  ip_task *t = task(fn_double);
  cr_assert_eq(ip_task_set_arg_serializer(t, &int_ser), 0);
  ip_pool *p = pool(1);
  ip_future *f = ip_pool_call(p, t, NULL); /* int_encode refuses NULL */
  const ip_error *e = failed_at_once(f, IP_EENCODE);
  cr_assert_not_null(strstr(e->message, "pooltest-int"), "message: %s", e->message);
  cr_assert_eq(ip_future_pid(f), 0);
  ip_future_free(f);
  int v = 1;
  f = ip_pool_call(p, t, &v);
  cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0, "never completed");
  cr_assert_eq(ip_future_status(f), 0, "%s", why(f));
  ip_future_free(f);
  cr_assert_eq(runs_of('i'), 1, "fn ran for the argument that could not be encoded");
  ip_pool_free(p);
  ip_task_free(t);
  close_pipes();
}

Test(pool, an_arg_that_fails_to_decode_in_the_worker_is_edecode_and_the_worker_lives_on) {
  setup_pipes();
  ip_task *t = task(fn_double);
  cr_assert_eq(ip_task_set_arg_serializer(t, &int_ser), 0);
  ip_pool *p = pool(1);
  int bad = -5, good = 4;
  ip_future *f = ip_pool_call(p, t, &bad);
  const ip_error *e = failed_with(f, IP_EDECODE);
  pid_t w = ip_future_pid(f);
  cr_assert_gt(w, 0, "the worker started the call");
  cr_assert_eq(e->pid, w);
  cr_assert_not_null(strstr(e->message, "pooltest-int"), "message: %s", e->message);
  ip_future_free(f);
  f = ip_pool_call(p, t, &good);
  cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0, "never completed");
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s", why(f));
  int out[3];
  memcpy(out, b->data, sizeof out);
  cr_assert_eq(out[0], 8);
  cr_assert_eq((pid_t)out[2], w, "the worker was replaced after a failed decode");
  ip_future_free(f);
  cr_assert_eq(runs_of('i'), 1, "fn ran for the argument that could not be decoded");
  cr_assert_eq(ip_pool_workers(p), 1);
  ip_pool_free(p);
  ip_task_free(t);
  close_pipes();
}

/* ==== 5. a worker's death ===================================================================== */

/* A 1-worker pool: a call that dies once released, one call sent to the same worker behind it
 * and one in the caller's queue. The dying call alone fails; the other two run on the
 * replacement, once each. */
static const ip_error *dies(ip_fn fn, int code, ip_future **keep, ip_pool **pp, ip_task **tp,
                            ip_task **tpid) {
  setup_pipes();
  ip_task *t = task(fn), *tp_ = task(fn_pid);
  ip_pool *p = pool(1);
  ip_future *f0 = pcall(p, tp_, '0');
  pid_t a = value_pid(f0);
  struct rusage ru;
  cr_assert_eq(ip_future_rusage(f0, &ru), 0);
  cr_assert(ru.ru_maxrss == 0 && ru.ru_utime.tv_sec == 0 && ru.ru_utime.tv_usec == 0 &&
                ru.ru_stime.tv_sec == 0 && ru.ru_stime.tv_usec == 0,
            "a pool call whose worker lives has no rusage of its own");
  ip_future_free(f0);

  ip_future *fd = pcall(p, t, 'D');
  ip_future *f1 = pcall(p, tp_, '1'); /* sent to the worker, behind the dying call */
  ip_future *f2 = pcall(p, tp_, '2'); /* in the caller's queue */
  await_started(1);
  gate_release(&G, 1);
  const ip_error *e = failed_with(fd, code);
  cr_assert_eq(e->pid, a, "error pid %d, worker %d", (int)e->pid, (int)a);
  cr_assert_eq(ip_future_pid(fd), a);
  cr_assert_eq(ip_pool_workers(p), 1, "the worker was not replaced by the time its call failed");
  cr_assert_eq(ip_future_rusage(fd, &ru), 0);
  cr_assert_gt(ru.ru_maxrss, 0, "a dead worker's call has the worker's rusage");
  pid_t b1 = value_pid(f1), b2 = value_pid(f2);
  cr_assert_neq(b1, a);
  cr_assert_eq(b2, b1);
  cr_assert(pid_gone(a), "the dead worker %d is still there", (int)a);
  cr_assert_eq(run_pid(p, tp_, '3'), b1); /* whatever was left to run has run by now */
  cr_assert_eq(runs_of('D'), 1);
  cr_assert_eq(runs_of('1'), 1, "the call queued on the dead worker ran %d times", runs_of('1'));
  cr_assert_eq(runs_of('2'), 1, "the call in the caller's queue ran %d times", runs_of('2'));
  ip_future_free(f1);
  ip_future_free(f2);
  *keep = fd, *pp = p, *tp = t, *tpid = tp_;
  return e;
}

static void dies_done(ip_future *f, ip_pool *p, ip_task *t, ip_task *tpid) {
  ip_future_free(f);
  ip_pool_free(p);
  ip_task_free(t);
  ip_task_free(tpid);
  close_pipes();
  cr_assert(no_children());
}

Test(pool, a_sigsegv_fails_exactly_its_call_with_a_backtrace_and_the_worker_is_replaced) {
  ip_future *f;
  ip_pool *p;
  ip_task *t, *tp;
  const ip_error *e = dies(segfault_here, IP_ESIGNALED, &f, &p, &t, &tp);
  cr_assert_eq(e->signal, SIGSEGV);
  cr_assert_str_eq(e->kind, "SIGSEGV");
  cr_assert_eq(e->exit_status, -1);
  cr_assert_not_null(e->backtrace, "a crash in a worker sends its stack");
  cr_assert_not_null(strstr(e->backtrace, "segfault_here"), "backtrace:\n%s", e->backtrace);
  dies_done(f, p, t, tp);
}

Test(pool, an_abort_fails_exactly_its_call_with_sigabrt) {
  ip_future *f;
  ip_pool *p;
  ip_task *t, *tp;
  const ip_error *e = dies(fn_abort, IP_ESIGNALED, &f, &p, &t, &tp);
  cr_assert_eq(e->signal, SIGABRT);
  cr_assert_str_eq(e->kind, "SIGABRT");
  cr_assert_eq(e->exit_status, -1);
  dies_done(f, p, t, tp);
}

Test(pool, an_exit_fails_exactly_its_call_with_eexited_and_the_status) {
  ip_future *f;
  ip_pool *p;
  ip_task *t, *tp;
  const ip_error *e = dies(fn_exit3, IP_EEXITED, &f, &p, &t, &tp);
  cr_assert_eq(e->exit_status, 3);
  cr_assert_eq(e->signal, 0);
  dies_done(f, p, t, tp);
}

Test(pool, a_sigkill_of_the_worker_fails_exactly_its_call) {
  ip_future *f;
  ip_pool *p;
  ip_task *t, *tp;
  const ip_error *e = dies(fn_kill_self, IP_ESIGNALED, &f, &p, &t, &tp);
  cr_assert_eq(e->signal, SIGKILL);
  cr_assert_str_eq(e->kind, "SIGKILL");
  cr_assert_null(e->backtrace, "nobody could send one");
  dies_done(f, p, t, tp);
}

/* ==== 6. task timeout ========================================================================= */

Test(pool, a_task_timeout_kills_the_worker_which_is_replaced) {
  setup_pipes();
  ip_task *slow = task(fn_gated), *tp = task(fn_pid);
  ip_pool *p = pool(1);
  cr_assert_eq(ip_task_set_timeout(slow, 200), 0); /* read at each call: set after the pool */
  pid_t a = run_pid(p, tp, '0');
  ip_future *ft = pcall(p, slow, 'T'); /* never released */
  ip_future *fq = pcall(p, tp, '1');
  const ip_error *e = failed_with(ft, IP_ETIMEDOUT);
  cr_assert_eq(e->pid, a);
  cr_assert_not_null(strstr(e->message, "200 ms"), "message: %s", e->message);
  pid_t b = value_pid(fq);
  cr_assert_neq(b, a, "the timed-out worker serves calls");
  cr_assert(pid_gone(a));
  cr_assert_eq(ip_pool_workers(p), 1);
  cr_assert_eq(run_pid(p, tp, '2'), b);
  cr_assert_eq(runs_of('T'), 1);
  cr_assert_eq(runs_of('1'), 1);
  ip_future_free(ft);
  ip_future_free(fq);
  ip_pool_free(p);
  ip_task_free(slow);
  ip_task_free(tp);
  close_pipes();
  cr_assert(no_children());
}

/* ==== 7. cancel =============================================================================== */

/* Cancels a gated call once it runs; `taken_in`: after a round of the supervisor took in the
 * worker's acknowledgement (so the caller knows the call started), else at once. Either way
 * the call's function is running when the cancel comes. */
static void cancel_running(bool taken_in) {
  setup_pipes();
  ip_task *gated = task(fn_gated), *tp = task(fn_pid);
  ip_pool *p = pool(1);
  pid_t a = run_pid(p, tp, '0');
  ip_future *fr = pcall(p, gated, 'C');
  ip_future *fq = pcall(p, tp, '1');
  await_started(1);
  if (taken_in) {
    cr_assert_eq(ip_future_wait(fr, 0), IP_ETIMEDOUT);
    cr_assert_eq(ip_future_pid(fr), a);
  }
  cr_assert_eq(ip_future_cancel(fr), 0);
  cr_assert_eq(ip_future_done(fr), 1);
  const ip_error *e = failed_at_once(fr, IP_ECANCELED);
  cr_assert_eq(e->pid, a, "the canceled call ran in worker %d; its error says %d (%s)", (int)a,
               (int)e->pid, e->message);
  cr_assert_eq(ip_future_pid(fr), a);
  cr_assert(pid_gone(a), "ip_future_cancel returned while the call's worker %d still runs it",
            (int)a);
  cr_assert_eq(ip_future_cancel(fr), IP_EALREADY);
  cr_assert_eq(ip_pool_workers(p), 1);
  pid_t b = value_pid(fq);
  cr_assert_neq(b, a);
  cr_assert_eq(runs_of('C'), 1);
  cr_assert_eq(runs_of('1'), 1);
  ip_future_free(fr);
  ip_future_free(fq);
  ip_pool_free(p);
  ip_task_free(gated);
  ip_task_free(tp);
  close_pipes();
  cr_assert(no_children());
}

Test(pool, canceling_a_running_call_kills_its_worker_which_is_replaced) { cancel_running(true); }

/* LIBRARY BUG (lib/pool.c, ip__pool_kill_locked), expected to fail until fixed: the call runs
 * (its function wrote to the `started` pipe, after the worker sent its acknowledgement), but
 * nobody has read that acknowledgement yet when the cancel comes, so the library takes the
 * call for one sent and not started: it fails it at once with pid 0 and "the call was canceled
 * before it started on a worker", and ip_future_cancel returns while the worker is still
 * running the function (it is killed only when a later round reads the acknowledgement). */
Test(pool, canceling_a_call_whose_start_was_not_yet_read_still_kills_its_worker) {
  cancel_running(false);
}

Test(pool, canceling_queued_calls_fails_them_never_runs_them_and_keeps_the_worker) {
  setup_pipes();
  ip_task *gated = task(fn_gated), *tp = task(fn_pid);
  ip_pool *p = pool(1);
  ip_future *f1 = pcall(p, gated, '1');
  await_started(1);
  ip_future *f2 = pcall(p, tp, '2'); /* sent to the worker, not started */
  ip_future *f3 = pcall(p, tp, '3'); /* in the caller's queue */
  ip_future *f4 = pcall(p, tp, '4');
  ip_future *f5 = pcall(p, tp, '5');
  cr_assert_eq(ip_future_cancel(f2), 0);
  cr_assert_eq(ip_future_cancel(f4), 0);
  const ip_error *e = failed_at_once(f2, IP_ECANCELED);
  cr_assert_eq(e->pid, 0);
  cr_assert_eq(ip_future_pid(f2), 0);
  failed_at_once(f4, IP_ECANCELED);
  cr_assert_eq(ip_future_pid(f4), 0);
  cr_assert_eq(ip_future_done(f1), 0, "canceling queued calls touched the running one");
  gate_release(&G, 1);
  pid_t a = value_pid(f1);
  cr_assert_eq(value_pid(f3), a);
  cr_assert_eq(value_pid(f5), a, "a queued cancel replaced the worker");
  cr_assert_eq(ip_pool_workers(p), 1);
  cr_assert_eq(run_pid(p, tp, '6'), a);
  cr_assert_eq(runs_of('2'), 0, "the canceled call sent to the worker ran");
  cr_assert_eq(runs_of('4'), 0, "the canceled call in the caller's queue ran");
  cr_assert_eq(runs_of('1') + runs_of('3') + runs_of('5') + runs_of('6'), 4);
  ip_future *fs[] = {f1, f2, f3, f4, f5};
  for (size_t i = 0; i < 5; i++) ip_future_free(fs[i]);
  ip_pool_free(p);
  ip_task_free(gated);
  ip_task_free(tp);
  close_pipes();
}

/* ==== 8. failures that leave the worker running =============================================== */

Test(pool, ip_raise_fails_the_call_with_its_message_and_code_and_the_worker_runs_on) {
  setup_pipes();
  ip_task *r = task(fn_raise), *tp = task(fn_pid);
  ip_pool *p = pool(1);
  ip_future *f = pcall(p, r, 'R');
  const ip_error *e = failed_with(f, IP_ERAISED);
  pid_t w = ip_future_pid(f);
  cr_assert_gt(w, 0);
  cr_assert_eq(e->pid, w);
  cr_assert_eq(e->raised_code, 4242);
  char want[64];
  snprintf(want, sizeof want, "pool raise R in %d", (int)w);
  cr_assert_str_eq(e->message, want);
  cr_assert_not_null(e->backtrace);
  ip_future_free(f);
  cr_assert_eq(run_pid(p, tp, '1'), w, "ip_raise ended the worker");
  ip_pool_free(p);
  ip_task_free(r);
  ip_task_free(tp);
  close_pipes();
}

/* A result serializer that is raw, but refuses NULL with IP_EENCODE. */
static int strict_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  if (!value) return ip_encode_error(IP_EENCODE, "the task returned no value");
  return ip_serializer_raw()->encode(ip_serializer_raw(), value, w, ctx);
}
static int strict_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  return ip_serializer_raw()->decode(ip_serializer_raw(), buf, len, value);
}
static void strict_free(const ip_serializer *s, void *value) {
  ip_serializer_raw()->free_value(ip_serializer_raw(), value);
}
static const ip_serializer strict_ser = {
    .abi = IP_SERIALIZER_ABI,
    .name = "pooltest-strict",
    .encode = strict_encode,
    .decode = strict_decode,
    .free_value = strict_free,
};

/* NULL for tag 'N', else the pid. */
static void *fn_maybe_null(void *arg) { return tag_of(arg) == 'N' ? NULL : pid_bytes(); }

Test(pool, a_result_that_fails_to_encode_is_eencode_and_the_worker_runs_on) {
  ip_task *t = ip_task_new(fn_maybe_null, &strict_ser);
  cr_assert_not_null(t);
  ip_pool *p = pool(1);
  ip_future *f = pcall(p, t, 'N');
  const ip_error *e = failed_with(f, IP_EENCODE);
  cr_assert_not_null(strstr(e->message, "the task returned no value"), "message: %s", e->message);
  pid_t w = ip_future_pid(f);
  cr_assert_gt(w, 0);
  cr_assert_eq(e->pid, w);
  ip_future_free(f);
  cr_assert_eq(run_pid(p, t, 'y'), w, "a failed encode ended the worker");
  ip_pool_free(p);
  ip_task_free(t);
}

/* ==== 9. ip_future_pid ======================================================================== */

Test(pool, future_pid_is_0_while_queued_and_the_workers_once_it_ran) {
  setup_pipes();
  ip_task *gated = task(fn_gated), *tp = task(fn_pid);
  ip_pool *p = pool(1);
  ip_future *f1 = pcall(p, gated, '1');
  await_started(1);
  ip_future *f2 = pcall(p, tp, '2'); /* sent to the worker behind f1 */
  ip_future *f3 = pcall(p, tp, '3'); /* in the caller's queue */
  /* A round of the supervisor takes in what the worker said (it acknowledged f1). */
  cr_assert_eq(ip_future_wait(f1, 0), IP_ETIMEDOUT);
  cr_assert_gt(ip_future_pid(f1), 0, "the running call has no pid");
  cr_assert_eq(ip_future_pid(f2), 0, "a call not started has a pid");
  cr_assert_eq(ip_future_pid(f3), 0, "a queued call has a pid");
  gate_release(&G, 1);
  pid_t a = value_pid(f1);
  cr_assert_eq(value_pid(f2), a);
  cr_assert_eq(value_pid(f3), a);
  ip_future_free(f1);
  ip_future_free(f2);
  ip_future_free(f3);
  ip_pool_free(p);
  ip_task_free(gated);
  ip_task_free(tp);
  close_pipes();
}

/* ==== 10. ip_pool_free with calls in flight =================================================== */

Test(pool, free_with_calls_running_and_queued_cancels_them_and_leaves_nothing) {
  SKIP_WITHOUT_CHILDREN_FILES();
  setup_pipes();
  int base = warm_baseline();
  ip_task *gated = task(fn_gated), *tp = task(fn_pid);
  ip_pool *p = pool(2);
  pid_t tpl = template_pid(), w[2];
  cr_assert_eq(workers_of(tpl, w, 2), 2);
  ip_future *fs[6];
  fs[0] = pcall(p, gated, 'a');
  fs[1] = pcall(p, gated, 'b');
  await_started(2); /* one on each worker */
  for (int i = 2; i < 6; i++) fs[i] = pcall(p, tp, (char)('0' + i)); /* 2 sent, 2 queued */
  ip_pool_free(p);
  for (int i = 0; i < 6; i++) {
    cr_assert_eq(ip_future_done(fs[i]), 1, "call %d is not done after ip_pool_free", i);
    failed_at_once(fs[i], IP_ECANCELED);
  }
  cr_assert(no_children(), "a child or zombie is left");
  cr_assert(pid_gone(tpl));
  cr_assert(pid_gone(w[0]) && pid_gone(w[1]), "a worker is left");
  for (int i = 2; i < 6; i++) cr_assert_eq(runs_of((char)('0' + i)), 0, "call %d ran", i);
  for (int i = 0; i < 6; i++) ip_future_free(fs[i]); /* the caller's, after the pool */
  ip_task_free(gated);
  ip_task_free(tp);
  cr_assert_eq(count_fds(), base, "descriptors left");
  close_pipes();
}

/* Two pools and a forked call: none holds the others' descriptors, so freeing one pool while
 * the rest still run returns (its template sees the end of its channel). */
static void *fn_forked_gated(void *arg) {
  wait_gate();
  return bytes_of("released");
}

static void *free_pool(void *p) {
  ip_pool_free(p);
  return NULL;
}

/* ip_pool_free(p) must return: it waits for the template, which ends when it sees the end of
 * its channel, which it never sees while another process holds the channel's caller end. */
static void free_pool_guarded(ip_pool *p) {
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, free_pool, p), 0);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += guard_ms(60000) / 1000;
  cr_assert_eq(pthread_timedjoin_np(th, NULL, &ts), 0,
               "ip_pool_free did not return: another process holds the pool's channel?");
}

Test(pool, freeing_one_pool_returns_while_another_pool_and_a_forked_call_run) {
  setup_pipes();
  int base = warm_baseline();
  ip_task *gated = task(fn_gated), *forked = task(fn_forked_gated);
  ip_pool *p1 = pool(1), *p2 = pool(1);
  ip_future *c = ip_call(forked, NULL);
  ip_future *f1 = pcall(p1, gated, '1'), *f2 = pcall(p2, gated, '2');
  await_started(3);
  free_pool_guarded(p1);
  failed_at_once(f1, IP_ECANCELED);
  gate_release(&G, 2);
  cr_assert_str_eq(str_of(c), "released", "%s", why(c));
  value_pid(f2);
  ip_future_free(c);
  ip_future_free(f1);
  ip_future_free(f2);
  ip_pool_free(p2);
  ip_task_free(gated);
  ip_task_free(forked);
  cr_assert(no_children());
  cr_assert_eq(count_fds(), base);
  close_pipes();
}

/* ==== 11. the caller's death ================================================================== */

struct death_report {
  pid_t tpl;
  int n;
  pid_t workers[8];
  int err;
};

static _Noreturn void dying_caller(int info_fd) {
  struct death_report r;
  memset(&r, 0, sizeof r);
  ip_task *t = ip_task_new(fn_forever, NULL);
  ip_pool *p = ip_pool_new(3);
  if (!t || !p) {
    r.err = errno ? errno : -1;
    ssize_t w = write(info_fd, &r, sizeof r);
    (void)w;
    _exit(1);
  }
  pid_t kids[8];
  if (children_of(getpid(), kids, 8) != 1) r.err = -2;
  r.tpl = kids[0];
  r.n = children_of(r.tpl, r.workers, 8);
  for (int i = 0; i < 4; i++) { /* one on each worker, one queued: the process dies with them */
    char c = 'x';
    ip_bytes b = {&c, 1};
    if (!ip_pool_call(p, t, &b)) r.err = -3;
  }
  ssize_t w = write(info_fd, &r, sizeof r);
  (void)w;
  for (;;) pause();
}

Test(pool, the_template_and_the_workers_die_with_the_caller) {
  SKIP_WITHOUT_CHILDREN_FILES();
  setup_pipes();
  /* The orphans come to this process, which can then see them end and reap them. */
  cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0, "%s", strerror(errno));
  int info[2];
  cr_assert_eq(pipe2(info, O_CLOEXEC), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t caller = fork();
  cr_assert_geq(caller, 0);
  if (caller == 0) dying_caller(info[1]);
  close(info[1]);
  struct death_report r;
  struct pollfd pf = {info[0], POLLIN, 0};
  cr_assert_eq(poll(&pf, 1, guard_ms(30000)), 1, "the calling process never reported");
  cr_assert_eq(read(info[0], &r, sizeof r), (ssize_t)sizeof r);
  close(info[0]);
  cr_assert_eq(r.err, 0, "in the calling process: %d", r.err);
  cr_assert_eq(r.n, 3, "the template has %d children", r.n);
  await_started(3); /* the workers are running calls */
  cr_assert_eq(kill(caller, SIGKILL), 0);
  int st;
  cr_assert_eq(waitpid(caller, &st, 0), caller);

  int limit = guard_ms(30000);
  /* The template first: the workers are its children until it is gone. */
  int rt = reap_within(r.tpl, limit, &st);
  int left = 0;
  pid_t survivors[9];
  if (rt == 0) survivors[left++] = r.tpl;
  for (int i = 0; i < r.n && rt != 0; i++) {
    int rw = reap_within(r.workers[i], limit, &st);
    if (rw == 0 || (rw < 0 && !pid_gone(r.workers[i]))) survivors[left++] = r.workers[i];
  }
  if (rt == 0)
    for (int i = 0; i < r.n; i++) survivors[left++] = r.workers[i];
  for (int i = 0; i < left; i++) kill(survivors[i], SIGKILL); /* they would hold our pipes */
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  cr_assert_eq(left, 0, "%d of the pool's processes outlived the caller (first: %d)", left,
               left ? (int)survivors[0] : 0);
  cr_assert(pid_gone(r.tpl));
  for (int i = 0; i < r.n; i++) cr_assert(pid_gone(r.workers[i]));
  close_pipes();
}

/* ==== 12. recycling =========================================================================== */

Test(pool, max_calls_3_on_one_worker_gives_pids_a_a_a_b_b_b_c) {
  setup_pipes();
  ip_task *tp = task(fn_pid);
  ip_pool *p = pool(1);
  cr_assert_eq(ip_pool_set_max_calls(p, 3), 0);
  ip_future *fs[7];
  for (int i = 0; i < 7; i++) fs[i] = pcall(p, tp, (char)('0' + i));
  pid_t pid[7];
  for (int i = 0; i < 7; i++) pid[i] = value_pid(fs[i]);
  cr_assert(pid[0] == pid[1] && pid[1] == pid[2], "A,A,A: %d %d %d", pid[0], pid[1], pid[2]);
  cr_assert(pid[3] == pid[4] && pid[4] == pid[5], "B,B,B: %d %d %d", pid[3], pid[4], pid[5]);
  cr_assert(pid[3] != pid[0] && pid[6] != pid[3] && pid[6] != pid[0],
            "A, B, C distinct: %d %d %d", pid[0], pid[3], pid[6]);
  for (int i = 0; i < 7; i++) cr_assert_eq(runs_of((char)('0' + i)), 1, "call %d", i);
  cr_assert_eq(ip_pool_workers(p), 1);
  for (int i = 0; i < 7; i++) ip_future_free(fs[i]);
  ip_pool_free(p);
  ip_task_free(tp);
  close_pipes();
}

/* The worker's resident set, in bytes (what the pool compares with max_rss). */
static size_t own_rss(void) {
  FILE *f = fopen("/proc/self/statm", "re");
  unsigned long size = 0, rss = 0;
  if (!f) return 0;
  int n = fscanf(f, "%lu %lu", &size, &rss);
  fclose(f);
  return n == 2 ? (size_t)rss * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

static void *fn_rss(void *arg) {
  size_t v[2] = {own_rss(), (size_t)getpid()};
  return ip_bytes_copy(v, sizeof v);
}

/* Leaks 80 MiB, touched (kept reachable, so that valgrind sees no lost block; volatile and
 * exported, so that the compiler cannot find the memory unused and drop it). */
#define LEAK ((size_t)80 << 20)
extern void *volatile pool_leaked[64];
void *volatile pool_leaked[64];
static void *fn_leak(void *arg) {
  static int n;
  char *m = malloc(LEAK);
  if (!m) ip_raise(ENOMEM, "malloc(80 MiB)");
  memset(m, 0x5a, LEAK);
  pool_leaked[n++ % 64] = m;
  return pid_bytes();
}

static size_t worker_rss(ip_pool *p, ip_task *t, pid_t *pid) {
  ip_future *f = ip_pool_call(p, t, NULL);
  cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0, "never completed");
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s", why(f));
  size_t v[2];
  memcpy(v, b->data, sizeof v);
  cr_assert_gt(v[0], 0);
  *pid = (pid_t)v[1];
  ip_future_free(f);
  return v[0];
}

Test(pool, max_rss_replaces_a_worker_that_grew_past_it_after_each_call) {
  enum { N = 4 };
  ip_task *leak = task(fn_leak), *rss = task(fn_rss);
  ip_pool *p = pool(1);
  pid_t first;
  size_t base = worker_rss(p, rss, &first);
  /* The limit sits 64 MiB above what a worker holds anyway (valgrind's and ASan's own memory
   * included): one call's 80 MiB passes it, nothing else does. */
  cr_assert_eq(ip_pool_set_max_rss(p, base + ((size_t)64 << 20)), 0);
  pid_t again;
  worker_rss(p, rss, &again);
  cr_assert_eq(again, first, "a worker below max_rss was replaced");
  ip_future *fs[N];
  for (int i = 0; i < N; i++) fs[i] = ip_pool_call(p, leak, NULL);
  pid_t pid[N];
  for (int i = 0; i < N; i++) {
    pid[i] = value_pid(fs[i]);
    for (int j = 0; j < i; j++)
      cr_assert_neq(pid[i], pid[j], "calls %d and %d ran on the same worker %d", j, i, pid[i]);
  }
  cr_assert_eq(pid[0], first, "the first leaking call runs on the worker there was");
  cr_assert_eq(ip_pool_workers(p), 1);
  for (int i = 0; i < N; i++) ip_future_free(fs[i]);
  ip_pool_free(p);
  ip_task_free(leak);
  ip_task_free(rss);
}

/* ==== 13. what works with futures ============================================================= */

struct job {
  ip_bytes b; /* first: the argument given is &job.b, for ip_call and ip_pool_call alike */
  char text[16];
  int index, seen;
};

/* Raises for every index % 4 == 3, else returns "job <index>". */
static void *fn_job(void *arg) {
  const ip_bytes *b = arg;
  char text[16] = {0};
  memcpy(text, b->data, b->len < sizeof text - 1 ? b->len : sizeof text - 1);
  int i = atoi(text);
  if (i % 4 == 3) ip_raise(EDOM, "job %d refused", i);
  char out[32];
  snprintf(out, sizeof out, "job %d", i);
  return bytes_of(out);
}

Test(pool, waitfor_with_a_factor_takes_pool_and_forked_calls_in_one_list) {
  SKIP_WITHOUT_CHILDREN_FILES();
  enum { N = 24, FACTOR = 4 };
  ip_task *t = task(fn_job);
  ip_pool *p = pool(2);
  pid_t w[2];
  cr_assert_eq(workers_of(template_pid(), w, 2), 2);
  static struct job jobs[N];
  for (int i = 0; i < N; i++) {
    jobs[i].index = i;
    jobs[i].seen = 0;
    snprintf(jobs[i].text, sizeof jobs[i].text, "%d", i);
    jobs[i].b = (ip_bytes){jobs[i].text, strlen(jobs[i].text)};
  }
  ip_list *l = ip_list_new();
  cr_assert_not_null(l);
  ip_waitfor wf = IP_WAITFOR_INIT;
  int next = 0, done = 0, asks = 0;
  ip_future *f;
  int rc;
  while ((rc = ip_waitfor_next(&wf, l, FACTOR, -1, &f)) == 1) {
    cr_assert_leq(ip_list_len(l), FACTOR);
    if (!f) {
      asks++;
      if (next < N) {
        struct job *j = &jobs[next++];
        ip_future *g = j->index % 2 ? ip_call(t, &j->b) : ip_pool_call(p, t, &j->b);
        cr_assert_not_null(g);
        cr_assert_eq(ip_list_push(l, g), 0);
      }
      continue;
    }
    struct job *j = (struct job *)ip_future_arg(f);
    cr_assert(j >= jobs && j < jobs + N, "ip_future_arg is not the pointer given");
    j->seen++;
    done++;
    pid_t pid = ip_future_pid(f);
    cr_assert_gt(pid, 0);
    if (j->index % 2 == 0) cr_assert(pid_in(pid, w, 2), "pool job %d ran in %d", j->index, pid);
    else cr_assert(!pid_in(pid, w, 2), "forked job %d ran in a worker", j->index);
    if (j->index % 4 == 3) {
      const ip_error *e = ip_future_error(f);
      cr_assert_not_null(e, "job %d should have failed", j->index);
      cr_assert_eq(e->code, IP_ERAISED);
      cr_assert_eq(e->raised_code, EDOM);
      char want[32];
      snprintf(want, sizeof want, "job %d refused", j->index);
      cr_assert_str_eq(e->message, want);
    } else {
      char want[32];
      snprintf(want, sizeof want, "job %d", j->index);
      cr_assert_str_eq(str_of(f), want, "%s", why(f));
    }
    ip_future_free(f);
  }
  cr_assert_eq(rc, 0, "waitfor: %s", ip_err_name(rc));
  cr_assert_eq(done, N);
  cr_assert_geq(asks, N);
  for (int i = 0; i < N; i++)
    cr_assert_eq(jobs[i].seen, 1, "job %d came back %d times", i, jobs[i].seen);
  ip_list_free(l);
  ip_pool_free(p);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(pool, the_ready_fd_becomes_readable_when_a_pool_call_completes) {
  setup_pipes();
  ip_task *gated = task(fn_gated);
  ip_pool *p = pool(1);
  int fd = ip_ready_fd();
  cr_assert_geq(fd, 0, "%s", ip_err_name(fd));
  ip_future *f = pcall(p, gated, '1');
  await_started(1);
  /* The slate wiped while the call runs; whatever else wakes the descriptor (nothing should,
   * but it is no error) only makes the loop below look again. Only the completion ends it. */
  uint64_t v;
  struct pollfd pf = {fd, POLLIN, 0};
  while (poll(&pf, 1, 0) == 1) cr_assert_eq(read(fd, &v, sizeof v), (ssize_t)sizeof v);
  cr_assert_eq(ip_future_done(f), 0);
  gate_release(&G, 1);
  int64_t deadline = now_ms() + guard_ms(30000);
  int done = 0;
  while (!done) {
    int r = poll(&pf, 1, left_ms(deadline));
    if (r < 0 && errno == EINTR) continue;
    cr_assert_eq(r, 1, "the ready fd never became readable for the call's completion");
    ssize_t n = read(fd, &v, sizeof v);
    cr_assert(n == (ssize_t)sizeof v || (n < 0 && errno == EAGAIN));
    done = ip_future_done(f);
  }
  value_pid(f);
  ip_future_free(f);
  ip_pool_free(p);
  ip_task_free(gated);
  close_pipes();
}

/* LIBRARY BUG, seen by ThreadSanitizer only (tests/tsan.sh), expected to be reported there
 * until fixed: ip_future_pid reads f->pid with no synchronisation (lib/future.c), and for a
 * pool call the supervisor thread writes it when it takes in the worker's acknowledgement
 * (on_ack_locked, lib/pool.c, under ip__g.lock). Reading the pid of a running call from
 * another thread is documented use ("Everything is thread-safe unless a function says
 * otherwise"), so the read must be atomic or locked. The other builds check the values. */
Test(pool, future_pid_may_be_read_while_the_supervisor_thread_takes_in_the_start) {
  setup_pipes();
  ip_task *gated = task(fn_gated);
  ip_pool *p = pool(1);
  cr_assert_eq(ip_use_supervisor_thread(), 0);
  ip_future *f = pcall(p, gated, '1');
  await_started(1);
  int64_t deadline = now_ms() + guard_ms(30000);
  pid_t seen;
  while ((seen = ip_future_pid(f)) == 0) {
    cr_assert_gt(left_ms(deadline), 0, "the running call's pid never appeared");
    poll(NULL, 0, 1); /* paces the watching only */
  }
  gate_release(&G, 1);
  cr_assert_eq(value_pid(f), seen);
  ip_future_free(f);
  ip_pool_free(p);
  ip_task_free(gated);
  close_pipes();
}

struct waiter {
  ip_future *f;
  pid_t tid; /* atomic accesses only */
  int rc;
  pid_t got;
};

static void *wait_and_read(void *arg) {
  struct waiter *w = arg;
  __atomic_store_n(&w->tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
  w->rc = ip_future_wait(w->f, -1);
  const ip_bytes *b = ip_future_value(w->f);
  if (b && b->len == sizeof(pid_t)) memcpy(&w->got, b->data, sizeof w->got);
  return NULL;
}

static int asleep_in_a_wait(pid_t tid) {
  long nr = blocked_syscall(getpid(), tid);
#ifdef SYS_poll
  if (nr == SYS_poll) return 1;
#endif
  return nr == SYS_ppoll || nr == SYS_epoll_wait || nr == SYS_epoll_pwait || nr == SYS_futex;
}

Test(pool, four_threads_wait_for_the_same_pool_future) {
  enum { T = 4 };
  setup_pipes();
  ip_task *gated = task(fn_gated);
  ip_pool *p = pool(1);
  ip_future *f = pcall(p, gated, '1');
  await_started(1);
  struct waiter ws[T];
  pthread_t th[T];
  for (int i = 0; i < T; i++) {
    ws[i] = (struct waiter){.f = f, .rc = 1, .got = 0};
    cr_assert_eq(pthread_create(&th[i], NULL, wait_and_read, &ws[i]), 0);
  }
  int64_t deadline = now_ms() + guard_ms(30000);
  for (int i = 0; i < T; i++)
    while (!__atomic_load_n(&ws[i].tid, __ATOMIC_ACQUIRE) || !asleep_in_a_wait(ws[i].tid)) {
      cr_assert_gt(left_ms(deadline), 0, "waiter %d never went to sleep", i);
      poll(NULL, 0, 1); /* paces the watching of /proc only */
    }
  cr_assert_eq(ip_future_done(f), 0);
  gate_release(&G, 1);
  for (int i = 0; i < T; i++) cr_assert_eq(pthread_join(th[i], NULL), 0);
  pid_t a = value_pid(f);
  for (int i = 0; i < T; i++) {
    cr_assert_eq(ws[i].rc, 0, "waiter %d: %s", i, ip_err_name(ws[i].rc));
    cr_assert_eq(ws[i].got, a, "waiter %d read %d", i, (int)ws[i].got);
  }
  ip_future_free(f);
  ip_pool_free(p);
  ip_task_free(gated);
  close_pipes();
}

/* ==== 14. sizes and leaks ===================================================================== */

#define BIG ((size_t)20 << 20)
static unsigned char big_byte(size_t i) { return (unsigned char)(i * 29u + (i >> 16) * 3u); }

static void *fn_big(void *arg) {
  ip_bytes *b = ip_bytes_alloc(BIG);
  if (!b) ip_raise(ENOMEM, "ip_bytes_alloc(20 MiB)");
  unsigned char *d = b->data;
  for (size_t i = 0; i < BIG; i++) d[i] = big_byte(i);
  return b;
}

Test(pool, a_20_mib_result_arrives_intact_twice_from_the_same_worker) {
  ip_task *t = task(fn_big);
  ip_pool *p = pool(1);
  pid_t first = 0;
  for (int round = 0; round < 2; round++) {
    ip_future *f = ip_pool_call(p, t, NULL);
    const ip_bytes *b = ip_future_value(f);
    cr_assert_not_null(b, "round %d: %s", round, why(f));
    cr_assert_eq(b->len, BIG);
    const unsigned char *d = b->data;
    for (size_t i = 0; i < BIG; i++)
      if (d[i] != big_byte(i)) cr_assert_fail("round %d, byte %zu: %#x", round, i, d[i]);
    if (round == 0) first = ip_future_pid(f);
    else cr_assert_eq(ip_future_pid(f), first);
    ip_future_free(f);
  }
  ip_pool_free(p);
  ip_task_free(t);
}

Test(pool, two_hundred_small_calls_keep_the_same_two_workers) {
  SKIP_WITHOUT_CHILDREN_FILES();
  enum { N = 200 };
  ip_task *tp = task(fn_pid);
  ip_pool *p = pool(2);
  pid_t tpl = template_pid(), w[4], after[4];
  cr_assert_eq(workers_of(tpl, w, 4), 2);
  for (int i = 0; i < N; i++) {
    pid_t pid = run_pid(p, tp, 'x');
    cr_assert(pid_in(pid, w, 2), "call %d ran in %d, not one of the first workers", i, pid);
  }
  cr_assert_eq(ip_pool_workers(p), 2);
  cr_assert_eq(workers_of(tpl, after, 4), 2);
  cr_assert(after[0] == w[0] && after[1] == w[1], "the workers changed");
  ip_pool_free(p);
  ip_task_free(tp);
}

/* What a worker holds: its resident set, its descriptors, and the bytes of the memfds among
 * them (where in-place ip_bytes results live). */
struct wstate {
  size_t rss, memfd_bytes;
  int fds;
  pid_t pid;
};

static int add_fd(int fd, void *ud) {
  struct wstate *s = ud;
  char target[256];
  struct stat st;
  s->fds++;
  if (strncmp(fd_target(fd, target, sizeof target), "/memfd:", 7) == 0 && fstat(fd, &st) == 0)
    s->memfd_bytes += (size_t)st.st_size;
  return 0;
}

static void *fn_state(void *arg) {
  struct wstate s = {own_rss(), 0, 0, getpid()};
  each_fd(add_fd, &s);
  return ip_bytes_copy(&s, sizeof s);
}

static struct wstate worker_state(ip_pool *p, ip_task *t) {
  ip_future *f = ip_pool_call(p, t, NULL);
  cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0, "never completed");
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s", why(f));
  struct wstate s;
  cr_assert_eq(b->len, sizeof s);
  memcpy(&s, b->data, sizeof s);
  cr_assert_eq(ip_future_pid(f), s.pid);
  ip_future_free(f);
  return s;
}

#define FOUR ((size_t)4 << 20)
static void *fn_four(void *arg) {
  ip_bytes *b = ip_bytes_alloc(FOUR);
  if (!b) ip_raise(ENOMEM, "ip_bytes_alloc(4 MiB)");
  memset(b->data, 0x3c, FOUR);
  ((unsigned char *)b->data)[FOUR - 1] = 0xc3;
  return b;
}

/* Large ip_bytes results live in memfds (in place): the worker must let go of each one once
 * its answer is sent. Kept, 64 of them would be 256 MiB in 64 descriptors. */
Test(pool, in_place_ip_bytes_results_do_not_pile_up_in_the_worker) {
  enum { N = 64 };
  ip_task *four = task(fn_four), *state = task(fn_state);
  ip_pool *p = pool(1);
  struct wstate s0 = worker_state(p, state);
  cr_assert_eq(ip_pool_set_max_rss(p, s0.rss + ((size_t)128 << 20)), 0);
  for (int i = 0; i < N; i++) {
    ip_future *f = ip_pool_call(p, four, NULL);
    const ip_bytes *b = ip_future_value(f);
    cr_assert_not_null(b, "call %d: %s", i, why(f));
    cr_assert_eq(b->len, FOUR);
    const unsigned char *d = b->data;
    cr_assert(d[0] == 0x3c && d[FOUR / 2] == 0x3c && d[FOUR - 1] == 0xc3);
    cr_assert_eq(ip_future_pid(f), s0.pid, "call %d ran on %d: the worker grew past max_rss", i,
                 (int)ip_future_pid(f));
    ip_future_free(f);
  }
  struct wstate s1 = worker_state(p, state);
  cr_assert_eq(s1.pid, s0.pid);
  cr_assert_eq(s1.fds, s0.fds, "the worker holds %d descriptors, %d before", s1.fds, s0.fds);
  cr_assert_eq(s1.memfd_bytes, s0.memfd_bytes, "the worker holds %zu bytes of memfds, %zu before",
               s1.memfd_bytes, s0.memfd_bytes);
  cr_log_info("worker RSS %zu KiB before, %zu KiB after %d results of 4 MiB", s0.rss >> 10,
              s1.rss >> 10, N);
  ip_pool_free(p);
  ip_task_free(four);
  ip_task_free(state);
}

#if defined(__SANITIZE_ADDRESS__)
#define IP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define IP_ASAN 1
#endif
#endif

#define HALF ((size_t)512 << 10)
static void *fn_half(void *arg) {
  ip_bytes *b = ip_bytes_alloc(HALF);
  if (!b) ip_raise(ENOMEM, "ip_bytes_alloc(512 KiB)");
  memset(b->data, 0x71, HALF);
  return b;
}

/* Smaller ones are heap buffers: freed after each call too, or 320 of them would be 160 MiB. */
Test(pool, heap_ip_bytes_results_do_not_pile_up_in_the_worker) {
#ifdef IP_ASAN
  cr_skip_test("AddressSanitizer keeps freed memory resident (its quarantine), so the worker's "
               "RSS grows here whatever the library frees; the plain and valgrind builds check");
#endif
  enum { N = 320 };
  ip_task *half = task(fn_half), *state = task(fn_state);
  ip_pool *p = pool(1);
  struct wstate s0 = worker_state(p, state);
  cr_assert_eq(ip_pool_set_max_rss(p, s0.rss + ((size_t)128 << 20)), 0);
  for (int i = 0; i < N; i++) {
    ip_future *f = ip_pool_call(p, half, NULL);
    const ip_bytes *b = ip_future_value(f);
    cr_assert_not_null(b, "call %d: %s", i, why(f));
    cr_assert_eq(b->len, HALF);
    cr_assert_eq(((const unsigned char *)b->data)[HALF - 1], 0x71);
    cr_assert_eq(ip_future_pid(f), s0.pid, "call %d ran on %d: the worker grew past max_rss", i,
                 (int)ip_future_pid(f));
    ip_future_free(f);
  }
  struct wstate s1 = worker_state(p, state);
  cr_assert_eq(s1.pid, s0.pid);
  cr_log_info("worker RSS %zu KiB before, %zu KiB after %d results of 512 KiB", s0.rss >> 10,
              s1.rss >> 10, N);
  ip_pool_free(p);
  ip_task_free(half);
  ip_task_free(state);
}

/* ==== 15. the template's death ================================================================ */

Test(pool, the_templates_death_fails_every_call_and_breaks_the_pool) {
  SKIP_WITHOUT_CHILDREN_FILES();
  setup_pipes();
  /* The workers, orphaned, come to this process, which reaps them at the end. */
  cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0, "%s", strerror(errno));
  ip_task *gated = task(fn_gated), *tp = task(fn_pid);
  ip_pool *p = pool(2);
  pid_t tpl = template_pid(), w[2];
  cr_assert_eq(workers_of(tpl, w, 2), 2);
  ip_future *fs[5];
  fs[0] = pcall(p, gated, 'a');
  fs[1] = pcall(p, gated, 'b');
  await_started(2);
  for (int i = 2; i < 5; i++) fs[i] = pcall(p, tp, (char)('0' + i)); /* sent or queued */
  cr_assert_eq(kill(tpl, SIGKILL), 0);
  for (int i = 0; i < 5; i++) {
    const ip_error *e = failed_with(fs[i], IP_EEXITED);
    cr_assert_not_null(strstr(e->message, "template"), "call %d: %s", i, e->message);
  }
  cr_assert_eq(ip_pool_workers(p), 0);
  ip_future *late = pcall(p, tp, 'L');
  const ip_error *e = failed_at_once(late, IP_EEXITED);
  cr_assert_not_null(strstr(e->message, "template"), "message: %s", e->message);
  ip_pool_free(p);
  cr_assert(pid_gone(tpl), "the template was not reaped");
  int st;
  for (int i = 0; i < 2; i++) {
    int r = reap_within(w[i], guard_ms(30000), &st);
    if (r == 0) kill(w[i], SIGKILL), waitpid(w[i], NULL, 0);
    cr_assert_neq(r, 0, "worker %d outlived its template", (int)w[i]);
    cr_assert(pid_gone(w[i]));
  }
  cr_assert(no_children());
  cr_assert_eq(runs_of('L'), 0);
  for (int i = 0; i < 5; i++) ip_future_free(fs[i]);
  ip_future_free(late);
  ip_task_free(gated);
  ip_task_free(tp);
  close_pipes();
}

/* ==== 16. a fork of the caller ================================================================ */

Test(pool, in_a_fork_child_pool_calls_fail_with_einval_and_the_parents_pool_still_works) {
  setup_pipes();
  ip_task *tp = task(fn_pid);
  ip_pool *p = pool(1);
  pid_t a = run_pid(p, tp, '0');
  fflush(stdout);
  fflush(stderr);
  pid_t c = fork();
  cr_assert_geq(c, 0);
  if (c == 0) {
    char tag = 'F';
    ip_bytes b = {&tag, 1};
    ip_future *f = ip_pool_call(p, tp, &b);
    if (!f) _exit(10);
    if (ip_future_status(f) != IP_EINVAL) _exit(11);
    const ip_error *e = ip_future_error(f);
    if (!e || !strstr(e->message, "parent")) _exit(12);
    if (ip_future_pid(f) != 0) _exit(13);
    ip_future_free(f);
    ip_pool_free(p); /* memory only */
    ip_task_free(tp);
    _exit(0);
  }
  int st;
  cr_assert_eq(waitpid(c, &st, 0), c);
  cr_assert(WIFEXITED(st), "the fork child died of signal %d", WTERMSIG(st));
  cr_assert_eq(WEXITSTATUS(st), 0,
               "in the fork child: 10 no future, 11 not EINVAL, 12 message, 13 pid; got %d",
               WEXITSTATUS(st));
  cr_assert_eq(run_pid(p, tp, '1'), a, "the parent's worker changed");
  cr_assert_eq(ip_pool_workers(p), 1);
  cr_assert_eq(runs_of('F'), 0, "the fork child's call ran");
  ip_pool_free(p);
  ip_task_free(tp);
  close_pipes();
  cr_assert(no_children());
}

/* ==== 12. ip_pool_new_fork: every fork of the pool through the caller's function ============== */

static int hook_calls;       /* calls of fork_hook in this process (and its copies) */
static pid_t made_by_hook;   /* in a child of fork_hook: its own pid */
static pid_t hook_caller;    /* fork_hook fails anywhere but here, when hook_fails_elsewhere */
static int hook_fails_elsewhere, hook_errno;
static int hook_ud;

static pid_t fork_hook(void *ud) {
  cr_assert_eq(ud, &hook_ud);
  hook_calls++;
  if (hook_errno && (!hook_fails_elsewhere || getpid() != hook_caller)) {
    errno = hook_errno;
    return -1;
  }
  pid_t pid = fork();
  if (pid == 0) made_by_hook = getpid();
  return pid;
}

/* What the worker knows of its making: whether fork_hook forked it, and how many calls of
 * fork_hook its copy of memory counted. */
static void *fn_hooked(void *arg) {
  int v[3] = {(int)getpid(), made_by_hook == getpid(), hook_calls};
  return ip_bytes_copy(v, sizeof v);
}

Test(pool, new_fork_forks_the_template_and_every_worker_through_the_function) {
  hook_calls = 0, hook_errno = 0;
  ip_task *t = task(fn_hooked);
  ip_pool *p = ip_pool_new_fork(2, fork_hook, &hook_ud);
  cr_assert_not_null(p, "ip_pool_new_fork: %s", strerror(errno));
  cr_assert_eq(hook_calls, 1, "the caller forks the template only");
  cr_assert_eq(ip_pool_set_max_calls(p, 1), 0); /* so that replacements come in too */
  enum { N = 5 };
  int seen[N];
  for (int i = 0; i < N; i++) {
    ip_future *f = ip_pool_call(p, t, NULL);
    cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0, "never completed");
    const ip_bytes *b = ip_future_value(f);
    cr_assert_not_null(b, "%s", why(f));
    int v[3];
    memcpy(v, b->data, sizeof v);
    cr_assert_eq(v[0], ip_future_pid(f));
    cr_assert_eq(v[1], 1, "worker %d was not forked by the hook", v[0]);
    /* The template's own count: 1 (its fork) plus one per worker it forked so far. */
    cr_assert_geq(v[2], 2, "worker %d: the hook ran %d times in its template", v[0], v[2]);
    for (int j = 0; j < i; j++) cr_assert_neq(seen[j], v[0], "max_calls 1 reused a worker");
    seen[i] = v[0];
    ip_future_free(f);
  }
  cr_assert_eq(hook_calls, 1);
  ip_pool_free(p);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(pool, new_fork_fails_with_the_functions_errno_in_the_caller_and_in_the_template) {
  ip_task *t = task(fn_hooked);
  for (int elsewhere = 0; elsewhere <= 1; elsewhere++) {
    hook_calls = 0;
    hook_errno = elsewhere ? EAGAIN : ENOMEM;
    hook_fails_elsewhere = elsewhere;
    hook_caller = getpid();
    errno = 0;
    cr_assert_null(ip_pool_new_fork(1, fork_hook, &hook_ud), "elsewhere=%d", elsewhere);
    cr_assert_eq(errno, hook_errno, "elsewhere=%d: errno %s", elsewhere, strerror(errno));
    cr_assert_eq(hook_calls, 1);
    cr_assert(no_children(), "elsewhere=%d: a failed pool left a process", elsewhere);
  }
  hook_errno = 0, hook_fails_elsewhere = 0;
  /* NULL is ip_pool_new. */
  ip_pool *p = ip_pool_new_fork(1, NULL, NULL);
  cr_assert_not_null(p);
  ip_future *f = ip_pool_call(p, t, NULL);
  cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s", why(f));
  int v[3];
  memcpy(v, b->data, sizeof v);
  cr_assert_eq(v[1], 0, "no hook was given");
  ip_future_free(f);
  ip_pool_free(p);
  ip_task_free(t);
  cr_assert(no_children());
}

/* A fork slow in the process that forks, as Ruby's Process.fork is (its at-fork work): the
 * template sleeps after each fork it makes. ip_pool_free closes the workers' channels, so
 * their ends may reach the template before the end of its own channel, while it forks each
 * one's replacement; the replacement finds its channel closed and ends within the next slow
 * fork, and so on. The template must see that the caller is gone, not fork forever. */
static pid_t slow_hook_caller;

static pid_t slow_hook(void *ud) {
  pid_t pid = fork();
  if (pid > 0 && getpid() != slow_hook_caller) usleep(20 * 1000);
  return pid;
}

Test(pool, free_returns_when_the_workers_end_first_and_each_fork_is_slow) {
  slow_hook_caller = getpid();
  ip_task *t = task(fn_pid);
  for (int round = 0; round < 3; round++) {
    ip_pool *p = ip_pool_new_fork(8, slow_hook, NULL);
    cr_assert_not_null(p, "ip_pool_new_fork: %s", strerror(errno));
    ip_future *f = ip_pool_call(p, t, NULL);
    cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0, "never completed");
    cr_assert_not_null(ip_future_value(f), "%s", why(f));
    ip_future_free(f);
    free_pool_guarded(p);
  }
  ip_task_free(t);
  cr_assert(no_children());
}

/* ==== 13. ip_task_set_crash_report: per call, as the task made before the pool says ========== */

/* The caller's own SIGSEGV handler, which a worker inherits: it ends the process with 42. */
static void own_segv_handler(int sig) { _exit(42); }

/* A SIGSEGV without a bad access (valgrind stays quiet): what handles it is under test. */
static void *fn_segv(void *arg) {
  raise(SIGSEGV);
  return NULL;
}

Test(pool, crash_report_off_leaves_the_callers_handler_in_place_call_by_call) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = own_segv_handler;
  cr_assert_eq(sigaction(SIGSEGV, &sa, &old), 0);
  ip_task *on = task(fn_segv), *off = task(fn_segv), *tp = task(fn_pid);
  cr_assert_eq(ip_task_set_crash_report(off, 0), 0);
  ip_pool *p = pool(1);
  for (int round = 0; round < 2; round++) {
    /* A reporting call first (it arms the report), then one that must not report. */
    pid_t a = run_pid(p, tp, 'p');
    ip_future *f = ip_pool_call(p, off, NULL);
    const ip_error *e = failed_with(f, IP_EEXITED);
    cr_assert_eq(e->exit_status, 42, "round %d: the caller's handler did not run", round);
    cr_assert_eq(e->pid, a);
    ip_future_free(f);
    f = ip_pool_call(p, on, NULL);
    e = failed_with(f, IP_ESIGNALED);
    cr_assert_eq(e->signal, SIGSEGV);
    cr_assert_not_null(e->backtrace, "round %d: the crash report was not armed again", round);
    ip_future_free(f);
  }
  ip_pool_free(p);
  ip_task_free(on), ip_task_free(off), ip_task_free(tp);
  sigaction(SIGSEGV, &old, NULL);
  cr_assert(no_children());
}
