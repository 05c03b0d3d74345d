/* The process-wide state, its one-time set-up, and what happens to it across fork(). */
#include "internal.h"
#include <execinfo.h>
#include <stdlib.h>
#include <unistd.h>

struct ip__global ip__g = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .epfd = -1,
    .wake_fd = -1,
    .ready_fd = -1,
    .lifeline = {-1, -1},
};

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void at_prepare(void) { pthread_mutex_lock(&ip__g.lock); }
static void at_parent(void) { pthread_mutex_unlock(&ip__g.lock); }

/* In a new child (ours or the host's) the supervisor thread does not exist and every call in
 * flight belongs to the parent. Those futures complete here as canceled, so nothing in the
 * child waits on them forever, and the child drops every descriptor the parent's library
 * holds: a child must not keep another call's channel, or the parent's lifeline, open. */
static void at_child(void) {
  pthread_mutex_init(&ip__g.lock, NULL);
  pthread_cond_init(&ip__g.cond, NULL);
  for (ip_future *f = ip__g.inflight, *next; f; f = next) {
    next = f->next;
    ip__close(&f->sock);
    ip__close(&f->pidfd);
    ip__close(&f->reaper_wfd);
    ip__close(&f->rx.memfd);
    if (f != ip__forking) ip__close(&f->child_sock); /* ip_call's child keeps its own end */
    ip__orphan(f);
  }
  ip__g.inflight = NULL;
  ip__g.n_inflight = ip__g.n_timed = 0;
  for (struct ip__waiter *w = ip__g.waiters; w; w = w->next) ip__close(&w->efd);
  ip__g.waiters = NULL;
  ip__waiter_forget();
  ip__close(&ip__g.epfd);
  ip__close(&ip__g.wake_fd);
  ip__close(&ip__g.ready_fd);
  ip__close(&ip__g.lifeline[1]);
  /* ip_call's own child still needs the read end to arm its lifeline; it closes it. */
  if (!ip__forking) ip__close(&ip__g.lifeline[0]);
  else ip__g.lifeline[0] = -1;
  ip__g.started = false;
  ip__g.stopping = false;
  ip__g.owner = getpid();
}

static void init_once(void) {
  pthread_atfork(at_prepare, at_parent, at_child);
  /* backtrace() loads libgcc_s on first use; do it here, not in a child's signal handler. */
  void *a[2];
  backtrace(a, 2);
}

void ip__init(void) { pthread_once(&once, init_once); }

__attribute__((destructor)) static void ip__fini(void) {
  ip__supervisor_shutdown();
  pthread_mutex_lock(&ip__g.lock);
  ip__handles_reset();
  ip__serializers_reset();
  pthread_mutex_unlock(&ip__g.lock);
}
