/* The one helpers header of the Criterion suites: everything in tests/proc.h (time and hang
 * guards, descriptor/thread/child counts, pidfds, gates, raw values), the gate and warm-up
 * steps that assert, and "subjects": scenarios run in a forked process that report back.
 * Include it first: it asks for _GNU_SOURCE (pipe2) when the suite has not. */
#ifndef IP_TEST_HELPERS_H
#define IP_TEST_HELPERS_H

#include "proc.h"
#include <criterion/criterion.h>
#include <poll.h>
#include <stdarg.h>

/* A ThreadSanitizer build (tests/tsan.sh). In a child forked from a process with threads (a
 * Criterion worker always has some) the TSan runtime checks nothing and ends the process if
 * it starts a thread; TSAN_SKIP_THREADS_IN_CHILDREN skips the tests whose subject is such a
 * child. They run in the plain, ASan and valgrind builds, and TSan would check nothing of
 * them anyway. */
#if defined(__SANITIZE_THREAD__)
#define IP_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define IP_TSAN 1
#endif
#endif
#ifdef IP_TSAN
#define TSAN_SKIP_THREADS_IN_CHILDREN()                                                         \
  cr_skip_test("ThreadSanitizer ends a child of a multi-threaded process that starts a "       \
               "thread, and checks nothing in such a child: this runs in the other builds")
#else
#define TSAN_SKIP_THREADS_IN_CHILDREN() ((void)0)
#endif

/* ---- gates, asserting ------------------------------------------------------------------------ */

static inline void gate_open(struct gate *g) {
  cr_assert_eq(gate_try_open(g), 0, "pipe2: %s", strerror(errno));
}
/* Lets n children through (one byte each). */
static inline void gate_release(struct gate *g, int n) {
  cr_assert_eq(gate_try_release(g, n), 0, "gate write: %s", strerror(errno));
}

/* The library keeps a few descriptors (supervisor, lifeline, and an eventfd per thread that
 * has waited) from its first call on. The baseline for leak checks is taken after one call
 * that this thread really waited for: the child blocks on a gate until the wait has started
 * (a poll with timeout 0 is enough to make the thread's waiter). Returns count_fds() then. */
static inline int warm_baseline(void) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, &g);
  cr_assert_not_null(f);
  cr_assert_eq(ip_future_wait(f, 0), IP_ETIMEDOUT);
  gate_release(&g, 1);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  cr_assert_str_eq(str_of(f), "released", "%s", why(f));
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  return count_fds();
}

/* ---- subjects ------------------------------------------------------------------------------
 * A scenario that must not run in the Criterion worker itself (it drops privileges, joins a
 * cgroup, or needs a process where the library was never used) runs in a forked "subject".
 * The subject checks with SUBJECT_CHECK, which sends the failed condition to the worker and
 * _exit()s; subject_run() turns that, a crash or a hang into a Criterion failure. Only the
 * subject's own thread may use SUBJECT_CHECK. */

struct subject_record {
  char kind; /* 'F' failed check, 'D' done, 'I' information for the log */
  char text[1023];
};

static int subject_report_fd = -1;
static pid_t subject_pid;

static inline void subject_send(char kind, const char *fmt, ...) IP_PRINTF(2, 3);
static inline void subject_send(char kind, const char *fmt, ...) {
  struct subject_record r;
  memset(&r, 0, sizeof r);
  r.kind = kind;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r.text, sizeof r.text, fmt, ap);
  va_end(ap);
  if (subject_report_fd >= 0 && getpid() == subject_pid) {
    ssize_t w = write(subject_report_fd, &r, sizeof r); /* < PIPE_BUF: atomic */
    (void)w;
  }
}

#define SUBJECT_CHECK(cond, ...)                                                              \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      char subject_msg_[700];                                                                 \
      snprintf(subject_msg_, sizeof subject_msg_, __VA_ARGS__);                               \
      subject_send('F', "%s:%d: check failed: %s: %s", __FILE__, __LINE__, #cond, subject_msg_); \
      _exit(1);                                                                               \
    }                                                                                         \
  } while (0)

