/* Calls and futures with the raw serializer: values, accessors, waiting, threads, nesting,
 * per-task options (rlimits, stdio) and the error-code tables. */
#define _GNU_SOURCE
#include "helpers.h"
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/resource.h>
#include <time.h>

/* A guard against hangs only (a wake-up the library forgets would block a test forever);
 * no test depends on how long anything takes. */
TestSuite(task, .timeout = 120);

/* ---- small task functions and helpers -------------------------------------------------------- */

static void *return_hello(void *arg) { return bytes_of("hello"); }
static void *return_arg_string(void *arg) { return bytes_of(arg); }
static void *return_null(void *arg) { return NULL; }
static void *return_empty_copy(void *arg) { return ip_bytes_copy("", 0); }

static unsigned char all_bytes[512];
static void fill_all_bytes(void) {
  for (size_t i = 0; i < sizeof all_bytes; i++) all_bytes[i] = (unsigned char)(i % 256);
  all_bytes[0] = all_bytes[1] = all_bytes[511] = 0; /* NULs at both ends too */
}
static void *return_all_bytes(void *arg) { return ip_bytes_copy(all_bytes, sizeof all_bytes); }

static void *return_int_as_text(void *arg) {
  char buf[32];
  snprintf(buf, sizeof buf, "%d", *(int *)arg);
  return bytes_of(buf);
}


/* ---- values ---------------------------------------------------------------------------------- */

Test(task, value_round_trips_a_string) {
  int base = warm_baseline();
  ip_task *t = ip_task_new(return_hello, NULL);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  cr_assert_not_null(f);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b);
  cr_assert_eq(b->len, 5);
  cr_assert_eq(memcmp(b->data, "hello", 5), 0);
  cr_assert_eq(ip_future_status(f), 0);
  cr_assert_null(ip_future_error(f));
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
  cr_assert_eq(count_fds(), base);
}

Test(task, null_result_is_an_empty_value_not_a_failure) {
  ip_task *t = ip_task_new(return_null, NULL);
  ip_future *f = ip_call(t, NULL);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "an empty raw result is a value: %s",
                     ip_future_error(f) ? ip_future_error(f)->message : "");
  cr_assert_eq(b->len, 0);
  cr_assert_eq(ip_future_status(f), 0);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(task, zero_length_bytes_copy_is_an_empty_value) {
  ip_task *t = ip_task_new(return_empty_copy, NULL);
  ip_future *f = ip_call(t, NULL);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b);
  cr_assert_eq(b->len, 0);
  cr_assert_eq(ip_future_status(f), 0);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(task, binary_bytes_with_nuls_round_trip_exactly) {
  fill_all_bytes();
  ip_task *t = ip_task_new(return_all_bytes, NULL);
  ip_future *f = ip_call(t, NULL);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b);
  cr_assert_eq(b->len, sizeof all_bytes);
  cr_assert_eq(memcmp(b->data, all_bytes, sizeof all_bytes), 0);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(task, value_is_stable_across_repeated_reads) {
  ip_task *t = ip_task_new(return_hello, NULL);
  ip_future *f = ip_call(t, NULL);
  const ip_bytes *b1 = ip_future_value(f);
  const ip_bytes *b2 = ip_future_value(f);
  cr_assert_not_null(b1);
  cr_assert_eq(b1, b2, "the value is decoded once and owned by the future");
  ip_future_free(f);
  ip_task_free(t);
}

static void *read_value(void *p) { return (void *)ip_future_value(p); }

