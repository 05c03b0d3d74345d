/* The msgpack serializer: msgpack_sbuffer in the child, msgpack_object in the parent. */
#include "config.h"
#include <inparallel/msgpack.h>
#include <stdlib.h>

/* What the parent's value points to: the object first, so the value pointer is the box. */
struct box {
  msgpack_object obj;
  msgpack_zone *zone;
};

/* True when buf holds exactly one complete object. */
static int one_object(const char *buf, size_t len, msgpack_unpacked *u) {
  size_t off = 0;
  msgpack_unpack_return r = msgpack_unpack_next(u, buf, len, &off);
  return r == MSGPACK_UNPACK_SUCCESS && off == len;
}

static int mp_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  const msgpack_sbuffer *sb = value;
  if (!sb || !sb->data || sb->size == 0) return IP_EENCODE;
  /* Catch a buffer with a half-packed or a second object here, in the child, where the
   * mistake is made, rather than as a decode failure in the parent. */
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  int ok = one_object(sb->data, sb->size, &u);
  msgpack_unpacked_destroy(&u);
  if (!ok) return IP_EENCODE;
  return w(ctx, sb->data, sb->size);
}

static int mp_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  struct box *b = malloc(sizeof *b);
  if (!b) return IP_ENOMEM;
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  if (!one_object(buf, len, &u)) {
    msgpack_unpacked_destroy(&u);
    free(b);
    return IP_EDECODE;
  }
  b->obj = u.data;
  b->zone = msgpack_unpacked_release_zone(&u);
  *value = b;
  return 0;
}

static void mp_free(const ip_serializer *s, void *value) {
  struct box *b = value;
  if (b->zone) msgpack_zone_free(b->zone);
  free(b);
}

static const ip_serializer mp = {
    .abi = IP_SERIALIZER_ABI,
    .name = "msgpack",
    .encode = mp_encode,
    .decode = mp_decode,
    .free_value = mp_free,
};

const ip_serializer *ip_serializer_msgpack(void) { return &mp; }

__attribute__((constructor)) static void register_msgpack(void) { ip_serializer_register(&mp); }
