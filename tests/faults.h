/* Shared by the fault suites (parent death, signals, exhaustion, failing allocator): gates,
 * pidfds with deadlines, descriptor inventories and "subject" processes that run a scenario
 * out of the Criterion worker and report what they saw. */
#ifndef IP_TEST_FAULTS_H
#define IP_TEST_FAULTS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "helpers.h"
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>

/* ---- time ---------------------------------------------------------------------------------- */

static inline int64_t fa_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until `deadline` (fa_now_ms() based), never negative. */
static inline int fa_left_ms(int64_t deadline) {
  int64_t l = deadline - fa_now_ms();
  return l < 0 ? 0 : l > INT32_MAX ? INT32_MAX : (int)l;
}

/* 1 under valgrind (its preload is in the environment of every traced process). Used only to
 * stretch hang guards, never to change what is checked. */
static inline int fa_under_valgrind(void) {
  const char *p = getenv("LD_PRELOAD");
  return p && strstr(p, "vgpreload") != NULL;
}

/* A hang guard in ms: `ms`, ten times longer under valgrind. */
static inline int fa_guard_ms(int ms) { return fa_under_valgrind() ? ms * 10 : ms; }

/* ---- gates --------------------------------------------------------------------------------- */

/* A pipe the test controls: a child reading one byte blocks until the test writes it; a child
 * never released blocks forever (it holds the write end itself, so no EOF comes). */
struct fa_gate {
  int fd[2];
};
static inline int fa_gate_open(struct fa_gate *g) { return pipe2(g->fd, O_CLOEXEC); }
static inline int fa_gate_release(struct fa_gate *g, int n) {
  for (int i = 0; i < n; i++)
    if (write(g->fd[1], "x", 1) != 1) return -1;
  return 0;
}
static inline void fa_gate_close(struct fa_gate *g) {
  close(g->fd[0]);
  close(g->fd[1]);
}

/* Task function: blocks on the gate given as arg, then returns "released". */
static inline void *fa_wait_on_gate(void *arg) {
  struct fa_gate *g = arg;
  char c;
  if (read(g->fd[0], &c, 1) != 1) return bytes_of("read failed");
  return bytes_of("released");
}

/* ---- pidfds ------------------------------------------------------------------------------- */

static inline int fa_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* ---- descriptors --------------------------------------------------------------------------- */

/* Descriptors valgrind owns when the suite runs under it: at and above the soft
 * RLIMIT_NOFILE it shows the program, or its log files. None without valgrind. */
static inline int fa_valgrinds(int fd, const char *target) {
  struct rlimit rl;
  rlim_t limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : RLIM_INFINITY;
  return (rlim_t)fd >= limit || strstr(target, "valgrind") || strstr(target, "vgdb");
}

/* Counts this process's descriptors whose link target starts with `prefix` ("socket:",
 * "anon_inode:[pidfd]", "pipe:", ...; "" counts all), valgrind's left out. */
static inline int fa_count_fds_like(const char *prefix) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0, self = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd == self) continue;
    char path[64], target[256];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t r = readlink(path, target, sizeof target - 1);
    target[r < 0 ? 0 : r] = '\0';
    if (fa_valgrinds(fd, target)) continue;
    if (strncmp(target, prefix, strlen(prefix)) == 0) n++;
  }
  closedir(d);
  return n;
}

/* Descriptors of this process, valgrind's left out. */
static inline int fa_count_fds(void) { return fa_count_fds_like(""); }

/* The highest open descriptor number of this process (valgrind's left out), or -1. */
static inline int fa_max_fd(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int max = -1, self = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    char path[64], target[256];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t r = readlink(path, target, sizeof target - 1);
    target[r < 0 ? 0 : r] = '\0';
    if (fd != self && !fa_valgrinds(fd, target) && fd > max) max = fd;
  }
  closedir(d);
  return max;
}

