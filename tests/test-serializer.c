/* User-defined serializers end to end: a length-prefixed list of strings (encode in several
 * small writes, decode with full bounds checks), with and without registration; encode and
 * decode failures; many tiny writes and one huge write. */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>

/* ---- "x-strlist": fn returns `const char **` (NULL-terminated); the parent gets `char **` -- */
/* Wire: u32 count, then per string u32 length + bytes. */

static int strlist_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  const char *const *v = value;
  if (!v) return -1;
  uint32_t n = 0;
  while (v[n]) n++;
  int rc = w(ctx, &n, sizeof n);
  for (uint32_t i = 0; rc == 0 && i < n; i++) {
    uint32_t len = (uint32_t)strlen(v[i]);
    rc = w(ctx, &len, sizeof len);
    /* The bytes in pieces of at most 3, so frames gather many small writes. */
    for (uint32_t off = 0; rc == 0 && off < len; off += 3)
      rc = w(ctx, v[i] + off, len - off < 3 ? len - off : 3);
  }
  return rc;
}

static void strlist_free(const ip_serializer *s, void *value);

static int strlist_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  const unsigned char *p = buf, *end = p + len;
  uint32_t n;
  if ((size_t)(end - p) < sizeof n) return -1;
  memcpy(&n, p, sizeof n);
  p += sizeof n;
  /* Every string needs at least its 4-byte length: bound n before allocating. */
  if (n > (size_t)(end - p) / 4) return -2;
  char **v = calloc((size_t)n + 1, sizeof *v);
  if (!v) return -3;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t l;
    if ((size_t)(end - p) < sizeof l) goto bad;
    memcpy(&l, p, sizeof l);
    p += sizeof l;
    if (l > (size_t)(end - p)) goto bad;
    if (!(v[i] = malloc((size_t)l + 1))) goto bad;
    memcpy(v[i], p, l);
    v[i][l] = '\0';
    p += l;
  }
  if (p != end) goto bad; /* trailing garbage */
  *value = v;
  return 0;
bad:
  strlist_free(s, v);
  return -4;
}

static atomic_int n_freed;

static void strlist_free(const ip_serializer *s, void *value) {
  char **v = value;
  if (!v) return;
  for (char **q = v; *q; q++) free(*q);
  free(v);
  atomic_fetch_add(&n_freed, 1);
}

static const ip_serializer strlist = {
    .abi = IP_SERIALIZER_ABI,
    .name = "x-strlist",
    .encode = strlist_encode,
    .decode = strlist_decode,
    .free_value = strlist_free,
};

static const char *fruits[] = {"apple", "", "banana split", "cherry", NULL};
static void *fn_fruits(void *arg) { return (void *)fruits; }
static const char *none[] = {NULL};
static void *fn_none(void *arg) { return (void *)none; }
static void *fn_null(void *arg) { return NULL; }

/* A long string list built in the child: 1000 strings "s<i>" repeated i % 50 times. */
static void *fn_many_strings(void *arg) {
  const char **v = calloc(1001, sizeof *v);
  for (int i = 0; i < 1000; i++) {
    char *s = malloc(64 * 50 + 1), *q = s;
    for (int k = 0; k < i % 50; k++) q += sprintf(q, "s%d", i);
    *q = '\0';
    v[i] = s;
  }
  return v;
}

static void expect_fruits(char *const *v) {
  cr_assert_not_null(v);
  for (int i = 0; fruits[i]; i++) {
    cr_assert_not_null(v[i], "string %d missing", i);
    cr_expect_str_eq(v[i], fruits[i]);
  }
  cr_expect_null(v[4]);
}

Test(serializer, strlist_round_trip_without_registration) {
  cr_assert_null(ip_serializer_lookup("x-strlist"));
  ip_task *t = ip_task_new(fn_fruits, &strlist);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  char *const *v = ip_future_value(f);
  cr_assert_not_null(v, "%s", ip_future_error(f) ? ip_future_error(f)->message : "");
  expect_fruits(v);
  cr_expect_eq(ip_future_status(f), 0);
  cr_expect_null(ip_future_error(f));
  ip_future_free(f);
  ip_task_free(t);
}

