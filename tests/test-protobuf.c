/* The protobuf serializer: a message with every field set (at their limits) and one with only
 * its required field travel from a child to the parent unchanged; a message of another type,
 * one that fails protobuf-c's check, or NULL fail in the child with IP_EENCODE; bytes that do
 * not unpack fail with IP_EDECODE; construction, naming, registration and freeing. */
#define _GNU_SOURCE
#include "helpers.h"
#include <inparallel/protobuf.h>
#include "sample.pb-c.h"
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>

/* ---- plumbing ------------------------------------------------------------------------------ */

/* What a child returns: one maker per test, passed through arg inside a struct. */
typedef void *(*make_fn)(void);
struct maker {
  make_fn make;
};

static void *make_in_child(void *arg) { return ((const struct maker *)arg)->make(); }

struct call {
  ip_serializer *s;
  ip_task *t;
  ip_future *f;
};

static struct call call_make(const ProtobufCMessageDescriptor *d, make_fn make) {
  static struct maker m; /* the child reads its own copy */
  m.make = make;
  struct call c;
  c.s = ip_serializer_protobuf_new(d);
  cr_assert_not_null(c.s);
  c.t = ip_task_new(make_in_child, c.s);
  cr_assert_not_null(c.t);
  c.f = ip_call(c.t, &m);
  cr_assert_not_null(c.f);
  return c;
}

static void call_free(struct call *c) {
  ip_future_free(c->f);
  ip_task_free(c->t);
  ip_serializer_free(c->s);
  cr_assert(no_children());
}

static const void *value_of(ip_future *f) {
  const void *v = ip_future_value(f);
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(v, "no value: %s %s", e ? e->kind : "?", e ? e->message : "(no error)");
  cr_assert_eq(ip_future_status(f), 0);
  return v;
}

/* The message must read "the <serializer name> serializer could not encode the result: " +
 * `why`. */
static void expect_encode_failure(const ProtobufCMessageDescriptor *d, make_fn make,
                                  const char *why) {
  struct call c = call_make(d, make);
  cr_assert_null(ip_future_value(c.f));
  const ip_error *e = ip_future_error(c.f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_EENCODE, "got %s: %s", ip_err_name(e->code), e->message);
  cr_assert_str_eq(e->kind, "EENCODE");
  char want[1024];
  snprintf(want, sizeof want, "the %s serializer could not encode the result: %s", c.s->name, why);
  cr_assert_str_eq(e->message, want);
  cr_assert_eq(e->exit_status, 0, "the child reported and exited normally");
  cr_assert_eq(e->signal, 0);
  call_free(&c);
}

/* ---- a Sample with everything set ------------------------------------------------------------ */

static const unsigned char blob_bytes[] = {0, 'a', 0, 0xff, 0, 0x80, 0};
static const char text_utf8[] = "h\xc3\xa9llo w\xc3\xb6rld"; /* "héllo wörld" */

static int64_t inner_values[] = {INT64_MIN, -1, 0, 1, INT64_MAX};
static int64_t item_values[] = {-64, 63, INT32_MIN, (int64_t)UINT32_MAX + 1};
static char *tags[] = {"", "a", "tag with spaces", "\xe2\x9c\x93"};

