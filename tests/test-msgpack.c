/* The msgpack serializer: every msgpack type travels from a child to the parent unchanged,
 * nesting up to msgpack-c's limit, large values, misuse in the child (IP_EENCODE), untrusted
 * bytes in the parent (IP_EDECODE), registration, and nothing left behind. */
#define _GNU_SOURCE
#include "helpers.h"
#include <inparallel/msgpack.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>

/* ---- plumbing ------------------------------------------------------------------------------ */

/* What a child packs: one builder per test. The builder is passed to the child through arg
 * inside a struct (a function pointer does not convert to void *). */
typedef void (*build_fn)(msgpack_packer *pk);
struct builder {
  build_fn build;
};

static void *pack_in_child(void *arg) {
  const struct builder *b = arg;
  msgpack_sbuffer *sb = msgpack_sbuffer_new();
  if (!sb) return NULL;
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  b->build(&pk);
  return sb; /* the child exits after encoding: no need to free */
}

/* Runs `build` in a child and returns the future (owned by the caller). */
static ip_future *call_build(ip_task **tp, build_fn build) {
  static struct builder b; /* the child reads its own copy */
  b.build = build;
  ip_task *t = ip_task_new(pack_in_child, ip_serializer_msgpack());
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, &b);
  cr_assert_not_null(f);
  *tp = t;
  return f;
}

static const msgpack_object *value_of(ip_future *f) {
  const msgpack_object *o = ip_future_value(f);
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(o, "no value: %s %s", e ? e->kind : "?", e ? e->message : "(no error)");
  cr_assert_eq(ip_future_status(f), 0);
  return o;
}

