/* ip_call: start one call. Everything here runs in the caller's thread; the child side is in
 * child.c and the watching in supervisor.c. */
#include "internal.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

ip_future *ip__future_new(void) {
  ip_future *f = calloc(1, sizeof *f);
  if (!f) return NULL;
  f->sock = f->child_sock = f->pidfd = f->reaper_wfd = f->rx.memfd = -1;
  f->wstatus = -1;
  f->gen = ip__g.gen;
  f->err.exit_status = -1;
  pthread_mutex_init(&f->dec_lock, NULL);
  return f;
}

/* socketpair's descriptors can land on 0-2 when the host closed its stdio; the child's
 * printf would then write into our channel. Keep the channel above them. */
static int above_stdio(int fd) {
  if (fd > 2) return fd;
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  close(fd);
  return nfd;
}

/* Without pidfd_open (Linux < 5.3, or valgrind, which does not know the call) a thread per
 * call stands in for the pidfd: it blocks in wait4 and then closes a pipe that the supervisor
 * watches. Costly, but only where the kernel leaves no better way. */
static atomic_bool no_pidfd;

static void *reaper_main(void *p) {
  ip_future *f = p;
  int st;
  struct rusage ru;
  pid_t x;
  siginfo_t si;
  /* Ended, not yet reaped: its process group is still surely the call's (ip__kill_group). */
  while (waitid(P_PID, (id_t)f->pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR) {
  }
  ip__kill_group(f->pid);
  /* Reaped under the lock, as in the supervisor's on_child_exit: a cancel must never see the
   * child unreaped once its pid is free. The child has ended, so wait4 returns at once. */
  pthread_mutex_lock(&ip__g.lock);
  while ((x = wait4(f->pid, &st, 0, &ru)) < 0 && errno == EINTR) {
  }
  f->wstatus = x < 0 ? -1 : st;
  if (x > 0) f->rusage = ru;
  f->reaped = true;
  /* Closed under the lock like every call descriptor: a fork in between would otherwise copy
   * it unseen, and the hang-up would wait for that unrelated child to exit. */
  ip__close(&f->reaper_wfd);
  pthread_mutex_unlock(&ip__g.lock); /* the supervisor sees the hang-up; f may go from here */
  return NULL;
}

/* Under the lock, so no fork sees the pipe before at_child can find it in f. */
static int exit_pipe_locked(ip_future *f) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return -1;
  f->pidfd = p[0];
  f->reaper_wfd = p[1];
  f->exit_pipe = true;
  return 0;
}

static int start_reaper(ip_future *f) {
  pthread_attr_t a;
  pthread_t th;
  sigset_t all, old;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&a, 64 << 10);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int e = pthread_create(&th, &a, reaper_main, f);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&a);
  return e;
}

/* A descriptor that becomes readable when the child exits. Under the lock, like every
 * descriptor the library creates, for the same reason. */
static int watch_exit_locked(ip_future *f) {
  if (!atomic_load(&no_pidfd)) {
    f->pidfd = (int)syscall(SYS_pidfd_open, f->pid, 0);
    if (f->pidfd >= 0 || errno != ENOSYS) return f->pidfd;
    atomic_store(&no_pidfd, true);
  }
  return exit_pipe_locked(f);
}

static void reap_now(pid_t pid) {
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
}

/* Undoes a call that could not be started: closes what it holds and fails it. */
static ip_future *abandon(ip_future *f, int code, const char *why) {
  pthread_mutex_lock(&ip__g.lock);
  ip__unlink_locked(f);
  ip__close(&f->sock);
  ip__close(&f->child_sock);
  ip__close(&f->pidfd);
  pthread_mutex_unlock(&ip__g.lock);
  ip__fail_early(f, code, why);
  return f;
}

/* The channel, created under the lock and put on the in-flight list at once: a fork by
 * another thread from here on closes it in its child (see at_child in fork.c). */
static int open_channel_locked(ip_future *f) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return ip__errno_code(errno);
  f->sock = above_stdio(sv[0]);
  f->child_sock = above_stdio(sv[1]);
  ip__link_locked(f);
  return f->sock < 0 || f->child_sock < 0 ? IP_EMFILE : 0;
}

/* Whether this thread is its process's main thread (the child needs it for the PDEATHSIG
 * fallback), without a gettid() per call. A fork makes the forking thread the main thread of
 * the child, so the answer is kept per fork generation. */