Test(serializer, strlist_round_trip_through_registration_and_lookup) {
  cr_assert_eq(ip_serializer_register(&strlist), 0);
  const ip_serializer *s = ip_serializer_lookup("x-strlist");
  cr_assert_eq(s, &strlist);
  ip_task *t = ip_task_new(fn_fruits, s);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  expect_fruits(ip_future_value(f));
  ip_future_free(f);
  ip_task_free(t);
}

Test(serializer, strlist_empty_list_round_trips) {
  ip_task *t = ip_task_new(fn_none, &strlist);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  char *const *v = ip_future_value(f);
  cr_assert_not_null(v, "%s", ip_future_error(f) ? ip_future_error(f)->message : "");
  cr_expect_null(v[0]);
  ip_future_free(f);
  ip_task_free(t);
}

Test(serializer, strlist_thousand_strings_round_trip) {
  ip_task *t = ip_task_new(fn_many_strings, &strlist);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  char *const *v = ip_future_value(f);
  cr_assert_not_null(v, "%s", ip_future_error(f) ? ip_future_error(f)->message : "");
  char want[64 * 50 + 1];
  for (int i = 0; i < 1000; i++) {
    char *q = want;
    for (int k = 0; k < i % 50; k++) q += sprintf(q, "s%d", i);
    *q = '\0';
    cr_assert_not_null(v[i]);
    cr_assert_str_eq(v[i], want, "string %d", i);
  }
  cr_expect_null(v[1000]);
  ip_future_free(f);
  ip_task_free(t);
}

Test(serializer, free_value_runs_once_at_future_free_and_only_after_decoding) {
  ip_task *t = ip_task_new(fn_fruits, &strlist);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  ip_future *g = ip_call(t, NULL);
  const void *v1 = ip_future_value(f);
  const void *v2 = ip_future_value(f);
  cr_expect_not_null(v1);
  cr_expect_eq(v1, v2, "the value is decoded once and kept");
  cr_expect_eq(ip_future_wait(g, -1), 0); /* done, but its value never asked for */
  cr_expect_eq(atomic_load(&n_freed), 0);
  ip_future_free(f);
  cr_expect_eq(atomic_load(&n_freed), 1);
  ip_future_free(g);
  cr_expect_eq(atomic_load(&n_freed), 1, "a value never decoded is never freed");
  ip_task_free(t);
}

/* ---- decode runs lazily, in the thread that asks ------------------------------------------ */

static atomic_int n_decodes;
static pthread_t decode_thread;

static int tracking_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  atomic_fetch_add(&n_decodes, 1);
  decode_thread = pthread_self();
  return strlist_decode(s, buf, len, value);
}

static const ip_serializer tracking = {
    .abi = IP_SERIALIZER_ABI,
    .name = "x-tracking",
    .encode = strlist_encode,
    .decode = tracking_decode,
    .free_value = strlist_free,
};

static void *status_in_thread(void *f) { return (void *)(intptr_t)ip_future_status(f); }

/* The first look at a completed future (here its status) decodes it, once, in the thread
 * that looks; waiting decodes nothing. */
Test(serializer, decode_runs_once_in_the_thread_that_first_looks) {
  ip_task *t = ip_task_new(fn_fruits, &tracking);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  cr_expect_eq(atomic_load(&n_decodes), 0, "decoded before anyone looked");
  pthread_t th;
  void *st;
  cr_assert_eq(pthread_create(&th, NULL, status_in_thread, f), 0);
  cr_assert_eq(pthread_join(th, &st), 0);
  cr_expect_eq((intptr_t)st, 0);
  cr_expect_eq(atomic_load(&n_decodes), 1);
  cr_expect(pthread_equal(decode_thread, th), "decode ran in another thread");
  const void *v = ip_future_value(f);
  cr_expect_eq(atomic_load(&n_decodes), 1);
  expect_fruits(v);
  ip_future_free(f);
  ip_task_free(t);
}

/* ---- encode and decode failures ---------------------------------------------------------- */

Test(serializer, encode_failure_is_eencode_naming_the_serializer) {
  ip_task *t = ip_task_new(fn_null, &strlist); /* strlist_encode refuses NULL with -1 */
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  cr_expect_null(ip_future_value(f));
  cr_expect_eq(ip_future_status(f), IP_EENCODE);
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_expect_eq(e->code, IP_EENCODE);
  cr_expect(strstr(e->message, "x-strlist") != NULL, "message: %s", e->message);
  cr_expect_eq(atomic_load(&n_freed), 0);
  ip_future_free(f);
  ip_task_free(t);
}

