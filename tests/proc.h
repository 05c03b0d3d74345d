/* The test helpers that need no Criterion, shared by the Criterion suites (through
 * tests/helpers.h) and the storm (tests/storm/storm.c, a plain-main program): time and hang
 * guards, what this process holds (descriptors, threads, children), pidfds, gates, and raw
 * values as strings. Include it first: it asks for _GNU_SOURCE (pipe2) when the file has not. */
#ifndef IP_TEST_PROC_H
#define IP_TEST_PROC_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <inparallel.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- time and hang guards ------------------------------------------------------------------ */

/* CLOCK_MONOTONIC in milliseconds. */
static inline int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until `deadline` (a now_ms() time), never negative. */
static inline int left_ms(int64_t deadline) {
  int64_t l = deadline - now_ms();
  return l < 0 ? 0 : l > INT32_MAX ? INT32_MAX : (int)l;
}

/* 1 under valgrind (its preload is in the environment of every traced process). Used to
 * stretch hang guards and to leave valgrind's own descriptors out of counts, never to change
 * what is checked. */
static inline int under_valgrind(void) {
  const char *p = getenv("LD_PRELOAD");
  return p && strstr(p, "vgpreload") != NULL;
}

/* A hang guard in ms: `ms`, ten times longer under valgrind. */
static inline int guard_ms(int ms) { return under_valgrind() ? ms * 10 : ms; }

/* ---- descriptors ----------------------------------------------------------------------------- */

/* What descriptor `fd` of this process points to ("socket:[123]", "pipe:[4]",
 * "anon_inode:[pidfd]", a path), in buf; "" when it cannot be read. */
static inline const char *fd_target(int fd, char *buf, size_t n) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t r = readlink(path, buf, n - 1);
  buf[r < 0 ? 0 : r] = '\0';
  return buf;
}

/* 1 when descriptor `fd`, pointing to `target`, belongs to valgrind (tests/valgrind.sh): its
 * reserved range at and above the soft RLIMIT_NOFILE it shows the program, its log files and
 * its vgdb pipes. Always 0 when not under valgrind, so nothing is left out of a count there.
 * Also right for a program this one exec'ed (valgrind traces it too). */
static inline int valgrinds(int fd, const char *target) {
  if (!under_valgrind()) return 0;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)fd >= rl.rlim_cur) return 1;
  return strstr(target, "valgrind") || strstr(target, "vgdb");
}

/* valgrinds() for a descriptor of this process. */
static inline int valgrind_fd(int fd) {
  if (!under_valgrind()) return 0;
  char target[256];
  return valgrinds(fd, fd_target(fd, target, sizeof target));
}

/* Calls fn(fd, ud) for each descriptor of this process (in the order /proc lists them), but
 * the directory stream's own and valgrind's; stops early when fn returns non-zero. Returns
 * how many fn saw, or -1 when /proc/self/fd cannot be read. */
static inline int each_fd(int (*fn)(int fd, void *ud), void *ud) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0, self = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd == self || valgrind_fd(fd)) continue;
    n++;
    if (fn && fn(fd, ud)) break;
  }
  closedir(d);
  return n;
}

/* Open descriptors of this process (valgrind's left out). */
static inline int count_fds(void) { return each_fd(NULL, NULL); }

struct fds_like_ {
  const char *prefix;
  int n;
};
static inline int count_fds_like_one_(int fd, void *ud) {
  struct fds_like_ *x = ud;
  char target[256];
  if (strncmp(fd_target(fd, target, sizeof target), x->prefix, strlen(x->prefix)) == 0) x->n++;
  return 0;
}

/* Descriptors of this process whose target starts with `prefix` ("socket:",
 * "anon_inode:[pidfd]", "pipe:", ...; "" counts all), valgrind's left out. */
static inline int count_fds_like(const char *prefix) {
  struct fds_like_ x = {prefix, 0};
  return each_fd(count_fds_like_one_, &x) < 0 ? -1 : x.n;
}

static inline int max_fd_one_(int fd, void *ud) {
  if (fd > *(int *)ud) *(int *)ud = fd;
  return 0;
}

/* The highest open descriptor number of this process (valgrind's left out), or -1. */
static inline int max_fd(void) {
  int max = -1;
  each_fd(max_fd_one_, &max);
  return max;
}

/* ---- threads and children -------------------------------------------------------------------- */