Test(task, value_read_from_two_threads_at_once_is_decoded_once) {
  ip_task *t = ip_task_new(return_hello, NULL);
  ip_future *f = ip_call(t, NULL);
  pthread_t a, b;
  void *va, *vb;
  cr_assert_eq(pthread_create(&a, NULL, read_value, f), 0);
  cr_assert_eq(pthread_create(&b, NULL, read_value, f), 0);
  pthread_join(a, &va);
  pthread_join(b, &vb);
  cr_assert_not_null(va);
  cr_assert_eq(va, vb);
  cr_assert_eq(va, ip_future_value(f));
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(task, child_sees_a_copy_of_the_callers_memory_through_arg) {
  char text[] = "from the parent's stack";
  ip_task *t = ip_task_new(return_arg_string, NULL);
  ip_future *f = ip_call(t, text);
  cr_assert_str_eq(str_of(f), "from the parent's stack");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* ---- accessors ------------------------------------------------------------------------------- */

Test(task, future_arg_returns_the_pointer_given_to_call) {
  int x = 42;
  ip_task *t = ip_task_new(return_int_as_text, NULL);
  ip_future *f = ip_call(t, &x);
  cr_assert_eq(ip_future_arg(f), &x);
  cr_assert_str_eq(str_of(f), "42");
  cr_assert_eq(ip_future_arg(f), &x, "still the same pointer after completion");
  ip_future_free(f);

  ip_task *t2 = ip_task_new(return_null, NULL);
  ip_future *g = ip_call(t2, NULL);
  cr_assert_null(ip_future_arg(g));
  ip_future_free(g);
  cr_assert_null(ip_future_arg(NULL));
  ip_task_free(t);
  ip_task_free(t2);
  cr_assert(no_children());
}

Test(task, future_pid_is_the_child_and_is_gone_after_completion) {
  ip_task *t = ip_task_new(return_hello, NULL);
  ip_future *f = ip_call(t, NULL);
  pid_t pid = ip_future_pid(f);
  cr_assert_gt(pid, 0);
  cr_assert_neq(pid, getpid());
  cr_assert_eq(ip_future_wait(f, -1), 0);
  cr_assert(pid_gone(pid), "child %d was reaped before the future completed", (int)pid);
  cr_assert_eq(ip_future_pid(f), pid, "the pid stays readable after completion");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert_eq(ip_future_pid(NULL), 0);
  cr_assert(no_children());
}

Test(task, done_and_status_while_running_then_after) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *f = ip_call(t, &g);
  cr_assert_eq(ip_future_done(f), 0);
  cr_assert_eq(ip_future_status(f), IP_EAGAIN);
  cr_assert_null(ip_future_error(f));
  gate_release(&g, 1);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  cr_assert_eq(ip_future_done(f), 1);
  cr_assert_eq(ip_future_status(f), 0);
  cr_assert_str_eq(str_of(f), "released");
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

Test(task, accessors_on_null) {
  cr_assert_eq(ip_future_done(NULL), 0);
  cr_assert_eq(ip_future_status(NULL), IP_EINVAL);
  cr_assert_eq(ip_future_wait(NULL, 0), IP_EINVAL);
  cr_assert_null(ip_future_value(NULL));
  cr_assert_null(ip_future_error(NULL));
  struct rusage ru;
  cr_assert_eq(ip_future_rusage(NULL, &ru), IP_EINVAL);
  ip_future_free(NULL); /* ignored */
}

Test(task, wait_times_out_on_a_blocked_child_then_completes_once_released) {
  int base = warm_baseline();
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *f = ip_call(t, &g);
  cr_assert_eq(ip_future_wait(f, 0), IP_ETIMEDOUT, "timeout 0 polls");
  cr_assert_eq(ip_future_wait(f, 20), IP_ETIMEDOUT);
  cr_assert_eq(ip_future_done(f), 0);
  gate_release(&g, 1);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  cr_assert_eq(ip_future_wait(f, 0), 0, "waiting on a done future returns at once");
  cr_assert_str_eq(str_of(f), "released");
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
  cr_assert_eq(count_fds(), base);
}

/* A periodic timer aimed at this thread: it keeps interrupting until the wait notices, so
 * nothing depends on when the wait starts. */
static volatile sig_atomic_t n_signals;
static int sig_pipe_w = -1; /* when set, the handler also reports each signal here */
static void on_usr1(int sig) {
  n_signals++;
  if (sig_pipe_w >= 0) {
    int e = errno;
    ssize_t r = write(sig_pipe_w, "s", 1);
    (void)r;
    errno = e;
  }
}

static timer_t start_signal_timer(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1; /* no SA_RESTART */
  sigemptyset(&sa.sa_mask);
  cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
  struct sigevent sev;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = SIGUSR1;
  sev._sigev_un._tid = gettid();
  timer_t tm;
  cr_assert_eq(timer_create(CLOCK_MONOTONIC, &sev, &tm), 0);
  struct itimerspec its = {{0, 5000000}, {0, 5000000}};
  cr_assert_eq(timer_settime(tm, 0, &its, NULL), 0);
  return tm;
}

Test(task, wait_returns_eintr_when_a_signal_handler_runs_then_resumes) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *f = ip_call(t, &g);
  n_signals = 0;
  timer_t tm = start_signal_timer();
  /* Signals arrive every 5 ms until the wait returns; the long timeout only turns a library
   * that ignores them into a failure (IP_ETIMEDOUT) instead of a hang. */
  int rc = ip_future_wait(f, 60000);
  timer_delete(tm);
  cr_assert_eq(rc, IP_EINTR, "got %d (%s)", rc, ip_err_name(rc));
  cr_assert_gt(n_signals, 0);
  cr_assert_eq(ip_future_done(f), 0);
  gate_release(&g, 1);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  cr_assert_str_eq(str_of(f), "released");
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

/* ip_future_value has no way to report IP_EINTR: it must keep waiting through handlers. A
 * helper thread releases the child only after the handler ran three times (it counts the
 * bytes the handler writes to a pipe), so the signals certainly hit the waiting call. */
struct release_after_signals {
  int sig_r;
  struct gate *g;
};
static void *release_after_three_signals(void *p) {
  struct release_after_signals *r = p;
  char c;
  for (int i = 0; i < 3; i++)
    if (read(r->sig_r, &c, 1) != 1) break;
  gate_release(r->g, 1);
  return NULL;
}

Test(task, value_keeps_waiting_through_signal_handlers) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *f = ip_call(t, &g);
  int sp[2]; /* made after the fork, so that only this process holds its write end */
  cr_assert_eq(pipe(sp), 0);
  sig_pipe_w = sp[1];
  struct release_after_signals r = {sp[0], &g};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, release_after_three_signals, &r), 0);
  n_signals = 0;
  timer_t tm = start_signal_timer();
  const ip_bytes *b = ip_future_value(f);
  timer_delete(tm);
  sig_pipe_w = -1;
  close(sp[1]); /* if value returned early, the helper sees EOF instead of blocking */
  pthread_join(th, NULL);
  cr_assert_geq(n_signals, 3);
  cr_assert_not_null(b, "value gave up: %s",
                     ip_future_error(f) ? ip_future_error(f)->message : "(no error)");
  cr_assert_eq(b->len, 8);
  cr_assert_eq(memcmp(b->data, "released", 8), 0);
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  close(sp[0]);
  cr_assert(no_children());
}

