/* libFuzzer target: the msgpack serializer's decoder (what the parent runs on a child's bytes)
 * and its child-side check, which must agree on what is exactly one object. */
#include "config.h"
#include <inparallel/msgpack.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c) \
  do {           \
    if (!(c)) __builtin_trap(); \
  } while (0)

/* With MSGPACK_C_SRC, run.sh compiles msgpack-c's sources with malloc/realloc renamed to
 * these: allocations above MSGPACK_ALLOC_CAP_MB (environment; unset = no cap) fail as they
 * would under RLIMIT_AS, so a run can go on past the huge-count finding (see run.sh). */
void *fuzz_capped_malloc(size_t n);
void *fuzz_capped_realloc(void *p, size_t n);
static size_t cap(void) {
  static size_t c = (size_t)-1;
  if (c == (size_t)-1) {
    const char *e = getenv("MSGPACK_ALLOC_CAP_MB");
    c = e ? (size_t)strtoull(e, NULL, 10) << 20 : 0;
  }
  return c;
}
void *fuzz_capped_malloc(size_t n) { return cap() && n > cap() ? NULL : malloc(n); }
void *fuzz_capped_realloc(void *p, size_t n) {
  return cap() && n > cap() ? NULL : realloc(p, n);
}

static const char *lo, *hi; /* the input: str/bin/ext bytes must lie inside it */

static unsigned walk(const msgpack_object *o, int depth) {
  CHECK(depth <= 32);
  unsigned sum = o->type;
  const char *p = NULL;
  size_t n = 0;
  switch (o->type) {
  case MSGPACK_OBJECT_STR: p = o->via.str.ptr, n = o->via.str.size; break;
  case MSGPACK_OBJECT_BIN: p = o->via.bin.ptr, n = o->via.bin.size; break;
  case MSGPACK_OBJECT_EXT: p = o->via.ext.ptr, n = o->via.ext.size; break;
  case MSGPACK_OBJECT_ARRAY:
    for (uint32_t i = 0; i < o->via.array.size; i++) sum += walk(&o->via.array.ptr[i], depth + 1);
    break;
  case MSGPACK_OBJECT_MAP:
    for (uint32_t i = 0; i < o->via.map.size; i++) {
      sum += walk(&o->via.map.ptr[i].key, depth + 1);
      sum += walk(&o->via.map.ptr[i].val, depth + 1);
    }
    break;
  default:
    break;
  }
  if (n) {
    CHECK(p >= lo && p + n <= hi);
    for (size_t i = 0; i < n; i++) sum += (unsigned char)p[i];
  }
  return sum;
}

static int sink(void *ctx, const void *buf, size_t len) {
  size_t *total = ctx;
  *total += len;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const ip_serializer *s = ip_serializer_msgpack();
  lo = (const char *)data, hi = lo + size;
  void *v = NULL;
  int rc = s->decode(s, size ? data : NULL, size, &v);
  CHECK(rc == 0 || rc == IP_EDECODE || rc == IP_ENOMEM);
  if (rc == 0) {
    CHECK(v != NULL);
    walk(v, 0);
    /* The object packs again, and that decodes too. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    CHECK(msgpack_pack_object(&pk, *(const msgpack_object *)v) == 0);
    void *v2 = NULL;
    CHECK(s->decode(s, sb.data, sb.size, &v2) == 0);
    s->free_value(s, v2);
    msgpack_sbuffer_destroy(&sb);
    s->free_value(s, v);
  }
  /* The child-side check accepts exactly what the parent decodes, and writes it unchanged. */
  if (size) {
    msgpack_sbuffer in = {size, (char *)data, size};
    size_t total = 0;
    int erc = s->encode(s, &in, sink, &total);
    if (rc != IP_ENOMEM) CHECK((erc == 0) == (rc == 0));
    if (erc == 0) CHECK(total == size);
  }
  return 0;
}