/* Threads of this process. */
static inline int count_threads(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* The thread count once it is `want`, or after `max_ms` have passed (then whatever it is).
 * A thread that pthread_join() returned for can still be listed in /proc for a moment (the
 * kernel wakes the joiner before it unhashes the thread), and without pidfds (valgrind) the
 * library reaps each child from a thread of its own that ends just after the call completes:
 * this is a measurement given time to settle, not synchronisation. `waited`, when given, gets
 * the milliseconds it took. */
static inline int threads_settled(int want, int max_ms, int *waited) {
  int64_t t0 = now_ms();
  int n = count_threads();
  while (n != want && now_ms() - t0 < max_ms) {
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
    n = count_threads();
  }
  if (waited) *waited = (int)(now_ms() - t0);
  return n;
}

/* The children of process `pid` (of all its threads), alive or zombie: how many, up to max,
 * or -1 when /proc has no children files (a kernel without CONFIG_PROC_CHILDREN). */
static inline int children_of(pid_t pid, pid_t *out, int max) {
  char path[320];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/proc/%d/task/%s/children", (int)pid, e->d_name);
    FILE *f = fopen(path, "re");
    if (!f) {
      if (errno == ENOENT) continue; /* a thread that just ended */
      closedir(d);
      return -1;
    }
    long v;
    while (fscanf(f, "%ld", &v) == 1)
      if (n < max) out[n++] = (pid_t)v;
    fclose(f);
  }
  closedir(d);
  return n;
}

/* 1 when this process has no child at all, alive or zombie. Reaps nothing. */
static inline int no_children(void) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int r = waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT);
  return r < 0 && errno == ECHILD;
}

/* 1 when `pid` no longer exists (not even as a zombie). */
static inline int pid_gone(pid_t pid) { return kill(pid, 0) < 0 && errno == ESRCH; }

/* A pidfd for `pid`, or -1 (errno set; ENOSYS where the kernel or valgrind lacks it). */
static inline int open_pidfd(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* 1 when pidfds work here (not under valgrind, which does not know pidfd_open). */
static inline int have_pidfd(void) {
  int fd = open_pidfd(getpid());
  if (fd < 0) return 0;
  close(fd);
  return 1;
}

/* The system call that thread tid of process pid is blocked in, per
 * /proc/<pid>/task/<tid>/syscall; -1 while it runs or sleeps outside one, or when unreadable. */
static inline long blocked_syscall(pid_t pid, pid_t tid) {
  char path[80], buf[128];
  snprintf(path, sizeof path, "/proc/%d/task/%d/syscall", (int)pid, (int)tid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0 || buf[0] < '0' || buf[0] > '9') return -1;
  buf[n] = '\0';
  return atol(buf);
}

/* ---- raw values ------------------------------------------------------------------------------ */

/* A raw result holding a copy of a C string. */
static inline void *bytes_of(const char *s) { return ip_bytes_copy(s, strlen(s)); }

/* A task function: a copy of its raw argument's bytes ("fn got NULL" for none). */
static inline void *echo_bytes(void *arg) {
  const ip_bytes *b = arg;
  if (!b) return bytes_of("fn got NULL");
  return ip_bytes_copy(b->len ? b->data : "", b->len);
}

/* The raw value of a future as a NUL-terminated string (a buffer of the calling thread's, valid until its next str_of; tests only). */
static inline const char *str_of(ip_future *f) {
  static __thread char buf[4096]; /* one per thread: tests call it from several */
  const ip_bytes *b = ip_future_value(f);
  if (!b) return NULL;
  size_t n = b->len < sizeof buf - 1 ? b->len : sizeof buf - 1;
  memcpy(buf, b->data, n);
  buf[n] = '\0';
  return buf;
}

/* The message of a future's error, or "(no error)": for failure messages. */
static inline const char *why(ip_future *f) {
  const ip_error *e = ip_future_error(f);
  return e ? e->message : "(no error)";
}

/* ---- gates ----------------------------------------------------------------------------------- */

/* A pipe the test controls: each child blocks reading one byte until the test writes it. A
 * child that is never released blocks forever (it holds the write end itself, so no EOF
 * comes). Children get the pipe across fork; it is close-on-exec, so nothing a child or the
 * host execs holds it. helpers.h adds gate_open and gate_release, which assert. */
struct gate {
  int fd[2];
};
static inline int gate_try_open(struct gate *g) { return pipe2(g->fd, O_CLOEXEC); }
/* Lets n children through (one byte each); 0, or -1 when a write failed. */
static inline int gate_try_release(struct gate *g, int n) {
  for (int i = 0; i < n; i++)
    if (write(g->fd[1], "x", 1) != 1) return -1;
  return 0;
}
static inline void gate_close(struct gate *g) {
  close(g->fd[0]);
  close(g->fd[1]);
}

/* Task function: waits at the gate `arg` (a struct gate *) and returns "released" once let
 * through, "read failed" if the read fails or finds the pipe closed. */
static inline void *wait_on_gate(void *arg) {
  const struct gate *g = arg;
  char c;
  ssize_t r;
  while ((r = read(g->fd[0], &c, 1)) < 0 && errno == EINTR) {
  }
  return bytes_of(r == 1 ? "released" : "read failed");
}

#endif
