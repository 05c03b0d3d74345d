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

static void at_prepare(void) {
  if (!ip__fork_keeps_lock) pthread_mutex_lock(&ip__g.lock); /* else: held by this thread */
  ip__g.forking = ip__forking; /* read here, in the parent: the child reads no TLS */
}
static void at_parent(void) {
  ip__g.forking = NULL;
  if (!ip__fork_keeps_lock) pthread_mutex_unlock(&ip__g.lock);
}

static void close_fd(int fd) {
  if (fd >= 0) close(fd);
}

/* In a new child (ours or the host's) the supervisor thread does not exist and every call in
 * flight belongs to the parent. The child drops every descriptor the parent's library holds:
 * a child must not keep another call's channel, or the parent's lifeline, open. Every task
 * call runs this, so it writes no page but ip__g's: the parent's futures and waiters are
 * only read here, and become orphans on first use (ip__fresh, waiter()). */
static void at_child(void) {
  ip_future *mine = ip__g.forking;
  /* Assignments, not pthread_*_init: no libc code page to fault in. The prepare handler's
   * lock and any waiters of the parent's threads are meaningless here. */
  ip__g.lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
  ip__g.cond = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
  for (ip_future *f = ip__g.inflight; f; f = f->next) {
    close_fd(f->sock);
    close_fd(f->pidfd);
    close_fd(f->reaper_wfd);
    close_fd(f->rx.memfd);
    if (f != mine) close_fd(f->child_sock); /* ip_call's child keeps its own end */
  }
  for (struct ip__waiter *w = ip__g.waiters; w; w = w->next) close_fd(w->efd);
  ip__g.gen++;
  ip__g.forking = NULL;
  ip__g.parent_inflight = ip__g.inflight;
  ip__g.parent_waiters = ip__g.waiters;
  ip__g.inflight = NULL;
  ip__g.n_inflight = ip__g.n_timed = 0;
  ip__g.waiters = NULL;
  ip__close(&ip__g.epfd);
  ip__close(&ip__g.wake_fd);
  ip__close(&ip__g.ready_fd);
  ip__close(&ip__g.lifeline[1]);
  /* ip_call's own child still needs the read end to arm its lifeline; it closes it. */
  if (!mine) ip__close(&ip__g.lifeline[0]);
  else ip__g.lifeline[0] = -1;
  ip__g.started = false;
  ip__g.driving = false;
  ip__g.stopping = false;
  ip__g.owner = 0; /* getpid() when the supervisor starts */
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
