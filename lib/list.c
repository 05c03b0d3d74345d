/* ip_list: the caller's growable array of futures for ip_waitfor_next. */
#include "internal.h"
#include <stdlib.h>
#include <string.h>

struct ip_list {
  ip_future **items;
  size_t len, cap;
};

ip_list *ip_list_new(void) {
  ip__init();
  ip_list *l = calloc(1, sizeof *l);
  if (!l) goto nomem;
  pthread_mutex_lock(&ip__g.lock);
  int rc = ip__handle_add_locked(l);
  pthread_mutex_unlock(&ip__g.lock);
  if (rc == 0) return l;
  free(l);
nomem:
  errno = ENOMEM;
  return NULL;
}

void ip_list_free(ip_list *l) {
  if (!l) return;
  pthread_mutex_lock(&ip__g.lock);
  bool live = ip__handle_del_locked(l);
  pthread_mutex_unlock(&ip__g.lock);
  if (!live) return;
  free(l->items);
  free(l);
}

int ip_list_push(ip_list *l, ip_future *f) {
  if (!l || !f) return IP_EINVAL;
  if (l->len == l->cap) {
    size_t ncap = l->cap ? l->cap * 2 : 16;
    ip_future **n = realloc(l->items, ncap * sizeof *n);
    if (!n) return IP_ENOMEM;
    l->items = n;
    l->cap = ncap;
  }
  l->items[l->len++] = f;
  return 0;
}

size_t ip_list_len(const ip_list *l) { return l ? l->len : 0; }

ip_future *ip_list_at(const ip_list *l, size_t i) {
  return l && i < l->len ? l->items[i] : NULL;
}

ip_future *ip_list_remove(ip_list *l, size_t i) {
  if (!l || i >= l->len) return NULL;
  ip_future *f = l->items[i];
  memmove(l->items + i, l->items + i + 1, (l->len - i - 1) * sizeof *l->items);
  l->len--;
  return f;
}