static bool is_main_thread(pid_t self_pid) {
  static __thread struct {
    unsigned gen;
    signed char main; /* 0 unknown, 1 yes, -1 no */
  } cache;
  if (cache.gen != ip__g.gen || !cache.main) {
    cache.gen = ip__g.gen;
    cache.main = syscall(SYS_gettid) == self_pid ? 1 : -1;
  }
  return cache.main > 0;
}

/* ip_call, and ip_call_encoded when `enc` is set: the child decodes its argument first. */
static ip_future *call(ip_task *t, void *arg, const void *enc, size_t enc_len) {
  ip_future *f = ip__future_new();
  if (!f) return NULL;
  f->arg = arg;
  if (!t) {
    ip__fail_early(f, IP_EINVAL, enc ? "ip_call_encoded: the task is NULL"
                                     : "ip_call: the task is NULL");
    return f;
  }
  f->ser = t->ser;
  f->ser_id = t->ser_id;
  f->max_result = t->max_result;
  f->timeout_ms = t->timeout_ms;

  /* A deadline must be kept while nobody waits: timed calls get the supervisor thread. */
  int rc = ip__supervisor_ensure(t->timeout_ms > 0);
  if (rc < 0) {
    ip__fail_early(f, rc, "ip_call: could not set up the supervisor");
    return f;
  }
  if (t->timeout_ms > 0) f->deadline_ns = ip__now_ns() + (int64_t)t->timeout_ms * 1000000;
  pthread_mutex_lock(&ip__g.lock);
  rc = open_channel_locked(f);
  if (rc == 0) ip__g.unrecorded++; /* until f->pid is known; see ip__ours_locked */
  /* Read under the lock: the first timed call, in whatever thread, writes ip__g.owner again
   * as it starts the supervisor thread. */
  pid_t parent = ip__g.owner; /* getpid() of this process since its supervisor started */
  int lifeline = ip__g.lifeline[0], child_sock = f->child_sock;
  pthread_mutex_unlock(&ip__g.lock);
  if (rc < 0) return abandon(f, rc, "ip_call: no socketpair for the channel");

  bool main_thread = is_main_thread(parent);
  ip__forking = f;
  pid_t pid = t->fork_fn ? t->fork_fn(t->fork_ud) : fork();
  if (pid == 0) ip__child_main(t, child_sock, lifeline, parent, main_thread, arg, enc, enc_len);
  int fork_errno = errno;
  ip__forking = NULL;

  int watch_errno = 0;
  pthread_mutex_lock(&ip__g.lock);
  ip__g.unrecorded--;
  ip__close(&f->child_sock);
  if (pid > 0) {
    f->pid = f->err.pid = pid;
    if (watch_exit_locked(f) < 0) watch_errno = errno;
  }
  pthread_mutex_unlock(&ip__g.lock);
  if (pid < 0) return abandon(f, ip__errno_code(fork_errno), "ip_call: fork failed");
  if (watch_errno) {
    /* ESRCH: the host reaped our child (a waitpid(-1) loop); it may have sent a result, but
     * how it ended is lost. Anything else is a resource limit. */
    int e = watch_errno;
    if (e != ESRCH) reap_now(pid);
    return abandon(f, e == ESRCH ? IP_EEXITED : ip__errno_code(e),
                   e == ESRCH ? "ip_call: the child was reaped by someone else"
                              : "ip_call: no pidfd for the child");
  }
  if (f->exit_pipe && (errno = start_reaper(f)) != 0) {
    reap_now(pid);
    pthread_mutex_lock(&ip__g.lock);
    ip__close(&f->reaper_wfd);
    pthread_mutex_unlock(&ip__g.lock);
    return abandon(f, ip__errno_code(errno), "ip_call: no reaper thread for the child");
  }
  rc = ip__supervisor_add(f);
  if (rc < 0) {
    if (f->exit_pipe) { /* the reaper thread reaps; wait until it let go of f */
      kill(pid, SIGKILL);
      char c;
      fcntl(f->pidfd, F_SETFL, 0);
      while (read(f->pidfd, &c, 1) < 0 && errno == EINTR) {
      }
    } else {
      reap_now(pid);
    }
    return abandon(f, rc, "ip_call: could not watch the child");
  }
  return f;
}

ip_future *ip_call(ip_task *t, void *arg) { return call(t, arg, NULL, 0); }

ip_future *ip_call_encoded(ip_task *t, const void *arg, size_t len) {
  /* A non-NULL `enc` marks the encoded form, whatever len is: an empty encoding is valid. */
  static const char none;
  return call(t, (void *)arg, arg ? arg : &none, len);
}