/* The same bytes unpacked here, for msgpack_object_equal. The caller destroys `u`. */
static msgpack_object local_object(build_fn build, msgpack_unpacked *u, msgpack_sbuffer *sb) {
  msgpack_sbuffer_init(sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  build(&pk);
  msgpack_unpacked_init(u);
  size_t off = 0;
  cr_assert_eq(msgpack_unpack_next(u, sb->data, sb->size, &off), MSGPACK_UNPACK_SUCCESS);
  cr_assert_eq(off, sb->size);
  return u->data;
}

/* Calls build in a child, checks the parent's object equals a local unpack of the same
 * bytes, then frees everything and checks no child is left. */
static void round_trip_equal(build_fn build) {
  ip_task *t;
  ip_future *f = call_build(&t, build);
  const msgpack_object *o = value_of(f);
  msgpack_unpacked u;
  msgpack_sbuffer sb;
  msgpack_object want = local_object(build, &u, &sb);
  cr_assert(msgpack_object_equal(*o, want), "the parent's object differs from the child's");
  msgpack_unpacked_destroy(&u);
  msgpack_sbuffer_destroy(&sb);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

static void expect_code(build_fn build, int code) {
  ip_task *t;
  ip_future *f = call_build(&t, build);
  cr_assert_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, code, "want %s, got %s: %s", ip_err_name(code), ip_err_name(e->code),
               e->message);
  cr_assert_eq(ip_future_status(f), code);
  cr_assert_str_eq(e->kind, ip_err_name(code));
  cr_assert_neq(e->message[0], '\0');
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* The first byte and size of `build`'s encoding, to prove a boundary value really lands in
 * the encoding width the test claims. */
static void encoding_of(void (*pack1)(msgpack_packer *, const void *), const void *v,
                        unsigned char *tag, size_t *size) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  pack1(&pk, v);
  *tag = (unsigned char)sb.data[0];
  *size = sb.size;
  msgpack_sbuffer_destroy(&sb);
}

/* ---- nil, booleans ------------------------------------------------------------------------- */

static void build_nil(msgpack_packer *pk) { msgpack_pack_nil(pk); }
static void build_true(msgpack_packer *pk) { msgpack_pack_true(pk); }
static void build_false(msgpack_packer *pk) { msgpack_pack_false(pk); }

Test(msgpack, nil_round_trips) {
  ip_task *t;
  ip_future *f = call_build(&t, build_nil);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->type, MSGPACK_OBJECT_NIL);
  cr_assert_eq(ip_future_value(f), o, "the value is decoded once and kept");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(msgpack, true_and_false_round_trip) {
  ip_task *t;
  ip_future *f = call_build(&t, build_true);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->type, MSGPACK_OBJECT_BOOLEAN);
  cr_assert_eq(o->via.boolean, true);
  ip_future_free(f);
  ip_task_free(t);

  f = call_build(&t, build_false);
  o = value_of(f);
  cr_assert_eq(o->type, MSGPACK_OBJECT_BOOLEAN);
  cr_assert_eq(o->via.boolean, false);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* ---- integers ------------------------------------------------------------------------------- */

/* Every boundary of every encoding width, through the packer that picks the smallest one. */
struct int_case {
  bool negative; /* packed with msgpack_pack_int64(i), else msgpack_pack_uint64(u) */
  int64_t i;
  uint64_t u;
  unsigned char tag; /* first byte of the encoding; 0 = a fixint (checked by range) */
  size_t size;       /* bytes of the encoding */
};

static const struct int_case ints[] = {
    {false, 0, 0, 0, 1},
    {false, 0, 1, 0, 1},
    {false, 0, 127, 0, 1}, /* largest positive fixint */
    {false, 0, 128, 0xcc, 2},
    {false, 0, 255, 0xcc, 2},
    {false, 0, 256, 0xcd, 3},
    {false, 0, 65535, 0xcd, 3},
    {false, 0, 65536, 0xce, 5},
    {false, 0, UINT32_MAX, 0xce, 5},
    {false, 0, (uint64_t)UINT32_MAX + 1, 0xcf, 9},
    {false, 0, INT64_MAX, 0xcf, 9},
    {false, 0, (uint64_t)INT64_MAX + 1, 0xcf, 9},
    {false, 0, UINT64_MAX, 0xcf, 9},
    {true, -1, 0, 0, 1},
    {true, -32, 0, 0, 1}, /* smallest negative fixint */
    {true, -33, 0, 0xd0, 2},
    {true, INT8_MIN, 0, 0xd0, 2},
    {true, INT8_MIN - 1, 0, 0xd1, 3},
    {true, INT16_MIN, 0, 0xd1, 3},
    {true, INT16_MIN - 1, 0, 0xd2, 5},
    {true, INT32_MIN, 0, 0xd2, 5},
    {true, (int64_t)INT32_MIN - 1, 0, 0xd3, 9},
    {true, INT64_MIN + 1, 0, 0xd3, 9},
    {true, INT64_MIN, 0, 0xd3, 9},
};
#define N_INTS (sizeof ints / sizeof *ints)

static void pack_int_case(msgpack_packer *pk, const void *v) {
  const struct int_case *c = v;
  if (c->negative) msgpack_pack_int64(pk, c->i);
  else msgpack_pack_uint64(pk, c->u);
}

static void build_ints(msgpack_packer *pk) {
  msgpack_pack_array(pk, N_INTS);
  for (size_t i = 0; i < N_INTS; i++) pack_int_case(pk, &ints[i]);
}

Test(msgpack, integers_at_every_encoding_boundary_round_trip) {
  for (size_t i = 0; i < N_INTS; i++) { /* the table itself is right */
    unsigned char tag;
    size_t size;
    encoding_of(pack_int_case, &ints[i], &tag, &size);
    cr_assert_eq(size, ints[i].size, "case %zu: %zu bytes, want %zu", i, size, ints[i].size);
    if (ints[i].tag) cr_assert_eq(tag, ints[i].tag, "case %zu: tag 0x%02x", i, tag);
    else cr_assert(tag <= 0x7f || tag >= 0xe0, "case %zu is a fixint", i);
  }
  ip_task *t;
  ip_future *f = call_build(&t, build_ints);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, N_INTS);
  for (size_t i = 0; i < N_INTS; i++) {
    const msgpack_object *e = &o->via.array.ptr[i];
    if (ints[i].negative) {
      cr_assert_eq(e->type, MSGPACK_OBJECT_NEGATIVE_INTEGER, "case %zu", i);
      cr_assert_eq(e->via.i64, ints[i].i, "case %zu: %" PRId64, i, e->via.i64);
    } else {
      cr_assert_eq(e->type, MSGPACK_OBJECT_POSITIVE_INTEGER, "case %zu", i);
      cr_assert_eq(e->via.u64, ints[i].u, "case %zu: %" PRIu64, i, e->via.u64);
    }
  }
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* The fixed-width packers force an encoding: small values in wide encodings arrive too. */
static void build_fixed_width(msgpack_packer *pk) {
  msgpack_pack_array(pk, 12);
  msgpack_pack_fix_uint8(pk, 0);
  msgpack_pack_fix_uint8(pk, UINT8_MAX);
  msgpack_pack_fix_uint16(pk, 1);
  msgpack_pack_fix_uint32(pk, UINT32_MAX);
  msgpack_pack_fix_uint64(pk, 2);
  msgpack_pack_fix_uint64(pk, UINT64_MAX);
  msgpack_pack_fix_int8(pk, INT8_MIN);
  msgpack_pack_fix_int16(pk, -1);
  msgpack_pack_fix_int32(pk, INT32_MIN);
  msgpack_pack_fix_int64(pk, INT64_MIN);
  msgpack_pack_fix_int64(pk, INT64_MAX); /* a positive signed value: POSITIVE_INTEGER */
  msgpack_pack_fix_int8(pk, 0);
}

Test(msgpack, fixed_width_integers_round_trip) {
  ip_task *t;
  ip_future *f = call_build(&t, build_fixed_width);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->via.array.size, 12);
  const msgpack_object *a = o->via.array.ptr;
  const uint64_t pos[] = {0, UINT8_MAX, 1, UINT32_MAX, 2, UINT64_MAX};
  for (int i = 0; i < 6; i++) {
    cr_assert_eq(a[i].type, MSGPACK_OBJECT_POSITIVE_INTEGER, "item %d", i);
    cr_assert_eq(a[i].via.u64, pos[i], "item %d", i);
  }
  const int64_t neg[] = {INT8_MIN, -1, INT32_MIN, INT64_MIN};
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(a[6 + i].type, MSGPACK_OBJECT_NEGATIVE_INTEGER, "item %d", 6 + i);
    cr_assert_eq(a[6 + i].via.i64, neg[i], "item %d", 6 + i);
  }
  cr_assert_eq(a[10].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  cr_assert_eq(a[10].via.u64, (uint64_t)INT64_MAX);
  cr_assert_eq(a[11].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  cr_assert_eq(a[11].via.u64, 0);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* ---- floats --------------------------------------------------------------------------------- */

static const float f32s[] = {0.0f,    -0.0f,    1.5f,      -2.25f,   FLT_MAX, -FLT_MAX,
                             FLT_MIN, 1e-45f, /* smallest denormal */ INFINITY, -INFINITY};
static const double f64s[] = {0.0,     -0.0,     3.141592653589793, -1e300,   DBL_MAX,
                              -DBL_MAX, DBL_MIN, 4.9406564584124654e-324, INFINITY, -INFINITY};
#define N_F32 (sizeof f32s / sizeof *f32s)
#define N_F64 (sizeof f64s / sizeof *f64s)

static void build_floats(msgpack_packer *pk) {
  msgpack_pack_array(pk, N_F32 + N_F64 + 2);
  for (size_t i = 0; i < N_F32; i++) msgpack_pack_float(pk, f32s[i]);
  for (size_t i = 0; i < N_F64; i++) msgpack_pack_double(pk, f64s[i]);
  msgpack_pack_float(pk, NAN);
  msgpack_pack_double(pk, -NAN);
}

Test(msgpack, float32_and_float64_round_trip_bit_for_bit) {
  ip_task *t;
  ip_future *f = call_build(&t, build_floats);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->via.array.size, N_F32 + N_F64 + 2);
  const msgpack_object *a = o->via.array.ptr;
  for (size_t i = 0; i < N_F32; i++) {
    cr_assert_eq(a[i].type, MSGPACK_OBJECT_FLOAT32, "float32 %zu keeps its width", i);
    float got = (float)a[i].via.f64;
    cr_assert_eq(memcmp(&got, &f32s[i], sizeof got), 0, "float32 %zu: %a vs %a", i, got,
                 f32s[i]);
  }
  for (size_t i = 0; i < N_F64; i++) {
    const msgpack_object *e = &a[N_F32 + i];
    cr_assert_eq(e->type, MSGPACK_OBJECT_FLOAT64, "float64 %zu", i);
    cr_assert_eq(memcmp(&e->via.f64, &f64s[i], sizeof(double)), 0, "float64 %zu: %a vs %a", i,
                 e->via.f64, f64s[i]);
  }
  cr_assert(signbit(a[1].via.f64), "-0.0f keeps its sign");
  cr_assert(isinf(a[8].via.f64) && a[8].via.f64 > 0);
  cr_assert(isinf(a[9].via.f64) && a[9].via.f64 < 0);
  const msgpack_object *nan32 = &a[N_F32 + N_F64], *nan64 = nan32 + 1;
  cr_assert_eq(nan32->type, MSGPACK_OBJECT_FLOAT32);
  cr_assert(isnan(nan32->via.f64), "float32 NaN");
  cr_assert_eq(nan64->type, MSGPACK_OBJECT_FLOAT64);
  cr_assert(isnan(nan64->via.f64), "float64 NaN");
  double want = -NAN;
  cr_assert_eq(memcmp(&nan64->via.f64, &want, sizeof want), 0, "float64 NaN bits unchanged");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* ---- str, bin, ext -------------------------------------------------------------------------- */

/* Lengths at each str/bin/ext width boundary. The contents are all byte values, NULs included. */
static const size_t str_lens[] = {0, 1, 31, 32, 255, 256, 65535, 65536};
#define N_STR (sizeof str_lens / sizeof *str_lens)

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7u + (i >> 8)); }
static void fill(unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = pattern(i);
}
static void check_pattern(const char *p, size_t n, const char *what) {
  for (size_t i = 0; i < n; i++)
    cr_assert_eq((unsigned char)p[i], pattern(i), "%s: byte %zu differs", what, i);
}