/* ---- many calls, threads, nesting ------------------------------------------------------------ */

Test(task, many_sequential_calls_leave_nothing_behind) {
  int base = warm_baseline();
  ip_task *t = ip_task_new(return_int_as_text, NULL);
  for (int i = 0; i < 200; i++) {
    ip_future *f = ip_call(t, &i);
    cr_assert_not_null(f);
    char want[16];
    snprintf(want, sizeof want, "%d", i);
    const char *got = str_of(f);
    cr_assert_not_null(got, "call %d failed: %s", i, ip_future_error(f)->message);
    cr_assert_str_eq(got, want);
    ip_future_free(f);
  }
  ip_task_free(t);
  cr_assert(no_children());
  cr_assert_eq(count_fds(), base);
}

Test(task, many_calls_in_flight_at_once) {
  enum { N = 32 };
  ip_task *t = ip_task_new(return_int_as_text, NULL);
  int args[N];
  ip_future *fs[N];
  for (int i = 0; i < N; i++) {
    args[i] = i * 7;
    fs[i] = ip_call(t, &args[i]);
  }
  for (int i = N - 1; i >= 0; i--) {
    char want[16];
    snprintf(want, sizeof want, "%d", i * 7);
    cr_assert_str_eq(str_of(fs[i]), want);
    ip_future_free(fs[i]);
  }
  ip_task_free(t);
  cr_assert(no_children());
}

