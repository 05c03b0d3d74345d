/* Blocking without polling. Without a supervisor thread, the first thread to wait drives the
 * supervisor loop itself (an epoll_wait); any other thread that waits meanwhile sleeps on its
 * own eventfd (its waiter), which a completion writes to when armed, and takes the driver's
 * seat when the driver leaves. With a supervisor thread every waiter sleeps. Either sleep is
 * a single blocking call, so waiting costs no CPU, and a host signal handler interrupts it
 * (epoll_wait and ppoll are never restarted), which is how IP_EINTR reaches the caller.
 *
 * IP_EINTR is for the host's signals only. A wait whose condition holds when a handler ran
 * returns it instead. And a SIGCHLD from one of the library's own children must not count:
 * while a host handler for SIGCHLD is installed, a waiting thread blocks SIGCHLD, sees it
 * arrive through a signalfd, takes it to read whose child sent it, and puts it back for the
 * host's handler, which then runs at once, in this thread, as it would have; only a child
 * that is not the library's ends the wait with IP_EINTR. */
#include "internal.h"
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <string.h>
#include <unistd.h>

static __thread struct ip__waiter *self;
static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void unlink_locked(struct ip__waiter *w) {
  if (w->prev) w->prev->next = w->next;
  else if (ip__g.waiters == w) ip__g.waiters = w->next;
  if (w->next) w->next->prev = w->prev;
  w->prev = w->next = NULL;
}

static void waiter_destroy(void *p) {
  struct ip__waiter *w = p;
  if (w->gen != ip__g.gen) { /* the parent's, copied by fork: its descriptor is long closed */
    free(w);
    return;
  }
  pthread_mutex_lock(&ip__g.lock);
  unlink_locked(w);
  pthread_mutex_unlock(&ip__g.lock);
  ip__close(&w->efd);
  free(w);
}

static void make_key(void) { pthread_key_create(&key, waiter_destroy); }

static struct ip__waiter *waiter(void) {
  if (self && self->gen == ip__g.gen) return self;
  if (self) { /* this thread forked: the waiter is a copy of the parent's (see at_child) */
    free(self);
    self = NULL;
  }
  pthread_once(&key_once, make_key);
  struct ip__waiter *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  pthread_mutex_lock(&ip__g.lock); /* a fork must find the eventfd on the list to close it */
  w->gen = ip__g.gen;
  if ((w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
    pthread_mutex_unlock(&ip__g.lock);
    free(w);
    return NULL;
  }
  w->next = ip__g.waiters;
  if (w->next) w->next->prev = w;
  ip__g.waiters = w;
  pthread_mutex_unlock(&ip__g.lock);
  pthread_setspecific(key, w);
  return self = w;
}

static void wake_armed_locked(void) {
  uint64_t one = 1;
  for (struct ip__waiter *w = ip__g.waiters; w; w = w->next) {
    if (w->armed) {
      w->armed = false;
      ssize_t r = write(w->efd, &one, sizeof one);
      (void)r;
    }
  }
}

void ip__wake_waiters_locked(void) {
  wake_armed_locked();
  if (ip__g.ready_fd >= 0) {
    uint64_t one = 1;
    ssize_t r = write(ip__g.ready_fd, &one, sizeof one);
    (void)r;
  }
}

/* Leaves the driver's seat. The threads sleeping behind the driver wake to take it in turn,
 * as does a supervisor thread that is waiting for it (supervise() in supervisor.c). */
static void stop_driving_locked(void) {
  ip__g.driving = false;
  wake_armed_locked();
  pthread_cond_broadcast(&ip__g.cond);
}

/* Whether the calling thread should drive: it already does, or nobody does. */
static bool may_drive_locked(bool driving) {
  return driving || (!ip__g.started && !ip__g.driving && ip__g.epfd >= 0);
}

void ip__progress(void) {
  pthread_mutex_lock(&ip__g.lock);
  bool drive = ip__g.n_inflight && may_drive_locked(false);
  ip__g.driving |= drive;
  pthread_mutex_unlock(&ip__g.lock);
  if (!drive) return;
  ip__supervise_once(0, NULL);
  pthread_mutex_lock(&ip__g.lock);
  stop_driving_locked();
  pthread_mutex_unlock(&ip__g.lock);
}

/* ---- the host's SIGCHLD ------------------------------------------------------------------ */

struct chld {
  bool watch; /* SIGCHLD blocked here by this wait, and watched */
  sigset_t old;
};

static bool host_handles_sigchld(void) {
  struct sigaction sa;
  if (sigaction(SIGCHLD, NULL, &sa) < 0) return false;
  return (sa.sa_flags & SA_SIGINFO) || (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN);
}

/* Before the first sleep of a wait: without a handler no SIGCHLD interrupts anything, and a
 * thread that blocks SIGCHLD itself runs no handler for it. */
static void chld_begin(struct chld *c) {
  sigset_t s;
  if (ip__g.sigchld_fd < 0 || !host_handles_sigchld()) return;
  sigemptyset(&s);
  sigaddset(&s, SIGCHLD);
  if (pthread_sigmask(SIG_BLOCK, &s, &c->old) != 0) return;
  c->watch = !sigismember(&c->old, SIGCHLD);
}

static void chld_end(struct chld *c) {
  if (c->watch) pthread_sigmask(SIG_SETMASK, &c->old, NULL);
  c->watch = false;
}

/* Takes the SIGCHLDs pending for this thread, puts each back as it was (same sender, code and
 * status) and lets the host's handler run them now. True when one came from a child that is
 * not the library's. Standard signals merge: a host child that ends while a SIGCHLD of ours
 * is pending is only seen by the handler, not here. */
static bool chld_take(struct chld *c) {
  struct signalfd_siginfo ssi[2]; /* standard signals do not queue: one per thread, one shared */
  int n = 0;
  while (n < 2 && read(ip__g.sigchld_fd, &ssi[n], sizeof *ssi) == (ssize_t)sizeof *ssi) n++;
  bool host = false;
  pthread_mutex_lock(&ip__g.lock);
  for (int i = 0; i < n; i++) host |= !ip__ours_locked((pid_t)ssi[i].ssi_pid);
  pthread_mutex_unlock(&ip__g.lock);
  if (n) {
    /* A process may queue any siginfo to itself; pending again, it merges into one. */
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = SIGCHLD;
    si.si_code = ssi[0].ssi_code;
    si.si_pid = (pid_t)ssi[0].ssi_pid;
    si.si_uid = ssi[0].ssi_uid;
    si.si_status = ssi[0].ssi_status;
    si.si_utime = (clock_t)ssi[0].ssi_utime;
    si.si_stime = (clock_t)ssi[0].ssi_stime;
    syscall(SYS_rt_tgsigqueueinfo, getpid(), (pid_t)syscall(SYS_gettid), SIGCHLD, &si);
  }
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGCHLD);
  pthread_sigmask(SIG_SETMASK, &c->old, NULL); /* the host's handler runs here */
  pthread_sigmask(SIG_BLOCK, &s, NULL);
  return host;
}