/* `low` picks the lower limits for the signed scalars, else the upper ones. */
static Ipt__Sample *full_sample(bool low) {
  static Ipt__Inner inner = IPT__INNER__INIT, it0 = IPT__INNER__INIT, it1 = IPT__INNER__INIT,
                    it2 = IPT__INNER__INIT;
  static Ipt__Inner *items[3];
  static Ipt__Sample s = IPT__SAMPLE__INIT;
  inner.label = "inner";
  inner.n_values = sizeof inner_values / sizeof *inner_values;
  inner.values = inner_values;
  it0.label = ""; /* set but empty */
  it1.label = NULL;
  it2.label = "third";
  it2.n_values = sizeof item_values / sizeof *item_values;
  it2.values = item_values;
  items[0] = &it0, items[1] = &it1, items[2] = &it2;

  s.id = low ? INT32_MIN : INT32_MAX;
  s.has_big = 1, s.big = low ? INT64_MIN : INT64_MAX;
  s.has_ubig = 1, s.ubig = low ? 0 : UINT64_MAX;
  s.has_real = 1, s.real = low ? -DBL_MAX : 4.9406564584124654e-324;
  s.has_small = 1, s.small = low ? -INFINITY : FLT_MAX;
  s.has_flag = 1, s.flag = low ? 0 : 1;
  s.text = (char *)text_utf8;
  s.has_blob = 1, s.blob.len = sizeof blob_bytes, s.blob.data = (uint8_t *)blob_bytes;
  s.has_color = 1, s.color = low ? IPT__COLOR__RED : IPT__COLOR__BLUE;
  s.inner = &inner;
  s.n_items = 3, s.items = items;
  s.n_tags = sizeof tags / sizeof *tags, s.tags = tags;
  if (low) {
    s.choice_case = IPT__SAMPLE__CHOICE_NUMBER;
    s.number = INT32_MIN;
  } else {
    s.choice_case = IPT__SAMPLE__CHOICE_NAME;
    s.name = "the name";
  }
  return &s;
}

static void *make_full_high(void) { return full_sample(false); }
static void *make_full_low(void) { return full_sample(true); }

static void check_full(const Ipt__Sample *got, bool low) {
  const Ipt__Sample *want = full_sample(low); /* the parent builds the same one */
  cr_assert_eq(got->base.descriptor, &ipt__sample__descriptor);
  cr_assert_eq(got->id, want->id);
  cr_assert(got->has_big);
  cr_assert_eq(got->big, want->big);
  cr_assert(got->has_ubig);
  cr_assert_eq(got->ubig, want->ubig);
  cr_assert(got->has_real);
  cr_assert_eq(memcmp(&got->real, &want->real, sizeof got->real), 0, "%a", got->real);
  cr_assert(got->has_small);
  cr_assert_eq(memcmp(&got->small, &want->small, sizeof got->small), 0, "%a", got->small);
  cr_assert(got->has_flag);
  cr_assert_eq(!!got->flag, !!want->flag);
  cr_assert_str_eq(got->text, text_utf8);
  cr_assert(got->has_blob);
  cr_assert_eq(got->blob.len, sizeof blob_bytes);
  cr_assert_eq(memcmp(got->blob.data, blob_bytes, sizeof blob_bytes), 0, "NULs in bytes");
  cr_assert(got->has_color);
  cr_assert_eq(got->color, want->color);

  cr_assert_not_null(got->inner);
  cr_assert_str_eq(got->inner->label, "inner");
  cr_assert_eq(got->inner->n_values, want->inner->n_values);
  for (size_t i = 0; i < got->inner->n_values; i++)
    cr_assert_eq(got->inner->values[i], inner_values[i], "inner value %zu", i);

  cr_assert_eq(got->n_items, 3);
  cr_assert_not_null(got->items[0]->label);
  cr_assert_str_eq(got->items[0]->label, "", "an empty string that was set stays set");
  cr_assert_null(got->items[1]->label, "an unset optional string stays unset");
  cr_assert_eq(got->items[1]->n_values, 0);
  cr_assert_str_eq(got->items[2]->label, "third");
  cr_assert_eq(got->items[2]->n_values, want->items[2]->n_values);
  for (size_t i = 0; i < got->items[2]->n_values; i++)
    cr_assert_eq(got->items[2]->values[i], item_values[i], "item value %zu", i);

  cr_assert_eq(got->n_tags, want->n_tags);
  for (size_t i = 0; i < got->n_tags; i++) cr_assert_str_eq(got->tags[i], tags[i]);

  cr_assert_eq(got->choice_case, want->choice_case);
  if (low) cr_assert_eq(got->number, INT32_MIN);
  else cr_assert_str_eq(got->name, "the name");
}