static const char nul_str[] = "a\0b\0\0c"; /* 6 bytes plus the terminator */

static void build_strs(msgpack_packer *pk) {
  static unsigned char buf[65536];
  fill(buf, sizeof buf);
  msgpack_pack_array(pk, N_STR + 1);
  for (size_t i = 0; i < N_STR; i++) msgpack_pack_str_with_body(pk, buf, str_lens[i]);
  msgpack_pack_str_with_body(pk, nul_str, sizeof nul_str); /* the terminator travels too */
}

Test(msgpack, str_with_nuls_and_of_every_width_round_trips) {
  ip_task *t;
  ip_future *f = call_build(&t, build_strs);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->via.array.size, N_STR + 1);
  for (size_t i = 0; i < N_STR; i++) {
    const msgpack_object *e = &o->via.array.ptr[i];
    cr_assert_eq(e->type, MSGPACK_OBJECT_STR, "str %zu", i);
    cr_assert_eq(e->via.str.size, str_lens[i]);
    check_pattern(e->via.str.ptr, e->via.str.size, "str");
  }
  const msgpack_object *e = &o->via.array.ptr[N_STR];
  cr_assert_eq(e->type, MSGPACK_OBJECT_STR);
  cr_assert_eq(e->via.str.size, sizeof nul_str);
  cr_assert_eq(memcmp(e->via.str.ptr, nul_str, sizeof nul_str), 0);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

static void build_empty_str(msgpack_packer *pk) { msgpack_pack_str(pk, 0); }

Test(msgpack, empty_str_alone_round_trips) {
  ip_task *t;
  ip_future *f = call_build(&t, build_empty_str);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->type, MSGPACK_OBJECT_STR);
  cr_assert_eq(o->via.str.size, 0);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

static void build_bins(msgpack_packer *pk) {
  static unsigned char buf[65536];
  fill(buf, sizeof buf);
  msgpack_pack_array(pk, N_STR + 1);
  for (size_t i = 0; i < N_STR; i++) msgpack_pack_bin_with_body(pk, buf, str_lens[i]);
  msgpack_pack_bin_with_body(pk, nul_str, sizeof nul_str);
}

Test(msgpack, bin_including_empty_round_trips) {
  ip_task *t;
  ip_future *f = call_build(&t, build_bins);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->via.array.size, N_STR + 1);
  for (size_t i = 0; i < N_STR; i++) {
    const msgpack_object *e = &o->via.array.ptr[i];
    cr_assert_eq(e->type, MSGPACK_OBJECT_BIN, "bin %zu", i);
    cr_assert_eq(e->via.bin.size, str_lens[i]);
    check_pattern(e->via.bin.ptr, e->via.bin.size, "bin");
  }
  const msgpack_object *e = &o->via.array.ptr[N_STR];
  cr_assert_eq(e->via.bin.size, sizeof nul_str);
  cr_assert_eq(memcmp(e->via.bin.ptr, nul_str, sizeof nul_str), 0);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

#define BIG_BIN ((size_t)1 << 20)
static void build_big_bin(msgpack_packer *pk) {
  unsigned char *buf = malloc(BIG_BIN);
  fill(buf, BIG_BIN);
  msgpack_pack_bin_with_body(pk, buf, BIG_BIN);
  free(buf);
}

Test(msgpack, one_mib_bin_round_trips) {
  ip_task *t;
  ip_future *f = call_build(&t, build_big_bin);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->type, MSGPACK_OBJECT_BIN);
  cr_assert_eq(o->via.bin.size, BIG_BIN);
  check_pattern(o->via.bin.ptr, BIG_BIN, "1 MiB bin");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* Ext sizes: fixext 1/2/4/8/16, ext8 (0, 3, 17, 255), ext16 (256), ext32 (65536). */
static const size_t ext_lens[] = {1, 2, 4, 8, 16, 0, 3, 17, 255, 256, 65536};
static const int8_t ext_types[] = {-1, 42, -128, 127, 0};
#define N_EXT_LEN (sizeof ext_lens / sizeof *ext_lens)
#define N_EXT_TYPE (sizeof ext_types / sizeof *ext_types)

