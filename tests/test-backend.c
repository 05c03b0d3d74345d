/* What a pool backend needs from the core (include/inparallel.h): task names, ip_call_encoded,
 * ip_pool_call_encoded, ip_future_bytes, and the backend's side itself ("Pool backends":
 * ip_pool_new_backend, ip_future_finish).
 *
 * Calls are real: ip_call_encoded forks, ip_pool_call_encoded runs on a local pool's workers.
 * The backend is one written here, a queue of calls and a thread that finishes them as the
 * test orders (the contract's other side, as libinparallel-mpi is; the library is not
 * mocked). Waits are on pipes, condition variables and futures. Where a test must know that a
 * thread sleeps inside the library (waitfor, cancel), the backend's thread watches it in /proc
 * before it finishes a call; time appears only in hang guards. */
#define _GNU_SOURCE
#include "helpers.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

/* A guard against hangs only (valgrind is slow). */
TestSuite(backend, .timeout = 300);

/* ---- serializers ------------------------------------------------------------------------------- */

static atomic_int n_decodes; /* decodes by "x-angled" in this process */

/* "x-angled": a C string that travels as "<" string ">", so that its encoding and its value
 * differ and a test can tell which one it got. */
static int angled_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  const char *str = value ? value : "";
  int rc = w(ctx, "<", 1);
  if (rc == 0) rc = w(ctx, str, strlen(str));
  if (rc == 0) rc = w(ctx, ">", 1);
  return rc;
}

static int angled_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  atomic_fetch_add(&n_decodes, 1);
  const char *b = buf;
  if (len < 2 || b[0] != '<' || b[len - 1] != '>') return -1;
  char *v = malloc(len - 1);
  if (!v) return IP_ENOMEM;
  memcpy(v, b + 1, len - 2);
  v[len - 2] = '\0';
  *value = v;
  return 0;
}

static void angled_free(const ip_serializer *s, void *value) { free(value); }

static const ip_serializer angled = {.abi = IP_SERIALIZER_ABI, .name = "x-angled",
                                     .encode = angled_encode, .decode = angled_decode,
                                     .free_value = angled_free};

/* Encodes like x-angled; its decode always fails. */
static int refusing_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  return -5;
}

static const ip_serializer refusing = {.abi = IP_SERIALIZER_ABI, .name = "x-refusing",
                                       .encode = angled_encode, .decode = refusing_decode};

/* Encodes like x-angled; its decode crashes the process it runs in. */
static int crashing_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  raise(SIGSEGV);
  return -1;
}

static const ip_serializer crashing = {.abi = IP_SERIALIZER_ABI, .name = "x-crashing",
                                       .encode = angled_encode, .decode = crashing_decode};

/* Where a test has a serializer encode something, as the core would. */
struct sink {
  unsigned char buf[256];
  size_t len;
};

static int sink_write(void *ctx, const void *buf, size_t len) {
  struct sink *k = ctx;
  if (len > sizeof k->buf - k->len) return IP_E2BIG;
  memcpy(k->buf + k->len, buf, len);
  k->len += len;
  return 0;
}

/* ---- task functions ---------------------------------------------------------------------------- */

/* Raw argument: what it is. */
static void *fn_describe(void *arg) {
  const ip_bytes *b = arg;
  char buf[64];
  if (!b) return bytes_of("NULL");
  snprintf(buf, sizeof buf, "ip_bytes len=%zu", b->len);
  return bytes_of(buf);
}

/* A C string argument (x-angled decoded it): "got " and the string, raw. */
static void *fn_got(void *arg) {
  char buf[128];
  snprintf(buf, sizeof buf, "got %s", arg ? (const char *)arg : "NULL");
  return bytes_of(buf);
}

/* Waits at the gate `arg`, then returns the C string "released" (for x-angled). */
static void *fn_gated_string(void *arg) {
  const struct gate *g = arg;
  char c;
  ssize_t r;
  while ((r = read(g->fd[0], &c, 1)) < 0 && errno == EINTR) {
  }
  return r == 1 ? "released" : "read failed";
}

/* The C string "value" (for x-angled and x-refusing). */
static void *fn_value_string(void *arg) { return "value"; }

/* Raw: the empty result. */
static void *fn_null(void *arg) { return NULL; }

/* Waits at the gate G (made before any pool, so workers have it too), then "released", raw. */
static struct gate G;
static void *fn_gated(void *arg) { return wait_on_gate(&G); }

static void *fn_raise(void *arg) { ip_raise(42, "raised on purpose"); }

/* ---- caller side ------------------------------------------------------------------------------- */

static ip_task *task(ip_fn fn, const ip_serializer *s) {
  ip_task *t = ip_task_new(fn, s);
  cr_assert_not_null(t, "ip_task_new: %s", strerror(errno));
  return t;
}

static ip_task *named(const char *name) {
  ip_task *t = task(echo_bytes, NULL);
  cr_assert_eq(ip_task_set_name(t, name), 0, "naming a task \"%s\"", name);
  return t;
}

/* The registry's order is `want` (n tasks), by ip_task_next_named from NULL to NULL. */
static void assert_registry(ip_task *const *want, size_t n) {
  ip_task *t = NULL;
  for (size_t i = 0; i < n; i++) {
    t = ip_task_next_named(t);
    cr_assert_eq(t, want[i], "registry entry %zu is %s, want %s", i,
                 t ? ip_task_name(t) : "(the end)", ip_task_name(want[i]));
  }
  t = ip_task_next_named(t);
  cr_assert_null(t, "registry goes on past %zu entries with %s", n, ip_task_name(t));
}

static void finished(ip_future *f) {
  cr_assert_not_null(f);
  cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0, "the call never completed");
}

/* f failed with `code`: its error, checked to agree with status and value. */
static const ip_error *failed_with(ip_future *f, int code) {
  finished(f);
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e, "succeeded where %s was expected", ip_err_name(code));
  cr_assert_eq(e->code, code, "want %s, got %s: %s", ip_err_name(code), ip_err_name(e->code),
               e->message);
  cr_assert_eq(ip_future_status(f), code);
  cr_assert_null(ip_future_value(f));
  return e;
}

/* f failed already, without any wait (ip_future_status never waits). */
static const ip_error *failed_at_once(ip_future *f, int code) {
  cr_assert_not_null(f);
  int st = ip_future_status(f);
  cr_assert_eq(st, code, "want %s at once, got %s: %s", ip_err_name(code), ip_err_name(st), why(f));
  return failed_with(f, code);
}

/* f succeeded with raw bytes equal to want[0..n). */
static void assert_raw_value(ip_future *f, const void *want, size_t n) {
  finished(f);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "the call failed: %s: %s", ip_err_name(ip_future_status(f)), why(f));
  cr_assert_eq(b->len, n, "value of %zu bytes, want %zu", b->len, n);
  cr_assert(n == 0 || memcmp(b->data, want, n) == 0, "the value's bytes differ");
}

/* ==== 1. task names ============================================================================ */

Test(backend, name_functions_take_null_without_crashing) {
  cr_expect_eq(ip_task_set_name(NULL, "x"), IP_EINVAL);
  cr_expect_eq(ip_task_set_name(NULL, NULL), IP_EINVAL);
  cr_expect_null(ip_task_name(NULL));
  cr_expect_null(ip_task_find(NULL));
  cr_expect_null(ip_task_serializer(NULL));
  cr_expect_null(ip_task_arg_serializer(NULL));
}

Test(backend, a_new_task_has_no_name_and_the_registry_is_empty) {
  ip_task *t = task(echo_bytes, NULL);
  cr_expect_null(ip_task_name(t));
  cr_expect_null(ip_task_next_named(NULL), "a fresh process has no named task");
  cr_expect_null(ip_task_next_named(t), "an unnamed task has no next");
  cr_expect_eq(ip_task_set_name(t, NULL), 0, "taking away a name it does not have");
  cr_expect_null(ip_task_name(t));
  ip_task_free(t);
}

