/* The supervisor: epoll_wait on every call's socket and pidfd (plus an eventfd to be woken),
 * draining sockets, reaping only our own children through their pidfds, killing children past
 * their deadline, and completing futures. It never decodes.
 *
 * Who runs it: a thread that waits (ip__wait) drives it itself while nobody else does, so a
 * process that only calls and waits never gets a second thread. That matters because glibc's
 * fork() takes a slower path for good once a process has had a thread (it locks and resets
 * every malloc arena and stdio lock around each fork), and the child inherits a second
 * thread's arena: the bench lost a quarter of its calls per second to that. A supervisor
 * thread is started only for what needs progress while nobody waits: a call with a timeout
 * (its child must die on time) and ip_ready_fd() (the caller polls instead of waiting). From
 * then on the thread alone drives, as before. Exactly one runs the loop at any time. */
#include "internal.h"
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_EVENTS 64
#define READ_BUDGET ((size_t)8 << 20) /* per wake-up and socket, so one big result can't starve */
#define TAG_PIDFD ((uintptr_t)1)
#define SKIP ((void *)2)

#define SIGCHLD_TAG ((void *)3)

/* Every process a call's child started, however deep, is in the child's process group
 * (child.c makes it one) unless it left it. The group is signalled only while its leader is
 * unreaped, so the group's id cannot have passed to anyone else. */
void ip__kill_group(pid_t pid) { kill(-pid, SIGKILL); }

void ip__kill_locked(ip_future *f) {
  if (f->pool) {
    ip__pool_kill_locked(f);
    return;
  }
  if (f->killed || f->pidfd < 0) return;
  f->killed = true;
  if (!f->exit_pipe) syscall(SYS_pidfd_send_signal, f->pidfd, SIGKILL, NULL, 0);
  else if (!f->reaped) kill(f->pid, SIGKILL); /* not reaped yet, so the pid is still ours */
  if (!f->reaped) ip__kill_group(f->pid);
}

void ip__remember_pid_locked(pid_t pid) {
  ip__g.recent[ip__g.recent_at++ % IP__RECENT] = pid;
}

bool ip__ours_locked(pid_t pid) {
  if (pid <= 0) return false;
  for (size_t i = 0; i < IP__RECENT; i++)
    if (ip__g.recent[i] == pid) return true;
  for (ip_future *f = ip__g.inflight; f; f = f->next)
    if (f->pid == pid && !f->pool) return true;
  if (ip__pool_pid_locked(pid)) return true;
  /* A child can end before the fork() that made it has returned its pid to ip_call. Such a
   * child is unreaped (nothing watches it yet) and led a process group of its own. */
  return ip__g.unrecorded && getpgid(pid) == pid;
}

static void stop_reading(ip_future *f) {
  if (f->rx.sock_open) {
    epoll_ctl(ip__g.epfd, EPOLL_CTL_DEL, f->sock, NULL);
    f->rx.sock_open = false;
  }
}

static void on_readable(ip_future *f) {
  bool open = ip__rx_drain(f, READ_BUDGET);
  if (f->rx.proto_code) {
    /* A child that sends garbage gets no more attention: stop reading and end it. */
    stop_reading(f);
    pthread_mutex_lock(&ip__g.lock);
    ip__kill_locked(f);
    pthread_mutex_unlock(&ip__g.lock);
  } else if (!open) {
    stop_reading(f);
  }
}

/* The child exited: reap it, take whatever it left in the socket, and complete the future.
 * Returns false when the wake-up was spurious. */
