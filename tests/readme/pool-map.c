/* What the README's map-over-a-pool fragment uses: items, a pool and its task. */
#include <inparallel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *shout(void *arg) {
  const ip_bytes *in = arg;
  ip_bytes *out = ip_bytes_copy(in->data, in->len);
  for (size_t i = 0; i < out->len; i++)
    ((char *)out->data)[i] = (char)(((char *)out->data)[i] & ~0x20);
  return out;
}

int main(void) {
  const char *items[] = {"alpha", "bravo", "charlie", "delta", "echo", "foxtrot"};
  size_t n = sizeof items / sizeof *items;
  ip_task *t = ip_task_new(shout, NULL);
  ip_pool *pool = ip_pool_new(2);
  if (!t || !pool) return 1;
  /* README BLOCK */
  ip_pool_free(pool);
  ip_task_free(t);
  return 0;
}
