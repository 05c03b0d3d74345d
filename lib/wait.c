/* Blocking without polling. Without a supervisor thread, the first thread to wait drives the
 * supervisor loop itself (an epoll_wait); any other thread that waits meanwhile sleeps on its
 * own eventfd (its waiter), which a completion writes to when armed, and takes the driver's
 * seat when the driver leaves. With a supervisor thread every waiter sleeps. Either sleep is
 * a single blocking call, so waiting costs no CPU, and a host signal handler interrupts it
 * (epoll_wait and ppoll are never restarted), which is how IP_EINTR reaches the caller. */
#include "internal.h"
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
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
  ip__supervise_once(0);
  pthread_mutex_lock(&ip__g.lock);
  stop_driving_locked();
  pthread_mutex_unlock(&ip__g.lock);
}

int ip__wait(ip__pred done, void *ctx, int timeout_ms, bool interruptible) {
  if (timeout_ms == 0) ip__progress(); /* a poll: the loop below would not drive at all */
  struct ip__waiter *w = interruptible ? waiter() : NULL;
  int64_t deadline = timeout_ms >= 0 ? ip__now_ns() + (int64_t)timeout_ms * 1000000 : 0;
  int rc = 0;
  bool driving = false;
  pthread_mutex_lock(&ip__g.lock);
  while (!done(ctx)) {
    int64_t left = timeout_ms >= 0 ? deadline - ip__now_ns() : -1;
    if (timeout_ms >= 0 && left <= 0) {
      rc = IP_ETIMEDOUT;
      break;
    }
    if (driving && ip__g.started) { /* a timed call or ip_ready_fd started the thread */
      driving = false;
      stop_driving_locked();
    }
    if (may_drive_locked(driving)) {
      ip__g.driving = driving = true;
      pthread_mutex_unlock(&ip__g.lock);
      int64_t ms = left < 0 ? -1 : (left + 999999) / 1000000;
      int n = ip__supervise_once(ms > INT32_MAX ? INT32_MAX : (int)ms);
      int e = errno;
      pthread_mutex_lock(&ip__g.lock);
      if (n < 0 && e == EINTR && interruptible) {
        rc = IP_EINTR;
        break;
      }
      continue;
    }
    if (!w) {
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
    }
    w->armed = true;
    pthread_mutex_unlock(&ip__g.lock);
    struct pollfd p = {.fd = w->efd, .events = POLLIN};
    struct timespec ts = {left / 1000000000, left % 1000000000};
    int pr = ppoll(&p, 1, left >= 0 ? &ts : NULL, NULL);
    int e = errno;
    uint64_t v;
    ssize_t r = read(w->efd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&ip__g.lock);
    w->armed = false;
    if (pr < 0 && e == EINTR) {
      rc = IP_EINTR;
      break;
    }
  }
  if (driving) stop_driving_locked();
  pthread_mutex_unlock(&ip__g.lock);
  return rc;
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