/* ip_encode_error: encode() says why it fails. The value is a C string: an empty one is
 * refused with a message, "quiet" is refused without one, "changed my mind" records a message
 * and then encodes after all, "long" says why at length; anything else is sent as is. */
static int why_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  const char *v = value;
  if (!*v) return ip_encode_error(-42, "an empty string (%d bytes) cannot be sent", 0);
  if (strcmp(v, "quiet") == 0) return -43;
  if (strcmp(v, "changed my mind") == 0) (void)ip_encode_error(-44, "never shown");
  if (strcmp(v, "long") == 0) {
    static char text[5001];
    memset(text, 'w', sizeof text - 1);
    return ip_encode_error(-45, "%s", text);
  }
  return w(ctx, v, strlen(v));
}

static int why_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  char *v = malloc(len + 1);
  if (!v) return -1;
  memcpy(v, buf, len);
  v[len] = '\0';
  *value = v;
  return 0;
}

static void why_free(const ip_serializer *s, void *value) { free(value); }

static const ip_serializer why_ser = {
    .abi = IP_SERIALIZER_ABI,
    .name = "x-why",
    .encode = why_encode,
    .decode = why_decode,
    .free_value = why_free,
};

static void *fn_string(void *arg) { return arg; }

static ip_future *call_why(ip_task **tp, const char *value) {
  *tp = ip_task_new(fn_string, &why_ser);
  cr_assert_not_null(*tp);
  ip_future *f = ip_call(*tp, (void *)value);
  cr_assert_not_null(f);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  return f;
}

Test(serializer, encode_error_message_reaches_the_parent) {
  ip_task *t;
  ip_future *f = call_why(&t, "");
  cr_assert_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_EENCODE);
  cr_assert_str_eq(e->kind, "EENCODE");
  cr_assert_str_eq(e->message, "the x-why serializer could not encode the result: an empty "
                               "string (0 bytes) cannot be sent");
  cr_assert_eq(e->raised_code, -42, "raised_code is what encode() returned");
  cr_assert_null(e->backtrace);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(serializer, encode_error_without_a_message_quotes_the_code) {
  ip_task *t;
  ip_future *f = call_why(&t, "quiet");
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_EENCODE);
  cr_assert_str_eq(e->message,
                   "the x-why serializer could not encode the result (it returned -43)");
  cr_assert_eq(e->raised_code, -43);
  ip_future_free(f);
  ip_task_free(t);
}

Test(serializer, encode_error_message_is_dropped_when_encode_succeeds) {
  ip_task *t;
  ip_future *f = call_why(&t, "changed my mind");
  const char *v = ip_future_value(f);
  cr_assert_not_null(v, "%s", ip_future_error(f) ? ip_future_error(f)->message : "");
  cr_assert_str_eq(v, "changed my mind");
  ip_future_free(f);
  ip_task_free(t);
}

Test(serializer, encode_error_long_message_arrives_whole) {
  ip_task *t;
  ip_future *f = call_why(&t, "long");
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  const char *colon = strstr(e->message, "result: ");
  cr_assert_not_null(colon, "%s", e->message);
  cr_assert_eq(strlen(colon + 8), 5000);
  cr_assert_eq(strspn(colon + 8, "w"), 5000);
  ip_future_free(f);
  ip_task_free(t);
}

/* Each call says its own reason: nothing is left over from an earlier one. */
Test(serializer, encode_error_messages_do_not_leak_between_calls) {
  ip_task *t;
  ip_future *f = call_why(&t, "");
  ip_future_free(f);
  ip_task_free(t);
  f = call_why(&t, "quiet");
  cr_assert_not_null(ip_future_error(f));
  cr_assert_str_eq(ip_future_error(f)->message,
                   "the x-why serializer could not encode the result (it returned -43)");
  ip_future_free(f);
  ip_task_free(t);
}

/* Outside a task's child (here: the test calling encode() itself) it only returns the code. */
Test(serializer, encode_error_outside_a_child_returns_the_code) {
  cr_assert_eq(ip_encode_error(-9, "nobody reads %s", "this"), -9);
  cr_assert_eq(ip_encode_error(0, "zero too"), 0);
  cr_assert_eq(ip_encode_error(IP_EENCODE, NULL), IP_EENCODE);
  cr_assert_eq(why_ser.encode(&why_ser, "", NULL, NULL), -42);
}