Test(backend, names_of_1_and_255_bytes_are_taken_and_the_name_is_a_copy) {
  ip_task *a = task(echo_bytes, NULL), *b = task(echo_bytes, NULL);
  char buf[256];
  strcpy(buf, "q");
  cr_assert_eq(ip_task_set_name(a, buf), 0);
  memset(buf, 'n', 255);
  buf[255] = '\0';
  cr_assert_eq(ip_task_set_name(b, buf), 0, "a 255-byte name");
  cr_expect_neq(ip_task_name(b), buf, "the task keeps its own copy");
  cr_expect_str_eq(ip_task_name(b), buf);
  cr_expect_eq(ip_task_find(buf), b);
  buf[0] = 'X';
  cr_expect_eq(ip_task_name(b)[0], 'n', "changing the caller's buffer changed the name");
  cr_expect_str_eq(ip_task_name(a), "q");
  cr_expect_eq(ip_task_find("q"), a);
  ip_task_free(a);
  ip_task_free(b);
}

Test(backend, an_empty_name_or_one_of_256_bytes_is_einval_and_keeps_the_old_name) {
  ip_task *t = named("old");
  char big[257];
  memset(big, 'n', 256);
  big[256] = '\0';
  cr_expect_eq(ip_task_set_name(t, big), IP_EINVAL, "a 256-byte name");
  cr_expect_eq(ip_task_set_name(t, ""), IP_EINVAL, "an empty name");
  cr_expect_str_eq(ip_task_name(t), "old");
  cr_expect_eq(ip_task_find("old"), t);
  cr_expect_null(ip_task_find(big));
  cr_expect_null(ip_task_find(""));
  assert_registry(&t, 1);
  ip_task_free(t);
}

Test(backend, another_tasks_name_is_ealready_and_changes_nothing) {
  ip_task *a = named("shared"), *b = task(echo_bytes, NULL), *c = named("c");
  cr_expect_eq(ip_task_set_name(b, "shared"), IP_EALREADY, "an unnamed task");
  cr_expect_null(ip_task_name(b));
  cr_expect_eq(ip_task_set_name(c, "shared"), IP_EALREADY, "a named task");
  cr_expect_str_eq(ip_task_name(c), "c");
  cr_expect_eq(ip_task_find("shared"), a);
  ip_task *want[] = {a, c};
  assert_registry(want, 2);
  ip_task_free(a);
  ip_task_free(b);
  ip_task_free(c);
}

Test(backend, naming_a_task_again_with_its_own_name_is_0_and_keeps_its_place) {
  ip_task *a = named("a"), *b = named("b");
  const char *before = ip_task_name(a);
  cr_expect_eq(ip_task_set_name(a, "a"), 0);
  cr_expect_str_eq(ip_task_name(a), "a");
  cr_expect_eq(ip_task_name(a), before, "the name was replaced, not kept");
  ip_task *want[] = {a, b};
  assert_registry(want, 2);
  ip_task_free(a);
  ip_task_free(b);
}

Test(backend, renaming_moves_the_task_to_the_end_and_frees_its_old_name) {
  ip_task *a = named("a"), *b = named("b"), *c = named("c");
  cr_assert_eq(ip_task_set_name(a, "z"), 0);
  cr_expect_str_eq(ip_task_name(a), "z");
  cr_expect_null(ip_task_find("a"));
  cr_expect_eq(ip_task_find("z"), a);
  ip_task *want[] = {b, c, a};
  assert_registry(want, 3);
  ip_task *d = named("a"); /* the old name is free for another task */
  ip_task *want2[] = {b, c, a, d};
  assert_registry(want2, 4);
  ip_task_free(a);
  ip_task_free(b);
  ip_task_free(c);
  ip_task_free(d);
}

Test(backend, null_takes_the_name_away) {
  ip_task *a = named("a"), *b = named("b"), *c = named("c");
  cr_assert_eq(ip_task_set_name(b, NULL), 0);
  cr_expect_null(ip_task_name(b));
  cr_expect_null(ip_task_find("b"));
  cr_expect_null(ip_task_next_named(b), "an unnamed task has no next");
  ip_task *want[] = {a, c};
  assert_registry(want, 2);
  cr_assert_eq(ip_task_set_name(b, "b"), 0, "named again, it goes to the end");
  ip_task *want2[] = {a, c, b};
  assert_registry(want2, 3);
  ip_task_free(a);
  ip_task_free(b);
  ip_task_free(c);
}

Test(backend, freeing_a_named_task_takes_it_out_of_the_registry) {
  ip_task *a = named("a"), *b = named("b"), *c = named("c");
  ip_task_free(b);
  cr_expect_null(ip_task_find("b"));
  ip_task *want[] = {a, c};
  assert_registry(want, 2);
  ip_task_free(a);
  ip_task *want2[] = {c};
  assert_registry(want2, 1);
  ip_task_free(c);
  cr_expect_null(ip_task_next_named(NULL));
  ip_task *d = named("a"); /* a freed task's name is free again */
  cr_expect_eq(ip_task_find("a"), d);
  ip_task_free(d);
}

Test(backend, the_registry_is_in_naming_order_not_creation_order) {
  ip_task *first = task(echo_bytes, NULL), *second = task(echo_bytes, NULL), *third = task(echo_bytes, NULL),
          *unnamed = task(echo_bytes, NULL);
  cr_assert_eq(ip_task_set_name(third, "third-made"), 0);
  cr_assert_eq(ip_task_set_name(first, "first-made"), 0);
  cr_assert_eq(ip_task_set_name(second, "second-made"), 0);
  ip_task *want[] = {third, first, second};
  assert_registry(want, 3);
  cr_expect_eq(ip_task_find("first-made"), first);
  cr_expect_eq(ip_task_find("second-made"), second);
  cr_expect_eq(ip_task_find("third-made"), third);
  cr_expect_null(ip_task_find("fourth-made"));
  cr_expect_null(ip_task_find("first"), "a prefix is not a name");
  ip_task_free(first);
  ip_task_free(second);
  ip_task_free(third);
  ip_task_free(unnamed);
}

Test(backend, serializer_accessors_give_the_tasks_serializers) {
  ip_task *raw = task(echo_bytes, NULL), *own = task(fn_value_string, &angled);
  cr_expect_eq(ip_task_serializer(raw), ip_serializer_raw(), "NULL at ip_task_new is raw");
  cr_expect_eq(ip_task_arg_serializer(raw), ip_serializer_raw(), "the default argument serializer");
  cr_expect_eq(ip_task_serializer(own), &angled);
  cr_expect_eq(ip_task_arg_serializer(own), ip_serializer_raw());
  cr_assert_eq(ip_task_set_arg_serializer(own, &refusing), 0);
  cr_expect_eq(ip_task_arg_serializer(own), &refusing);
  cr_expect_eq(ip_task_serializer(own), &angled, "the result serializer did not change");
  cr_assert_eq(ip_task_set_arg_serializer(own, NULL), 0);
  cr_expect_eq(ip_task_arg_serializer(own), ip_serializer_raw(), "NULL sets raw again");
  ip_task_free(raw);
  ip_task_free(own);
}

/* ==== 2. ip_call_encoded ======================================================================== */

Test(backend, encoded_call_hands_fn_an_ip_bytes_of_the_same_bytes_by_default) {
  ip_task *t = task(echo_bytes, NULL);
  static const unsigned char arg[] = {'a', 0, 'b', 0xff, '\n', 'c'};
  ip_future *f = ip_call_encoded(t, arg, sizeof arg);
  assert_raw_value(f, arg, sizeof arg);
  cr_expect_gt(ip_future_pid(f), 0, "a child was forked");
  ip_future_free(f);
  ip_task_free(t);
}