Test(protobuf, sample_with_every_field_at_its_upper_limits_round_trips) {
  struct call c = call_make(&ipt__sample__descriptor, make_full_high);
  const Ipt__Sample *got = value_of(c.f);
  check_full(got, false);
  cr_assert_eq(ip_future_value(c.f), got, "decoded once and kept");
  call_free(&c);
}

Test(protobuf, sample_with_every_field_at_its_lower_limits_round_trips) {
  struct call c = call_make(&ipt__sample__descriptor, make_full_low);
  check_full(value_of(c.f), true);
  call_free(&c);
}

/* The same message packed here gives the same bytes as the child's: a whole-message check
 * that catches a field the assertions above forgot. */
Test(protobuf, parent_repacks_the_value_to_the_same_bytes) {
  struct call c = call_make(&ipt__sample__descriptor, make_full_high);
  const ProtobufCMessage *got = value_of(c.f);
  const ProtobufCMessage *want = &full_sample(false)->base;
  size_t n = protobuf_c_message_get_packed_size(got);
  cr_assert_eq(n, protobuf_c_message_get_packed_size(want));
  uint8_t *a = malloc(n), *b = malloc(n);
  cr_assert_eq(protobuf_c_message_pack(got, a), n);
  cr_assert_eq(protobuf_c_message_pack(want, b), n);
  cr_assert_eq(memcmp(a, b, n), 0);
  free(a);
  free(b);
  call_free(&c);
}

/* ---- a Sample with only its required field --------------------------------------------------- */

static void *make_minimal(void) {
  static Ipt__Sample s = IPT__SAMPLE__INIT;
  s.id = 42;
  return &s;
}
static void *make_zero(void) {
  static Ipt__Sample s = IPT__SAMPLE__INIT; /* id 0: a required scalar is always "set" */
  return &s;
}

static void check_minimal(const Ipt__Sample *m, int32_t id) {
  cr_assert_eq(m->id, id);
  cr_assert(!m->has_big && !m->has_ubig && !m->has_real && !m->has_small && !m->has_flag);
  cr_assert(!m->has_blob && !m->has_color);
  cr_assert_null(m->text);
  cr_assert_null(m->inner);
  cr_assert_eq(m->n_items, 0);
  cr_assert_eq(m->n_tags, 0);
  cr_assert_eq(m->choice_case, IPT__SAMPLE__CHOICE__NOT_SET);
}

Test(protobuf, sample_with_only_the_required_field_round_trips) {
  struct call c = call_make(&ipt__sample__descriptor, make_minimal);
  check_minimal(value_of(c.f), 42);
  call_free(&c);
  c = call_make(&ipt__sample__descriptor, make_zero);
  check_minimal(value_of(c.f), 0);
  call_free(&c);
}

/* A message with no fields set packs to zero bytes: the empty result must still decode. */
static void *make_empty_other(void) {
  static Ipt__Other o = IPT__OTHER__INIT;
  return &o;
}

Test(protobuf, message_that_packs_to_zero_bytes_round_trips) {
  struct call c = call_make(&ipt__other__descriptor, make_empty_other);
  const Ipt__Other *o = value_of(c.f);
  cr_assert_eq(o->base.descriptor, &ipt__other__descriptor);
  cr_assert_null(o->note);
  call_free(&c);
}

/* A 2 MiB bytes field: a value streamed in many frames. */
#define BIG_BLOB ((size_t)2 << 20)
static unsigned char big_byte(size_t i) { return (unsigned char)(i * 13u + (i >> 12)); }
static void *make_big(void) {
  static Ipt__Sample s = IPT__SAMPLE__INIT;
  uint8_t *p = malloc(BIG_BLOB);
  for (size_t i = 0; i < BIG_BLOB; i++) p[i] = big_byte(i);
  s.id = 7;
  s.has_blob = 1, s.blob.len = BIG_BLOB, s.blob.data = p;
  return &s;
}

Test(protobuf, two_mib_bytes_field_round_trips) {
  struct call c = call_make(&ipt__sample__descriptor, make_big);
  const Ipt__Sample *m = value_of(c.f);
  cr_assert_eq(m->blob.len, BIG_BLOB);
  for (size_t i = 0; i < BIG_BLOB; i++)
    if (m->blob.data[i] != big_byte(i)) cr_assert_fail("byte %zu differs", i);
  call_free(&c);
}