/* ---- waiting ------------------------------------------------------------------------------- */

int ip__wait(ip__pred done, void *ctx, int timeout_ms, bool interruptible) {
  if (timeout_ms == 0) ip__progress(); /* a poll: the loop below would not drive at all */
  struct ip__waiter *w = interruptible ? waiter() : NULL;
  int64_t deadline = timeout_ms >= 0 ? ip__now_ns() + (int64_t)timeout_ms * 1000000 : 0;
  int rc = 0;
  bool driving = false, slept = false;
  struct chld chld = {0};
  pthread_mutex_lock(&ip__g.lock);
  while (!done(ctx)) {
    int64_t left = timeout_ms >= 0 ? deadline - ip__now_ns() : -1;
    if (timeout_ms >= 0 && left <= 0) {
      rc = IP_ETIMEDOUT;
      break;
    }
    if (interruptible && !slept) {
      slept = true;
      pthread_mutex_unlock(&ip__g.lock);
      chld_begin(&chld);
      pthread_mutex_lock(&ip__g.lock);
      continue; /* the condition may hold by now */
    }
    if (driving && ip__g.started) { /* a timed call or ip_ready_fd started the thread */
      driving = false;
      stop_driving_locked();
    }
    bool interrupted = false, sigchld = false;
    if (may_drive_locked(driving)) {
      ip__g.driving = driving = true;
      pthread_mutex_unlock(&ip__g.lock);
      int64_t ms = left < 0 ? -1 : (left + 999999) / 1000000;
      int n = ip__supervise_once(ms > INT32_MAX ? INT32_MAX : (int)ms, &sigchld);
      interrupted = n < 0 && errno == EINTR;
      pthread_mutex_lock(&ip__g.lock);
    } else if (!w) {
      /* No eventfd to be had (or a wait that must not be interrupted): a condition variable
       * still sleeps until a completion, it just cannot report signals. */
      if (timeout_ms < 0) {
        pthread_cond_wait(&ip__g.cond, &ip__g.lock);
      } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + left;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&ip__g.cond, &ip__g.lock, &ts);
      }
      continue;
    } else {
      w->armed = true;
      pthread_mutex_unlock(&ip__g.lock);
      struct pollfd p[2] = {{.fd = w->efd, .events = POLLIN},
                            {.fd = chld.watch ? ip__g.sigchld_fd : -1, .events = POLLIN}};
      struct timespec ts = {left / 1000000000, left % 1000000000};
      int pr = ppoll(p, 2, left >= 0 ? &ts : NULL, NULL);
      interrupted = pr < 0 && errno == EINTR;
      sigchld = pr > 0 && (p[1].revents & POLLIN);
      uint64_t v;
      ssize_t r = read(w->efd, &v, sizeof v);
      (void)r;
      pthread_mutex_lock(&ip__g.lock);
      w->armed = false;
    }
    if (!interruptible || !(interrupted || (sigchld && chld.watch))) continue;
    pthread_mutex_unlock(&ip__g.lock);
    if (sigchld && chld.watch && chld_take(&chld)) interrupted = true;
    /* A handler ran. What completed meanwhile still counts: take it in before judging. */
    if (interrupted && driving) ip__supervise_once(0, NULL);
    pthread_mutex_lock(&ip__g.lock);
    if (interrupted) {
      if (!done(ctx)) rc = IP_EINTR;
      break;
    }
  }
  if (driving) stop_driving_locked();
  pthread_mutex_unlock(&ip__g.lock);
  chld_end(&chld);
  return rc;
}
