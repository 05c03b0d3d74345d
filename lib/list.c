/* ip_list: the caller's array of futures, and the queue of its completed members that makes a
 * waitfor step O(1). */
#include "internal.h"
#include <stdlib.h>
#include <string.h>

ip_list *ip_list_new(void) {
  ip__init();
  ip_list *l = calloc(1, sizeof *l);
  if (!l) {
    errno = ENOMEM;
    return NULL;
  }
  l->gen = ip__g.gen;
  return l;
}

/* Squeezes out the holes waitfor steps left, keeping the order of the rest. */
static void compact(ip_list *l) {
  if (l->used == l->len) return;
  size_t n = 0;
  for (size_t i = 0; i < l->used; i++) {
    ip_future *f = l->items[i];
    if (!f) continue;
    f->slot = n; /* only this list's user writes slots; the supervisor never reads them */
    l->items[n++] = f;
  }
  l->used = n;
}

void ip__list_vacate(ip_list *l, size_t slot) {
  l->items[slot] = NULL;
  l->len--;
  while (l->used && !l->items[l->used - 1]) l->used--;
  if (l->used - l->len > 16 && l->used - l->len > l->len) compact(l);
}

void ip__list_enqueue_locked(ip_future *f) {
  ip_list *l = f->list;
  if (!l || f->queued) return;
  /* From the tail back to the first future that completed before f: a call that just ended
   * goes last at once; only a future pushed long after it completed walks further. */
  ip_future *after = l->done_tail;
  while (after && after->done_seq > f->done_seq) after = after->dprev;
  f->dprev = after;
  f->dnext = after ? after->dnext : l->done_head;
  if (f->dnext) f->dnext->dprev = f;
  else l->done_tail = f;
  if (after) after->dnext = f;
  else l->done_head = f;
  f->queued = true;
}

void ip__list_detach_locked(ip_future *f) {
  ip_list *l = f->list;
  if (!l) return;
  if (f->queued) {
    if (f->dprev) f->dprev->dnext = f->dnext;
    else l->done_head = f->dnext;
    if (f->dnext) f->dnext->dprev = f->dprev;
    else l->done_tail = f->dprev;
    f->dprev = f->dnext = NULL;
    f->queued = false;
  }
  f->list = NULL;
}

void ip__list_adopt_locked(ip_list *l) {
  if (l->gen == ip__g.gen) return;
  l->gen = ip__g.gen;
  l->done_head = l->done_tail = NULL;
  for (size_t i = 0; i < l->used; i++) {
    ip_future *f = l->items[i];
    if (!f) continue;
    f->queued = false;
    ip__adopt_locked(f); /* every one is done in this process, as an orphan if it ran */
    ip__list_enqueue_locked(f);
  }
}

void ip_list_free(ip_list *l) {
  if (!l) return;
  pthread_mutex_lock(&ip__g.lock);
  ip__list_adopt_locked(l);
  for (size_t i = 0; i < l->used; i++)
    if (l->items[i]) ip__list_detach_locked(l->items[i]);
  pthread_mutex_unlock(&ip__g.lock);
  free(l->items);
  free(l);
}

int ip_list_push(ip_list *l, ip_future *f) {
  if (!l || !f) return IP_EINVAL;
  if (l->used == l->cap) {
    compact(l);
    if (l->used == l->cap) {
      size_t ncap = l->cap ? l->cap * 2 : 16;
      ip_future **n = realloc(l->items, ncap * sizeof *n);
      if (!n) return IP_ENOMEM;
      l->items = n;
      l->cap = ncap;
    }
  }
  pthread_mutex_lock(&ip__g.lock);
  ip__list_adopt_locked(l);
  ip__adopt_locked(f);
  if (f->list == l) {
    pthread_mutex_unlock(&ip__g.lock);
    return IP_EALREADY;
  }
  ip_list *from = f->list; /* a future moves: it leaves the list it was in */
  size_t from_slot = f->slot;
  if (from) {
    ip__list_adopt_locked(from);
    ip__list_detach_locked(f);
  }
  f->list = l;
  f->slot = l->used;
  if (atomic_load_explicit(&f->state, memory_order_relaxed) == IP__DONE)
    ip__list_enqueue_locked(f);
  pthread_mutex_unlock(&ip__g.lock);
  if (from) ip__list_vacate(from, from_slot);
  l->items[l->used++] = f;
  l->len++;
  return 0;
}

size_t ip_list_len(const ip_list *l) { return l ? l->len : 0; }

ip_future *ip_list_at(const ip_list *l, size_t i) {
  if (!l || i >= l->len) return NULL;
  compact((ip_list *)l); /* the caller's own list: reading it by index is its thread's */
  return l->items[i];
}

ip_future *ip_list_remove(ip_list *l, size_t i) {
  if (!l || i >= l->len) return NULL;
  compact(l);
  ip_future *f = l->items[i];
  pthread_mutex_lock(&ip__g.lock);
  ip__list_detach_locked(f);
  pthread_mutex_unlock(&ip__g.lock);
  memmove(l->items + i, l->items + i + 1, (l->used - i - 1) * sizeof *l->items);
  l->used--;
  l->len--;
  for (size_t j = i; j < l->used; j++) l->items[j]->slot = j;
  return f;
}
