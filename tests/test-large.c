/* Large raw results, both ways they travel: streamed over the socket (fn returns an ip_bytes
 * over memory of its own) and built in place (ip_bytes_alloc of 1 MiB or more in the child,
 * handed over as a sealed memfd that the parent maps read-only). */
#include "helpers.h"

#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define MiB ((size_t)1 << 20)

struct spec {
  size_t len;
  unsigned seed; /* byte i is (i * 31 + seed) & 0xff */
};

static inline unsigned char pat(size_t i, unsigned seed) {
  return (unsigned char)((i * 31 + seed) & 0xff);
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
  /* The pattern repeats every 256 bytes: write one period, then double what is there. */
  size_t first = n < 256 ? n : 256;
  for (size_t i = 0; i < first; i++) p[i] = pat(i, seed);
  for (size_t have = first; have < n;) {
    size_t c = have < n - have ? have : n - have;
    memcpy(p + have, p, c);
    have += c;
  }
}

/* Streamed: a static ip_bytes over a malloc'ed buffer of the child's own. */
static void *fn_streamed(void *arg) {
  const struct spec *s = arg;
  static ip_bytes b;
  unsigned char *p = malloc(s->len ? s->len : 1);
  if (!p) ip_raise(ENOMEM, "malloc(%zu) failed", s->len);
  fill(p, s->len, s->seed);
  b.data = p;
  b.len = s->len;
  return &b;
}

/* Built in place: ip_bytes_alloc in the child, filled there. */
static void *fn_inplace(void *arg) {
  const struct spec *s = arg;
  ip_bytes *b = ip_bytes_alloc(s->len);
  if (!b) ip_raise(ENOMEM, "ip_bytes_alloc(%zu) failed", s->len);
  fill(b->data, s->len, s->seed);
  return b;
}

static void *fn_null(void *arg) { return NULL; }
static void *fn_alloc_zero(void *arg) { return ip_bytes_alloc(0); }

/* Checks length and every byte of the value. */
static void expect_value(ip_future *f, const struct spec *s) {
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "no value: %s", why(f));
  cr_assert_eq(b->len, s->len, "length %zu, want %zu", b->len, s->len);
  const unsigned char *p = b->data;
  if (s->len) cr_assert_not_null(p);
  for (size_t i = 0; i < s->len; i++)
    if (p[i] != pat(i, s->seed))
      cr_assert_fail("byte %zu of %zu is 0x%02x, want 0x%02x", i, s->len, p[i], pat(i, s->seed));
}

static void run_one(ip_fn fn, size_t len, unsigned seed) {
  struct spec s = {len, seed};
  ip_task *t = ip_task_new(fn, NULL);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, &s);
  cr_assert_not_null(f);
  expect_value(f, &s);
  ip_future_free(f);
  ip_task_free(t);
  cr_expect(no_children());
}

/* The permissions of the mapping holding `addr` in /proc/self/maps ("rw-p", "r--s"...), and
 * whether it is a memfd. 0 when found. */
static int mapping_of(const void *addr, char perms[5], int *memfd) {
  FILE *fp = fopen("/proc/self/maps", "r");
  cr_assert_not_null(fp);
  char line[512];
  int found = -1;
  uintptr_t a = (uintptr_t)addr;
  while (fgets(line, sizeof line, fp)) {
    unsigned long lo, hi;
    char pr[5];
    if (sscanf(line, "%lx-%lx %4s", &lo, &hi, pr) != 3) continue;
    if (a >= lo && a < hi) {
      memcpy(perms, pr, 5);
      *memfd = strstr(line, "/memfd:") != NULL;
      found = 0;
      break;
    }
  }
  fclose(fp);
  return found;
}

/* ---- streamed ----------------------------------------------------------------------------- */

Test(large, streamed_64_mib_arrives_whole) { run_one(fn_streamed, 64 * MiB, 0); }

Test(large, streamed_odd_size_arrives_whole) { run_one(fn_streamed, 5 * MiB + 12345, 7); }

/* ---- built in place ---------------------------------------------------------------------- */

Test(large, inplace_64_mib_arrives_whole) { run_one(fn_inplace, 64 * MiB, 0); }

Test(large, inplace_256_mib_arrives_whole) { run_one(fn_inplace, 256 * MiB, 3); }

Test(large, inplace_odd_size_arrives_whole) { run_one(fn_inplace, 3 * MiB + 4097, 11); }