/* ---- misuse in the child: IP_EENCODE --------------------------------------------------------- */

static void *make_other_with_note(void) {
  static Ipt__Other o = IPT__OTHER__INIT;
  o.note = "I am not a Sample";
  return &o;
}
static void *make_null(void) { return NULL; }

Test(protobuf, message_of_another_type_is_eencode) {
  expect_encode_failure(&ipt__sample__descriptor, make_other_with_note,
                        "a message of type ipt.Other where the serializer expects ipt.Sample");
  expect_encode_failure(&ipt__sample__descriptor, make_empty_other,
                        "a message of type ipt.Other where the serializer expects ipt.Sample");
  /* and the other way round */
  expect_encode_failure(&ipt__other__descriptor, make_minimal,
                        "a message of type ipt.Sample where the serializer expects ipt.Other");
}

Test(protobuf, null_is_eencode) {
  expect_encode_failure(&ipt__sample__descriptor, make_null,
                        "the task returned NULL where the serializer expects a message of "
                        "type ipt.Sample");
}

/* Something that is no protobuf-c message at all: its first word is no descriptor. */
static void *make_not_a_message(void) {
  static struct {
    const void *first;
    int x;
  } junk = {NULL, 7};
  return &junk;
}

Test(protobuf, a_value_that_is_no_message_is_eencode) {
  expect_encode_failure(&ipt__sample__descriptor, make_not_a_message,
                        "the task returned something that is not a protobuf-c message (no "
                        "message descriptor at its start) where the serializer expects "
                        "ipt.Sample");
}

/* Sample's only required field is a scalar, which a C struct always holds; Strict's required
 * string and message can really be missing. */
static Ipt__Inner strict_inner = IPT__INNER__INIT;
static void *make_strict_ok(void) {
  static Ipt__Strict s = IPT__STRICT__INIT;
  s.key = "k";
  s.inner = &strict_inner;
  return &s;
}
static void *make_strict_no_key(void) {
  static Ipt__Strict s = IPT__STRICT__INIT;
  s.inner = &strict_inner;
  return &s;
}
static void *make_strict_no_inner(void) {
  static Ipt__Strict s = IPT__STRICT__INIT;
  s.key = "k";
  return &s;
}

Test(protobuf, message_missing_a_required_field_is_eencode) {
  expect_encode_failure(&ipt__strict__descriptor, make_strict_no_key,
                        "the ipt.Strict message fails protobuf_c_message_check: the required "
                        "field ipt.Strict.key (a string) is missing (NULL)");
  expect_encode_failure(&ipt__strict__descriptor, make_strict_no_inner,
                        "the ipt.Strict message fails protobuf_c_message_check: the required "
                        "field ipt.Strict.inner (a message) is missing (NULL)");
  struct call c = call_make(&ipt__strict__descriptor, make_strict_ok); /* the control */
  const Ipt__Strict *s = value_of(c.f);
  cr_assert_str_eq(s->key, "k");
  cr_assert_not_null(s->inner);
  call_free(&c);
}

/* Other ways a Sample fails protobuf_c_message_check. */
static void *make_null_tag(void) {
  static char *bad[] = {"ok", NULL};
  Ipt__Sample *s = make_minimal();
  s->n_tags = 2, s->tags = bad;
  return s;
}
static void *make_null_item(void) {
  static Ipt__Inner *bad[] = {NULL};
  Ipt__Sample *s = make_minimal();
  s->n_items = 1, s->items = bad;
  return s;
}
static void *make_blob_without_data(void) {
  Ipt__Sample *s = make_minimal();
  s->has_blob = 1, s->blob.len = 3, s->blob.data = NULL;
  return s;
}