static void build_exts(msgpack_packer *pk) {
  static unsigned char buf[65536];
  fill(buf, sizeof buf);
  msgpack_pack_array(pk, N_EXT_LEN * N_EXT_TYPE);
  for (size_t ty = 0; ty < N_EXT_TYPE; ty++)
    for (size_t i = 0; i < N_EXT_LEN; i++)
      msgpack_pack_ext_with_body(pk, buf, ext_lens[i], ext_types[ty]);
}

Test(msgpack, ext_of_every_width_and_type_round_trips) {
  ip_task *t;
  ip_future *f = call_build(&t, build_exts);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->via.array.size, N_EXT_LEN * N_EXT_TYPE);
  for (size_t ty = 0; ty < N_EXT_TYPE; ty++) {
    for (size_t i = 0; i < N_EXT_LEN; i++) {
      const msgpack_object *e = &o->via.array.ptr[ty * N_EXT_LEN + i];
      cr_assert_eq(e->type, MSGPACK_OBJECT_EXT, "ext type %d size %zu", ext_types[ty],
                   ext_lens[i]);
      cr_assert_eq(e->via.ext.type, ext_types[ty]);
      cr_assert_eq(e->via.ext.size, ext_lens[i]);
      check_pattern(e->via.ext.ptr, e->via.ext.size, "ext");
    }
  }
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* Ext type -1 (msgpack's timestamp) and an application type, each as the whole result. */
static void build_ext_minus1(msgpack_packer *pk) {
  msgpack_pack_ext_with_body(pk, "\x00\x00\x00\x2a", 4, -1); /* a 32-bit timestamp: 42 s */
}
static void build_ext_42(msgpack_packer *pk) { msgpack_pack_ext_with_body(pk, "a\0b", 3, 42); }

Test(msgpack, ext_types_minus_one_and_42_as_the_whole_result) {
  round_trip_equal(build_ext_minus1);
  round_trip_equal(build_ext_42);
  ip_task *t;
  ip_future *f = call_build(&t, build_ext_42);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->type, MSGPACK_OBJECT_EXT);
  cr_assert_eq(o->via.ext.type, 42);
  cr_assert_eq(o->via.ext.size, 3);
  cr_assert_eq(memcmp(o->via.ext.ptr, "a\0b", 3), 0);
  ip_future_free(f);
  ip_task_free(t);
}

/* ---- containers ----------------------------------------------------------------------------- */

static void build_empty_containers(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  msgpack_pack_array(pk, 0);
  msgpack_pack_map(pk, 0);
}

Test(msgpack, empty_array_and_map_round_trip) {
  ip_task *t;
  ip_future *f = call_build(&t, build_empty_containers);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->via.array.size, 2);
  cr_assert_eq(o->via.array.ptr[0].type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.ptr[0].via.array.size, 0);
  cr_assert_eq(o->via.array.ptr[1].type, MSGPACK_OBJECT_MAP);
  cr_assert_eq(o->via.array.ptr[1].via.map.size, 0);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* `depth` containers, each holding the next; the innermost holds the int 7. kind: 'a' arrays,
 * 'm' maps (key = the level), 'x' alternating. */
static void pack_nest(msgpack_packer *pk, int depth, char kind) {
  for (int i = 0; i < depth; i++) {
    bool map = kind == 'm' || (kind == 'x' && i % 2);
    if (map) {
      msgpack_pack_map(pk, 1);
      msgpack_pack_int(pk, i);
    } else {
      msgpack_pack_array(pk, 1);
    }
  }
  msgpack_pack_int(pk, 7);
}

static void check_nest(const msgpack_object *o, int depth, char kind) {
  for (int i = 0; i < depth; i++) {
    bool map = kind == 'm' || (kind == 'x' && i % 2);
    if (map) {
      cr_assert_eq(o->type, MSGPACK_OBJECT_MAP, "level %d", i);
      cr_assert_eq(o->via.map.size, 1);
      cr_assert_eq(o->via.map.ptr[0].key.via.u64, (uint64_t)i);
      o = &o->via.map.ptr[0].val;
    } else {
      cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY, "level %d", i);
      cr_assert_eq(o->via.array.size, 1);
      o = &o->via.array.ptr[0];
    }
  }
  cr_assert_eq(o->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  cr_assert_eq(o->via.u64, 7);
}

static void build_arrays_31(msgpack_packer *pk) { pack_nest(pk, 31, 'a'); }
static void build_maps_31(msgpack_packer *pk) { pack_nest(pk, 31, 'm'); }
static void build_mixed_31(msgpack_packer *pk) { pack_nest(pk, 31, 'x'); }
static void build_arrays_32(msgpack_packer *pk) { pack_nest(pk, 32, 'a'); }
static void build_maps_32(msgpack_packer *pk) { pack_nest(pk, 32, 'm'); }
static void build_arrays_33(msgpack_packer *pk) { pack_nest(pk, 33, 'a'); }
static void build_arrays_40(msgpack_packer *pk) { pack_nest(pk, 40, 'a'); }
static void build_maps_40(msgpack_packer *pk) { pack_nest(pk, 40, 'm'); }