/* ---- around the in-place threshold (1 MiB) ------------------------------------------------ */

Test(large, inplace_threshold_minus_one_arrives_whole) { run_one(fn_inplace, MiB - 1, 1); }
Test(large, inplace_threshold_arrives_whole) { run_one(fn_inplace, MiB, 2); }
Test(large, inplace_threshold_plus_one_arrives_whole) { run_one(fn_inplace, MiB + 1, 4); }
Test(large, streamed_threshold_minus_one_arrives_whole) { run_one(fn_streamed, MiB - 1, 1); }
Test(large, streamed_threshold_arrives_whole) { run_one(fn_streamed, MiB, 2); }
Test(large, streamed_threshold_plus_one_arrives_whole) { run_one(fn_streamed, MiB + 1, 4); }

/* The header promises that an ip_bytes_alloc of 1 MiB or more travels in a sealed memfd the
 * parent maps read-only, and that smaller ones do not. */
static void expect_mapping(size_t len, int want_memfd) {
  struct spec s = {len, 5};
  ip_task *t = ip_task_new(fn_inplace, NULL);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, &s);
  expect_value(f, &s);
  const ip_bytes *b = ip_future_value(f);
  char perms[5];
  int memfd = 0;
  cr_assert_eq(mapping_of(b->data, perms, &memfd), 0, "value not in any mapping");
  if (want_memfd) {
    cr_expect(memfd, "a %zu-byte value is not in a memfd mapping (%s)", len, perms);
    cr_expect_str_eq(perms, "r--s", "mapping of a %zu-byte in-place value", len);
  } else {
    cr_expect(!memfd, "a %zu-byte value is in a memfd mapping (%s)", len, perms);
  }
  ip_future_free(f);
  ip_task_free(t);
}

Test(large, below_threshold_is_not_built_in_place) { expect_mapping(MiB - 1, 0); }
Test(large, at_threshold_is_built_in_place_read_only) { expect_mapping(MiB, 1); }
Test(large, above_threshold_is_built_in_place_read_only) { expect_mapping(MiB + 1, 1); }

/* A child that cannot get a descriptor for the memfd still returns its result: ip_bytes_alloc
 * falls back on the heap and the bytes are streamed. */
Test(large, inplace_falls_back_to_streaming_without_descriptors) {
  struct spec s = {4 * MiB + 3, 6};
  ip_task *t = ip_task_new(fn_inplace, NULL);
  cr_assert_not_null(t);
  cr_assert_eq(ip_task_set_rlimit(t, RLIMIT_NOFILE, 3, 3), 0); /* 0-2 are taken */
  ip_future *f = ip_call(t, &s);
  expect_value(f, &s);
  const ip_bytes *b = ip_future_value(f);
  char perms[5];
  int memfd = 1;
  cr_assert_eq(mapping_of(b->data, perms, &memfd), 0);
  cr_expect(!memfd, "the value is in a memfd although the child could not create one");
  ip_future_free(f);
  ip_task_free(t);
}

/* Outside a task's child, ip_bytes_alloc of any size is ordinary writable heap memory. */
Test(large, bytes_alloc_outside_a_child_is_writable_heap) {
  ip_bytes *b = ip_bytes_alloc(2 * MiB);
  cr_assert_not_null(b);
  cr_assert_eq(b->len, 2 * MiB);
  fill(b->data, b->len, 8);
  char perms[5];
  int memfd = 1;
  cr_assert_eq(mapping_of(b->data, perms, &memfd), 0);
  cr_expect(!memfd);
  cr_expect_eq(perms[1], 'w');
  for (size_t i = 0; i < b->len; i += 4099)
    cr_assert_eq(((unsigned char *)b->data)[i], pat(i, 8));
  ip_bytes_free(b);
}

/* ---- zero length ------------------------------------------------------------------------ */

static void expect_empty(ip_fn fn) {
  ip_task *t = ip_task_new(fn, NULL);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "no value: %s", why(f));
  cr_expect_eq(b->len, 0);
  cr_expect_eq(ip_future_status(f), 0);
  ip_future_free(f);
  ip_task_free(t);
}

Test(large, null_result_is_an_empty_value) { expect_empty(fn_null); }
Test(large, zero_length_alloc_is_an_empty_value) { expect_empty(fn_alloc_zero); }
Test(large, zero_length_streamed_is_an_empty_value) { run_one(fn_streamed, 0, 0); }