struct thread_job {
  ip_task *task;
  int first, n, ok;
};

static void *thread_calls(void *p) {
  struct thread_job *j = p;
  for (int k = 0; k < j->n; k++) {
    int v = j->first + k;
    ip_future *f = ip_call(j->task, &v);
    const ip_bytes *b = ip_future_value(f);
    char want[16];
    int wl = snprintf(want, sizeof want, "%d", v);
    if (b && b->len == (size_t)wl && memcmp(b->data, want, (size_t)wl) == 0) j->ok++;
    ip_future_free(f);
  }
  return NULL;
}

Test(task, one_task_used_from_two_threads_concurrently) {
  int base = warm_baseline();
  ip_task *t = ip_task_new(return_int_as_text, NULL);
  struct thread_job a = {t, 0, 50, 0}, b = {t, 1000, 50, 0};
  pthread_t ta, tb;
  cr_assert_eq(pthread_create(&ta, NULL, thread_calls, &a), 0);
  cr_assert_eq(pthread_create(&tb, NULL, thread_calls, &b), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  cr_assert_eq(a.ok, 50);
  cr_assert_eq(b.ok, 50);
  ip_task_free(t);
  cr_assert(no_children());
  cr_assert_eq(count_fds(), base, "threads that waited must not leave descriptors behind");
}

/* A fork function that holds its call up until the test lets it go. The handshake is relaxed
 * on purpose: it orders nothing between the threads, so that ThreadSanitizer (tests/tsan.sh)
 * judges the library's own synchronization, not the test's. */
struct held_fork {
  atomic_int held, go;
};

static pid_t fork_when_let_go(void *ud) {
  struct held_fork *h = ud;
  atomic_store_explicit(&h->held, 1, memory_order_relaxed);
  while (!atomic_load_explicit(&h->go, memory_order_relaxed)) sched_yield();
  return fork();
}

struct held_call {
  ip_task *t;
  int ok;
};

static void *held_call_main(void *p) {
  struct held_call *c = p;
  int v = 42;
  ip_future *f = ip_call(c->t, &v);
  const ip_bytes *b = ip_future_value(f);
  c->ok = b && b->len == 2 && memcmp(b->data, "42", 2) == 0;
  ip_future_free(f);
  return NULL;
}

/* One thread's call has read what its child is handed (the parent's pid, the lifeline) and is
 * held up in its fork while another thread makes the process's first timed call, which starts
 * the supervisor thread and sets that up again. Both calls succeed. */
Test(task, a_call_held_in_its_fork_while_another_thread_starts_the_supervisor_thread) {
  ip_task *t = ip_task_new(return_int_as_text, NULL), *timed = ip_task_new(return_int_as_text, NULL);
  cr_assert(t && timed);
  struct held_fork h = {0, 0};
  cr_assert_eq(ip_task_set_fork(t, fork_when_let_go, &h), 0);
  cr_assert_eq(ip_task_set_timeout(timed, 60000), 0);
  struct held_call c = {t, 0};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, held_call_main, &c), 0);
  while (!atomic_load_explicit(&h.held, memory_order_relaxed)) sched_yield();
  int v = 7;
  ip_future *f = ip_call(timed, &v);
  atomic_store_explicit(&h.go, 1, memory_order_relaxed);
  cr_assert_str_eq(str_of(f), "7");
  ip_future_free(f);
  cr_assert_eq(pthread_join(th, NULL), 0);
  cr_assert(c.ok, "the held call failed");
  ip_task_free(t);
  ip_task_free(timed);
  cr_assert(no_children());
}