/* Failures inside submessages name the path down to the field. */
static void *make_inner_values_without_array(void) {
  static Ipt__Inner in = IPT__INNER__INIT;
  in.n_values = 2, in.values = NULL;
  Ipt__Sample *s = make_minimal();
  s->inner = &in;
  return s;
}
static void *make_item_with_null_values(void) {
  static Ipt__Inner fine = IPT__INNER__INIT, bad = IPT__INNER__INIT;
  static Ipt__Inner *items[2] = {&fine, &bad};
  bad.n_values = 1, bad.values = NULL;
  Ipt__Sample *s = make_minimal();
  s->n_items = 2, s->items = items;
  return s;
}

Test(protobuf, message_failing_protobuf_c_check_is_eencode) {
  expect_encode_failure(&ipt__sample__descriptor, make_null_tag,
                        "the ipt.Sample message fails protobuf_c_message_check: element 1 of "
                        "the repeated string ipt.Sample.tags is NULL");
  expect_encode_failure(&ipt__sample__descriptor, make_null_item,
                        "the ipt.Sample message fails protobuf_c_message_check: "
                        "ipt.Sample.items[0] is NULL");
  expect_encode_failure(&ipt__sample__descriptor, make_blob_without_data,
                        "the ipt.Sample message fails protobuf_c_message_check: the bytes field "
                        "ipt.Sample.blob has len 3 but data NULL");
  expect_encode_failure(&ipt__sample__descriptor, make_inner_values_without_array,
                        "the ipt.Sample message fails protobuf_c_message_check: the repeated "
                        "field ipt.Sample.inner.values has a count of 2 but its array is NULL");
  expect_encode_failure(&ipt__sample__descriptor, make_item_with_null_values,
                        "the ipt.Sample message fails protobuf_c_message_check: the repeated "
                        "field ipt.Sample.items[1].values has a count of 1 but its array is "
                        "NULL");
}

/* ---- the decoder on untrusted bytes ---------------------------------------------------------- */

static int decode(const ip_serializer *s, const void *buf, size_t len, void **v) {
  *v = NULL;
  return s->decode(s, buf, len, v);
}