static bool on_child_exit(ip_future *f) {
  if (!f->exit_pipe) {
    int st;
    pid_t r;
    /* The call is over: so is whatever its child left running. */
    ip__kill_group(f->pid);
    /* Reaped under the lock, and `reaped` set in the same hold: ip__kill_locked (a cancel, in
     * another thread) signals the process group only while `reaped` is false, which is safe
     * only if the leader cannot be reaped, and the group's id freed, between that look and the
     * kill. WNOHANG: nothing waits under the lock. */
    pthread_mutex_lock(&ip__g.lock);
    while ((r = wait4(f->pid, &st, WNOHANG, &f->rusage)) < 0 && errno == EINTR) {
    }
    if (r != 0) {
      f->reaped = true;
      f->wstatus = r < 0 ? -1 : st; /* ECHILD: the host's waitpid(-1) took it */
    }
    pthread_mutex_unlock(&ip__g.lock);
    if (r == 0) return false;
  }
  if (f->rx.sock_open) {
    /* Everything the child wrote is in the socket now; a grandchild that inherited the
     * channel could keep writing, so read what is there and no more. */
    ip__rx_drain(f, SIZE_MAX);
    stop_reading(f);
  }
  epoll_ctl(ip__g.epfd, EPOLL_CTL_DEL, f->pidfd, NULL);
  ip__outcome_symbolize(f);
  pthread_mutex_lock(&ip__g.lock);
  ip__outcome(f);
  ip__close(&f->sock);
  ip__close(&f->pidfd);
  ip__close(&f->rx.memfd); /* one that came with a refused frame */
  ip__complete_locked(f);
  pthread_mutex_unlock(&ip__g.lock);
  return true;
}

/* ---- the loop ------------------------------------------------------------------------------ */