static void nest_round_trip(build_fn build, int depth, char kind) {
  ip_task *t;
  ip_future *f = call_build(&t, build);
  check_nest(value_of(f), depth, kind);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(msgpack, arrays_and_maps_nested_31_levels_round_trip) {
  nest_round_trip(build_arrays_31, 31, 'a');
  nest_round_trip(build_maps_31, 31, 'm');
  nest_round_trip(build_mixed_31, 31, 'x');
}

Test(msgpack, nesting_at_the_limit_of_32_levels_round_trips) {
  nest_round_trip(build_arrays_32, 32, 'a');
  nest_round_trip(build_maps_32, 32, 'm');
}

/* Too deep for msgpack-c: the encoder's check in the child catches it before anything is
 * sent, so the call fails with IP_EENCODE (not IP_EDECODE), and cleanly. */
Test(msgpack, nesting_deeper_than_the_limit_fails_in_the_child_with_eencode) {
  expect_code(build_arrays_33, IP_EENCODE);
  expect_code(build_arrays_40, IP_EENCODE);
  expect_code(build_maps_40, IP_EENCODE);
  round_trip_equal(build_nil); /* and the next call is fine */
}

Test(msgpack, nesting_deeper_than_the_limit_says_so) {
  ip_task *t;
  ip_future *f = call_build(&t, build_maps_40);
  cr_assert_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_EENCODE, "%s: %s", ip_err_name(e->code), e->message);
  cr_assert_str_eq(e->message, "the msgpack serializer could not encode the result: the "
                               "msgpack_sbuffer holds nesting deeper than 32 levels (the most "
                               "msgpack-c unpacks)");
  cr_assert_eq(e->raised_code, IP_EENCODE, "what encode() returned");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* The header's promise for the parent side: bytes nested too deep do not decode. */
static int decode_bytes(const void *buf, size_t len, void **v) {
  const ip_serializer *s = ip_serializer_msgpack();
  *v = NULL;
  return s->decode(s, buf, len, v);
}

static void decode_built(build_fn build, int want_ok) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  build(&pk);
  void *v;
  int rc = decode_bytes(sb.data, sb.size, &v);
  if (want_ok) {
    cr_assert_eq(rc, 0);
    cr_assert_not_null(v);
    ip_serializer_msgpack()->free_value(ip_serializer_msgpack(), v);
  } else {
    cr_assert_eq(rc, IP_EDECODE, "rc %d", rc);
  }
  msgpack_sbuffer_destroy(&sb);
}

Test(msgpack, decoder_refuses_nesting_deeper_than_32_with_edecode) {
  decode_built(build_arrays_32, 1);
  decode_built(build_arrays_33, 0);
  decode_built(build_arrays_40, 0);
  decode_built(build_maps_40, 0);
}

#define N_FIELDS 100
static void build_wide_map(msgpack_packer *pk) {
  msgpack_pack_map(pk, N_FIELDS);
  for (int i = 0; i < N_FIELDS; i++) {
    char key[16];
    int n = snprintf(key, sizeof key, "field%03d", i);
    msgpack_pack_str_with_body(pk, key, (size_t)n);
    switch (i % 4) {
    case 0: msgpack_pack_int64(pk, -(int64_t)i * 1000003); break;
    case 1: msgpack_pack_str_with_body(pk, key, (size_t)n); break;
    case 2: msgpack_pack_double(pk, i / 4.0); break;
    default:
      msgpack_pack_array(pk, 2);
      msgpack_pack_int(pk, i);
      msgpack_pack_nil(pk);
      break;
    }
  }
}

Test(msgpack, map_with_100_fields_round_trips_in_order) {
  round_trip_equal(build_wide_map);
  ip_task *t;
  ip_future *f = call_build(&t, build_wide_map);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->type, MSGPACK_OBJECT_MAP);
  cr_assert_eq(o->via.map.size, N_FIELDS);
  for (int i = 0; i < N_FIELDS; i++) {
    char key[16];
    int n = snprintf(key, sizeof key, "field%03d", i);
    const msgpack_object_kv *kv = &o->via.map.ptr[i];
    cr_assert_eq(kv->key.type, MSGPACK_OBJECT_STR);
    cr_assert_eq(kv->key.via.str.size, (uint32_t)n);
    cr_assert_eq(memcmp(kv->key.via.str.ptr, key, (size_t)n), 0, "key %d", i);
    switch (i % 4) {
    case 0:
      if (i == 0) cr_assert_eq(kv->val.via.u64, 0);
      else cr_assert_eq(kv->val.via.i64, -(int64_t)i * 1000003);
      break;
    case 1: cr_assert_eq(kv->val.via.str.size, (uint32_t)n); break;
    case 2: cr_assert_eq(kv->val.via.f64, i / 4.0); break;
    default: cr_assert_eq(kv->val.via.array.size, 2); break;
    }
  }
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* Every type at once, compared as a whole. */
static void build_everything(msgpack_packer *pk) {
  msgpack_pack_map(pk, 9);
  msgpack_pack_str_with_body(pk, "nil", 3);
  msgpack_pack_nil(pk);
  msgpack_pack_str_with_body(pk, "bool", 4);
  msgpack_pack_true(pk);
  msgpack_pack_str_with_body(pk, "neg", 3);
  msgpack_pack_int64(pk, INT64_MIN);
  msgpack_pack_str_with_body(pk, "pos", 3);
  msgpack_pack_uint64(pk, UINT64_MAX);
  msgpack_pack_str_with_body(pk, "f32", 3);
  msgpack_pack_float(pk, 0.5f);
  msgpack_pack_str_with_body(pk, "f64", 3);
  msgpack_pack_double(pk, -0.25);
  msgpack_pack_bin_with_body(pk, "\0\1", 2); /* a bin key */
  msgpack_pack_bin_with_body(pk, "", 0);
  msgpack_pack_ext_with_body(pk, "k", 1, 5); /* an ext key */
  msgpack_pack_ext_with_body(pk, "", 0, -1);
  msgpack_pack_array(pk, 1); /* an array key */
  msgpack_pack_str(pk, 0);
  msgpack_pack_map(pk, 0);
}

Test(msgpack, every_type_together_equals_the_childs_object) { round_trip_equal(build_everything); }

/* ---- many calls at once --------------------------------------------------------------------- */

static void *pack_index(void *arg) {
  int i = *(int *)arg;
  msgpack_sbuffer *sb = msgpack_sbuffer_new();
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 2);
  msgpack_pack_str_with_body(&pk, "i", 1);
  msgpack_pack_int(&pk, i);
  msgpack_pack_str_with_body(&pk, "pid", 3);
  msgpack_pack_int(&pk, getpid());
  return sb;
}