static ip_task *inner_task;
static void *inner_fn(void *arg) {
  char buf[64];
  snprintf(buf, sizeof buf, "inner:%s:%d", (const char *)arg, ip_in_child());
  return bytes_of(buf);
}
static void *outer_fn(void *arg) {
  ip_future *f = ip_call(inner_task, arg);
  const ip_bytes *b = ip_future_value(f);
  if (!b) ip_raise(EIO, "nested call failed: %s", ip_future_error(f)->message);
  char buf[128];
  snprintf(buf, sizeof buf, "outer(%.*s)", (int)b->len, (const char *)b->data);
  ip_future_free(f);
  return bytes_of(buf);
}

Test(task, nested_call_returns_the_inner_value) {
  inner_task = ip_task_new(inner_fn, NULL);
  ip_task *outer = ip_task_new(outer_fn, NULL);
  ip_future *f = ip_call(outer, "x");
  const char *got = str_of(f);
  cr_assert_not_null(got, "%s", ip_future_error(f)->message);
  cr_assert_str_eq(got, "outer(inner:x:1)");
  ip_future_free(f);
  ip_task_free(outer);
  ip_task_free(inner_task);
  cr_assert(no_children());
}

Test(task, in_child_is_zero_in_the_parent) { cr_assert_eq(ip_in_child(), 0); }

/* ---- task options ---------------------------------------------------------------------------- */

static void *report_nofile(void *arg) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  char buf[64];
  snprintf(buf, sizeof buf, "%llu %llu", (unsigned long long)rl.rlim_cur,
           (unsigned long long)rl.rlim_max);
  return bytes_of(buf);
}