static int next_timeout_locked(int64_t now) {
  if (!ip__g.n_timed) return -1;
  int64_t first = INT64_MAX;
  for (ip_future *f = ip__g.inflight; f; f = f->next) {
    if (!f->deadline_ns || f->killed) continue;
    if (f->deadline_ns <= now) {
      f->timed_out = true;
      ip__kill_locked(f);
    } else if (f->deadline_ns < first) {
      first = f->deadline_ns;
    }
  }
  if (first == INT64_MAX) return -1;
  int64_t ms = (first - now + 999999) / 1000000;
  return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

int ip__supervise_once(int timeout_ms, bool *sigchld) {
  struct epoll_event ev[MAX_EVENTS];
  pthread_mutex_lock(&ip__g.lock);
  ip__graveyard_free_locked(); /* the last batch, which could name what it held, is done */
  int t = next_timeout_locked(ip__now_ns());
  pthread_mutex_unlock(&ip__g.lock);
  if (t >= 0 && (timeout_ms < 0 || t < timeout_ms)) timeout_ms = t;
  int n = epoll_wait(ip__g.epfd, ev, MAX_EVENTS, timeout_ms);
  for (int i = 0; i < n; i++) {
    void *tag = ev[i].data.ptr;
    if (tag == SKIP) continue;
    if (tag == SIGCHLD_TAG) {
      if (sigchld) *sigchld = true;
      continue;
    }
    if (!tag) {
      uint64_t v;
      ssize_t r = read(ip__g.wake_fd, &v, sizeof v);
      (void)r;
      continue;
    }
    if (((uintptr_t)tag & 3) >= IP__TAG_WORKER) {
      ip__pool_event(tag, ev[i].events);
      continue;
    }
    ip_future *f = (ip_future *)((uintptr_t)tag & ~TAG_PIDFD);
    if (!((uintptr_t)tag & TAG_PIDFD)) {
      on_readable(f);
    } else if (on_child_exit(f)) {
      /* f may be freed by its owner from now on: forget its other events in this batch. */
      for (int j = i + 1; j < n; j++)
        if (((uintptr_t)ev[j].data.ptr & ~TAG_PIDFD) == (uintptr_t)f) ev[j].data.ptr = SKIP;
    }
  }
  return n;
}

static void *supervise(void *unused) {
  (void)unused;
  pthread_mutex_lock(&ip__g.lock);
  while (ip__g.driving) pthread_cond_wait(&ip__g.cond, &ip__g.lock); /* see ip__wait */
  for (;;) {
    bool stop = ip__g.stopping;
    pthread_mutex_unlock(&ip__g.lock);
    if (stop) break;
    ip__supervise_once(-1, NULL);
    pthread_mutex_lock(&ip__g.lock);
  }
  return NULL;
}

static int fd_error(void) { return ip__errno_code(errno); }

/* A signalfd that reports a SIGCHLD pending for the thread that looks, and never takes it
 * (wait.c does, when it must). Edge-triggered, so a SIGCHLD that every thread blocks, as a
 * host may, wakes the loop once rather than for as long as it stays pending. */
static int watch_sigchld_locked(void) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if ((ip__g.sigchld_fd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) return -1;
  struct epoll_event c = {.events = EPOLLIN | EPOLLET, .data.ptr = SIGCHLD_TAG};
  if (epoll_ctl(ip__g.epfd, EPOLL_CTL_ADD, ip__g.sigchld_fd, &c) == 0) return 0;
  int e = errno;
  ip__close(&ip__g.sigchld_fd);
  errno = e;
  return -1;
}

int ip__supervisor_ensure(bool thread) {
  ip__init();
  int rc = 0;
  pthread_mutex_lock(&ip__g.lock);
  thread |= ip__g.want_thread;
  if (ip__g.started || (ip__g.epfd >= 0 && !thread)) goto out;
  ip__g.owner = getpid();
  if (ip__g.epfd < 0 && (ip__g.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) goto fail;
  if (ip__g.wake_fd < 0 && (ip__g.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) goto fail;
  if (ip__g.lifeline[0] < 0 && pipe2(ip__g.lifeline, O_CLOEXEC) < 0) goto fail;
  struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(ip__g.epfd, EPOLL_CTL_ADD, ip__g.wake_fd, &e) < 0 && errno != EEXIST) goto fail;
  if (ip__g.sigchld_fd < 0 && watch_sigchld_locked() < 0) goto fail;
  if (!thread) goto out;
  /* The host's signal handlers must run in the host's threads, never in ours. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int e2 = pthread_create(&ip__g.thread, NULL, supervise, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e2) {
    errno = e2;
    goto fail;
  }
  ip__g.started = true;
  ip__supervisor_kick(); /* a thread driving in ip__wait hands over (the new one waits for it) */
  goto out;
fail:
  rc = fd_error();
out:
  pthread_mutex_unlock(&ip__g.lock);
  return rc;
}

int ip_use_supervisor_thread(void) {
  ip__init();
  pthread_mutex_lock(&ip__g.lock);
  ip__g.want_thread = true;
  bool now = ip__g.epfd >= 0;
  pthread_mutex_unlock(&ip__g.lock);
  return now ? ip__supervisor_ensure(true) : 0;
}

int ip__supervisor_add(ip_future *f) {
  f->rx.sock_open = true;
  struct epoll_event es = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = f};
  struct epoll_event ep = {.events = EPOLLIN, .data.ptr = (void *)((uintptr_t)f | TAG_PIDFD)};
  if (epoll_ctl(ip__g.epfd, EPOLL_CTL_ADD, f->sock, &es) < 0) return fd_error();
  if (epoll_ctl(ip__g.epfd, EPOLL_CTL_ADD, f->pidfd, &ep) < 0) {
    int rc = fd_error();
    epoll_ctl(ip__g.epfd, EPOLL_CTL_DEL, f->sock, NULL);
    return rc;
  }
  if (f->deadline_ns) ip__supervisor_kick();
  return 0;
}

void ip__supervisor_kick(void) {
  uint64_t one = 1;
  ssize_t r = write(ip__g.wake_fd, &one, sizeof one);
  (void)r;
}

void ip__supervisor_shutdown(void) {
  pthread_mutex_lock(&ip__g.lock);
  bool ours = ip__g.owner == getpid();
  bool thread = ours && ip__g.started;
  if (thread) ip__g.stopping = true;
  pthread_mutex_unlock(&ip__g.lock);
  if (!ours) return;
  if (thread) {
    ip__supervisor_kick();
    pthread_join(ip__g.thread, NULL);
  }
  pthread_mutex_lock(&ip__g.lock);
  ip__g.started = false;
  ip__close(&ip__g.epfd);
  ip__close(&ip__g.wake_fd);
  ip__close(&ip__g.ready_fd);
  ip__close(&ip__g.sigchld_fd);
  ip__close(&ip__g.lifeline[0]);
  ip__close(&ip__g.lifeline[1]);
  ip__graveyard_free_locked();
  pthread_mutex_unlock(&ip__g.lock);
}

int ip_ready_fd(void) {
  /* Whoever polls this descriptor is not waiting in the library: a thread must drive. */
  int rc = ip__supervisor_ensure(true);
  if (rc < 0) return rc;
  pthread_mutex_lock(&ip__g.lock);
  if (ip__g.ready_fd < 0) ip__g.ready_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int fd = ip__g.ready_fd >= 0 ? ip__g.ready_fd : ip__errno_code(errno);
  pthread_mutex_unlock(&ip__g.lock);
  return fd;
}