Test(backend, encoded_call_with_an_empty_argument_hands_fn_empty_bytes) {
  ip_task *t = task(fn_describe, NULL);
  ip_future *f = ip_call_encoded(t, "", 0);
  finished(f);
  cr_expect_str_eq(str_of(f), "ip_bytes len=0", "%s", why(f));
  ip_future_free(f);
  f = ip_call_encoded(t, NULL, 0);
  finished(f);
  cr_expect_str_eq(str_of(f), "ip_bytes len=0", "NULL, 0: %s", why(f));
  ip_future_free(f);
  ip_task_free(t);
}

Test(backend, encoded_call_decodes_with_the_tasks_arg_serializer) {
  ip_task *t = task(fn_got, NULL); /* results raw, arguments x-angled */
  cr_assert_eq(ip_task_set_arg_serializer(t, &angled), 0);
  ip_future *f = ip_call_encoded(t, "<hello>", 7);
  finished(f);
  cr_expect_str_eq(str_of(f), "got hello", "%s", why(f));
  ip_future_free(f);
  ip_task_free(t);
}

Test(backend, encoded_call_whose_argument_fails_to_decode_is_edecode_naming_the_serializer) {
  ip_task *t = task(fn_got, NULL);
  cr_assert_eq(ip_task_set_arg_serializer(t, &refusing), 0);
  ip_future *f = ip_call_encoded(t, "<hello>", 7);
  const ip_error *e = failed_with(f, IP_EDECODE);
  cr_expect(strstr(e->message, "x-refusing") != NULL, "message: %s", e->message);
  cr_expect(strstr(e->message, "argument") != NULL, "message: %s", e->message);
  cr_expect_gt(ip_future_pid(f), 0, "the decoding ran in a child");
  ip_future_free(f);
  ip_task_free(t);
}

Test(backend, encoded_call_whose_decoder_crashes_fails_that_call_alone) {
  ip_task *bad = task(fn_got, NULL), *good = task(fn_got, NULL);
  cr_assert_eq(ip_task_set_arg_serializer(bad, &crashing), 0);
  cr_assert_eq(ip_task_set_arg_serializer(good, &angled), 0);
  ip_future *fb = ip_call_encoded(bad, "<boom>", 6);
  ip_future *fg = ip_call_encoded(good, "<fine>", 6);
  const ip_error *e = failed_with(fb, IP_ESIGNALED);
  cr_expect_eq(e->signal, SIGSEGV);
  cr_expect_str_eq(e->kind, "SIGSEGV");
  cr_expect_eq(e->pid, ip_future_pid(fb));
  finished(fg);
  cr_expect_str_eq(str_of(fg), "got fine", "the call beside it: %s", why(fg));
  ip_future_free(fb);
  ip_future_free(fg);
  fg = ip_call_encoded(good, "<after>", 7);
  finished(fg);
  cr_expect_str_eq(str_of(fg), "got after", "a call after it: %s", why(fg));
  ip_future_free(fg);
  ip_task_free(bad);
  ip_task_free(good);
}

Test(backend, encoded_call_with_a_null_task_is_einval_at_once) {
  ip_future *f = ip_call_encoded(NULL, "x", 1);
  const ip_error *e = failed_at_once(f, IP_EINVAL);
  cr_expect(strstr(e->message, "ip_call_encoded") != NULL, "message: %s", e->message);
  cr_expect_eq(ip_future_pid(f), 0, "no child");
  ip_future_free(f);
}

Test(backend, encoded_call_gives_its_arg_pointer_back) {
  ip_task *t = task(echo_bytes, NULL);
  char arg[] = "abc";
  ip_future *f = ip_call_encoded(t, arg, 3);
  cr_expect_eq(ip_future_arg(f), arg);
  finished(f);
  cr_expect_eq(ip_future_arg(f), arg, "once done too");
  ip_future_free(f);
  f = ip_call_encoded(t, NULL, 0);
  cr_expect_null(ip_future_arg(f));
  finished(f);
  ip_future_free(f);
  f = ip_call_encoded(NULL, arg, 3);
  cr_expect_eq(ip_future_arg(f), arg, "a call failed at once");
  ip_future_free(f);
  ip_task_free(t);
}

/* ==== 3. ip_pool_call_encoded on a local pool ==================================================== */

Test(backend, pool_encoded_argument_arrives_as_ip_pool_calls_raw_encoding_does) {
  ip_task *t = task(echo_bytes, NULL);
  ip_pool *p = ip_pool_new(2);
  cr_assert_not_null(p, "ip_pool_new: %s", strerror(errno));
  unsigned char arg[300];
  for (size_t i = 0; i < sizeof arg; i++) arg[i] = (unsigned char)(i * 7);
  ip_bytes b = {arg, sizeof arg};
  ip_future *by_value = ip_pool_call(p, t, &b);
  ip_future *encoded = ip_pool_call_encoded(p, t, arg, sizeof arg);
  assert_raw_value(by_value, arg, sizeof arg);
  assert_raw_value(encoded, arg, sizeof arg);
  ip_future_free(by_value);
  ip_future_free(encoded);
  ip_pool_free(p);
  ip_task_free(t);
}

Test(backend, pool_encoded_argument_is_not_encoded_again) {
  ip_task *t = task(fn_got, NULL);
  cr_assert_eq(ip_task_set_arg_serializer(t, &angled), 0);
  ip_pool *p = ip_pool_new(2);
  cr_assert_not_null(p, "ip_pool_new: %s", strerror(errno));
  struct sink k = {.len = 0};
  cr_assert_eq(angled.encode(&angled, "hi", sink_write, &k), 0);
  ip_future *by_value = ip_pool_call(p, t, "hi");
  ip_future *encoded = ip_pool_call_encoded(p, t, k.buf, k.len);
  finished(by_value);
  finished(encoded);
  cr_expect_str_eq(str_of(by_value), "got hi", "ip_pool_call: %s", why(by_value));
  cr_expect_str_eq(str_of(encoded), "got hi", "ip_pool_call_encoded: %s", why(encoded));
  ip_future_free(by_value);
  ip_future_free(encoded);
  ip_pool_free(p);
  ip_task_free(t);
}

Test(backend, pool_encoded_empty_argument_arrives_as_empty_bytes) {
  ip_task *t = task(fn_describe, NULL);
  ip_pool *p = ip_pool_new(2);
  cr_assert_not_null(p, "ip_pool_new: %s", strerror(errno));
  ip_future *empty = ip_pool_call_encoded(p, t, "", 0);
  ip_future *none = ip_pool_call_encoded(p, t, NULL, 0);
  finished(empty);
  finished(none);
  cr_expect_str_eq(str_of(empty), "ip_bytes len=0", "\"\", 0: %s", why(empty));
  cr_expect_str_eq(str_of(none), "ip_bytes len=0", "NULL, 0: %s", why(none));
  ip_future_free(empty);
  ip_future_free(none);
  ip_pool_free(p);
  ip_task_free(t);
}

Test(backend, pool_encoded_call_gives_its_arg_pointer_back) {
  ip_task *t = task(echo_bytes, NULL);
  ip_pool *p = ip_pool_new(2);
  cr_assert_not_null(p, "ip_pool_new: %s", strerror(errno));
  char arg[] = "abc";
  ip_future *f = ip_pool_call_encoded(p, t, arg, 3);
  ip_future *g = ip_pool_call_encoded(p, t, NULL, 0);
  cr_expect_eq(ip_future_arg(f), arg);
  cr_expect_null(ip_future_arg(g), "NULL, 0 gives NULL back");
  assert_raw_value(f, "abc", 3);
  assert_raw_value(g, "", 0);
  ip_future_free(f);
  ip_future_free(g);
  ip_pool_free(p);
  ip_task_free(t);
}