Test(protobuf, decoder_refuses_bytes_that_do_not_unpack) {
  ip_serializer *s = ip_serializer_protobuf_new(&ipt__sample__descriptor);
  cr_assert_not_null(s);
  void *v;
  cr_assert_eq(decode(s, NULL, 0, &v), IP_EDECODE, "no bytes: the required id is missing");
  cr_assert_eq(decode(s, "\x10\x01", 2, &v), IP_EDECODE, "big=1 but no id");
  cr_assert_eq(decode(s, "\x08", 1, &v), IP_EDECODE, "truncated varint");
  cr_assert_eq(decode(s, "\x08\x01\x3a\x05" "ab", 6, &v), IP_EDECODE, "string cut short");
  cr_assert_eq(decode(s, "\x08\x01\x0f", 3, &v), IP_EDECODE, "wire type 7");
  cr_assert_eq(decode(s, "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, &v), IP_EDECODE,
               "varint longer than 10 bytes");
  cr_assert_eq(decode(s, "\x08\x05", 2, &v), 0);
  cr_assert_eq(((Ipt__Sample *)v)->id, 5);
  s->free_value(s, v);
  ip_serializer_free(s);

  ip_serializer *o = ip_serializer_protobuf_new(&ipt__other__descriptor);
  cr_assert_eq(decode(o, NULL, 0, &v), 0, "no bytes are a valid empty Other");
  cr_assert_not_null(v);
  o->free_value(o, v);
  ip_serializer_free(o);
}

/* ---- construction, naming, registration, freeing --------------------------------------------- */

Test(protobuf, new_with_null_is_einval) {
  errno = 0;
  cr_assert_null(ip_serializer_protobuf_new(NULL));
  cr_assert_eq(errno, EINVAL);
}

Test(protobuf, new_with_a_descriptor_that_is_not_a_message_is_einval) {
  errno = 0;
  cr_assert_null(
      ip_serializer_protobuf_new((const ProtobufCMessageDescriptor *)&ipt__color__descriptor));
  cr_assert_eq(errno, EINVAL);
}

Test(protobuf, wire_name_is_protobuf_colon_full_name) {
  ip_serializer *s = ip_serializer_protobuf_new(&ipt__sample__descriptor);
  ip_serializer *o = ip_serializer_protobuf_new(&ipt__other__descriptor);
  cr_assert_str_eq(s->name, "protobuf:ipt.Sample");
  cr_assert_str_eq(o->name, "protobuf:ipt.Other");
  cr_assert_eq(s->abi, IP_SERIALIZER_ABI);
  cr_assert_not_null(s->encode);
  cr_assert_not_null(s->decode);
  cr_assert_not_null(s->free_value);
  cr_assert_not_null(s->destroy, "made at run time: ip_serializer_free destroys it");
  ip_serializer_free(s);
  ip_serializer_free(o);
}

/* Names too long for the 63-byte wire id keep their start and end in a hash of the whole, so
 * two long names that share a prefix still differ. */
Test(protobuf, long_message_names_get_distinct_wire_names_within_63_bytes) {
  static char n1[200], n2[200];
  memset(n1, 'x', 150);
  memcpy(n2, n1, 150);
  strcpy(n1 + 150, ".One");
  strcpy(n2 + 150, ".Two");
  ProtobufCMessageDescriptor d1 = ipt__other__descriptor, d2 = ipt__other__descriptor;
  d1.name = n1;
  d2.name = n2;
  ip_serializer *s1 = ip_serializer_protobuf_new(&d1);
  ip_serializer *s2 = ip_serializer_protobuf_new(&d2);
  cr_assert_not_null(s1);
  cr_assert_not_null(s2);
  cr_assert_eq(strlen(s1->name), 63, "%s", s1->name);
  cr_assert_eq(strlen(s2->name), 63);
  cr_assert_eq(strncmp(s1->name, "protobuf:xxx", 12), 0);
  cr_assert_str_neq(s1->name, s2->name);
  cr_assert_eq(ip_serializer_register(s1), 0, "a valid name");
  cr_assert_eq(ip_serializer_register(s2), 0);
  ip_serializer_free(s1);
  ip_serializer_free(s2);
}

Test(protobuf, serializer_free_is_null_safe_and_ignores_static_serializers) {
  ip_serializer_free(NULL);
  ip_serializer_free((ip_serializer *)ip_serializer_raw());
  cr_assert_eq(ip_serializer_lookup("raw"), ip_serializer_raw());
}

Test(protobuf, free_unregisters_a_registered_serializer) {
  ip_serializer *s = ip_serializer_protobuf_new(&ipt__sample__descriptor);
  cr_assert_null(ip_serializer_lookup("protobuf:ipt.Sample"), "not registered by _new");
  cr_assert_eq(ip_serializer_register(s), 0);
  cr_assert_eq(ip_serializer_register(s), 0, "twice is fine");
  cr_assert_eq(ip_serializer_lookup("protobuf:ipt.Sample"), s);
  ip_serializer *dup = ip_serializer_protobuf_new(&ipt__sample__descriptor);
  cr_assert_eq(ip_serializer_register(dup), IP_EALREADY, "same name, other serializer");
  ip_serializer_free(dup);
  cr_assert_eq(ip_serializer_lookup("protobuf:ipt.Sample"), s, "freeing dup left s alone");
  ip_serializer_free(s);
  cr_assert_null(ip_serializer_lookup("protobuf:ipt.Sample"));
  /* The name is free again. */
  ip_serializer *again = ip_serializer_protobuf_new(&ipt__sample__descriptor);
  cr_assert_eq(ip_serializer_register(again), 0);
  cr_assert_eq(ip_serializer_lookup("protobuf:ipt.Sample"), again);
  ip_serializer_free(again);
}

Test(protobuf, one_serializer_shared_by_many_calls_in_flight) {
  enum { N = 12 };
  ip_serializer *s = ip_serializer_protobuf_new(&ipt__sample__descriptor);
  static struct maker hi = {make_full_high}, lo = {make_full_low};
  ip_task *t = ip_task_new(make_in_child, s);
  ip_future *fs[N];
  for (int i = 0; i < N; i++) fs[i] = ip_call(t, i % 2 ? &lo : &hi);
  for (int i = 0; i < N; i++) check_full(value_of(fs[i]), i % 2);
  for (int i = 0; i < N; i++) ip_future_free(fs[i]);
  ip_task_free(t);
  ip_serializer_free(s);
  cr_assert(no_children());
}

/* ---- nothing left behind -------------------------------------------------------------------- */

static void *wait_on_pipe(void *arg) {
  int *fd = arg;
  char c;
  if (read(fd[0], &c, 1) != 1) return NULL;
  return make_minimal();
}

Test(protobuf, no_descriptor_child_or_zombie_is_left_behind) {
  int gate[2];
  cr_assert_eq(pipe(gate), 0);
  ip_serializer *s = ip_serializer_protobuf_new(&ipt__sample__descriptor);
  ip_task *t = ip_task_new(wait_on_pipe, s);
  ip_future *f = ip_call(t, gate);
  cr_assert_eq(ip_future_wait(f, 0), IP_ETIMEDOUT); /* this thread waits: its eventfd exists */
  cr_assert_eq(write(gate[1], "x", 1), 1);
  check_minimal(value_of(f), 42);
  ip_future_free(f);
  ip_task_free(t);
  ip_serializer_free(s);
  int base = count_fds();
  for (int round = 0; round < 5; round++) {
    struct call c = call_make(&ipt__sample__descriptor, make_full_high);
    check_full(value_of(c.f), false);
    call_free(&c);
    expect_encode_failure(&ipt__sample__descriptor, make_other_with_note,
                          "a message of type ipt.Other where the serializer expects ipt.Sample");
    c = call_make(&ipt__sample__descriptor, make_big);
    cr_assert_eq(ip_future_wait(c.f, -1), 0); /* freed unread */
    call_free(&c);
  }
  cr_assert_eq(count_fds(), base);
  cr_assert(no_children());
  close(gate[0]);
  close(gate[1]);
}

/* ---- pools: the argument travels as a protobuf message too ----------------------------------- */

/* In a pool worker fn gets the decoded argument, a `const Ipt__Sample *`. For id 41 it answers
 * {id + 1, the text reversed, big = the worker's pid}; for id -1 a message of another type,
 * which the serializer refuses; else a copy of the argument (packed and unpacked here). What
 * it returns lives until the next call, so that a worker that runs many does not pile them
 * up. */
static Ipt__Sample pool_out;
static char pool_text[256];
static ProtobufCMessage *pool_copy;

static void *pool_fn(void *arg) {
  const Ipt__Sample *in = arg;
  if (pool_copy) protobuf_c_message_free_unpacked(pool_copy, NULL);
  pool_copy = NULL;
  if (!in) return NULL;
  if (in->id == -1) return make_other_with_note();
  if (in->id != 41) {
    size_t n = protobuf_c_message_get_packed_size(&in->base);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) ip_raise(ENOMEM, "malloc");
    protobuf_c_message_pack(&in->base, buf);
    pool_copy = protobuf_c_message_unpack(&ipt__sample__descriptor, NULL, n, buf);
    free(buf);
    if (!pool_copy) ip_raise(EPROTO, "the worker could not unpack its own packing");
    return pool_copy;
  }
  Ipt__Sample init = IPT__SAMPLE__INIT;
  pool_out = init;
  pool_out.id = in->id + 1;
  size_t len = in->text ? strlen(in->text) : 0;
  if (len >= sizeof pool_text) len = sizeof pool_text - 1;
  for (size_t i = 0; i < len; i++) pool_text[i] = in->text[len - 1 - i];
  pool_text[len] = '\0';
  pool_out.text = pool_text;
  pool_out.has_big = 1;
  pool_out.big = getpid();
  return &pool_out;
}