Test(msgpack, many_calls_in_flight_each_get_their_own_object) {
  enum { N = 16 };
  int idx[N];
  ip_future *fs[N];
  ip_task *t = ip_task_new(pack_index, ip_serializer_msgpack());
  cr_assert_not_null(t);
  for (int i = 0; i < N; i++) {
    idx[i] = i;
    fs[i] = ip_call(t, &idx[i]);
    cr_assert_not_null(fs[i]);
  }
  for (int i = N - 1; i >= 0; i--) {
    const msgpack_object *o = value_of(fs[i]);
    cr_assert_eq(o->via.map.size, 2);
    cr_assert_eq(o->via.map.ptr[0].val.via.u64, (uint64_t)i);
    cr_assert_eq(o->via.map.ptr[1].val.via.u64, (uint64_t)ip_future_pid(fs[i]),
                 "the value came from that call's child");
  }
  for (int i = 0; i < N; i++) ip_future_free(fs[i]);
  ip_task_free(t);
  cr_assert(no_children());
}

/* ---- misuse in the child: IP_EENCODE --------------------------------------------------------- */

static void *return_null(void *arg) { return NULL; }
static void *return_empty_sbuffer(void *arg) { return msgpack_sbuffer_new(); }
static void *return_cleared_sbuffer(void *arg) {
  msgpack_sbuffer *sb = msgpack_sbuffer_new();
  msgpack_sbuffer_write(sb, "\x01", 1);
  msgpack_sbuffer_clear(sb); /* data allocated, size 0 */
  return sb;
}
static void *return_raw_bytes(void *arg) {
  msgpack_sbuffer *sb = msgpack_sbuffer_new();
  const char *bytes = arg;
  msgpack_sbuffer_write(sb, bytes + 1, (size_t)(unsigned char)bytes[0]);
  return sb;
}

/* The message must read "the msgpack serializer could not encode the result: " + `why`
 * (a prefix of what follows, so numbers can be checked too). */
static void expect_encode_failure(ip_fn fn, void *arg, const char *why) {
  ip_task *t = ip_task_new(fn, ip_serializer_msgpack());
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, arg);
  cr_assert_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_EENCODE, "got %s: %s", ip_err_name(e->code), e->message);
  cr_assert_str_eq(e->kind, "EENCODE");
  static const char head[] = "the msgpack serializer could not encode the result: ";
  cr_assert(strncmp(e->message, head, sizeof head - 1) == 0,
            "the message names the serializer: %s", e->message);
  cr_assert(strncmp(e->message + sizeof head - 1, why, strlen(why)) == 0,
            "the message says why (%s): %s", why, e->message);
  cr_assert_eq(e->exit_status, 0, "the child reported and exited normally");
  cr_assert_eq(e->signal, 0);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(msgpack, fn_returning_null_is_eencode) {
  expect_encode_failure(return_null, NULL, "the task returned NULL, not a msgpack_sbuffer");
}

Test(msgpack, empty_sbuffer_is_eencode) {
  expect_encode_failure(return_empty_sbuffer, NULL, "the msgpack_sbuffer is empty");
  expect_encode_failure(return_cleared_sbuffer, NULL, "the msgpack_sbuffer is empty");
}

/* Byte strings for return_raw_bytes: a length byte, then the bytes. */
static char two_objects[] = "\x02\xc0\x01";                   /* nil, then 1 */
static char two_maps[] = "\x04\x81\x01\x02\x80";              /* {1:2} {} */
static char truncated_array[] = "\x02\x92\x01";               /* [1, <missing>] */
static char truncated_str[] = "\x04\xa5" "abc";               /* str of 5 holding 3 */
static char truncated_uint64[] = "\x05\xcf\x00\x00\x00\x00";  /* uint64 cut after 4 bytes */
static char truncated_map[] = "\x03\x82\x01\x02";             /* {1:2, <missing>} */
static char never_used_byte[] = "\x01\xc1";                   /* 0xc1 is never used */

static const char *truncated_why(size_t n) {
  static char buf[128];
  snprintf(buf, sizeof buf, "the msgpack_sbuffer holds a truncated object (its %zu bytes end", n);
  return buf;
}

Test(msgpack, two_objects_in_one_buffer_are_eencode) {
  expect_encode_failure(return_raw_bytes, two_objects,
                        "the msgpack_sbuffer holds more than one object (1 trailing bytes "
                        "after the first object's 1)");
  expect_encode_failure(return_raw_bytes, two_maps,
                        "the msgpack_sbuffer holds more than one object (1 trailing bytes "
                        "after the first object's 3)");
}

Test(msgpack, truncated_objects_are_eencode) {
  expect_encode_failure(return_raw_bytes, truncated_array, truncated_why(2));
  expect_encode_failure(return_raw_bytes, truncated_str, truncated_why(4));
  expect_encode_failure(return_raw_bytes, truncated_uint64, truncated_why(5));
  expect_encode_failure(return_raw_bytes, truncated_map, truncated_why(3));
}

Test(msgpack, bytes_that_are_no_msgpack_are_eencode) {
  expect_encode_failure(return_raw_bytes, never_used_byte,
                        "the msgpack_sbuffer holds the byte 0xc1 at offset 0");
}

/* The control: the same helper with one well-formed object succeeds. */
static char one_fixmap[] = "\x03\x81\x01\x02";
Test(msgpack, raw_bytes_of_one_object_are_accepted) {
  ip_task *t = ip_task_new(return_raw_bytes, ip_serializer_msgpack());
  ip_future *f = ip_call(t, one_fixmap);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->type, MSGPACK_OBJECT_MAP);
  cr_assert_eq(o->via.map.ptr[0].key.via.u64, 1);
  cr_assert_eq(o->via.map.ptr[0].val.via.u64, 2);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* ---- the decoder on untrusted bytes ---------------------------------------------------------- */

Test(msgpack, decoder_refuses_anything_but_exactly_one_object) {
  void *v;
  cr_assert_eq(decode_bytes(NULL, 0, &v), IP_EDECODE, "no bytes");
  cr_assert_eq(decode_bytes("", 0, &v), IP_EDECODE, "empty");
  cr_assert_eq(decode_bytes("\xc0\xc0", 2, &v), IP_EDECODE, "trailing bytes");
  cr_assert_eq(decode_bytes("\x92\x01", 2, &v), IP_EDECODE, "truncated");
  cr_assert_eq(decode_bytes("\xc1", 1, &v), IP_EDECODE, "reserved byte");
  cr_assert_eq(decode_bytes("\xdb\xff\xff\xff\xff", 5, &v), IP_EDECODE, "huge str, no body");
  cr_assert_eq(decode_bytes("\x93\x01\x02\x03", 4, &v), 0);
  const msgpack_object *o = v;
  cr_assert_eq(o->via.array.size, 3);
  ip_serializer_msgpack()->free_value(ip_serializer_msgpack(), v);
}

