/* Shared by the Criterion suites: small task functions, the gate, and "nothing left behind"
 * checks. Include it first: it asks for _GNU_SOURCE (pipe2) when the suite has not. */
#ifndef IP_TEST_HELPERS_H
#define IP_TEST_HELPERS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <inparallel.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* Open descriptors of this process. */
static inline int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the DIR's own descriptor */
}

/* Threads of this process. */
static inline int count_threads(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
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

/* A raw result holding a copy of a C string. */
static inline void *bytes_of(const char *s) { return ip_bytes_copy(s, strlen(s)); }

/* The raw value of a future as a NUL-terminated string (a buffer of the calling thread's own,
 * valid until its next str_of; tests only). */
static inline const char *str_of(ip_future *f) {
  static __thread char buf[4096];
  const ip_bytes *b = ip_future_value(f);
  if (!b) return NULL;
  size_t n = b->len < sizeof buf - 1 ? b->len : sizeof buf - 1;
  memcpy(buf, b->data, n);
  buf[n] = '\0';
  return buf;
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

/* A gate the test controls: each child blocks reading one byte until the test writes it. A
 * child that is never released blocks forever (it holds the write end itself). Children get
 * the pipe across fork; it is close-on-exec, so nothing a child or the host execs holds it. */
struct gate {
  int fd[2];
};
static inline void gate_open(struct gate *g) { cr_assert_eq(pipe2(g->fd, O_CLOEXEC), 0); }
/* Lets n children through (one byte each). */
static inline void gate_release(struct gate *g, int n) {
  for (int i = 0; i < n; i++) cr_assert_eq(write(g->fd[1], "x", 1), 1);
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
  const ip_error *e = ip_future_error(f);
  cr_assert_str_eq(str_of(f), "released", "%s", e ? e->message : "(no error)");
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  return count_fds();
}

#endif