#define SUBJECT_INFO(...) subject_send('I', __VA_ARGS__)

struct subject_outcome {
  int done;        /* the subject reported 'D' */
  int hung;        /* the guard ran out; the subject was SIGKILLed */
  int wstatus;     /* how the subject ended */
  char fail[1024]; /* the first failed check, or "" */
};

/* Runs body(arg) in a forked subject, with `limit_ms` as a hang guard. `before_go(pid, ud)`,
 * when given, runs in the worker after the fork and before the subject starts its body (to
 * put the subject in a cgroup, say); it returns 0 or an error that aborts the subject. */
static inline struct subject_outcome subject_run(void (*body)(void *), void *arg, int limit_ms,
                                                 int (*before_go)(pid_t, void *), void *ud) {
  struct subject_outcome o;
  memset(&o, 0, sizeof o);
  int rep[2], go[2];
  cr_assert_eq(pipe2(rep, O_CLOEXEC), 0);
  cr_assert_eq(pipe2(go, O_CLOEXEC), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    close(rep[0]);
    close(go[1]);
    subject_report_fd = rep[1];
    subject_pid = getpid();
    char c;
    if (read(go[0], &c, 1) != 1 || c != 'g') _exit(3);
    close(go[0]);
    body(arg);
    subject_send('D', "done");
    _exit(0);
  }
  close(rep[1]);
  close(go[0]);
  int brc = before_go ? before_go(pid, ud) : 0;
  ssize_t w = write(go[1], brc == 0 ? "g" : "n", 1);
  (void)w;
  close(go[1]);
  /* Records until 'D' or 'F'. The subject's own children inherit the write end, so EOF may
   * come late: the subject's exit is checked between reads as well. */
  int64_t deadline = now_ms() + limit_ms;
  int exited = 0;
  for (;;) {
    struct pollfd p = {rep[0], POLLIN, 0};
    int left = left_ms(deadline);
    int pr = poll(&p, 1, left < 100 ? left : 100);
    if (pr > 0) {
      struct subject_record r;
      ssize_t n = read(rep[0], &r, sizeof r);
      if (n == (ssize_t)sizeof r) {
        if (r.kind == 'I') {
          fprintf(stderr, "  [subject %d] %s\n", (int)pid, r.text);
          continue;
        }
        if (r.kind == 'F') snprintf(o.fail, sizeof o.fail, "%s", r.text);
        else o.done = 1;
        break;
      }
      if (n == 0 && exited) break;
    }
    if (!exited) {
      pid_t x = waitpid(pid, &o.wstatus, WNOHANG);
      if (x == pid) {
        exited = 1;
        deadline = now_ms() + 2000; /* drain what it wrote before it ended */
        continue;
      }
    }
    if (left_ms(deadline) == 0) {
      if (!exited) o.hung = 1;
      break;
    }
  }
  close(rep[0]);
  if (!exited) {
    if (o.hung) kill(pid, SIGKILL);
    while (waitpid(pid, &o.wstatus, 0) < 0 && errno == EINTR) {
    }
  }
  if (brc != 0 && !o.fail[0]) snprintf(o.fail, sizeof o.fail, "set-up before the body failed");
  return o;
}

/* Criterion assertions over an outcome. */
#define ASSERT_SUBJECT_OK(o, what)                                                            \
  do {                                                                                        \
    cr_assert(!(o).hung, "%s: the subject hung (killed after the guard)", (what));            \
    cr_assert_str_empty((o).fail, "%s: %s", (what), (o).fail);                                \
    cr_assert(WIFEXITED((o).wstatus) && WEXITSTATUS((o).wstatus) == 0,                        \
              "%s: the subject ended with %s %d", (what),                                     \
              WIFSIGNALED((o).wstatus) ? "signal" : "status",                                 \
              WIFSIGNALED((o).wstatus) ? WTERMSIG((o).wstatus) : WEXITSTATUS((o).wstatus));   \
    cr_assert((o).done, "%s: the subject never reported done", (what));                       \
  } while (0)

#endif