/* The high-water mark of this process's virtual memory, in KiB. */
static long vm_peak_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmPeak: %ld kB", &kib) == 1) break;
  if (f) fclose(f);
  return kib;
}

/* A child controls these bytes. msgpack-c sizes an array's storage from its declared count
 * before reading any element, so 5 bytes declaring 2^26 elements make the decoder allocate
 * 2 GiB (and 0xffffffff elements ask for 128 GiB, which fails only because it is more than
 * the machine has; under ASan that failure aborts the parent). A decoder facing untrusted
 * bytes should refuse a count the remaining bytes cannot hold (each element takes at least
 * one byte) before allocating for it. Fails until the msgpack plugin bounds counts. */
Test(msgpack, decoder_does_not_reserve_gigabytes_for_a_5_byte_input) {
  static const unsigned char arr[] = {0xdd, 0x04, 0x00, 0x00, 0x00}; /* array32, 2^26 items */
  static const unsigned char map[] = {0xdf, 0x02, 0x00, 0x00, 0x00}; /* map32, 2^25 pairs */
  long before = vm_peak_kib();
  cr_assert_gt(before, 0);
  void *v;
  cr_assert_eq(decode_bytes(arr, sizeof arr, &v), IP_EDECODE);
  cr_assert_eq(decode_bytes(map, sizeof map, &v), IP_EDECODE);
  long grew = vm_peak_kib() - before;
  cr_assert_lt(grew, 256L << 10, "decoding 5 bytes raised peak virtual memory by %ld MiB",
               grew >> 10);
}

/* ---- registration ---------------------------------------------------------------------------- */

static int enc_never(const ip_serializer *s, const void *v, ip_write_fn w, void *c) { return 1; }
static int dec_never(const ip_serializer *s, const void *b, size_t l, void **v) { return 1; }

Test(msgpack, registered_as_msgpack) {
  const ip_serializer *s = ip_serializer_msgpack();
  cr_assert_not_null(s);
  cr_assert_eq(ip_serializer_msgpack(), s, "static storage: always the same pointer");
  cr_assert_str_eq(s->name, "msgpack");
  cr_assert_eq(s->abi, IP_SERIALIZER_ABI);
  cr_assert_not_null(s->free_value);
  cr_assert_null(s->destroy, "static: never destroyed");
  cr_assert_eq(ip_serializer_lookup("msgpack"), s);
  cr_assert_eq(ip_serializer_register(s), 0, "registering the same pointer again is fine");
  static const ip_serializer impostor = {
      .abi = IP_SERIALIZER_ABI, .name = "msgpack", .encode = enc_never, .decode = dec_never};
  cr_assert_eq(ip_serializer_register(&impostor), IP_EALREADY);
  cr_assert_eq(ip_serializer_lookup("msgpack"), s, "the name still means the plugin");
  ip_serializer_free((ip_serializer *)s); /* static: ignored */
  cr_assert_eq(ip_serializer_lookup("msgpack"), s);
  cr_assert_eq(ip_serializer_lookup("raw"), ip_serializer_raw());
}

Test(msgpack, task_made_from_the_looked_up_serializer_works) {
  ip_task *t = ip_task_new(pack_in_child, ip_serializer_lookup("msgpack"));
  cr_assert_not_null(t);
  struct builder b = {build_true};
  ip_future *f = ip_call(t, &b);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->type, MSGPACK_OBJECT_BOOLEAN);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* ---- nothing left behind -------------------------------------------------------------------- */

/* The library keeps a few descriptors from the first call on (supervisor, lifeline, and an
 * eventfd for each thread that waited). The baseline is taken after a call this thread really
 * waited for: the child blocks on a pipe until the test saw the future still running. */
static void *wait_on_pipe(void *arg) {
  int *fd = arg;
  char c;
  if (read(fd[0], &c, 1) != 1) return NULL;
  msgpack_sbuffer *sb = msgpack_sbuffer_new();
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_true(&pk);
  return sb;
}

Test(msgpack, no_descriptor_child_or_zombie_is_left_behind) {
  int gate[2];
  cr_assert_eq(pipe(gate), 0);
  ip_task *t = ip_task_new(wait_on_pipe, ip_serializer_msgpack());
  ip_future *f = ip_call(t, gate);
  cr_assert_eq(ip_future_wait(f, 0), IP_ETIMEDOUT);
  cr_assert_eq(write(gate[1], "x", 1), 1);
  cr_assert_not_null(value_of(f));
  ip_future_free(f);
  ip_task_free(t);
  int base = count_fds();
  for (int round = 0; round < 5; round++) {
    round_trip_equal(build_everything);
    expect_code(build_arrays_40, IP_EENCODE);
    expect_encode_failure(return_raw_bytes, truncated_str, "the msgpack_sbuffer holds a truncated");
    ip_task *bt;
    ip_future *bf = call_build(&bt, build_big_bin);
    value_of(bf);
    ip_future_free(bf);
    ip_task_free(bt);
  }
  /* A future freed without ever being read. */
  ip_task *t2;
  ip_future *f2 = call_build(&t2, build_wide_map);
  cr_assert_eq(ip_future_wait(f2, -1), 0);
  ip_future_free(f2);
  ip_task_free(t2);
  cr_assert_eq(count_fds(), base);
  cr_assert(no_children());
  close(gate[0]);
  close(gate[1]);
}

/* ---- pools: the argument travels as msgpack too ---------------------------------------------- */

/* In a pool worker fn gets the decoded argument, a `const msgpack_object *`, and answers
 * [the argument's type, its "n" + 1, the length of its "s", the worker's pid]; for an argument
 * with an "empty" key it returns an empty buffer, which the serializer refuses. The reply buffer
 * is reused from call to call: a worker runs many, and what fn allocates stays allocated. */
static msgpack_sbuffer pool_reply;

