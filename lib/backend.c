/* The core's side of a backend's pool (see "Pool backends" in the header): completing its
 * calls from the backend's thread. The pool itself is in pool.c, canceling in future.c. */
#include "internal.h"
#include <stdlib.h>

int ip_future_finish(ip_future *f, const ip_error *e, void *result, size_t len) {
  /* Not through f->pool: a local pool's future may outlive its pool. */
  if (!f || !e || !f->backend || (e->code != 0 && result)) {
    free(result);
    return IP_EINVAL;
  }
  pthread_mutex_lock(&ip__g.lock);
  if (atomic_load_explicit(&f->state, memory_order_relaxed) == IP__DONE) {
    pthread_mutex_unlock(&ip__g.lock);
    free(result);
    return IP_EALREADY;
  }
  f->pid = e->pid;
  f->rusage = e->rusage;
  if (e->code == 0) {
    f->rx.payload = result;
    f->rx.len = f->rx.cap = len;
    f->status = 0;
    f->err.pid = e->pid;
    ip__complete_locked(f);
  } else {
    ip__fail_as_locked(f, e);
  }
  /* A thread that drives the supervisor sleeps in epoll_wait, not on its waiter: wake it. */
  bool kick = ip__g.driving;
  pthread_mutex_unlock(&ip__g.lock);
  if (kick) ip__supervisor_kick();
  return 0;
}