Test(task, rlimit_is_applied_in_the_child_only) {
  /* Only the soft limit moves: valgrind refuses any change of RLIMIT_NOFILE's hard limit. */
  struct rlimit before;
  getrlimit(RLIMIT_NOFILE, &before);
  cr_assert_gt(before.rlim_cur, 50);
  char want[64];
  ip_task *t = ip_task_new(report_nofile, NULL);
  cr_assert_eq(ip_task_set_rlimit(t, RLIMIT_NOFILE, 40, before.rlim_max), 0);
  ip_future *f = ip_call(t, NULL);
  const char *got = str_of(f);
  cr_assert_not_null(got, "%s", ip_future_error(f)->message);
  snprintf(want, sizeof want, "40 %llu", (unsigned long long)before.rlim_max);
  cr_assert_str_eq(got, want);
  ip_future_free(f);

  cr_assert_eq(ip_task_set_rlimit(t, RLIMIT_NOFILE, 50, before.rlim_max), 0,
               "setting it again replaces it");
  f = ip_call(t, NULL);
  snprintf(want, sizeof want, "50 %llu", (unsigned long long)before.rlim_max);
  cr_assert_str_eq(str_of(f), want);
  ip_future_free(f);

  struct rlimit after;
  getrlimit(RLIMIT_NOFILE, &after);
  cr_assert_eq(after.rlim_cur, before.rlim_cur);
  cr_assert_eq(after.rlim_max, before.rlim_max);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(task, rlimit_that_setrlimit_refuses_fails_the_call_with_einval) {
  /* No process, not even root, may raise RLIMIT_NOFILE past fs.nr_open. */
  unsigned long long nr_open = 0;
  FILE *p = fopen("/proc/sys/fs/nr_open", "r");
  cr_assert_not_null(p);
  cr_assert_eq(fscanf(p, "%llu", &nr_open), 1);
  fclose(p);
  ip_task *t = ip_task_new(report_nofile, NULL);
  cr_assert_eq(ip_task_set_rlimit(t, RLIMIT_NOFILE, (rlim_t)nr_open + 1, (rlim_t)nr_open + 1), 0);
  ip_future *f = ip_call(t, NULL);
  cr_assert_null(ip_future_value(f));
  cr_assert_eq(ip_future_status(f), IP_EINVAL);
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_EINVAL);
  cr_assert_not_null(strstr(e->message, "setrlimit"), "message: %s", e->message);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(task, rlimit_setter_rejects_bad_arguments) {
  ip_task *t = ip_task_new(report_nofile, NULL);
  cr_assert_eq(ip_task_set_rlimit(NULL, RLIMIT_NOFILE, 1, 1), IP_EINVAL);
  cr_assert_eq(ip_task_set_rlimit(t, -1, 1, 1), IP_EINVAL);
  cr_assert_eq(ip_task_set_rlimit(t, RLIMIT_NOFILE, 10, 5), IP_EINVAL, "soft > hard");
  cr_assert_eq(ip_task_set_rlimit(t, RLIMIT_NOFILE, 5, RLIM_INFINITY), 0);
  static const int res[] = {RLIMIT_CPU,   RLIMIT_FSIZE, RLIMIT_DATA,  RLIMIT_STACK,
                            RLIMIT_CORE,  RLIMIT_NPROC, RLIMIT_MEMLOCK};
  for (size_t i = 0; i < sizeof res / sizeof *res; i++)
    cr_assert_eq(ip_task_set_rlimit(t, res[i], 1, RLIM_INFINITY), 0);
  cr_assert_eq(ip_task_set_rlimit(t, RLIMIT_AS, 1, RLIM_INFINITY), IP_ENOMEM, "a ninth");
  cr_assert_eq(ip_task_set_rlimit(t, RLIMIT_CORE, 0, 0), 0, "replacing one of the eight");
  ip_task_free(t);
}

/* stdio: the test points fd 1 at a temporary file, leaves "parent-pending|" unflushed in
 * stdout's buffer, and lets a child print "child-out|". */
static void *print_child_out(void *arg) {
  printf("child-out|");
  return bytes_of("ok");
}

static const char *stdio_run(int flags, bool set_flags) {
  static char out[256];
  fflush(stdout);
  int saved = dup(1);
  cr_assert_geq(saved, 0);
  FILE *tmp = tmpfile();
  cr_assert_not_null(tmp);
  cr_assert_eq(dup2(fileno(tmp), 1), 1);
  setvbuf(stdout, NULL, _IOFBF, BUFSIZ);

  printf("parent-pending|"); /* stays in the buffer across the fork */
  ip_task *t = ip_task_new(print_child_out, NULL);
  if (set_flags) cr_assert_eq(ip_task_set_stdio(t, flags), 0);
  ip_future *f = ip_call(t, NULL);
  int rc = ip_future_wait(f, -1);
  int status = ip_future_status(f);
  ip_future_free(f);
  ip_task_free(t);

  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  cr_assert_eq(rc, 0);
  cr_assert_eq(status, 0);
  rewind(tmp);
  size_t n = fread(out, 1, sizeof out - 1, tmp);
  out[n] = '\0';
  fclose(tmp);
  return out;
}

Test(task, stdio_default_flushes_child_output_and_never_duplicates_pending_output) {
  cr_assert_str_eq(stdio_run(0, false), "child-out|parent-pending|");
  cr_assert(no_children());
}

Test(task, stdio_without_purge_prints_the_parents_pending_output_twice) {
  /* Shows what the default protects against (and that the flag is honoured). */
  cr_assert_str_eq(stdio_run(IP_STDIO_FLUSH_STD, true),
                   "parent-pending|child-out|parent-pending|");
}

static int side_fd = -1;
static void *print_to_own_file(void *arg) {
  FILE *fp = fdopen(dup(side_fd), "w");
  if (!fp) ip_raise(errno, "fdopen");
  setvbuf(fp, NULL, _IOFBF, BUFSIZ);
  fprintf(fp, "from-child-file");
  return bytes_of("ok"); /* fp left open and unflushed on purpose */
}

Test(task, stdio_flush_all_flushes_files_the_child_opened) {
  FILE *tmp = tmpfile();
  side_fd = fileno(tmp);
  ip_task *t = ip_task_new(print_to_own_file, NULL);
  cr_assert_eq(ip_task_set_stdio(t, IP_STDIO_PURGE_INHERITED | IP_STDIO_FLUSH_ALL), 0);
  ip_future *f = ip_call(t, NULL);
  cr_assert_str_eq(str_of(f), "ok");
  ip_future_free(f);
  char buf[64] = {0};
  cr_assert_eq(pread(side_fd, buf, sizeof buf - 1, 0), 15);
  cr_assert_str_eq(buf, "from-child-file");
  fclose(tmp);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(task, stdio_setter_rejects_unknown_flags) {
  ip_task *t = ip_task_new(return_null, NULL);
  cr_assert_eq(ip_task_set_stdio(t, 8), IP_EINVAL);
  cr_assert_eq(ip_task_set_stdio(NULL, 0), IP_EINVAL);
  cr_assert_eq(ip_task_set_stdio(t, 0), 0);
  ip_task_free(t);
}

/* ---- rusage ---------------------------------------------------------------------------------- */

static void *burn_a_little(void *arg) {
  volatile unsigned long x = 0;
  for (unsigned long i = 0; i < 2000000; i++) x += i;
  return bytes_of("done");
}

Test(task, rusage_is_eagain_while_running_and_filled_after) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *f = ip_call(t, &g);
  struct rusage ru;
  cr_assert_eq(ip_future_rusage(f, &ru), IP_EAGAIN);
  cr_assert_eq(ip_future_rusage(f, NULL), IP_EINVAL);
  gate_release(&g, 1);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  memset(&ru, 0, sizeof ru);
  cr_assert_eq(ip_future_rusage(f, &ru), 0);
  cr_assert_gt(ru.ru_maxrss, 0);
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

Test(task, rusage_counts_the_childs_cpu_time) {
  ip_task *t = ip_task_new(burn_a_little, NULL);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  cr_assert_eq(ip_future_rusage(f, &ru), 0);
  cr_assert_gt(ru.ru_maxrss, 0);
  /* Not a threshold: any child runs for some time. It only shows the usage is the child's
   * (from wait4) and not left zeroed. */
  cr_assert(ru.ru_utime.tv_sec || ru.ru_utime.tv_usec || ru.ru_stime.tv_sec ||
            ru.ru_stime.tv_usec);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* ---- version and error tables ---------------------------------------------------------------- */

Test(task, version_string_matches_the_header_macros) {
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", IP_VERSION_MAJOR, IP_VERSION_MINOR, IP_VERSION_PATCH);
  cr_assert_str_eq(ip_version(), want);
  unsigned maj, min, pat;
  cr_assert_eq(sscanf(ip_version(), "%u.%u.%u", &maj, &min, &pat), 3);
  cr_assert_eq((int)((maj << 16) | (min << 8) | pat), IP_VERSION_HEX);
  cr_assert_eq(IP_VERSION_HEX >> 16, IP_VERSION_MAJOR);
  cr_assert_eq((IP_VERSION_HEX >> 8) & 0xff, IP_VERSION_MINOR);
  cr_assert_eq(IP_VERSION_HEX & 0xff, IP_VERSION_PATCH);
}

struct code_row {
  int code;
  const char *name, *text;
};
static const struct code_row code_rows[] = {
#define ROW(name, value, text) {value, #name, text},
    IP_ERRNO_MAP(ROW)
#undef ROW
};
#define N_CODES (sizeof code_rows / sizeof *code_rows)

Test(task, every_error_code_has_its_name_and_message) {
  for (size_t i = 0; i < N_CODES; i++) {
    cr_assert_str_eq(ip_err_name(code_rows[i].code), code_rows[i].name);
    cr_assert_str_eq(ip_strerror(code_rows[i].code), code_rows[i].text);
  }
}

Test(task, error_codes_are_negative_and_distinct) {
  for (size_t i = 0; i < N_CODES; i++) {
    cr_assert_lt(code_rows[i].code, 0, "%s", code_rows[i].name);
    for (size_t j = i + 1; j < N_CODES; j++)
      cr_assert_neq(code_rows[i].code, code_rows[j].code, "%s and %s", code_rows[i].name,
                    code_rows[j].name);
  }
  cr_assert_eq(IP_ETIMEDOUT, -ETIMEDOUT);
  cr_assert_eq(IP_EINTR, -EINTR);
  cr_assert_eq(IP_ECANCELED, -ECANCELED);
}

/* Codes the library does not name are an errno when they can be (they pass through as its
 * negative), and say their number otherwise. */
Test(task, other_errno_codes_keep_their_name_and_text) {
  cr_assert_str_eq(ip_err_name(-EPERM), "EPERM");
  cr_assert_str_eq(ip_strerror(-EPERM), strerror(EPERM));
  cr_assert_str_eq(ip_err_name(-ENOENT), "ENOENT");
  cr_assert_str_eq(ip_err_name(-ECONNREFUSED), "ECONNREFUSED");
  cr_assert_str_eq(ip_strerror(-ECONNREFUSED), strerror(ECONNREFUSED));
}

Test(task, unknown_codes_say_their_number) {
  static const int unknown[] = {1, 12345, -2999, -3005, -4242, INT_MIN, INT_MAX};
  for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
    char num[16];
    snprintf(num, sizeof num, "%d", unknown[i] < 0 && unknown[i] != INT_MIN ? -unknown[i]
                                                                            : unknown[i]);
    cr_assert(strstr(ip_strerror(unknown[i]), num), "code %d: %s", unknown[i],
              ip_strerror(unknown[i]));
    cr_assert(strstr(ip_err_name(unknown[i]), num), "code %d: %s", unknown[i],
              ip_err_name(unknown[i]));
    cr_assert_eq(ip_err_name(unknown[i])[0], 'E', "code %d: %s", unknown[i],
                 ip_err_name(unknown[i]));
  }
  cr_assert_str_eq(ip_err_name(-4242), "E4242");
  cr_assert_str_eq(ip_strerror(-4242), "unknown error -4242");
}

static pid_t fork_eperm(void *ud) {
  (void)ud;
  errno = EPERM;
  return -1;
}

/* A fork the kernel refused says what the kernel said. */
Test(task, a_failed_fork_keeps_its_errno) {
  ip_task *t = ip_task_new(return_hello, NULL);
  cr_assert_eq(ip_task_set_fork(t, fork_eperm, NULL), 0);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  cr_assert_eq(ip_future_status(f), -EPERM);
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, -EPERM);
  cr_assert_str_eq(e->kind, "EPERM");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* ---- task construction ----------------------------------------------------------------------- */

Test(task, task_new_rejects_a_null_fn_with_einval) {
  errno = 0;
  cr_assert_null(ip_task_new(NULL, NULL));
  cr_assert_eq(errno, EINVAL);
}

Test(task, call_with_null_task_is_an_already_failed_future) {
  int x;
  ip_future *f = ip_call(NULL, &x);
  cr_assert_not_null(f);
  cr_assert_eq(ip_future_done(f), 1);
  cr_assert_eq(ip_future_status(f), IP_EINVAL);
  cr_assert_eq(ip_future_pid(f), 0);
  cr_assert_eq(ip_future_arg(f), &x);
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_EINVAL);
  cr_assert_eq(e->pid, 0);
  cr_assert_not_null(e->kind);
  cr_assert_not_null(e->message);
  ip_future_free(f);
}

Test(task, task_free_of_null_is_ignored_and_futures_outlive_the_task) {
  ip_task *t = ip_task_new(return_hello, NULL);
  ip_future *f = ip_call(t, NULL);
  ip_task_free(t);
  ip_task_free(NULL);
  cr_assert_str_eq(str_of(f), "hello");
  ip_future_free(f);
  cr_assert(no_children());
}
