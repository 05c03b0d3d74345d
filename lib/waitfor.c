/* ip_waitfor_step (ip_waitfor_next is its first form): walking a list of futures in completion
 * order, as a step function that blocks instead of polling. The rules, in the order they are
 * tried at each step:
 *   1. a completed future in the list is handed back (the earliest completion first);
 *   2. with a factor, fewer than `cf` in the list, and the last ask not declined: ask;
 *   3. an empty list ends the loop;
 *   4. otherwise sleep until one of the list's futures completes.
 * An ask is declined when the list did not grow by the next step; that holds off further
 * asks until something completes, which is what ends the loop on an empty list.
 * Rule 1 costs O(1): completions queue up on their list as they happen (list.c). */
#include "internal.h"

enum { ASKED = 1u, DECLINED = 2u };

static bool any_done(void *l) {
  ip__list_adopt_locked(l);
  return ((ip_list *)l)->done_head != NULL;
}

/* The earliest completion of l, taken off the list; NULL when none. */
static ip_future *take_done(ip_list *l) {
  pthread_mutex_lock(&ip__g.lock);
  ip__list_adopt_locked(l);
  ip_future *f = l->done_head;
  size_t slot = f ? f->slot : 0;
  if (f) ip__list_detach_locked(f);
  pthread_mutex_unlock(&ip__g.lock);
  if (f) ip__list_vacate(l, slot);
  return f;
}

int ip_waitfor_step(ip_waitfor *w, ip_list *in_flight, int concurrency_factor, int timeout_ms,
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
    ip_future *f = take_done(in_flight);
    if (f) {
      *out = f;
      w->ip__flags &= ~DECLINED;
      return IP_WAITFOR_FUTURE;
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
      return IP_WAITFOR_ASK;
    }
    if (len == 0) return IP_WAITFOR_END;
    int rc = ip__wait(any_done, in_flight, timeout_ms, true);
    if (rc < 0) return rc;
  }
}

int ip_waitfor_next(ip_waitfor *w, ip_list *in_flight, int concurrency_factor, int timeout_ms,
                    ip_future **out) {
  int rc = ip_waitfor_step(w, in_flight, concurrency_factor, timeout_ms, out);
  return rc == IP_WAITFOR_ASK ? 1 : rc;
}