/* ---- max_result ------------------------------------------------------------------------- */

/* The message of an IP_E2BIG gives the size (`size`: "N bytes" or "at least N bytes"), the
 * limit and the child's pid. */
static void expect_e2big_message(const ip_error *e, const char *size, uint64_t max) {
  char want[96];
  cr_assert(strstr(e->message, size), "no \"%s\" in: %s", size, e->message);
  snprintf(want, sizeof want, "max_result of %llu bytes", (unsigned long long)max);
  cr_assert(strstr(e->message, want), "no \"%s\" in: %s", want, e->message);
  snprintf(want, sizeof want, "child %d ", (int)e->pid);
  cr_assert(strstr(e->message, want), "no \"%s\" in: %s", want, e->message);
}

/* `at_least`: the result streams, so the child stops at the limit and the size is known only
 * from below (here the raw serializer's one write, so the whole length). */
static void expect_e2big(ip_fn fn, size_t len, uint64_t max, bool at_least) {
  struct spec s = {len, 0};
  ip_task *t = ip_task_new(fn, NULL);
  cr_assert_not_null(t);
  cr_assert_eq(ip_task_set_max_result(t, max), 0);
  ip_future *f = ip_call(t, &s);
  cr_expect_null(ip_future_value(f));
  cr_expect_eq(ip_future_status(f), IP_E2BIG, "status %d (%s)", ip_future_status(f), why(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_expect_eq(e->code, IP_E2BIG);
  cr_assert_str_eq(e->kind, "E2BIG");
  char size[64];
  snprintf(size, sizeof size, "%s%zu bytes", at_least ? "is at least " : "is ", len);
  expect_e2big_message(e, size, max);
  ip_future_free(f);
  /* Exactly at the limit is fine. */
  cr_assert_eq(ip_task_set_max_result(t, len), 0);
  f = ip_call(t, &s);
  expect_value(f, &s);
  ip_future_free(f);
  ip_task_free(t);
  cr_expect(no_children());
}

Test(large, streamed_above_max_result_is_e2big) {
  expect_e2big(fn_streamed, 8 * MiB, 8 * MiB - 1, true);
}
Test(large, streamed_far_above_max_result_is_e2big) {
  expect_e2big(fn_streamed, 4 * MiB, 1000, true);
}
Test(large, inplace_above_max_result_is_e2big) {
  expect_e2big(fn_inplace, 8 * MiB, 8 * MiB - 1, false);
}
Test(large, inplace_far_above_max_result_is_e2big) {
  expect_e2big(fn_inplace, 4 * MiB, 1000, false);
}
/* Below the in-place size ip_bytes_alloc() gives heap memory, which streams. */
Test(large, small_above_max_result_is_e2big) { expect_e2big(fn_inplace, 100, 99, true); }

/* A value written in pieces: the child stops at the first piece past the limit, and says how
 * far it got. */
static int pieces_encode(const ip_serializer *ser, const void *value, ip_write_fn w, void *ctx) {
  static const char piece[1000];
  for (int i = 0; i < 10; i++) {
    int rc = w(ctx, piece, sizeof piece);
    if (rc) return rc;
  }
  return 0;
}
static int pieces_decode(const ip_serializer *ser, const void *buf, size_t len, void **value) {
  *value = NULL;
  return 0;
}
static const ip_serializer pieces = {
    .abi = IP_SERIALIZER_ABI, .name = "x-pieces", .encode = pieces_encode, .decode = pieces_decode};
static void *fn_any(void *arg) { return NULL; }

Test(large, streamed_e2big_says_how_far_the_child_got) {
  ip_task *t = ip_task_new(fn_any, &pieces);
  cr_assert_eq(ip_task_set_max_result(t, 3500), 0);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_E2BIG, "%s: %s", ip_err_name(e->code), e->message);
  expect_e2big_message(e, "is at least 4000 bytes", 3500);
  ip_future_free(f);
  ip_task_free(t);
}

/* The default limit is 4 GiB. The results below are never touched, so they cost no memory:
 * the in-place one is a sparse memfd, the streamed one an untouched anonymous mapping. */
#define FOUR_GIB ((size_t)4 << 30)

static void *fn_sparse_inplace(void *arg) {
  ip_bytes *b = ip_bytes_alloc(FOUR_GIB + 1);
  if (!b) ip_raise(ENOMEM, "ip_bytes_alloc(4 GiB + 1) failed");
  return b;
}

static void *fn_sparse_streamed(void *arg) {
  static ip_bytes b;
  void *p = mmap(NULL, FOUR_GIB + 1, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) ip_raise(ENOMEM, "mmap(4 GiB + 1) failed");
  b.data = p;
  b.len = FOUR_GIB + 1;
  return &b;
}

static void expect_default_limit(ip_fn fn) {
  ip_task *t = ip_task_new(fn, NULL);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  cr_expect_null(ip_future_value(f));
  cr_expect_eq(ip_future_status(f), IP_E2BIG, "status %d (%s)", ip_future_status(f), why(f));
  ip_future_free(f);
  ip_task_free(t);
}

Test(large, inplace_result_above_the_default_4_gib_limit_is_e2big) {
  expect_default_limit(fn_sparse_inplace);
}

Test(large, streamed_result_above_the_default_4_gib_limit_is_e2big) {
  expect_default_limit(fn_sparse_streamed);
}

/* ---- several at once ------------------------------------------------------------------------ */

Test(large, six_concurrent_32_mib_results_each_arrive_whole) {
  enum { N = 6 };
  struct spec s[N];
  ip_task *ts = ip_task_new(fn_streamed, NULL), *ti = ip_task_new(fn_inplace, NULL);
  cr_assert(ts && ti);
  ip_future *f[N];
  for (int i = 0; i < N; i++) {
    s[i] = (struct spec){32 * MiB, (unsigned)(17 * i + 1)};
    f[i] = ip_call(i % 2 ? ti : ts, &s[i]);
    cr_assert_not_null(f[i]);
  }
  /* Collect in reverse order so results wait in the parent while others are read. */
  for (int i = N - 1; i >= 0; i--) expect_value(f[i], &s[i]);
  for (int i = 0; i < N; i++) ip_future_free(f[i]);
  ip_task_free(ts);
  ip_task_free(ti);
  cr_expect(no_children());
}

/* ---- the in-place value is read-only in the parent ---------------------------------------- */

/* Forks a plain child of the test that writes one byte at p; returns its wait status. */
static int probe_write(const void *p) {
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    *(volatile unsigned char *)p = 0x5a;
    _exit(0);
  }
  int st;
  cr_assert_eq(waitpid(pid, &st, 0), pid);
  return st;
}

