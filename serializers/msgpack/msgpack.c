/* The msgpack serializer: msgpack_sbuffer in the child, msgpack_object in the parent. */
#include "config.h"
#include <inparallel/msgpack.h>
#include <stdlib.h>

/* What the parent's value points to: the object first, so the value pointer is the box. */
struct box {
  msgpack_object obj;
  msgpack_zone zone;
};

static uint64_t be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = v << 8 | p[i];
  return v;
}

/* msgpack-c's unpacker holds at most this many open containers (MSGPACK_EMBED_STACK_SIZE). */
#define MP_MAX_DEPTH 32

/* What the structural walk found. */
enum walk {
  WALK_ONE,       /* exactly one well-formed object */
  WALK_TRAILING,  /* one object, then more bytes */
  WALK_TRUNCATED, /* the bytes end inside the object (or declare more elements than they hold) */
  WALK_DEEP,      /* containers nested deeper than msgpack-c unpacks */
  WALK_BAD_BYTE   /* 0xc1, which msgpack never uses */
};

/* msgpack-c allocates a container's elements from its declared count before reading any,
 * so five hostile bytes could make it reserve gigabytes. Every element takes at least one
 * byte: walk the encoding once, without allocating, and refuse bytes that declare more
 * elements than they could hold, that nest deeper than msgpack-c can unpack, or that are not
 * exactly one object. *at is where the walk stopped: the end of the object for WALK_ONE and
 * WALK_TRAILING, the offending byte for WALK_BAD_BYTE. */
static enum walk walk(const unsigned char *p, size_t len, size_t *at) {
  size_t i = 0;
  uint64_t left[MP_MAX_DEPTH + 1]; /* objects still to read per open container; [0]: the top */
  int depth = 0;                   /* containers open */
  uint64_t pending = 1;            /* objects still to read in all */
  left[0] = 1;
  *at = 0;
  while (pending) {
    while (left[depth] == 0) depth--; /* a finished container closes */
    if (i >= len) return WALK_TRUNCATED;
    left[depth]--;
    pending--;
    unsigned b = p[i++];
    uint64_t skip = 0, add = 0;
    int w = 0; /* width of a length field */
    bool container = false;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
    } else if (b <= 0x8f) {
      add = 2u * (b & 0x0f);
      container = true;
    } else if (b <= 0x9f) {
      add = b & 0x0f;
      container = true;
    } else if (b <= 0xbf) {
      skip = b & 0x1f;
    } else if (b >= 0xca && b <= 0xd3) {
      static const unsigned char fixed[] = {4, 8, 1, 2, 4, 8, 1, 2, 4, 8};
      skip = fixed[b - 0xca];
    } else if (b >= 0xd4 && b <= 0xd8) {
      skip = 1u + (1u << (b - 0xd4)); /* fixext: type byte + 1..16 */
    } else {
      switch (b) {
      case 0xc4: case 0xd9: w = 1; break; /* bin8, str8 */
      case 0xc5: case 0xda: w = 2; break;
      case 0xc6: case 0xdb: w = 4; break;
      case 0xc7: w = 1; skip = 1; break; /* ext: + type byte */
      case 0xc8: w = 2; skip = 1; break;
      case 0xc9: w = 4; skip = 1; break;
      case 0xdc: case 0xdd: case 0xde: case 0xdf: {
        int cw = b & 1 ? 4 : 2;
        if ((size_t)cw > len - i) return WALK_TRUNCATED;
        add = be(p + i, cw) * (b >= 0xde ? 2 : 1);
        i += (size_t)cw;
        container = true;
        break;
      }
      default: /* 0xc1 is never used */
        *at = i - 1;
        return WALK_BAD_BYTE;
      }
      if (w) {
        if ((size_t)w > len - i) return WALK_TRUNCATED;
        skip += be(p + i, w);
        i += (size_t)w;
      }
    }
    if (skip > len - i) return WALK_TRUNCATED;
    i += (size_t)skip;
    if (add > len - i || pending + add > len - i) return WALK_TRUNCATED;
    /* msgpack-c refuses any container, even an empty one, once this many are open. */
    if (container && depth >= MP_MAX_DEPTH) return WALK_DEEP;
    if (add) left[++depth] = add;
    pending += add;
  }
  *at = i;
  return i == len ? WALK_ONE : WALK_TRAILING;
}

static bool plausible(const unsigned char *p, size_t len) {
  size_t at;
  return walk(p, len, &at) == WALK_ONE;
}

static int mp_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  const msgpack_sbuffer *sb = value;
  if (!sb) return ip_encode_error(IP_EENCODE, "the task returned NULL, not a msgpack_sbuffer");
  if (!sb->data || sb->size == 0)
    return ip_encode_error(IP_EENCODE, "the msgpack_sbuffer is empty");
  /* Catch a buffer with a half-packed or a second object here, in the child, where the
   * mistake is made, rather than as a decode failure in the parent. The structural walk is
   * enough for that, and allocates nothing: a full unpack here cost as much as the decode. */
  size_t at;
  switch (walk((const unsigned char *)sb->data, sb->size, &at)) {
  case WALK_ONE:
    return w(ctx, sb->data, sb->size);
  case WALK_TRAILING:
    return ip_encode_error(IP_EENCODE,
                           "the msgpack_sbuffer holds more than one object (%zu trailing bytes "
                           "after the first object's %zu)", sb->size - at, at);
  case WALK_TRUNCATED:
    return ip_encode_error(IP_EENCODE,
                           "the msgpack_sbuffer holds a truncated object (its %zu bytes end "
                           "before the object does)", sb->size);
  case WALK_DEEP:
    return ip_encode_error(IP_EENCODE,
                           "the msgpack_sbuffer holds nesting deeper than %d levels (the most "
                           "msgpack-c unpacks)", MP_MAX_DEPTH);
  default:
    return ip_encode_error(IP_EENCODE,
                           "the msgpack_sbuffer holds the byte 0xc1 at offset %zu, which "
                           "msgpack never uses", at);
  }
}

/* The zone's first chunk: every object takes at least one byte of the encoding and 24 bytes
 * of zone (a map pair 48), so this holds most values whole. A small result then gets a small
 * chunk from memory the parent already uses, not msgpack-c's default 8 KiB per decode, each a
 * fresh page written after the fork (a copy-on-write fault while that child lives) and, being
 * at the heap's top, a brk() up and down per call. Larger values grow the zone as needed. */
static size_t zone_chunk(size_t len) {
  size_t n = 64 + 24 * len;
  return n < 8192 ? n : 8192;
}

static int mp_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  if (!plausible((const unsigned char *)buf, len)) return IP_EDECODE;
  struct box *b = malloc(sizeof *b);
  if (!b) return IP_ENOMEM;
  if (!msgpack_zone_init(&b->zone, zone_chunk(len))) {
    free(b);
    return IP_ENOMEM;
  }
  size_t off = 0;
  msgpack_unpack_return r = msgpack_unpack(buf, len, &off, &b->zone, &b->obj);
  if (r != MSGPACK_UNPACK_SUCCESS || off != len) {
    msgpack_zone_destroy(&b->zone);
    free(b);
    return r == MSGPACK_UNPACK_NOMEM_ERROR ? IP_ENOMEM : IP_EDECODE;
  }
  *value = b;
  return 0;
}

static void mp_free(const ip_serializer *s, void *value) {
  struct box *b = value;
  msgpack_zone_destroy(&b->zone);
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