Test(backend, pool_encoded_call_with_a_null_pool_or_task_is_einval_at_once) {
  ip_task *t = task(echo_bytes, NULL);
  ip_pool *p = ip_pool_new(2);
  cr_assert_not_null(p, "ip_pool_new: %s", strerror(errno));
  ip_future *f = ip_pool_call_encoded(NULL, t, "x", 1);
  const ip_error *e = failed_at_once(f, IP_EINVAL);
  cr_expect(strstr(e->message, "ip_pool_call_encoded") != NULL, "message: %s", e->message);
  cr_expect(strstr(e->message, "pool") != NULL, "message: %s", e->message);
  ip_future_free(f);
  f = ip_pool_call_encoded(p, NULL, "x", 1);
  e = failed_at_once(f, IP_EINVAL);
  cr_expect(strstr(e->message, "task") != NULL, "message: %s", e->message);
  ip_future_free(f);
  ip_pool_free(p);
  ip_task_free(t);
}

/* ==== 4. ip_future_bytes ======================================================================== */

Test(backend, future_bytes_of_null_is_null_with_len_0) {
  size_t len = 99;
  cr_expect_null(ip_future_bytes(NULL, &len));
  cr_expect_eq(len, 0);
  cr_expect_null(ip_future_bytes(NULL, NULL));
}

Test(backend, future_bytes_is_null_while_running_then_the_encoded_bytes_undecoded) {
  struct gate g;
  gate_open(&g);
  ip_task *t = task(fn_gated_string, &angled);
  ip_future *f = ip_call(t, &g);
  cr_assert_not_null(f);
  size_t len = 99;
  cr_expect_null(ip_future_bytes(f, &len), "bytes while the child waits at the gate");
  cr_expect_eq(len, 0);
  cr_assert_eq(ip_future_done(f), 0, "the call ended before the gate opened: %s", why(f));
  gate_release(&g, 1);
  finished(f);
  const char *b = ip_future_bytes(f, &len);
  cr_assert_not_null(b, "no bytes once done: %s", why(f));
  cr_expect_eq(len, 10);
  cr_expect(len == 10 && memcmp(b, "<released>", 10) == 0, "bytes: %.*s", (int)len, b);
  cr_expect_eq(atomic_load(&n_decodes), 0, "ip_future_bytes decoded");
  cr_expect_str_eq(ip_future_value(f), "released", "%s", why(f));
  cr_expect_eq(atomic_load(&n_decodes), 1);
  cr_expect_eq(ip_future_bytes(f, &len), b, "the same bytes after the value");
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
}

Test(backend, future_bytes_comes_before_a_decode_that_fails) {
  ip_task *t = task(fn_value_string, &refusing);
  ip_future *f = ip_call(t, NULL);
  finished(f);
  size_t len = 0;
  const char *b = ip_future_bytes(f, &len);
  cr_assert_not_null(b, "no bytes: ip_future_bytes must not decode");
  cr_expect(len == 7 && memcmp(b, "<value>", 7) == 0, "bytes: %.*s", (int)len, b);
  const ip_error *e = failed_with(f, IP_EDECODE);
  cr_expect(strstr(e->message, "x-refusing") != NULL, "message: %s", e->message);
  ip_future_free(f);
  ip_task_free(t);
}

Test(backend, future_bytes_of_an_empty_result_is_empty_not_null) {
  ip_task *t = task(fn_null, NULL); /* raw: NULL is the empty result */
  ip_future *f = ip_call(t, NULL);
  finished(f);
  size_t len = 99;
  cr_expect_not_null(ip_future_bytes(f, &len), "NULL is for running and failed calls: %s", why(f));
  cr_expect_eq(len, 0);
  ip_future_free(f);
  ip_task_free(t);
}

Test(backend, future_bytes_of_a_failed_call_is_null) {
  ip_task *t = task(fn_raise, NULL);
  ip_future *f = ip_call(t, NULL);
  failed_with(f, IP_ERAISED);
  size_t len = 99;
  cr_expect_null(ip_future_bytes(f, &len));
  cr_expect_eq(len, 0);
  ip_future_free(f);
  f = ip_call(NULL, NULL); /* failed without a child */
  len = 99;
  cr_expect_null(ip_future_bytes(f, &len));
  cr_expect_eq(len, 0);
  ip_future_free(f);
  ip_task_free(t);
}

/* ==== 5. pool backends ========================================================================== */

/* ---- the backend: a queue of calls and a thread that finishes them ---------------------------- */

/* A call the backend took. */
struct tcall {
  ip_future *f;
  ip_task *t;
  unsigned char *arg; /* a copy: the core's buffer is valid only during call() */
  size_t len;
  pthread_t caller;   /* the thread call() ran in */
  bool cancel;        /* cancel() asked for it */
  bool finished;      /* ip_future_finish was called for it: f is not touched again */
  struct tcall *next;
};

/* A finish that the backend's thread does, in the order the test posted them. */
struct order {
  ip_future *f;
  ip_error e;
  void *result;
  size_t len;
};

#define MAX_ORDERS 16

struct tb {
  pthread_mutex_t mu; /* guards everything below but free_began */
  pthread_cond_t cv;  /* broadcast on every change */
  pthread_t thread;
  bool stop;
  /* Set by the test. */
  int workers; /* what workers() answers */
  int refuse;  /* non-zero: call() refuses with this code */
  /* Non-zero: the thread finishes a call only once thread `sleeper` sleeps in a wait, and,
   * from the second order on, once the test has taken the previous one (took()). */
  pid_t sleeper;
  int taken;
  bool hold;                    /* call() waits while this is set, once it set `holding` */
  void (*on_free)(struct tb *); /* runs first in free(), in the freeing thread */
  ip_pool *pool;                /* for on_free and the threads of the tests */
  ip_task *task;
  struct order orders[MAX_ORDERS];
  int n_orders;
  /* Seen by the backend. */
  int n_call, n_cancel, n_workers, n_free;
  struct tcall *calls, **tail;
  int next_order, n_done;   /* orders started, orders done (their order_rc set) */
  int order_rc[MAX_ORDERS]; /* what ip_future_finish returned for each order */
  int not_asleep;           /* finishes done after the hang guard gave up on the sleeper */
  bool holding;
  int in_call;              /* threads inside call() */
  int in_call_at_free;      /* ... when free() began */
  atomic_bool free_began;
  ip_future *during_free;   /* on_free's call */
};

static int asleep_in_a_wait(pid_t tid) {
  long nr = blocked_syscall(getpid(), tid);
#ifdef SYS_poll
  if (nr == SYS_poll) return 1;
#endif
  return nr == SYS_ppoll || nr == SYS_epoll_wait || nr == SYS_epoll_pwait || nr == SYS_futex;
}

/* Until thread tid sleeps in a wait; false when the hang guard ran out first. */
static bool await_asleep(pid_t tid) {
  int64_t deadline = now_ms() + guard_ms(30000);
  while (!asleep_in_a_wait(tid)) {
    if (left_ms(deadline) == 0) return false;
    poll(NULL, 0, 1); /* paces the watching of /proc only */
  }
  return true;
}

static int finish_canceled(ip_future *f, const char *why_) {
  ip_error e = {.code = IP_ECANCELED, .kind = "ECANCELED", .message = why_, .exit_status = -1};
  return ip_future_finish(f, &e, NULL, 0);
}

static struct tcall *find_locked(struct tb *b, const ip_future *f) {
  struct tcall *c = b->calls;
  while (c && c->f != f) c = c->next;
  return c;
}

