/* The serializer registry: names to vtables, for bindings and configuration. */
#include "internal.h"
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 63

static const ip_serializer **reg;
static size_t reg_len, reg_cap;

uint32_t ip__ser_id(const char *name) {
  return ip__fnv1a(name, strlen(name), IP__FNV_SEED);
}

int ip__serializer_check(const ip_serializer *s) {
  if (!s || s->abi != IP_SERIALIZER_ABI || !s->encode || !s->decode || !s->name)
    return IP_EINVAL;
  size_t n = strnlen(s->name, NAME_MAX_LEN + 1);
  return n == 0 || n > NAME_MAX_LEN ? IP_EINVAL : 0;
}

static const ip_serializer *find_locked(const char *name) {
  if (strcmp(name, "raw") == 0) return ip_serializer_raw();
  for (size_t i = 0; i < reg_len; i++)
    if (strcmp(reg[i]->name, name) == 0) return reg[i];
  return NULL;
}

int ip_serializer_register(const ip_serializer *s) {
  if (ip__serializer_check(s) < 0) return IP_EINVAL;
  ip__init();
  int rc = 0;
  pthread_mutex_lock(&ip__g.lock);
  const ip_serializer *old = find_locked(s->name);
  if (old) {
    rc = old == s ? 0 : IP_EALREADY;
  } else if (reg_len == reg_cap) {
    size_t ncap = reg_cap ? reg_cap * 2 : 8;
    const ip_serializer **n = realloc(reg, ncap * sizeof *n);
    if (!n) rc = IP_ENOMEM;
    else reg = n, reg_cap = ncap;
  }
  if (!old && rc == 0) reg[reg_len++] = s;
  pthread_mutex_unlock(&ip__g.lock);
  return rc;
}

const ip_serializer *ip_serializer_lookup(const char *name) {
  if (!name) return NULL;
  ip__init();
  pthread_mutex_lock(&ip__g.lock);
  const ip_serializer *s = find_locked(name);
  pthread_mutex_unlock(&ip__g.lock);
  return s;
}

void ip_serializer_free(ip_serializer *s) {
  if (!s || !s->destroy) return;
  pthread_mutex_lock(&ip__g.lock);
  for (size_t i = 0; i < reg_len; i++) {
    if (reg[i] == s) {
      reg[i] = reg[--reg_len];
      break;
    }
  }
  pthread_mutex_unlock(&ip__g.lock);
  s->destroy(s);
}

void ip__serializers_reset(void) {
  free(reg);
  reg = NULL;
  reg_len = reg_cap = 0;
}
