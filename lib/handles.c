/* A set of the live task and list handles, so that freeing one twice is caught instead of
 * corrupting the heap. Open addressing with tombstones; callers hold ip__g.lock. */
#include "internal.h"
#include <stdlib.h>

#define TOMB ((const void *)1)

static const void **slots;
static size_t cap, used; /* used counts live entries and tombstones */

static size_t hash(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= UINT64_C(0xff51afd7ed558ccd);
  x ^= x >> 33;
  return (size_t)x;
}

static int grow(void) {
  size_t ncap = cap ? cap * 2 : 64;
  const void **n = calloc(ncap, sizeof *n);
  if (!n) return IP_ENOMEM;
  size_t live = 0;
  for (size_t i = 0; i < cap; i++) {
    if (!slots[i] || slots[i] == TOMB) continue;
    size_t j = hash(slots[i]) & (ncap - 1);
    while (n[j]) j = (j + 1) & (ncap - 1);
    n[j] = slots[i];
    live++;
  }
  free(slots);
  slots = n;
  cap = ncap;
  used = live;
  return 0;
}

int ip__handle_add_locked(const void *p) {
  if ((used + 1) * 2 > cap && grow() < 0) return IP_ENOMEM;
  size_t j = hash(p) & (cap - 1);
  while (slots[j] && slots[j] != TOMB) j = (j + 1) & (cap - 1);
  if (!slots[j]) used++;
  slots[j] = p;
  return 0;
}

bool ip__handle_del_locked(const void *p) {
  if (!cap) return false;
  for (size_t j = hash(p) & (cap - 1); slots[j]; j = (j + 1) & (cap - 1)) {
    if (slots[j] == p) {
      slots[j] = TOMB;
      return true;
    }
  }
  return false;
}

void ip__handles_reset(void) {
  free(slots);
  slots = NULL;
  cap = used = 0;
}