static void *tb_thread(void *arg) {
  struct tb *b = arg;
  pthread_mutex_lock(&b->mu);
  while (!b->stop) {
    struct tcall *c = NULL;
    if (b->next_order < b->n_orders) {
      int i = b->next_order;
      if (b->sleeper && b->taken < i) { /* lockstep: the test takes each before the next */
        pthread_cond_wait(&b->cv, &b->mu);
        continue;
      }
      b->next_order++;
      struct order o = b->orders[i];
      if ((c = find_locked(b, o.f))) c->finished = true;
      pid_t sleeper = b->sleeper;
      pthread_mutex_unlock(&b->mu);
      bool asleep = !sleeper || await_asleep(sleeper);
      int rc = ip_future_finish(o.f, &o.e, o.result, o.len);
      pthread_mutex_lock(&b->mu);
      b->not_asleep += !asleep;
      b->order_rc[i] = rc;
      b->n_done++;
      pthread_cond_broadcast(&b->cv);
      continue;
    }
    for (c = b->calls; c && !(c->cancel && !c->finished); c = c->next) {
    }
    if (c) { /* canceled: finish it, as the contract asks */
      c->finished = true;
      pid_t sleeper = b->sleeper;
      pthread_mutex_unlock(&b->mu);
      bool asleep = !sleeper || await_asleep(sleeper);
      finish_canceled(c->f, "canceled by the test backend");
      pthread_mutex_lock(&b->mu);
      b->not_asleep += !asleep;
      continue;
    }
    pthread_cond_wait(&b->cv, &b->mu);
  }
  pthread_mutex_unlock(&b->mu);
  return NULL;
}

static int tb_call(void *self, ip_future *f, ip_task *t, const void *arg, size_t len) {
  struct tb *b = self;
  struct tcall *c = calloc(1, sizeof *c);
  unsigned char *copy = malloc(len ? len : 1);
  if (!c || !copy) {
    free(c);
    free(copy);
    return IP_ENOMEM;
  }
  if (len) memcpy(copy, arg, len);
  *c = (struct tcall){.f = f, .t = t, .arg = copy, .len = len, .caller = pthread_self()};
  pthread_mutex_lock(&b->mu);
  b->n_call++;
  b->in_call++;
  if (b->hold) {
    b->holding = true;
    pthread_cond_broadcast(&b->cv);
    while (b->hold) pthread_cond_wait(&b->cv, &b->mu);
  }
  b->in_call--;
  int refuse = b->stop ? IP_EINVAL : b->refuse;
  if (refuse) {
    pthread_mutex_unlock(&b->mu);
    free(copy);
    free(c);
    return refuse;
  }
  *b->tail = c;
  b->tail = &c->next;
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
  return 0;
}