static void *pool_fn(void *arg) {
  const msgpack_object *o = arg;
  int64_t n = -1;
  uint32_t slen = 0;
  int empty = 0;
  if (o && o->type == MSGPACK_OBJECT_MAP)
    for (uint32_t i = 0; i < o->via.map.size; i++) {
      const msgpack_object_kv *kv = &o->via.map.ptr[i];
      if (kv->key.type != MSGPACK_OBJECT_STR) continue;
      const msgpack_object_str *k = &kv->key.via.str;
      if (k->size == 1 && k->ptr[0] == 'n' && kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        n = (int64_t)kv->val.via.u64;
      if (k->size == 1 && k->ptr[0] == 's' && kv->val.type == MSGPACK_OBJECT_STR)
        slen = kv->val.via.str.size;
      if (k->size == 5 && memcmp(k->ptr, "empty", 5) == 0) empty = 1;
    }
  msgpack_sbuffer_clear(&pool_reply);
  if (empty) return &pool_reply;
  msgpack_packer pk;
  msgpack_packer_init(&pk, &pool_reply, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, 4);
  msgpack_pack_int(&pk, o ? (int)o->type : -1);
  msgpack_pack_int64(&pk, n + 1);
  msgpack_pack_uint32(&pk, slen);
  msgpack_pack_int(&pk, (int)getpid());
  return &pool_reply;
}

static void pack_key(msgpack_packer *pk, const char *k) {
  msgpack_pack_str(pk, strlen(k));
  msgpack_pack_str_body(pk, k, strlen(k));
}

/* {"n": n, "s": s} (and a second object after it when `twice`), in a new buffer. */
static msgpack_sbuffer *pool_arg(uint64_t n, const char *s, bool twice) {
  msgpack_sbuffer *sb = msgpack_sbuffer_new();
  cr_assert_not_null(sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 2);
  pack_key(&pk, "n");
  msgpack_pack_uint64(&pk, n);
  pack_key(&pk, s ? "s" : "empty");
  msgpack_pack_str(&pk, s ? strlen(s) : 0);
  msgpack_pack_str_body(&pk, s ? s : "", s ? strlen(s) : 0);
  if (twice) msgpack_pack_nil(&pk);
  return sb;
}

static ip_task *pool_task(void) {
  ip_task *t = ip_task_new(pool_fn, ip_serializer_msgpack());
  cr_assert_not_null(t);
  cr_assert_eq(ip_task_set_arg_serializer(t, ip_serializer_msgpack()), 0);
  return t;
}

/* A call with {"n": n, "s": s}, whose buffer is freed as soon as the call returns; checks the
 * answer and returns the worker's pid. */
static pid_t pool_round_trip(ip_pool *p, ip_task *t, uint64_t n, const char *s) {
  msgpack_sbuffer *sb = pool_arg(n, s, false);
  ip_future *f = ip_pool_call(p, t, sb);
  cr_assert_not_null(f);
  cr_assert_eq(ip_future_arg(f), sb);
  memset(sb->data, 0xc1, sb->size); /* never valid msgpack: too late to matter */
  msgpack_sbuffer_free(sb);
  const msgpack_object *o = value_of(f);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, 4);
  const msgpack_object *a = o->via.array.ptr;
  cr_assert_eq(a[0].via.i64, MSGPACK_OBJECT_MAP, "the worker got a %d", (int)a[0].via.i64);
  cr_assert_eq(a[1].via.u64, n + 1);
  cr_assert_eq(a[2].via.u64, strlen(s));
  pid_t pid = (pid_t)a[3].via.i64;
  cr_assert_eq(pid, ip_future_pid(f));
  cr_assert_neq(pid, getpid());
  ip_future_free(f);
  return pid;
}

Test(msgpack, a_pool_call_takes_a_msgpack_argument_the_caller_frees_at_once) {
  ip_task *t = pool_task();
  ip_pool *p = ip_pool_new(1);
  cr_assert_not_null(p, "%s", strerror(errno));
  pid_t w = pool_round_trip(p, t, 41, "hello");
  cr_assert_eq(pool_round_trip(p, t, 0, ""), w, "the same worker runs the next call");
  static char long_s[100000];
  memset(long_s, 'x', sizeof long_s - 1);
  cr_assert_eq(pool_round_trip(p, t, UINT32_MAX, long_s), w);
  ip_pool_free(p);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(msgpack, a_pool_argument_not_one_object_fails_at_once_a_bad_result_spares_the_worker) {
  ip_task *t = pool_task();
  ip_pool *p = ip_pool_new(1);
  cr_assert_not_null(p, "%s", strerror(errno));
  msgpack_sbuffer *two = pool_arg(1, "a", true), *none = msgpack_sbuffer_new();
  msgpack_sbuffer *args[] = {NULL, two, none};
  for (size_t i = 0; i < 3; i++) {
    ip_future *f = ip_pool_call(p, t, args[i]);
    cr_assert_not_null(f);
    cr_assert_eq(ip_future_status(f), IP_EENCODE, "argument %zu: %s", i,
                 ip_err_name(ip_future_status(f)));
    cr_assert_not_null(strstr(ip_future_error(f)->message, "msgpack"), "%s",
                       ip_future_error(f)->message);
    cr_assert_eq(ip_future_pid(f), 0);
    ip_future_free(f);
  }
  msgpack_sbuffer_free(two);
  msgpack_sbuffer_free(none);
  /* fn returns an empty buffer: the call fails in the worker, which runs on. */
  msgpack_sbuffer *sb = pool_arg(1, NULL, false);
  ip_future *f = ip_pool_call(p, t, sb);
  msgpack_sbuffer_free(sb);
  cr_assert_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_EENCODE, "%s: %s", ip_err_name(e->code), e->message);
  cr_assert_not_null(strstr(e->message, "the msgpack_sbuffer is empty"), "%s", e->message);
  pid_t w = ip_future_pid(f);
  cr_assert_gt(w, 0);
  ip_future_free(f);
  cr_assert_eq(pool_round_trip(p, t, 2, "ok"), w,
               "a result that failed to encode ended the worker");
  ip_pool_free(p);
  ip_task_free(t);
  cr_assert(no_children());
}