/* ---- subjects ------------------------------------------------------------------------------
 * A scenario that must not run in the Criterion worker itself (it drops privileges, joins a
 * cgroup, or needs a process where the library was never used) runs in a forked "subject".
 * The subject checks with FA_CHECK, which sends the failed condition to the worker and
 * _exit()s; fa_subject_run() turns that, a crash or a hang into a Criterion failure. Only the
 * subject's own thread may use FA_CHECK. */

struct fa_record {
  char kind; /* 'F' failed check, 'D' done, 'I' information for the log */
  char text[1023];
};

static int fa_report_fd = -1;
static pid_t fa_subject_pid;

static inline void fa_send(char kind, const char *fmt, ...) IP_PRINTF(2, 3);
static inline void fa_send(char kind, const char *fmt, ...) {
  struct fa_record r;
  memset(&r, 0, sizeof r);
  r.kind = kind;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r.text, sizeof r.text, fmt, ap);
  va_end(ap);
  if (fa_report_fd >= 0 && getpid() == fa_subject_pid) {
    ssize_t w = write(fa_report_fd, &r, sizeof r); /* < PIPE_BUF: atomic */
    (void)w;
  }
}

#define FA_CHECK(cond, ...)                                                                   \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      char fa_msg_[700];                                                                      \
      snprintf(fa_msg_, sizeof fa_msg_, __VA_ARGS__);                                         \
      fa_send('F', "%s:%d: check failed: %s: %s", __FILE__, __LINE__, #cond, fa_msg_);        \
      _exit(1);                                                                               \
    }                                                                                         \
  } while (0)

#define FA_INFO(...) fa_send('I', __VA_ARGS__)

struct fa_outcome {
  int done;       /* the subject reported 'D' */
  int hung;       /* the guard ran out; the subject was SIGKILLed */
  int wstatus;    /* how the subject ended */
  char fail[1024]; /* the first failed check, or "" */
};

/* Runs body(arg) in a forked subject, with `guard_ms` as a hang guard. `before_go(pid, ud)`,
 * when given, runs in the worker after the fork and before the subject starts its body (to
 * put the subject in a cgroup, say); it returns 0 or an error that aborts the subject. */
static inline struct fa_outcome fa_subject_run(void (*body)(void *), void *arg, int guard_ms,
                                               int (*before_go)(pid_t, void *), void *ud) {
  struct fa_outcome o;
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
    fa_report_fd = rep[1];
    fa_subject_pid = getpid();
    char c;
    if (read(go[0], &c, 1) != 1 || c != 'g') _exit(3);
    close(go[0]);
    body(arg);
    fa_send('D', "done");
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
  int64_t deadline = fa_now_ms() + guard_ms;
  int exited = 0;
  for (;;) {
    struct pollfd p = {rep[0], POLLIN, 0};
    int left = fa_left_ms(deadline);
    int pr = poll(&p, 1, left < 100 ? left : 100);
    if (pr > 0) {
      struct fa_record r;
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
        deadline = fa_now_ms() + 2000; /* drain what it wrote before it ended */
        continue;
      }
    }
    if (fa_left_ms(deadline) == 0) {
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
#define FA_ASSERT_SUBJECT_OK(o, what)                                                         \
  do {                                                                                        \
    cr_assert(!(o).hung, "%s: the subject hung (killed after the guard)", (what));           \
    cr_assert_str_empty((o).fail, "%s: %s", (what), (o).fail);                                \
    cr_assert(WIFEXITED((o).wstatus) && WEXITSTATUS((o).wstatus) == 0,                        \
              "%s: the subject ended with %s %d", (what),                                     \
              WIFSIGNALED((o).wstatus) ? "signal" : "status",                                 \
              WIFSIGNALED((o).wstatus) ? WTERMSIG((o).wstatus) : WEXITSTATUS((o).wstatus));   \
    cr_assert((o).done, "%s: the subject never reported done", (what));                       \
  } while (0)

#endif