static void tb_cancel(void *self, ip_future *f) {
  struct tb *b = self;
  pthread_mutex_lock(&b->mu);
  b->n_cancel++;
  struct tcall *c = find_locked(b, f);
  if (c) c->cancel = true; /* not found or finished: it is being finished, which is enough */
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

static int tb_workers(void *self) {
  struct tb *b = self;
  pthread_mutex_lock(&b->mu);
  b->n_workers++;
  int n = b->workers;
  pthread_mutex_unlock(&b->mu);
  return n;
}

/* Stops the thread, then finishes what is left. `self` is the test's: nothing to release. */
static void tb_free(void *self) {
  struct tb *b = self;
  atomic_store(&b->free_began, true);
  pthread_mutex_lock(&b->mu);
  b->n_free++;
  b->in_call_at_free = b->in_call;
  void (*hook)(struct tb *) = b->on_free;
  pthread_mutex_unlock(&b->mu);
  if (hook) hook(b);
  pthread_mutex_lock(&b->mu);
  b->stop = true;
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
  pthread_join(b->thread, NULL);
  for (;;) {
    pthread_mutex_lock(&b->mu);
    struct tcall *c = b->calls;
    while (c && c->finished) c = c->next;
    if (c) c->finished = true;
    pthread_mutex_unlock(&b->mu);
    if (!c) break;
    finish_canceled(c->f, "the test backend's pool was freed");
  }
}

static const ip_backend test_backend = {.abi = IP_BACKEND_ABI, .name = "test", .call = tb_call,
                                        .cancel = tb_cancel, .workers = tb_workers,
                                        .free = tb_free};

static void tb_init(struct tb *b) {
  memset(b, 0, sizeof *b);
  pthread_mutex_init(&b->mu, NULL);
  pthread_cond_init(&b->cv, NULL);
  b->tail = &b->calls;
  cr_assert_eq(pthread_create(&b->thread, NULL, tb_thread, b), 0);
}

/* After ip_pool_free (which joined the thread): frees the records and unused results. */
static void tb_destroy(struct tb *b) {
  while (b->calls) {
    struct tcall *c = b->calls;
    b->calls = c->next;
    free(c->arg);
    free(c);
  }
  for (int i = b->next_order; i < b->n_orders; i++) free(b->orders[i].result);
  pthread_mutex_destroy(&b->mu);
  pthread_cond_destroy(&b->cv);
}

static ip_pool *backend_pool(struct tb *b) {
  ip_pool *p = ip_pool_new_backend(&test_backend, b);
  cr_assert_not_null(p, "ip_pool_new_backend: %s", strerror(errno));
  b->pool = p;
  return p;
}

/* The i-th call the backend took (calls are only added, so the record stays put). */
static struct tcall *took_call(struct tb *b, int i) {
  pthread_mutex_lock(&b->mu);
  struct tcall *c = b->calls;
  while (c && i-- > 0) c = c->next;
  pthread_mutex_unlock(&b->mu);
  cr_assert_not_null(c, "the backend took fewer calls");
  return c;
}

static int counter(struct tb *b, const int *n) {
  pthread_mutex_lock(&b->mu);
  int v = *n;
  pthread_mutex_unlock(&b->mu);
  return v;
}

/* Has the backend's thread finish f with e and a malloc'ed copy of `result` (len bytes; no
 * result when NULL). */
static void post(struct tb *b, ip_future *f, const ip_error *e, const void *result, size_t len) {
  void *copy = NULL;
  if (result) {
    copy = malloc(len ? len : 1);
    cr_assert_not_null(copy);
    memcpy(copy, result, len);
  }
  pthread_mutex_lock(&b->mu);
  cr_assert_lt(b->n_orders, MAX_ORDERS);
  b->orders[b->n_orders++] = (struct order){f, *e, copy, len};
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

/* A success whose encoded result is the string `result`. */
static void post_result(struct tb *b, ip_future *f, const char *result) {
  ip_error ok = {.code = 0, .exit_status = -1};
  post(b, f, &ok, result, strlen(result));
}

/* What ip_future_finish returned for order i, once the thread is done with it. */
static int order_rc(struct tb *b, int i) {
  pthread_mutex_lock(&b->mu);
  while (b->n_done <= i) pthread_cond_wait(&b->cv, &b->mu);
  int rc = b->order_rc[i];
  pthread_mutex_unlock(&b->mu);
  return rc;
}

/* The test took a future the thread finished (lockstep, see `sleeper`). */
static void took(struct tb *b) {
  pthread_mutex_lock(&b->mu);
  b->taken++;
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

/* From now on the thread finishes each call only once thread `tid` sleeps in a wait. */
static void set_sleeper(struct tb *b, pid_t tid) {
  pthread_mutex_lock(&b->mu);
  b->sleeper = tid;
  pthread_mutex_unlock(&b->mu);
}

/* Finishes f here, in the test's thread, as the backend (marking it finished for free()). */
static int finish_here(struct tb *b, ip_future *f, const ip_error *e, void *result, size_t len) {
  pthread_mutex_lock(&b->mu);
  struct tcall *c = find_locked(b, f);
  if (c) c->finished = true;
  pthread_mutex_unlock(&b->mu);
  return ip_future_finish(f, e, result, len);
}

static pid_t this_thread(void) { return (pid_t)syscall(SYS_gettid); }

/* A pool call with a one-byte raw argument, from a buffer gone when this returns. */
static ip_future *pcall(ip_pool *p, ip_task *t, char tag) {
  char c = tag;
  ip_bytes arg = {&c, 1};
  ip_future *f = ip_pool_call(p, t, &arg);
  cr_assert_not_null(f);
  return f;
}

/* ---- the tests -------------------------------------------------------------------------------- */

static void refused(const ip_backend *b, const char *what) {
  int self;
  errno = 0;
  cr_expect_null(ip_pool_new_backend(b, &self), "%s", what);
  cr_expect_eq(errno, EINVAL, "%s: errno %d", what, errno);
}

Test(backend, new_backend_rejects_null_another_abi_and_a_missing_function) {
  refused(NULL, "a NULL backend");
  ip_backend b = test_backend;
  b.abi = 0;
  refused(&b, "abi 0");
  b.abi = IP_BACKEND_ABI + 1;
  refused(&b, "the next abi");
  b = test_backend, b.call = NULL;
  refused(&b, "no call");
  b = test_backend, b.cancel = NULL;
  refused(&b, "no cancel");
  b = test_backend, b.workers = NULL;
  refused(&b, "no workers");
  b = test_backend, b.free = NULL;
  refused(&b, "no free");
}

Test(backend, workers_asks_the_backend_each_time) {
  struct tb b;
  tb_init(&b);
  b.workers = 7;
  ip_pool *p = backend_pool(&b);
  cr_expect_eq(ip_pool_workers(p), 7);
  pthread_mutex_lock(&b.mu);
  b.workers = 3;
  pthread_mutex_unlock(&b.mu);
  cr_expect_eq(ip_pool_workers(p), 3);
  cr_expect_eq(counter(&b, &b.n_workers), 2);
  ip_pool_free(p);
  cr_expect_eq(b.n_free, 1);
  tb_destroy(&b);
}

Test(backend, call_hands_the_backend_the_argument_encoded_by_the_tasks_arg_serializer) {
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  ip_task *raw = task(echo_bytes, NULL), *own = task(fn_got, NULL);
  cr_assert_eq(ip_task_set_arg_serializer(own, &angled), 0);
  static const unsigned char bytes[] = {'a', 0, 0xff, 'b'};
  ip_future *f[3];
  {
    unsigned char buf[sizeof bytes]; /* gone once the call returned */
    memcpy(buf, bytes, sizeof buf);
    ip_bytes arg = {buf, sizeof buf};
    f[0] = ip_pool_call(p, raw, &arg);
    memset(buf, 'X', sizeof buf);
    cr_expect_eq(ip_future_arg(f[0]), &arg);
  }
  f[1] = ip_pool_call(p, own, "hello");
  f[2] = ip_pool_call_encoded(p, own, "as it is", 9);
  cr_assert_eq(counter(&b, &b.n_call), 3);
  for (int i = 0; i < 3; i++) {
    struct tcall *c = took_call(&b, i);
    cr_expect_eq(c->f, f[i], "call %d: the backend got another future", i);
    cr_expect(pthread_equal(c->caller, pthread_self()), "call %d ran in another thread", i);
    cr_expect_eq(ip_future_status(f[i]), IP_EAGAIN, "call %d: %s", i, why(f[i]));
  }
  struct tcall *c = took_call(&b, 0);
  cr_expect_eq(c->t, raw);
  cr_expect(c->len == sizeof bytes && memcmp(c->arg, bytes, sizeof bytes) == 0, "raw: %zu bytes",
            c->len);
  c = took_call(&b, 1);
  cr_expect_eq(c->t, own);
  cr_expect(c->len == 7 && memcmp(c->arg, "<hello>", 7) == 0, "x-angled: %.*s", (int)c->len,
            (const char *)c->arg);
  c = took_call(&b, 2);
  cr_expect(c->len == 9 && memcmp(c->arg, "as it is", 9) == 0, "encoded: %.*s", (int)c->len,
            (const char *)c->arg);
  ip_pool_free(p); /* cancels the three */
  for (int i = 0; i < 3; i++) {
    failed_with(f[i], IP_ECANCELED);
    ip_future_free(f[i]);
  }
  tb_destroy(&b);
  ip_task_free(raw);
  ip_task_free(own);
}

Test(backend, a_call_the_backend_refuses_fails_at_once_with_its_code) {
  struct tb b;
  tb_init(&b);
  b.refuse = IP_ENOMEM;
  ip_pool *p = backend_pool(&b);
  ip_task *t = task(echo_bytes, NULL);
  ip_future *f = pcall(p, t, 'r');
  const ip_error *e = failed_at_once(f, IP_ENOMEM);
  cr_expect(strstr(e->message, "test") != NULL, "names the backend: %s", e->message);
  cr_expect_eq(counter(&b, &b.n_call), 1);
  ip_future_free(f);
  ip_pool_free(p);
  tb_destroy(&b);
  ip_task_free(t);
}

Test(backend, a_task_made_after_the_backend_pool_runs_on_it) {
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  ip_task *t = task(echo_bytes, NULL); /* newer than the pool */
  ip_future *f = pcall(p, t, 'n');
  cr_assert_eq(counter(&b, &b.n_call), 1, "the call did not reach the backend: %s", why(f));
  post_result(&b, f, "ran");
  assert_raw_value(f, "ran", 3);
  ip_future_free(f);
  ip_pool_free(p);
  tb_destroy(&b);
  ip_task_free(t);
}

Test(backend, finish_with_a_result_decodes_it_with_the_tasks_serializer_and_keeps_pid_and_rusage) {
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  ip_task *t = task(fn_value_string, &angled);
  ip_future *f = pcall(p, t, 'v');
  cr_expect_eq(ip_future_pid(f), 0, "no process ran it yet");
  struct rusage ru;
  cr_expect_eq(ip_future_rusage(f, &ru), IP_EAGAIN, "rusage while running");
  ip_error e = {.code = 0, .pid = 4242, .exit_status = -1};
  e.rusage.ru_utime.tv_sec = 3;
  e.rusage.ru_stime.tv_usec = 5000;
  e.rusage.ru_maxrss = 123456;
  post(&b, f, &e, "<forty-two>", 11);
  cr_assert_str_eq(ip_future_value(f), "forty-two", "%s", why(f)); /* waits for the thread */
  cr_expect_eq(ip_future_status(f), 0);
  cr_expect_null(ip_future_error(f));
  cr_expect_eq(atomic_load(&n_decodes), 1);
  int rc = order_rc(&b, 0);
  cr_expect_eq(rc, 0, "ip_future_finish returned %s", ip_err_name(rc));
  cr_expect_eq(ip_future_pid(f), 4242);
  cr_assert_eq(ip_future_rusage(f, &ru), 0);
  cr_expect_eq(ru.ru_utime.tv_sec, 3);
  cr_expect_eq(ru.ru_stime.tv_usec, 5000);
  cr_expect_eq(ru.ru_maxrss, 123456);
  size_t len = 0;
  const char *bytes = ip_future_bytes(f, &len);
  cr_expect(bytes && len == 11 && memcmp(bytes, "<forty-two>", 11) == 0, "bytes");
  ip_future_free(f);
  ip_pool_free(p);
  tb_destroy(&b);
  ip_task_free(t);
}

static char *copy_of(const char *s) {
  char *c = strdup(s);
  cr_assert_not_null(c);
  return c;
}

/* Overwrites and frees a string the future must have copied. */
static void scrub(char *s) {
  memset(s, '#', strlen(s));
  free(s);
}

Test(backend, finish_with_a_failure_copies_the_error) {
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  ip_task *t = task(echo_bytes, NULL);
  ip_future *f = pcall(p, t, 'e');
  char *kind = copy_of("ZeroDivisionError"), *msg = copy_of("divided by 0 on rank 3"),
       *bt = copy_of("frame one\nframe two");
  ip_error e = {.code = IP_ERAISED, .kind = kind, .message = msg, .backtrace = bt,
                .raised_code = 77, .exit_status = 9, .signal = SIGTERM, .core_dumped = 1,
                .pid = 5151};
  e.rusage.ru_maxrss = 2048;
  e.rusage.ru_utime.tv_usec = 250;
  cr_assert_eq(finish_here(&b, f, &e, NULL, 0), 0);
  scrub(kind);
  scrub(msg);
  scrub(bt);
  const ip_error *got = failed_at_once(f, IP_ERAISED);
  cr_expect_str_eq(got->kind, "ZeroDivisionError");
  cr_expect_str_eq(got->message, "divided by 0 on rank 3");
  cr_assert_not_null(got->backtrace);
  cr_expect_str_eq(got->backtrace, "frame one\nframe two");
  cr_expect_eq(got->raised_code, 77);
  cr_expect_eq(got->exit_status, 9);
  cr_expect_eq(got->signal, SIGTERM);
  cr_expect_eq(got->core_dumped, 1);
  cr_expect_eq(got->pid, 5151);
  cr_expect_eq(got->rusage.ru_maxrss, 2048);
  cr_expect_eq(got->rusage.ru_utime.tv_usec, 250);
  cr_expect_eq(ip_future_pid(f), 5151);
  struct rusage ru;
  cr_assert_eq(ip_future_rusage(f, &ru), 0);
  cr_expect_eq(ru.ru_maxrss, 2048);
  size_t len = 99;
  cr_expect_null(ip_future_bytes(f, &len));
  cr_expect_eq(len, 0);
  ip_future_free(f);
  ip_pool_free(p);
  tb_destroy(&b);
  ip_task_free(t);
}

Test(backend, finishing_twice_is_ealready_and_the_first_outcome_stands) {
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  ip_task *t = task(echo_bytes, NULL);
  ip_future *f = pcall(p, t, '2');
  ip_error ok = {.code = 0, .exit_status = -1};
  cr_assert_eq(finish_here(&b, f, &ok, strdup("first"), 5), 0);
  /* The second result is freed by ip_future_finish: valgrind sees a leak otherwise. */
  cr_expect_eq(ip_future_finish(f, &ok, strdup("second"), 6), IP_EALREADY);
  ip_error fail = {.code = IP_ERAISED, .kind = "late", .message = "too late", .exit_status = -1};
  cr_expect_eq(ip_future_finish(f, &fail, NULL, 0), IP_EALREADY);
  assert_raw_value(f, "first", 5);
  ip_future_free(f);
  ip_pool_free(p);
  tb_destroy(&b);
  ip_task_free(t);
}

Test(backend, finish_with_a_null_future_or_error_is_einval_and_frees_the_result) {
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  ip_task *t = task(echo_bytes, NULL);
  ip_future *f = pcall(p, t, 'n');
  ip_error ok = {.code = 0, .exit_status = -1};
  cr_expect_eq(ip_future_finish(NULL, &ok, strdup("lost"), 4), IP_EINVAL);
  cr_expect_eq(ip_future_finish(f, NULL, strdup("lost"), 4), IP_EINVAL);
  cr_expect_eq(ip_future_status(f), IP_EAGAIN, "f still runs: %s", why(f));
  ip_pool_free(p);
  failed_with(f, IP_ECANCELED);
  ip_future_free(f);
  tb_destroy(&b);
  ip_task_free(t);
}

Test(backend, finish_on_a_forked_call_or_a_local_pool_call_is_einval_and_changes_nothing) {
  gate_open(&G);
  ip_task *t = task(fn_gated, NULL);
  ip_pool *local = ip_pool_new(1);
  cr_assert_not_null(local, "ip_pool_new: %s", strerror(errno));
  ip_future *forked = ip_call(t, NULL);
  ip_future *pooled = ip_pool_call(local, t, NULL);
  ip_error ok = {.code = 0, .exit_status = -1};
  ip_error fail = {.code = IP_ERAISED, .kind = "X", .message = "not yours", .exit_status = -1};
  cr_expect_eq(ip_future_finish(forked, &ok, strdup("fake"), 4), IP_EINVAL, "a running ip_call");
  cr_expect_eq(ip_future_finish(forked, &fail, NULL, 0), IP_EINVAL, "a running ip_call");
  cr_expect_eq(ip_future_finish(pooled, &ok, strdup("fake"), 4), IP_EINVAL, "a local pool's call");
  cr_expect_eq(ip_future_finish(pooled, &fail, NULL, 0), IP_EINVAL, "a local pool's call");
  cr_expect_eq(ip_future_status(forked), IP_EAGAIN, "%s", why(forked));
  gate_release(&G, 2);
  finished(forked);
  finished(pooled);
  cr_expect_str_eq(str_of(forked), "released", "%s", why(forked));
  cr_expect_str_eq(str_of(pooled), "released", "%s", why(pooled));
  cr_expect_eq(ip_future_finish(forked, &ok, strdup("fake"), 4), IP_EINVAL, "a completed ip_call");
  cr_expect_eq(ip_future_finish(pooled, &ok, strdup("fake"), 4), IP_EINVAL, "a completed pool call");
  ip_pool_free(local);
  cr_expect_eq(ip_future_finish(pooled, &ok, strdup("fake"), 4), IP_EINVAL,
               "a call of a pool freed since");
  cr_expect_str_eq(str_of(pooled), "released", "%s", why(pooled));
  ip_future_free(forked);
  ip_future_free(pooled);
  ip_task_free(t);
  gate_close(&G);
}

/* Four backend calls in a list, finished by the backend's thread in the order 2 0 3 1, each
 * only once this thread sleeps in the waitfor step that waits for it. With `forked`, a forked
 * call waits in the list too, at a gate, until the four are back: this thread then sleeps
 * driving the supervisor (epoll_wait), which ip_future_finish must wake; without, it sleeps on
 * its eventfd. */
static void waitfor_in_completion_order(bool forked) {
  enum { N = 4 };
  gate_open(&G);
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  ip_task *t = task(echo_bytes, NULL), *gated = task(fn_gated, NULL);
  ip_list *l = ip_list_new();
  cr_assert_not_null(l);
  ip_future *f[N], *child = NULL;
  for (int i = 0; i < N; i++) {
    f[i] = pcall(p, t, (char)('0' + i));
    cr_assert_eq(ip_list_push(l, f[i]), 0);
  }
  if (forked) {
    child = ip_call(gated, NULL);
    cr_assert_eq(ip_list_push(l, child), 0);
  }
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *out = NULL;
  cr_expect_eq(ip_waitfor_step(&w, l, 0, 0, &out), IP_ETIMEDOUT, "nothing is finished yet");
  cr_expect_null(out);
  set_sleeper(&b, this_thread());
  static const int order[N] = {2, 0, 3, 1};
  char result[N][8];
  for (int i = 0; i < N; i++) {
    snprintf(result[i], sizeof result[i], "r%d", order[i]);
    post_result(&b, f[order[i]], result[i]);
  }
  /* Forever: a step that sleeps through a finish hangs, and the suite's timeout fails it. */
  for (int i = 0; i < N; i++) {
    int rc = ip_waitfor_step(&w, l, 0, -1, &out);
    cr_assert_eq(rc, IP_WAITFOR_FUTURE, "step %d: %s", i, ip_err_name(rc));
    cr_assert_eq(out, f[order[i]], "step %d: not the future finished %s", i,
                 i ? "next" : "first");
    assert_raw_value(out, result[i], 2);
    took(&b);
  }
  if (forked) {
    gate_release(&G, 1);
    cr_assert_eq(ip_waitfor_step(&w, l, 0, guard_ms(60000), &out), IP_WAITFOR_FUTURE);
    cr_assert_eq(out, child);
    cr_expect_str_eq(str_of(child), "released", "%s", why(child));
  }
  cr_expect_eq(ip_waitfor_step(&w, l, 0, guard_ms(60000), &out), IP_WAITFOR_END);
  cr_expect_eq(counter(&b, &b.not_asleep), 0,
               "a step was not seen asleep before its future was finished");
  for (int i = 0; i < N; i++) {
    int rc = order_rc(&b, i);
    cr_expect_eq(rc, 0, "order %d: ip_future_finish returned %s", i, ip_err_name(rc));
  }
  ip_list_free(l);
  for (int i = 0; i < N; i++) ip_future_free(f[i]);
  ip_future_free(child);
  ip_pool_free(p);
  tb_destroy(&b);
  ip_task_free(t);
  ip_task_free(gated);
  gate_close(&G);
}

Test(backend, waitfor_returns_backend_futures_in_completion_order_sleeping_between_them) {
  waitfor_in_completion_order(false);
}

Test(backend, waitfor_driving_the_supervisor_is_woken_by_a_backends_finish) {
  waitfor_in_completion_order(true);
}

Test(backend, cancel_asks_the_backend_and_returns_once_it_finished_the_future) {
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  ip_task *t = task(echo_bytes, NULL);
  ip_future *f = pcall(p, t, 'c');
  set_sleeper(&b, this_thread()); /* the thread finishes it once ip_future_cancel sleeps */
  cr_assert_eq(ip_future_cancel(f), 0);
  cr_expect_eq(counter(&b, &b.n_cancel), 1);
  cr_expect(took_call(&b, 0)->finished, "the backend did not finish it");
  cr_expect_eq(counter(&b, &b.not_asleep), 0, "ip_future_cancel was not seen waiting");
  const ip_error *e = failed_at_once(f, IP_ECANCELED); /* done when cancel returned */
  cr_expect_str_eq(e->message, "canceled by the test backend");
  cr_expect_eq(ip_future_cancel(f), IP_EALREADY);
  cr_expect_eq(counter(&b, &b.n_cancel), 1, "a finished future's cancel went to the backend");
  ip_future_free(f);
  ip_pool_free(p);
  tb_destroy(&b);
  ip_task_free(t);
}

Test(backend, cancel_of_a_finished_future_is_ealready_without_the_backend) {
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  ip_task *t = task(echo_bytes, NULL);
  ip_future *f = pcall(p, t, 'c');
  ip_error ok = {.code = 0, .exit_status = -1};
  cr_assert_eq(finish_here(&b, f, &ok, strdup("done"), 4), 0);
  cr_expect_eq(ip_future_cancel(f), IP_EALREADY);
  cr_expect_eq(counter(&b, &b.n_cancel), 0);
  assert_raw_value(f, "done", 4);
  ip_future_free(f);
  ip_pool_free(p);
  tb_destroy(&b);
  ip_task_free(t);
}

Test(backend, freeing_an_unfinished_future_cancels_it_through_the_backend) {
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  ip_task *t = task(echo_bytes, NULL);
  ip_future *f = pcall(p, t, 'f');
  set_sleeper(&b, this_thread());
  ip_future_free(f); /* returns once the backend finished it, then frees it */
  cr_expect_eq(counter(&b, &b.n_cancel), 1);
  cr_expect(took_call(&b, 0)->finished, "the backend did not finish it");
  cr_expect_eq(counter(&b, &b.not_asleep), 0, "ip_future_free was not seen waiting");
  ip_pool_free(p);
  tb_destroy(&b);
  ip_task_free(t);
}

Test(backend, pool_free_calls_the_backends_free_which_finishes_what_is_left) {
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  ip_task *t = task(echo_bytes, NULL);
  ip_future *done = pcall(p, t, 'd'), *left = pcall(p, t, 'l');
  post_result(&b, done, "done");
  finished(done);
  ip_pool_free(p);
  cr_expect_eq(b.n_free, 1);
  cr_expect_eq(b.n_cancel, 0, "free is not a cancel per call");
  const ip_error *e = failed_at_once(left, IP_ECANCELED);
  cr_expect_str_eq(e->message, "the test backend's pool was freed");
  assert_raw_value(done, "done", 4);
  ip_future_free(done);
  ip_future_free(left);
  tb_destroy(&b);
  ip_task_free(t);
}

static void *call_from_a_thread(void *arg) {
  struct tb *b = arg;
  ip_bytes a = {"x", 1};
  b->during_free = ip_pool_call(b->pool, b->task, &a);
  return NULL;
}

/* on_free: a call from another thread while ip_pool_free runs. */
static void call_during_free(struct tb *b) {
  pthread_t th;
  if (pthread_create(&th, NULL, call_from_a_thread, b) == 0) pthread_join(th, NULL);
}

Test(backend, a_call_made_while_the_pool_is_freed_is_refused_before_the_backend) {
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  b.task = task(echo_bytes, NULL);
  b.on_free = call_during_free;
  ip_pool_free(p);
  cr_expect_eq(b.n_free, 1);
  cr_assert_not_null(b.during_free, "the call during free made no future");
  const ip_error *e = failed_at_once(b.during_free, IP_EINVAL);
  cr_expect(strstr(e->message, "freed") != NULL, "message: %s", e->message);
  cr_expect_eq(b.n_call, 0, "the backend got a call while its pool was being freed");
  ip_future_free(b.during_free);
  tb_destroy(&b);
  ip_task_free(b.task);
}

static void *call_in_a_thread(void *arg) {
  struct tb *b = arg;
  ip_bytes a = {"h", 1};
  return ip_pool_call(b->pool, b->task, &a);
}

static void set_hold(struct tb *b, bool on) {
  pthread_mutex_lock(&b->mu);
  b->hold = on;
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

struct freer {
  ip_pool *p;
  _Atomic pid_t tid;
};

static void *free_and_say_who(void *arg) {
  struct freer *fr = arg;
  atomic_store(&fr->tid, this_thread());
  ip_pool_free(fr->p);
  return NULL;
}

/* A call that is inside the backend's call() when another thread frees the pool: the free
 * must wait for it (the backend is not to be released under its own call), and then the
 * backend's free finishes the call it took. */
Test(backend, pool_free_waits_for_a_call_still_inside_the_backends_call) {
  struct tb b;
  tb_init(&b);
  ip_pool *p = backend_pool(&b);
  b.task = task(echo_bytes, NULL);
  set_hold(&b, true);
  pthread_t caller, freer;
  cr_assert_eq(pthread_create(&caller, NULL, call_in_a_thread, &b), 0);
  pthread_mutex_lock(&b.mu);
  while (!b.holding) pthread_cond_wait(&b.cv, &b.mu);
  pthread_mutex_unlock(&b.mu);
  /* The call is inside call(). Free the pool from another thread, and let the call go on only
   * once that thread sleeps in ip_pool_free or reached the backend's free. */
  struct freer fr = {p, 0};
  cr_assert_eq(pthread_create(&freer, NULL, free_and_say_who, &fr), 0);
  int64_t deadline = now_ms() + guard_ms(30000);
  while (!atomic_load(&b.free_began) &&
         !(atomic_load(&fr.tid) && blocked_syscall(getpid(), atomic_load(&fr.tid)) == SYS_futex)) {
    cr_assert_gt(left_ms(deadline), 0, "ip_pool_free neither waited nor reached the backend");
    poll(NULL, 0, 1); /* paces the watching of /proc only */
  }
  set_hold(&b, false);
  void *f; /* the caller's future */
  cr_assert_eq(pthread_join(caller, &f), 0);
  cr_assert_eq(pthread_join(freer, NULL), 0);
  cr_expect_eq(b.n_free, 1);
  cr_expect_eq(b.in_call_at_free, 0, "the backend's free ran while its call() did");
  /* The call came before the free: the backend took it, and its free canceled it. */
  const ip_error *e = failed_at_once(f, IP_ECANCELED);
  cr_expect_str_eq(e->message, "the test backend's pool was freed");
  ip_future_free(f);
  tb_destroy(&b);
  ip_task_free(b.task);
}