/* The size limit still wins over a message the encoder gave after a refused write. */
static int said_after_refusal(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  static char chunk[4096];
  int rc = w(ctx, chunk, sizeof chunk);
  return rc ? ip_encode_error(rc, "the sink refused %zu bytes", sizeof chunk) : 0;
}
static const ip_serializer refusal = {
    .abi = IP_SERIALIZER_ABI, .name = "x-refusal", .encode = said_after_refusal,
    .decode = why_decode, .free_value = why_free};

Test(serializer, encode_error_after_a_refused_write_is_still_e2big) {
  ip_task *t = ip_task_new(fn_string, &refusal);
  cr_assert_eq(ip_task_set_max_result(t, 100), 0);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  cr_assert_eq(ip_future_status(f), IP_E2BIG);
  ip_future_free(f);
  ip_task_free(t);
}

/* The raw serializer says what is wrong with the ip_bytes it was given. */
static void *fn_bytes_without_data(void *arg) {
  static ip_bytes b = {NULL, 5};
  return &b;
}

Test(serializer, raw_bytes_without_data_say_so) {
  ip_task *t = ip_task_new(fn_bytes_without_data, NULL);
  ip_future *f = ip_call(t, NULL);
  cr_assert_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_EENCODE);
  cr_assert_str_eq(e->message, "the raw serializer could not encode the result: an ip_bytes with "
                               "data NULL and len 5");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

static int failing_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  return -77;
}

static const ip_serializer bad_decoder = {
    .abi = IP_SERIALIZER_ABI,
    .name = "x-bad-decoder",
    .encode = strlist_encode,
    .decode = failing_decode,
    .free_value = strlist_free,
};

Test(serializer, decode_failure_is_edecode_naming_the_serializer) {
  ip_task *t = ip_task_new(fn_fruits, &bad_decoder);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  /* A completed future is fixed from the first look: status, error and value agree. */
  cr_expect_eq(ip_future_status(f), IP_EDECODE);
  cr_expect_not_null(ip_future_error(f));
  cr_expect_null(ip_future_value(f));
  cr_expect_eq(ip_future_status(f), IP_EDECODE);
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_expect_eq(e->code, IP_EDECODE);
  cr_expect_str_eq(e->kind, "EDECODE");
  cr_expect(strstr(e->message, "x-bad-decoder") != NULL, "message: %s", e->message);
  cr_expect_eq(e->raised_code, -77);
  cr_expect_null(ip_future_value(f), "a second ask does not decode again into a value");
  ip_future_free(f);
  cr_expect_eq(atomic_load(&n_freed), 0, "free_value ran on a value decode never made");
  ip_task_free(t);
}

/* Truncated or padded bytes must be caught by the decoder's bounds checks, not read past. */
Test(serializer, strlist_decoder_rejects_every_truncation_and_trailing_bytes) {
  unsigned char wire[64];
  size_t n = 0;
  uint32_t cnt = 2, l1 = 3, l2 = 5;
  memcpy(wire + n, &cnt, 4), n += 4;
  memcpy(wire + n, &l1, 4), n += 4;
  memcpy(wire + n, "abc", 3), n += 3;
  memcpy(wire + n, &l2, 4), n += 4;
  memcpy(wire + n, "defgh", 5), n += 5;
  void *v = NULL;
  cr_assert_eq(strlist_decode(&strlist, wire, n, &v), 0);
  cr_expect_str_eq(((char **)v)[1], "defgh");
  strlist_free(&strlist, v);
  for (size_t cut = 0; cut < n; cut++) {
    /* Each prefix is copied to an exact-size heap block, so ASan/valgrind see an overread. */
    unsigned char *p = malloc(cut ? cut : 1);
    memcpy(p, wire, cut);
    cr_expect_neq(strlist_decode(&strlist, p, cut, &v), 0, "prefix of %zu bytes accepted", cut);
    free(p);
  }
  wire[n] = 0;
  cr_expect_neq(strlist_decode(&strlist, wire, n + 1, &v), 0);
  uint32_t huge = UINT32_MAX;
  memcpy(wire, &huge, 4);
  cr_expect_neq(strlist_decode(&strlist, wire, n, &v), 0);
}

