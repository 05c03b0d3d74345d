/* A pool's template: the process ip_pool_new forks, which forks the pool's workers. It keeps
 * the caller's memory as it was when the pool was made, stays single-threaded and idle, and so
 * a replacement worker is a cheap fork of a quiet process, never of the busy caller. It is the
 * workers' parent: it reaps them and tells the caller how each ended (status and rusage),
 * forking the replacement in the same breath so the pool never shrinks.
 *
 * It ends when the caller closes its end of the control socket (ip_pool_free) or dies (the
 * lifeline): either way it kills every worker's process group, reaps them and exits. */
#include "internal.h"
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static struct {
  int ctl, sigfd, lifeline;
  pid_t caller, self;
  sigset_t caller_mask; /* the signal mask workers run with: the caller's */
  pid_t *workers;
  size_t n, cap;
  ip_fork_fn fork_fn; /* NULL: fork() */
  void *fork_ud;
} tp;

static void send_ctl(const struct ip__ctl *m, int fd) {
  union {
    struct cmsghdr c;
    char b[CMSG_SPACE(sizeof(int))];
  } u;
  memset(&u, 0, sizeof u);
  struct iovec iov = {(void *)m, sizeof *m};
  struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1};
  if (fd >= 0) {
    h.msg_control = u.b;
    h.msg_controllen = sizeof u.b;
    struct cmsghdr *c = CMSG_FIRSTHDR(&h);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  while (sendmsg(tp.ctl, &h, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

/* Forks a worker. Returns its pid and its channel's caller end in *fd, or -errno. */
static pid_t spawn(int *fd) {
  int sv[2];
  *fd = -1;
  if (tp.n == tp.cap) {
    size_t cap = tp.cap ? tp.cap * 2 : 8;
    pid_t *w = realloc(tp.workers, cap * sizeof *w);
    if (!w) return -ENOMEM;
    tp.workers = w, tp.cap = cap;
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
  pid_t pid = tp.fork_fn ? tp.fork_fn(tp.fork_ud) : fork();
  if (pid < 0) {
    int e = errno;
    close(sv[0]);
    close(sv[1]);
    return -e;
  }
  if (pid == 0) {
    close(tp.ctl);
    close(tp.sigfd);
    close(sv[0]);
    /* Its own process group, like a forked call's child: a kill ends what it started too.
     * It dies with the template (which is single-threaded, so PDEATHSIG means the process)
     * and, through the lifeline, with the caller. */
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    ip__arm_lifeline(tp.lifeline, tp.self, true);
    if (tp.lifeline >= 0) close(tp.lifeline);
    sigprocmask(SIG_SETMASK, &tp.caller_mask, NULL);
    ip__worker_main(sv[1]);
  }
  close(sv[1]);
  tp.workers[tp.n++] = pid;
  *fd = sv[0];
  return pid;
}

static void forget(pid_t pid) {
  for (size_t i = 0; i < tp.n; i++)
    if (tp.workers[i] == pid) {
      tp.workers[i] = tp.workers[--tp.n];
      return;
    }
}

static _Noreturn void quit(void);

/* Whether the caller closed its end of the control socket (ip_pool_free) or died. ip_pool_free
 * closes the workers' channels too, so their exits may reach reap() before the end of the
 * control socket reaches the main loop; a replacement forked then finds its channel closed
 * and exits at once, and when a fork takes longer than that (fork_fn in a runtime such as
 * Ruby's, or a loaded machine), every round of reap() finds the previous replacement dead:
 * the template forks forever and ip_pool_free never returns. */
static bool caller_gone(void) {
  struct pollfd p = {.fd = tp.ctl, .events = POLLIN};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR));
}

/* Reports every worker that ended, with the replacement forked for it. */
static void reap(void) {
  struct signalfd_siginfo si;
  while (read(tp.sigfd, &si, sizeof si) > 0) {
  }
  for (;;) {
    siginfo_t w;
    memset(&w, 0, sizeof w);
    if (waitid(P_ALL, 0, &w, WEXITED | WNOHANG | WNOWAIT) < 0 || w.si_pid == 0) return;
    pid_t pid = w.si_pid;
    kill(-pid, SIGKILL); /* what the worker started, while its group's id is surely its own */
    struct ip__ctl m = {.kind = IP__CTL_DOWN, .pid = pid};
    int st = 0;
    while (wait4(pid, &st, 0, &m.ru) < 0 && errno == EINTR) {
    }
    m.status = st;
    forget(pid);
    if (caller_gone()) quit();
    int fd;
    m.new_pid = spawn(&fd);
    send_ctl(&m, fd);
    if (fd >= 0) close(fd);
  }
}

static _Noreturn void quit(void) {
  for (size_t i = 0; i < tp.n; i++) {
    kill(-tp.workers[i], SIGKILL);
    kill(tp.workers[i], SIGKILL);
  }
  for (size_t i = 0; i < tp.n; i++)
    while (waitpid(tp.workers[i], NULL, 0) < 0 && errno == EINTR) {
    }
  _exit(0);
}

void ip__template_main(int ctl, int workers, pid_t caller, int lifeline_r, ip_fork_fn fork_fn,
                       void *fork_ud) {
  tp.ctl = ctl;
  tp.fork_fn = fork_fn;
  tp.fork_ud = fork_ud;
  tp.caller = caller;
  tp.self = getpid();
  tp.lifeline = lifeline_r;
  /* Out of the caller's process group (a Ctrl-C at the terminal is the caller's to handle),
   * and dead with the caller. Every signal is blocked: the caller's handlers are not meant to
   * run here, and the template has nothing to do on a signal but this SIGCHLD watch. */
  setpgid(0, 0);
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &tp.caller_mask);
  ip__arm_lifeline(lifeline_r, caller, true);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if ((tp.sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) _exit(1);
  for (int i = 0; i < workers; i++) {
    struct ip__ctl a = {.kind = IP__CTL_WORKER};
    int fd;
    a.pid = spawn(&fd);
    send_ctl(&a, fd);
    if (fd >= 0) close(fd);
  }
  for (;;) {
    struct pollfd p[2] = {{.fd = ctl, .events = POLLIN}, {.fd = tp.sigfd, .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      quit();
    }
    if (p[1].revents) reap();
    if (!p[0].revents) continue;
    struct ip__ctl m;
    ssize_t r = recv(ctl, &m, sizeof m, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (r != (ssize_t)sizeof m) quit(); /* the caller closed its end, or died */
    if (m.kind == IP__CTL_SPAWN) {
      struct ip__ctl a = {.kind = IP__CTL_WORKER};
      int fd;
      a.pid = spawn(&fd);
      send_ctl(&a, fd);
      if (fd >= 0) close(fd);
    } else if (m.kind == IP__CTL_KILL) {
      /* Only a worker not yet reaped: its pid cannot belong to anyone else. */
      for (size_t i = 0; i < tp.n; i++)
        if (tp.workers[i] == m.pid) {
          kill(-m.pid, SIGKILL);
          kill(m.pid, SIGKILL);
        }
    }
  }
}
