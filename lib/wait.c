/* Blocking without polling. Each thread that waits owns an eventfd (its waiter); a completion
 * writes to the eventfds of the waiters that are armed, and to the ready fd. Waiting is a
 * ppoll() on that one descriptor, so it costs no CPU and a host signal handler interrupts it
 * (ppoll is never restarted), which is how IP_EINTR reaches the caller. */
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

void ip__wake_waiters_locked(void) {
  uint64_t one = 1;
  for (struct ip__waiter *w = ip__g.waiters; w; w = w->next) {
    if (w->armed) {
      w->armed = false;
      ssize_t r = write(w->efd, &one, sizeof one);
      (void)r;
    }
  }
  if (ip__g.ready_fd >= 0) {
    ssize_t r = write(ip__g.ready_fd, &one, sizeof one);
    (void)r;
  }
}

int ip__wait(ip__pred done, void *ctx, int timeout_ms, bool interruptible) {
  struct ip__waiter *w = interruptible ? waiter() : NULL;
  int64_t deadline = timeout_ms >= 0 ? ip__now_ns() + (int64_t)timeout_ms * 1000000 : 0;
  int rc = 0;
  pthread_mutex_lock(&ip__g.lock);
  while (!done(ctx)) {
    int64_t left = timeout_ms >= 0 ? deadline - ip__now_ns() : -1;
    if (timeout_ms >= 0 && left <= 0) {
      rc = IP_ETIMEDOUT;
      break;
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
  pthread_mutex_unlock(&ip__g.lock);
  return rc;
}

int ip_ready_fd(void) {
  ip__init();
  pthread_mutex_lock(&ip__g.lock);
  if (ip__g.ready_fd < 0) ip__g.ready_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int fd = ip__g.ready_fd >= 0 ? ip__g.ready_fd : ip__errno_code(errno);
  pthread_mutex_unlock(&ip__g.lock);
  return fd;
}