static int null_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  *value = NULL;
  return 0;
}

static const ip_serializer decodes_to_null = {
    .abi = IP_SERIALIZER_ABI,
    .name = "x-null-value",
    .encode = strlist_encode,
    .decode = null_decode,
    .free_value = NULL, /* allowed when decode allocates nothing */
};

Test(serializer, decode_to_null_is_success_with_null_value) {
  ip_task *t = ip_task_new(fn_fruits, &decodes_to_null);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  cr_expect_null(ip_future_value(f));
  cr_expect_eq(ip_future_status(f), 0);
  cr_expect_null(ip_future_error(f));
  ip_future_free(f);
  ip_task_free(t);
}

/* ---- "x-pieces": fn returns an ip_bytes; encode writes it in pieces of `piece` bytes ------ */

struct pieces_ser {
  ip_serializer s;
  size_t piece;
};

static int pieces_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  const struct pieces_ser *ps = (const struct pieces_ser *)s;
  const ip_bytes *b = value;
  const unsigned char *p = b->data;
  for (size_t off = 0; off < b->len; off += ps->piece) {
    int rc = w(ctx, p + off, b->len - off < ps->piece ? b->len - off : ps->piece);
    if (rc) return rc;
  }
  return 0;
}

static int pieces_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  ip_bytes *b = malloc(sizeof *b);
  if (!b) return -1;
  b->data = (void *)buf; /* points into the future's buffer: valid until free_value */
  b->len = len;
  *value = b;
  return 0;
}

static void pieces_free(const ip_serializer *s, void *value) { free(value); }

static struct pieces_ser one_byte = {
    {.abi = IP_SERIALIZER_ABI, .name = "x-one-byte", .encode = pieces_encode,
     .decode = pieces_decode, .free_value = pieces_free},
    1};
static struct pieces_ser whole = {
    {.abi = IP_SERIALIZER_ABI, .name = "x-whole", .encode = pieces_encode,
     .decode = pieces_decode, .free_value = pieces_free},
    SIZE_MAX};

static unsigned char pat(size_t i) { return (unsigned char)((i * 31) & 0xff); }

static void *fn_pattern(void *arg) {
  size_t n = *(size_t *)arg;
  static ip_bytes b;
  unsigned char *p = malloc(n ? n : 1);
  for (size_t i = 0; i < n; i++) p[i] = pat(i);
  b.data = p;
  b.len = n;
  return &b;
}

static void expect_pattern(ip_future *f, size_t n) {
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s", ip_future_error(f) ? ip_future_error(f)->message : "");
  cr_assert_eq(b->len, n);
  const unsigned char *p = b->data;
  for (size_t i = 0; i < n; i++)
    if (p[i] != pat(i)) cr_assert_fail("byte %zu is %u, want %u", i, p[i], pat(i));
}

Test(serializer, encode_in_ten_thousand_one_byte_writes) {
  size_t n = 10000;
  ip_task *t = ip_task_new(fn_pattern, &one_byte.s);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, &n);
  expect_pattern(f, n);
  ip_future_free(f);
  ip_task_free(t);
}

Test(serializer, encode_in_one_ten_mib_write) {
  size_t n = (size_t)10 << 20;
  ip_task *t = ip_task_new(fn_pattern, &whole.s);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, &n);
  expect_pattern(f, n);
  ip_future_free(f);
  ip_task_free(t);
}

Test(serializer, user_encode_past_max_result_is_e2big) {
  size_t n = 5000;
  ip_task *t = ip_task_new(fn_pattern, &one_byte.s);
  cr_assert_not_null(t);
  cr_assert_eq(ip_task_set_max_result(t, 4999), 0);
  ip_future *f = ip_call(t, &n);
  cr_expect_null(ip_future_value(f));
  cr_expect_eq(ip_future_status(f), IP_E2BIG);
  ip_future_free(f);
  cr_assert_eq(ip_task_set_max_result(t, 5000), 0);
  f = ip_call(t, &n);
  expect_pattern(f, n);
  ip_future_free(f);
  ip_task_free(t);
}

/* An encoder that ignores the sink's error: the bytes the sink refused are missing, so the
 * call must not succeed with a silently truncated value. */
