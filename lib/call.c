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

/* Set around fork() so the at-fork child handler knows the new process is ours and keeps
 * the lifeline descriptor it needs. */
__thread bool ip__forking_call;

static ip_future *future_new(void) {
  ip_future *f = calloc(1, sizeof *f);
  if (!f) return NULL;
  f->sock = f->pidfd = f->rx.memfd = -1;
  f->wstatus = -1;
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

struct reaper {
  ip_future *f;
  int wfd;
};

static void *reaper_main(void *p) {
  struct reaper r = *(struct reaper *)p;
  free(p);
  int st;
  struct rusage ru;
  pid_t x;
  while ((x = wait4(r.f->pid, &st, 0, &ru)) < 0 && errno == EINTR) {
  }
  pthread_mutex_lock(&ip__g.lock);
  r.f->wstatus = x < 0 ? -1 : st;
  if (x > 0) r.f->rusage = ru;
  r.f->reaped = true;
  pthread_mutex_unlock(&ip__g.lock);
  close(r.wfd); /* the supervisor sees the hang-up */
  return NULL;
}

static int exit_pipe(ip_future *f) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return -1;
  struct reaper *r = malloc(sizeof *r);
  pthread_attr_t a;
  pthread_t th;
  sigset_t all, old;
  int e = ENOMEM;
  if (r) {
    *r = (struct reaper){f, p[1]};
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 << 10);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    e = pthread_create(&th, &a, reaper_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&a);
  }
  if (e) {
    free(r);
    close(p[0]);
    close(p[1]);
    errno = e;
    return -1;
  }
  f->exit_pipe = true;
  return p[0];
}

static int watch_exit(ip_future *f) {
  if (!atomic_load(&no_pidfd)) {
    int fd = (int)syscall(SYS_pidfd_open, f->pid, 0);
    if (fd >= 0 || errno != ENOSYS) return fd;
    atomic_store(&no_pidfd, true);
  }
  return exit_pipe(f);
}

static void reap_now(pid_t pid) {
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
}

ip_future *ip_call(ip_task *t, void *arg) {
  ip_future *f = future_new();
  if (!f) return NULL;
  f->arg = arg;
  if (!t) {
    ip__fail_early(f, IP_EINVAL, "ip_call: the task is NULL");
    return f;
  }
  f->ser = t->ser;
  f->ser_id = t->ser_id;
  f->max_result = t->max_result;
  f->timeout_ms = t->timeout_ms;

  int rc = ip__supervisor_ensure();
  if (rc < 0) {
    ip__fail_early(f, rc, "ip_call: could not start the supervisor thread");
    return f;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    ip__fail_early(f, ip__errno_code(errno), "ip_call: socketpair failed");
    return f;
  }
  sv[0] = above_stdio(sv[0]);
  sv[1] = above_stdio(sv[1]);
  if (sv[0] < 0 || sv[1] < 0) {
    ip__close(&sv[0]);
    ip__close(&sv[1]);
    ip__fail_early(f, IP_EMFILE, "ip_call: no descriptor for the channel");
    return f;
  }

  pid_t parent = getpid();
  bool main_thread = syscall(SYS_gettid) == parent;
  int lifeline = ip__g.lifeline[0];
  ip__forking_call = true;
  pid_t pid = t->fork_fn ? t->fork_fn(t->fork_ud) : fork();
  int fork_errno = errno;
  ip__forking_call = false;
  if (pid == 0) {
    close(sv[0]);
    ip__child_main(t, sv[1], lifeline, parent, main_thread, arg);
  }
  close(sv[1]);
  if (pid < 0) {
    close(sv[0]);
    ip__fail_early(f, ip__errno_code(fork_errno), "ip_call: fork failed");
    return f;
  }
  f->pid = pid;
  f->err.pid = pid;
  f->sock = sv[0];
  f->pidfd = watch_exit(f);
  if (f->pidfd < 0) {
    /* ESRCH: the host reaped our child (a waitpid(-1) loop); it may still have sent a
     * result, but we can no longer tell how it ended. Anything else is a resource limit. */
    int e = errno;
    if (e != ESRCH) reap_now(pid);
    close(sv[0]);
    f->sock = -1;
    ip__fail_early(f, e == ESRCH ? IP_EEXITED : ip__errno_code(e),
                   e == ESRCH ? "ip_call: the child was reaped by someone else"
                              : "ip_call: no pidfd or reaper thread for the child");
    return f;
  }
  fcntl(f->sock, F_SETFL, O_NONBLOCK);
  if (t->timeout_ms > 0) f->deadline_ns = ip__now_ns() + (int64_t)t->timeout_ms * 1000000;

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
    ip__close(&f->sock);
    ip__close(&f->pidfd);
    ip__fail_early(f, rc, "ip_call: could not watch the child");
  }
  return f;
}