Test(large, inplace_value_is_read_only_in_the_parent) {
  struct spec s = {4 * MiB, 9};
  ip_task *t = ip_task_new(fn_inplace, NULL);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, &s);
  expect_value(f, &s);
  const ip_bytes *b = ip_future_value(f);
  int st = probe_write((const unsigned char *)b->data + s.len / 2);
  cr_expect(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV,
            "writing to the in-place value did not die of SIGSEGV (status 0x%x)", st);
  expect_value(f, &s); /* and it is intact */
  ip_future_free(f);
  ip_task_free(t);
  cr_expect(no_children());
}

/* The control for the probe: a streamed value is ordinary heap memory, so the same write
 * succeeds. Without it the test above could pass for the wrong reason. */
Test(large, write_probe_succeeds_on_a_streamed_value) {
  struct spec s = {4 * MiB, 9};
  ip_task *t = ip_task_new(fn_streamed, NULL);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, &s);
  expect_value(f, &s);
  const ip_bytes *b = ip_future_value(f);
  int st = probe_write((const unsigned char *)b->data + s.len / 2);
  cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "probe status 0x%x", st);
  ip_future_free(f);
  ip_task_free(t);
}

/* The mapping goes away with the future: nothing of a freed in-place value stays mapped. */
Test(large, freeing_an_inplace_value_unmaps_it) {
  struct spec s = {2 * MiB, 2};
  ip_task *t = ip_task_new(fn_inplace, NULL);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, &s);
  expect_value(f, &s);
  const void *addr = ((const ip_bytes *)ip_future_value(f))->data;
  char perms[5];
  int memfd = 0;
  cr_assert_eq(mapping_of(addr, perms, &memfd), 0);
  cr_assert(memfd);
  ip_future_free(f);
  memfd = 0;
  if (mapping_of(addr, perms, &memfd) == 0) cr_expect(!memfd, "in-place value still mapped");
  ip_task_free(t);
}