static int careless_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  const ip_bytes *b = value;
  const unsigned char *p = b->data;
  for (size_t off = 0; off < b->len; off += 100)
    (void)w(ctx, p + off, b->len - off < 100 ? b->len - off : 100);
  return 0;
}

static const ip_serializer careless = {
    .abi = IP_SERIALIZER_ABI,
    .name = "x-careless",
    .encode = careless_encode,
    .decode = pieces_decode,
    .free_value = pieces_free,
};

Test(serializer, encoder_ignoring_a_refused_write_does_not_yield_a_truncated_value) {
  size_t n = 5000;
  ip_task *t = ip_task_new(fn_pattern, &careless);
  cr_assert_not_null(t);
  cr_assert_eq(ip_task_set_max_result(t, 1000), 0);
  ip_future *f = ip_call(t, &n);
  const ip_bytes *b = ip_future_value(f);
  cr_expect_null(b, "got a %zu-byte value of a 5000-byte result", b ? b->len : 0);
  cr_expect_eq(ip_future_status(f), IP_E2BIG);
  ip_future_free(f);
  ip_task_free(t);
}

Test(serializer, raw_serializer_is_usable_explicitly) {
  size_t n = 3000;
  ip_task *t = ip_task_new(fn_pattern, ip_serializer_lookup("raw"));
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, &n);
  expect_pattern(f, n);
  ip_future_free(f);
  ip_task_free(t);
}

/* ---- the inplace hook ------------------------------------------------------------------------ */

/* "x-blob": a user's serializer whose value owns its own encoding, built in an ip_bytes_alloc()
 * buffer ("XBLB", then a pattern), so it can hand the buffer over in place. The child's
 * function returns a `struct blob *`; the parent gets a `struct blob *` pointing into the
 * received bytes. */
struct blob {
  ip_bytes *enc; /* child: the encoding */
  const unsigned char *data; /* parent: the bytes after the magic, inside decode's buf */
  size_t len;
  bool in_place; /* parent: buf was the child's memfd, mapped read-only */
};

/* Whether addr lies in a read-only shared mapping of a memfd, per /proc/self/maps. */
static bool in_memfd_mapping(const void *addr) {
  FILE *maps = fopen("/proc/self/maps", "re");
  cr_assert_not_null(maps);
  char line[512];
  bool yes = false;
  while (fgets(line, sizeof line, maps)) {
    unsigned long lo, hi;
    char perms[8] = "";
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3) continue;
    if ((uintptr_t)addr < lo || (uintptr_t)addr >= hi) continue;
    yes = strcmp(perms, "r--s") == 0 && strstr(line, "/memfd:") != NULL;
    break;
  }
  fclose(maps);
  return yes;
}

static unsigned char blob_byte(size_t i) { return (unsigned char)((i * 7 + 3) & 0xff); }

static int blob_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  const struct blob *b = value;
  if (!b || !b->enc || !b->enc->data) return ip_encode_error(-1, "no blob");
  return w(ctx, b->enc->data, b->enc->len);
}

static int blob_inplace(const ip_serializer *s, const void *value, size_t *len) {
  const struct blob *b = value;
  return b ? ip_bytes_inplace(b->enc, len) : -1;
}

static int blob_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  if (len < 4 || memcmp(buf, "XBLB", 4) != 0) return -1;
  struct blob *b = calloc(1, sizeof *b);
  if (!b) return -2;
  b->data = (const unsigned char *)buf + 4;
  b->len = len - 4;
  b->in_place = in_memfd_mapping(buf);
  *value = b;
  return 0;
}

static void blob_free(const ip_serializer *s, void *value) { free(value); }

static const ip_serializer blob_ser = {
    .abi = IP_SERIALIZER_ABI,
    .name = "x-blob",
    .encode = blob_encode,
    .decode = blob_decode,
    .free_value = blob_free,
    .inplace = blob_inplace,
};

/* The same, without the hook: what every serializer did before it existed. */
static const ip_serializer blob_streamed = {
    .abi = IP_SERIALIZER_ABI,
    .name = "x-blob",
    .encode = blob_encode,
    .decode = blob_decode,
    .free_value = blob_free,
};