struct pool_setup {
  ip_serializer *s;
  ip_task *t;
  ip_pool *p;
};

static struct pool_setup pool_setup(void) {
  struct pool_setup ps;
  ps.s = ip_serializer_protobuf_new(&ipt__sample__descriptor);
  cr_assert_not_null(ps.s);
  ps.t = ip_task_new(pool_fn, ps.s);
  cr_assert_not_null(ps.t);
  cr_assert_eq(ip_task_set_arg_serializer(ps.t, ps.s), 0);
  ps.p = ip_pool_new(1); /* after the serializer and the task: the workers have both */
  cr_assert_not_null(ps.p, "%s", strerror(errno));
  return ps;
}

static void pool_teardown(struct pool_setup *ps) {
  ip_pool_free(ps->p);
  ip_task_free(ps->t);
  ip_serializer_free(ps->s);
  cr_assert(no_children());
}

/* id 41 and `text` in a message of the heap, freed as soon as the call returns. */
static ip_future *pool_call_41(struct pool_setup *ps, const char *text) {
  Ipt__Sample *m = malloc(sizeof *m);
  cr_assert_not_null(m);
  ipt__sample__init(m);
  m->id = 41;
  m->text = strdup(text);
  ip_future *f = ip_pool_call(ps->p, ps->t, m);
  cr_assert_not_null(f);
  cr_assert_eq(ip_future_arg(f), m);
  memset(m->text, '?', strlen(m->text));
  free(m->text);
  free(m);
  return f;
}

