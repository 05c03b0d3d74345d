/* ip_waitfor_next: the seed's waitfor generator as a step function, blocking instead of
 * polling. The rules, in the order they are tried at each step:
 *   1. a completed future in the list is handed back (the earliest completion first);
 *   2. with a factor, fewer than `cf` in the list, and the last ask not declined: ask;
 *   3. an empty list ends the loop;
 *   4. otherwise sleep until one of the list's futures completes.
 * An ask is declined when the list did not grow by the next step; that holds off further
 * asks until something completes, which is what ends the loop on an empty list. */
#include "internal.h"

enum { ASKED = 1u, DECLINED = 2u };

/* The done future that completed first, or -1. Under the lock, so done_seq is stable. */
static long first_done_locked(const ip_list *l) {
  long best = -1;
  uint64_t seq = UINT64_MAX;
  for (size_t i = 0, n = ip_list_len(l); i < n; i++) {
    ip_future *f = ip_list_at(l, i);
    ip__adopt_locked(f);
    if (atomic_load_explicit(&f->state, memory_order_acquire) == IP__DONE && f->done_seq < seq) {
      seq = f->done_seq;
      best = (long)i;
    }
  }
  return best;
}

static bool any_done(void *l) { return first_done_locked(l) >= 0; }

int ip_waitfor_next(ip_waitfor *w, ip_list *in_flight, int concurrency_factor, int timeout_ms,
                    ip_future **out) {
  if (!w || !in_flight || !out || concurrency_factor < 0) return IP_EINVAL;
  *out = NULL;
  size_t len = ip_list_len(in_flight);
  if (w->ip__flags & ASKED) {
    w->ip__flags &= ~ASKED;
    if (len <= w->ip__ask_len) w->ip__flags |= DECLINED;
  }
  bool looked = false;
  for (;;) {
    pthread_mutex_lock(&ip__g.lock);
    long i = first_done_locked(in_flight);
    pthread_mutex_unlock(&ip__g.lock);
    if (i >= 0) {
      *out = ip_list_remove(in_flight, (size_t)i);
      w->ip__flags &= ~DECLINED;
      return 1;
    }
    if (concurrency_factor && len < (size_t)concurrency_factor && !(w->ip__flags & DECLINED)) {
      /* Rule 1 must see what already ended before asking, even when nobody drives (a wait
       * below drives by itself, so only an ask needs this look). */
      if (len && !looked) {
        looked = true;
        ip__progress();
        continue;
      }
      w->ip__flags |= ASKED;
      w->ip__ask_len = len;
      return 1;
    }
    if (len == 0) return 0;
    int rc = ip__wait(any_done, in_flight, timeout_ms, true);
    if (rc < 0) return rc;
  }
}