/* A blob of `*arg` payload bytes, built in place in the child. */
static void *fn_blob(void *arg) {
  size_t n = *(const size_t *)arg;
  static struct blob b;
  b.enc = ip_bytes_alloc(4 + n);
  if (!b.enc) ip_raise(ENOMEM, "ip_bytes_alloc(%zu)", 4 + n);
  unsigned char *p = b.enc->data;
  memcpy(p, "XBLB", 4);
  for (size_t i = 0; i < n; i++) p[4 + i] = blob_byte(i);
  return &b;
}

static const struct blob *expect_blob(ip_future *f, size_t n) {
  const struct blob *b = ip_future_value(f);
  const ip_error *e = ip_future_error(f);
  cr_assert_null(e, "%s: %s", e ? e->kind : "", e ? e->message : "");
  cr_assert_not_null(b);
  cr_assert_eq(b->len, n);
  for (size_t i = 0; i < n; i++)
    if (b->data[i] != blob_byte(i)) cr_assert_fail("byte %zu differs", i);
  return b;
}

static ip_future *call_blob(ip_task **tp, const ip_serializer *ser, size_t *n) {
  *tp = ip_task_new(fn_blob, ser);
  cr_assert_not_null(*tp);
  ip_future *f = ip_call(*tp, n);
  cr_assert_not_null(f);
  return f;
}

Test(serializer, inplace_hook_hands_a_large_value_over_without_a_copy) {
  size_t n = 3 << 20;
  ip_task *t;
  ip_future *f = call_blob(&t, &blob_ser, &n);
  const struct blob *b = expect_blob(f, n);
  cr_assert(b->in_place, "decode's buf is not the child's memfd: the value was streamed");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(serializer, without_the_hook_the_same_value_streams) {
  size_t n = 3 << 20;
  ip_task *t;
  ip_future *f = call_blob(&t, &blob_streamed, &n);
  const struct blob *b = expect_blob(f, n);
  cr_assert_not(b->in_place, "no hook, yet decode got a memfd");
  ip_future_free(f);
  ip_task_free(t);
}

/* Below 1 MiB ip_bytes_alloc() gives heap memory: ip_bytes_inplace() says -1 and encode()
 * streams. */
Test(serializer, inplace_hook_declining_falls_back_on_encode) {
  size_t n = 1000;
  ip_task *t;
  ip_future *f = call_blob(&t, &blob_ser, &n);
  const struct blob *b = expect_blob(f, n);
  cr_assert_not(b->in_place);
  ip_future_free(f);
  ip_task_free(t);
}

/* A hook that seals the buffer and then declines after all: the buffer is still readable (now
 * through a read-only mapping), so encode() streams it intact. */
static int blob_seal_then_decline(const ip_serializer *s, const void *value, size_t *len) {
  const struct blob *b = value;
  size_t l1 = 0, l2 = 0;
  int fd = ip_bytes_inplace(b->enc, &l1);
  if (fd < 0 || ip_bytes_inplace(b->enc, &l2) != fd || l1 != l2 || l1 != b->enc->len)
    ip_raise_error(IP_EINVAL, 0, NULL, "ip_bytes_inplace: no seal, or another answer twice", NULL);
  return -1;
}
static const ip_serializer blob_sealed_streamed = {
    .abi = IP_SERIALIZER_ABI,
    .name = "x-blob",
    .encode = blob_encode,
    .decode = blob_decode,
    .free_value = blob_free,
    .inplace = blob_seal_then_decline,
};

Test(serializer, a_sealed_buffer_still_streams) {
  size_t n = 2 << 20;
  ip_task *t;
  ip_future *f = call_blob(&t, &blob_sealed_streamed, &n);
  const struct blob *b = expect_blob(f, n);
  cr_assert_not(b->in_place);
  ip_future_free(f);
  ip_task_free(t);
}

/* Descriptors the parent would refuse are refused in the child, naming the serializer. */
static int hook_mode;
static int blob_bad_fd(const ip_serializer *s, const void *value, size_t *len) {
  int fd = memfd_create("x-blob-bad", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ftruncate(fd, 4096) < 0) return -1;
  if (hook_mode == 1) { /* sealed, but smaller than announced */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) return -1;
    *len = 8192;
  } else { /* not sealed */
    *len = 4096;
  }
  return fd;
}
static const ip_serializer blob_bad = {
    .abi = IP_SERIALIZER_ABI,
    .name = "x-blob-bad",
    .encode = blob_encode,
    .decode = blob_decode,
    .free_value = blob_free,
    .inplace = blob_bad_fd,
};