Test(protobuf, a_pool_call_takes_a_protobuf_argument_the_caller_frees_at_once) {
  struct pool_setup ps = pool_setup();
  ip_future *f = pool_call_41(&ps, "hello, pool");
  const Ipt__Sample *got = value_of(f);
  cr_assert_eq(got->id, 42);
  cr_assert_str_eq(got->text, "loop ,olleh");
  cr_assert(got->has_big);
  pid_t w = ip_future_pid(f);
  cr_assert_gt(w, 0);
  cr_assert_eq(got->big, w, "ran in %lld, ip_future_pid says %d", (long long)got->big, (int)w);
  ip_future_free(f);
  /* Every field at its limits, there and back. */
  f = ip_pool_call(ps.p, ps.t, full_sample(false));
  check_full(value_of(f), false);
  cr_assert_eq(ip_future_pid(f), w, "the same worker runs the next call");
  ip_future_free(f);
  f = ip_pool_call(ps.p, ps.t, full_sample(true));
  check_full(value_of(f), true);
  ip_future_free(f);
  pool_teardown(&ps);
}

Test(protobuf, a_pool_argument_that_is_no_sample_fails_at_once_and_a_bad_result_spares_the_worker) {
  struct pool_setup ps = pool_setup();
  void *bad[] = {NULL, make_other_with_note(), make_empty_other()};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    ip_future *f = ip_pool_call(ps.p, ps.t, bad[i]);
    cr_assert_not_null(f);
    cr_assert_eq(ip_future_status(f), IP_EENCODE, "argument %zu: %s", i,
                 ip_err_name(ip_future_status(f)));
    cr_assert_not_null(strstr(ip_future_error(f)->message, "protobuf:ipt.Sample"), "%s",
                       ip_future_error(f)->message);
    cr_assert_eq(ip_future_pid(f), 0);
    ip_future_free(f);
  }
  /* fn returns a message of another type: the call fails in the worker, which runs on. */
  Ipt__Sample m = IPT__SAMPLE__INIT;
  m.id = -1;
  ip_future *f = ip_pool_call(ps.p, ps.t, &m);
  cr_assert_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_EENCODE, "%s: %s", ip_err_name(e->code), e->message);
  cr_assert_not_null(strstr(e->message, "a message of type ipt.Other where the serializer expects "
                                        "ipt.Sample"), "%s", e->message);
  pid_t w = ip_future_pid(f);
  cr_assert_gt(w, 0);
  ip_future_free(f);
  f = pool_call_41(&ps, "again");
  cr_assert_str_eq(((const Ipt__Sample *)value_of(f))->text, "niaga");
  cr_assert_eq(ip_future_pid(f), w, "a result that failed to encode ended the worker");
  ip_future_free(f);
  pool_teardown(&ps);
}