static void expect_bad_hook(int mode, const char *reason) {
  hook_mode = mode;
  size_t n = 10;
  ip_task *t;
  ip_future *f = call_blob(&t, &blob_bad, &n);
  cr_assert_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_EENCODE, "%s: %s", ip_err_name(e->code), e->message);
  cr_assert(strstr(e->message, "the x-blob-bad serializer's inplace hook gave "), "%s", e->message);
  cr_assert(strstr(e->message, reason), "no \"%s\" in: %s", reason, e->message);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(serializer, inplace_hook_with_an_unsealed_descriptor_is_eencode) {
  expect_bad_hook(0, "which is not sealed against writing, growing and shrinking");
}

Test(serializer, inplace_hook_with_a_short_descriptor_is_eencode) {
  expect_bad_hook(1, "a descriptor of 4096 bytes for a result of 8192");
}

Test(serializer, inplace_hook_past_max_result_is_e2big) {
  size_t n = 2 << 20;
  ip_task *t;
  ip_future *f = call_blob(&t, &blob_ser, &n);
  ip_future_free(f);
  cr_assert_eq(ip_task_set_max_result(t, n), 0); /* the magic makes it 4 bytes more */
  f = ip_call(t, &n);
  cr_assert_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_E2BIG, "%s: %s", ip_err_name(e->code), e->message);
  char want[128];
  snprintf(want, sizeof want, "child %d is %zu bytes, more than the task's max_result of %zu "
           "bytes", (int)e->pid, n + 4, n);
  cr_assert(strstr(e->message, want), "no \"%s\" in: %s", want, e->message);
  ip_future_free(f);
  ip_task_free(t);
}

/* Outside a child every buffer is heap memory: nothing to hand over. */
Test(serializer, bytes_inplace_outside_a_child_is_minus_one) {
  size_t len = 77;
  ip_bytes *b = ip_bytes_alloc(2 << 20);
  cr_assert_not_null(b);
  cr_assert_eq(ip_bytes_inplace(b, &len), -1);
  cr_assert_eq(len, 77, "len untouched");
  cr_assert_eq(ip_bytes_inplace(NULL, &len), -1);
  ip_bytes stack_bytes = {b->data, 10};
  cr_assert_eq(ip_bytes_inplace(&stack_bytes, &len), -1);
  ip_bytes_free(b);
}

/* ---- ip_serializer_free ---------------------------------------------------------------------- */

static atomic_int n_destroyed;

static void destroy_runtime(ip_serializer *s) {
  atomic_fetch_add(&n_destroyed, 1);
  free((char *)s->name);
  free(s);
}

Test(serializer, serializer_free_unregisters_and_destroys_a_runtime_serializer) {
  ip_serializer *s = calloc(1, sizeof *s);
  cr_assert_not_null(s);
  *s = strlist;
  s->name = strdup("x-runtime");
  s->destroy = destroy_runtime;
  cr_assert_eq(ip_serializer_register(s), 0);
  cr_assert_eq(ip_serializer_lookup("x-runtime"), s);
  ip_task *t = ip_task_new(fn_fruits, s);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  expect_fruits(ip_future_value(f));
  ip_future_free(f);
  ip_task_free(t);
  ip_serializer_free(s);
  cr_expect_eq(atomic_load(&n_destroyed), 1);
  cr_expect_null(ip_serializer_lookup("x-runtime"));
}

Test(serializer, serializer_free_ignores_null_and_static_serializers) {
  static ip_serializer st;
  st = strlist;
  st.name = "x-static";
  cr_assert_eq(ip_serializer_register(&st), 0);
  ip_serializer_free(NULL);
  ip_serializer_free(&st);
  ip_serializer_free((ip_serializer *)ip_serializer_raw());
  cr_expect_eq(ip_serializer_lookup("x-static"), &st, "a static serializer was unregistered");
  cr_expect_eq(ip_serializer_lookup("raw"), ip_serializer_raw());
  ip_task *t = ip_task_new(fn_fruits, &st);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  expect_fruits(ip_future_value(f));
  ip_future_free(f);
  ip_task_free(t);
}
