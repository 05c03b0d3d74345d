/* Hostile frames: a task's fn that, instead of returning, writes bytes of its own choosing on
 * its result socket (optionally with descriptors) and exits or dies. Whatever it sends, the
 * parent must end the call with the right code, survive, leak nothing and keep working.
 *
 * Frames are built here from the layout in lib/frame.h, without the library's packer, so a
 * change in the wire format shows up as a failure of the control cases below. */
#define _GNU_SOURCE
#include "helpers.h"
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* ---- the wire format, re-implemented ------------------------------------------------------ */

#define HDR 32
#define MAGIC 0x31465049u /* "IPF1" */
enum { DATA = 1, END = 2, MEMFD = 3, ERROR = 4, CRASH = 5 };

static uint32_t fnv1a(const void *p, size_t n) {
  const unsigned char *b = p;
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 16777619u;
  }
  return h;
}
static uint32_t ser_id(const char *name) { return fnv1a(name, strlen(name)); }

static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

/* A header with every field chosen; `check` is computed last (tests may spoil it after). */
struct hdr_opts {
  uint32_t magic;
  uint8_t version;
  uint16_t flags;
  uint32_t call_id, reserved;
};
static void pack_hdr_x(unsigned char *out, int kind, uint32_t ser, uint64_t len,
                       struct hdr_opts o) {
  put32(out, o.magic);
  out[4] = o.version;
  out[5] = (unsigned char)kind;
  memcpy(out + 6, &o.flags, 2);
  put32(out + 8, ser);
  put32(out + 12, o.call_id);
  put64(out + 16, len);
  put32(out + 24, o.reserved);
  put32(out + 28, fnv1a(out, 28));
}
static void pack_hdr(unsigned char *out, int kind, uint32_t ser, uint64_t len) {
  pack_hdr_x(out, kind, ser, len, (struct hdr_opts){MAGIC, 1, 0, 0, 0});
}

/* A byte stream the child sends, built in the parent before the call (the child sees a copy). */
struct script {
  unsigned char bytes[8192];
  size_t len;
  int memfd_mode; /* see send_memfd_frame */
  int memfd_kind; /* the kind of the header the descriptor travels with; 0 = MEMFD */
  uint64_t memfd_len, memfd_size;
  unsigned char after[64]; /* written after the descriptor's frame */
  size_t after_len;
  bool one_byte_at_a_time;
  enum { EXIT0, EXIT3, SEGV, STAY } end;
};
static struct script sc;

static void sc_reset(void) { memset(&sc, 0, sizeof sc); }
static void sc_add(const void *p, size_t n) {
  cr_assert(sc.len + n <= sizeof sc.bytes);
  memcpy(sc.bytes + sc.len, p, n);
  sc.len += n;
}
static void sc_frame(int kind, uint32_t ser, uint64_t len, const void *body, size_t n) {
  unsigned char h[HDR];
  pack_hdr(h, kind, ser, len);
  sc_add(h, HDR);
  if (n) sc_add(body, n);
}
static uint32_t RAW;

/* DATA(body) + END(len): a well-formed raw result. */
static void sc_value(const char *s) {
  sc_frame(DATA, RAW, strlen(s), s, strlen(s));
  sc_frame(END, RAW, strlen(s), NULL, 0);
}

/* ERROR body: i32 code | i32 raised | u32 kind_len | u32 msg_len | u32 bt_len | strings. */
static size_t error_body(unsigned char *out, int32_t code, int32_t raised, uint32_t kl,
                         uint32_t ml, uint32_t bl, const char *strings, size_t slen) {
  put32(out, (uint32_t)code);
  put32(out + 4, (uint32_t)raised);
  put32(out + 8, kl);
  put32(out + 12, ml);
  put32(out + 16, bl);
  memcpy(out + 20, strings, slen);
  return 20 + slen;
}

/* ---- the child's side ---------------------------------------------------------------------- */

/* Sockets this process had before the call, by inode: the child's result socket is the one
 * socket it has that is not among them. */
static struct {
  dev_t dev;
  ino_t ino;
} before[256];
static int n_before;

static void snapshot_sockets(void) {
  n_before = 0;
  for (int fd = 0; fd < 1024 && n_before < 256; fd++) {
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode))
      before[n_before].dev = st.st_dev, before[n_before++].ino = st.st_ino;
  }
}

/* The result socket: exactly one new AF_UNIX stream socket, or the child exits with 99 (so
 * the test fails with IP_EEXITED and says why). */
static int result_socket(void) {
  int found = -1, n = 0;
  for (int fd = 3; fd < 1024; fd++) {
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) continue;
    bool old = false;
    for (int i = 0; i < n_before; i++)
      if (before[i].dev == st.st_dev && before[i].ino == st.st_ino) old = true;
    if (old) continue;
    int domain = 0, type = 0;
    socklen_t l = sizeof domain;
    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l);
    l = sizeof type;
    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l);
    if (domain == AF_UNIX && type == SOCK_STREAM) found = fd, n++;
  }
  if (n != 1) _exit(99);
  return found;
}

static void write_all(int fd, const unsigned char *p, size_t n, bool one_at_a_time) {
  while (n) {
    ssize_t w = write(fd, p, one_at_a_time ? 1 : n);
    if (w <= 0) _exit(98);
    p += w, n -= (size_t)w;
  }
}

/* memfd_mode: 1 sealed, 2 unsealed, 3 sealed but without F_SEAL_WRITE, 4 two descriptors.
 * The memfd holds memfd_size bytes of 'm'; the MEMFD header announces memfd_len. */
static void send_memfd_frame(int sock) {
  int fd = memfd_create("hostile", MFD_ALLOW_SEALING);
  if (fd < 0) _exit(97);
  for (uint64_t i = 0; i < sc.memfd_size; i++)
    if (write(fd, "m", 1) != 1) _exit(97);
  int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
  if (sc.memfd_mode == 3) seals &= ~F_SEAL_WRITE;
  if (sc.memfd_mode != 2 && fcntl(fd, F_ADD_SEALS, seals | F_SEAL_SEAL) < 0) _exit(97);
  unsigned char h[HDR];
  pack_hdr(h, sc.memfd_kind ? sc.memfd_kind : MEMFD, RAW, sc.memfd_len);
  int fds[2] = {fd, dup(fd)};
  int nfds = sc.memfd_mode == 4 ? 2 : 1;
  union {
    struct cmsghdr c;
    char b[CMSG_SPACE(sizeof fds)];
  } u;
  memset(&u, 0, sizeof u);
  struct iovec iov = {h, HDR};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                     .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds)};
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
  if (sendmsg(sock, &m, MSG_NOSIGNAL) != HDR) _exit(96);
}

static void *hostile(void *arg) {
  int sock = result_socket();
  write_all(sock, sc.bytes, sc.len, sc.one_byte_at_a_time);
  if (sc.memfd_mode) send_memfd_frame(sock);
  write_all(sock, sc.after, sc.after_len, false);
  switch (sc.end) {
  case EXIT3: _exit(3);
  case SEGV:
    signal(SIGSEGV, SIG_DFL); /* our frame is the only CRASH frame */
    raise(SIGSEGV);
    _exit(95);
  case STAY:
    for (;;) pause(); /* the parent has to end us */
  default: _exit(0);
  }
}

/* A function the CRASH frame's backtrace points into; exported (-rdynamic) so it has a name. */
void frames_crash_marker(void);
void frames_crash_marker(void) { sc_reset(); }

/* ---- the parent's side --------------------------------------------------------------------- */

static void *hello(void *arg) { return bytes_of("still working"); }

/* A normal call after the hostile one: the library is still fine. */
static void normal_call_works(void) {
  ip_task *t = ip_task_new(hello, NULL);
  ip_future *f = ip_call(t, NULL);
  cr_assert_str_eq(str_of(f), "still working");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* Runs the script as a call of a raw task (max_result 0 = default) and returns the future. */
static ip_future *run(ip_task **tp, uint64_t max_result) {
  if (!RAW) RAW = ser_id("raw");
  ip_task *t = ip_task_new(hostile, NULL);
  cr_assert_not_null(t);
  if (max_result) cr_assert_eq(ip_task_set_max_result(t, max_result), 0);
  snapshot_sockets();
  ip_future *f = ip_call(t, NULL);
  cr_assert_not_null(f);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  *tp = t;
  return f;
}

/* The call fails with `code`, and its message contains `why` (NULL: anything). */
static const ip_error *expect_x(ip_task **tp, ip_future **fp, uint64_t max_result, int code,
                                const char *why) {
  ip_future *f = run(tp, max_result);
  *fp = f;
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e, "the call succeeded");
  cr_assert_eq(e->code, code, "want %s, got %s: %s", ip_err_name(code), ip_err_name(e->code),
               e->message);
  cr_assert_eq(ip_future_status(f), code);
  cr_assert_null(ip_future_value(f));
  cr_assert_neq(e->exit_status, 99, "the child did not find its socket");
  if (why) cr_assert(strstr(e->message, why), "message \"%s\" lacks \"%s\"", e->message, why);
  return e;
}

static void expect(int code, const char *why) {
  ip_task *t;
  ip_future *f;
  expect_x(&t, &f, 0, code, why);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
  normal_call_works();
}

static void expect_max(uint64_t max_result, int code, const char *why) {
  ip_task *t;
  ip_future *f;
  expect_x(&t, &f, max_result, code, why);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
  normal_call_works();
}

static void init(void) {
  RAW = ser_id("raw");
  sc_reset();
}
TestSuite(frames, .init = init);

/* ---- controls: well-formed frames from this packer are accepted ---------------------------- */

Test(frames, control_hand_made_data_and_end_give_the_value) {
  sc_value("hand made");
  ip_task *t;
  ip_future *f = run(&t, 0);
  cr_assert_str_eq(str_of(f), "hand made");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(frames, control_frames_trickling_one_byte_at_a_time_give_the_value) {
  sc_frame(DATA, RAW, 3, "abc", 3);
  sc_frame(DATA, RAW, 0, NULL, 0);
  sc_frame(DATA, RAW, 2, "de", 2);
  sc_frame(END, RAW, 5, NULL, 0);
  sc.one_byte_at_a_time = true;
  ip_task *t;
  ip_future *f = run(&t, 0);
  cr_assert_str_eq(str_of(f), "abcde");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(frames, control_hand_made_error_frame_is_raised) {
  unsigned char body[64];
  size_t n = error_body(body, IP_ERAISED, 111, 4, 5, 3, "KINDhellobt\n", 12);
  sc_frame(ERROR, RAW, n, body, n);
  ip_task *t;
  ip_future *f;
  const ip_error *e = expect_x(&t, &f, 0, IP_ERAISED, NULL);
  cr_assert_str_eq(e->kind, "KIND");
  cr_assert_str_eq(e->message, "hello");
  cr_assert_str_eq(e->backtrace, "bt\n");
  cr_assert_eq(e->raised_code, 111);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(frames, control_hand_made_sealed_memfd_gives_the_value) {
  sc.memfd_mode = 1;
  sc.memfd_len = 100;
  sc.memfd_size = 100;
  ip_task *t;
  ip_future *f = run(&t, 0);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s", ip_future_error(f) ? ip_future_error(f)->message : "");
  cr_assert_eq(b->len, 100);
  for (size_t i = 0; i < b->len; i++) cr_assert_eq(((const char *)b->data)[i], 'm');
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(frames, control_data_exactly_at_max_result_is_accepted) {
  char buf[64];
  memset(buf, 'q', sizeof buf);
  sc_frame(DATA, RAW, sizeof buf, buf, sizeof buf);
  sc_frame(END, RAW, sizeof buf, NULL, 0);
  ip_task *t;
  ip_future *f = run(&t, sizeof buf);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b);
  cr_assert_eq(b->len, sizeof buf);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* ---- broken headers -------------------------------------------------------------------------- */

Test(frames, truncated_header_then_exit_is_eproto) {
  unsigned char h[HDR];
  pack_hdr(h, DATA, RAW, 5);
  sc_add(h, 10);
  expect(IP_EPROTO, "incomplete");
}

Test(frames, truncated_header_then_exit_with_status_3_is_eexited) {
  unsigned char h[HDR];
  pack_hdr(h, DATA, RAW, 5);
  sc_add(h, 10);
  sc.end = EXIT3;
  ip_task *t;
  ip_future *f;
  const ip_error *e = expect_x(&t, &f, 0, IP_EEXITED, NULL);
  cr_assert_eq(e->exit_status, 3);
  ip_future_free(f);
  ip_task_free(t);
  normal_call_works();
}

Test(frames, garbage_bytes_are_eproto) {
  unsigned char junk[100];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(0xa5 ^ i * 31);
  sc_add(junk, sizeof junk);
  expect(IP_EPROTO, "bad magic");
}

Test(frames, header_with_a_bad_checksum_is_eproto) {
  unsigned char h[HDR];
  pack_hdr(h, DATA, RAW, 5);
  h[28] ^= 1;
  sc_add(h, HDR);
  sc_add("hello", 5);
  expect(IP_EPROTO, "checksum");
}

Test(frames, header_changed_after_its_checksum_is_eproto) {
  unsigned char h[HDR];
  pack_hdr(h, DATA, RAW, 5);
  h[16] = 4; /* the length, after the check was computed */
  sc_add(h, HDR);
  sc_add("hello", 5);
  expect(IP_EPROTO, "checksum");
}

static void bad_header(int kind, struct hdr_opts o, const char *why) {
  unsigned char h[HDR];
  sc_reset();
  pack_hdr_x(h, kind, RAW, 0, o);
  sc_add(h, HDR);
  expect(IP_EPROTO, why);
}

Test(frames, unknown_version_kind_and_reserved_bits_are_eproto) {
  bad_header(DATA, (struct hdr_opts){MAGIC, 2, 0, 0, 0}, "version");
  bad_header(0, (struct hdr_opts){MAGIC, 1, 0, 0, 0}, "kind");
  bad_header(6, (struct hdr_opts){MAGIC, 1, 0, 0, 0}, "kind");
  bad_header(255, (struct hdr_opts){MAGIC, 1, 0, 0, 0}, "kind");
  bad_header(DATA, (struct hdr_opts){MAGIC, 1, 1, 0, 0}, "reserved");
  bad_header(DATA, (struct hdr_opts){MAGIC, 1, 0, 7, 0}, "reserved");
  bad_header(DATA, (struct hdr_opts){MAGIC, 1, 0, 0, 1}, "reserved");
  bad_header(DATA, (struct hdr_opts){MAGIC + 1, 1, 0, 0, 0}, "magic");
}

/* ---- DATA and END ----------------------------------------------------------------------------- */

Test(frames, data_shorter_than_its_header_says_then_exit_is_eproto) {
  sc_frame(DATA, RAW, 100, "only ten b", 10);
  expect(IP_EPROTO, "incomplete");
}

Test(frames, data_without_end_then_exit_is_eproto) {
  sc_frame(DATA, RAW, 5, "hello", 5);
  expect(IP_EPROTO, "incomplete");
}

Test(frames, data_beyond_max_result_is_e2big) {
  char buf[65];
  memset(buf, 'q', sizeof buf);
  sc_frame(DATA, RAW, sizeof buf, buf, sizeof buf);
  sc_frame(END, RAW, sizeof buf, NULL, 0);
  expect_max(64, IP_E2BIG, "(at least 65 bytes; the task's max_result is 64)");
}

Test(frames, data_frames_adding_up_beyond_max_result_are_e2big) {
  char buf[40];
  memset(buf, 'q', sizeof buf);
  sc_frame(DATA, RAW, sizeof buf, buf, sizeof buf);
  sc_frame(DATA, RAW, sizeof buf, buf, sizeof buf);
  sc_frame(END, RAW, 2 * sizeof buf, NULL, 0);
  expect_max(64, IP_E2BIG, "(at least 80 bytes; the task's max_result is 64)");
}

Test(frames, data_announcing_uint64_max_bytes_is_e2big) {
  sc_frame(DATA, RAW, 3, "abc", 3);
  sc_frame(DATA, RAW, UINT64_MAX, "x", 1);
  expect(IP_E2BIG, "max_result");
}

Test(frames, end_frame_with_a_length_mismatch_is_eproto) {
  sc_frame(DATA, RAW, 5, "hello", 5);
  sc_frame(END, RAW, 6, NULL, 0);
  expect(IP_EPROTO, "end frame");
}

Test(frames, end_frame_shorter_than_the_data_is_eproto) {
  sc_frame(DATA, RAW, 5, "hello", 5);
  sc_frame(END, RAW, 4, NULL, 0);
  expect(IP_EPROTO, "end frame");
}

Test(frames, frame_of_another_serializer_is_edecode) {
  sc_frame(DATA, ser_id("msgpack"), 1, "\xc0", 1);
  sc_frame(END, ser_id("msgpack"), 1, NULL, 0);
  expect(IP_EDECODE, "another serializer");
}

Test(frames, end_frame_of_another_serializer_is_edecode) {
  sc_frame(DATA, RAW, 1, "x", 1);
  sc_frame(END, ser_id("msgpack"), 1, NULL, 0);
  expect(IP_EDECODE, "another serializer");
}

Test(frames, bytes_after_the_end_frame_are_eproto) {
  sc_value("hello");
  sc_add("!", 1);
  expect(IP_EPROTO, "after the final frame");
}

Test(frames, a_second_value_after_the_end_frame_is_eproto) {
  sc_value("hello");
  sc_value("again");
  expect(IP_EPROTO, "after the final frame");
}

Test(frames, bytes_after_the_end_frame_trickling_in_are_eproto) {
  sc_value("hello");
  sc_add("!", 1);
  sc.one_byte_at_a_time = true;
  expect(IP_EPROTO, "after the final frame");
}

/* ---- ERROR ---------------------------------------------------------------------------------- */

Test(frames, error_frame_whose_lengths_do_not_add_up_is_eproto) {
  unsigned char body[64];
  size_t n = error_body(body, IP_ERAISED, 0, 3, 5, 0, "KINhell", 7); /* says 8, has 7 */
  sc_frame(ERROR, RAW, n, body, n);
  expect(IP_EPROTO, "do not add up");
}

Test(frames, error_frame_with_lengths_beyond_the_body_is_eproto) {
  unsigned char body[64];
  size_t n = error_body(body, IP_ERAISED, 0, 0xffffffffu, 0, 0, "abc", 3);
  sc_frame(ERROR, RAW, n, body, n);
  expect(IP_EPROTO, NULL);
}

Test(frames, error_frame_whose_lengths_overflow_32_bits_is_eproto) {
  unsigned char body[64];
  /* 2^20 each is the cap per string; three of them still must not wrap to 3. */
  size_t n = error_body(body, IP_ERAISED, 0, 1u << 20, 1u << 20, 3, "abc", 3);
  sc_frame(ERROR, RAW, n, body, n);
  expect(IP_EPROTO, NULL);
}

Test(frames, error_frame_with_an_unexpected_code_is_eproto) {
  static const int32_t codes[] = {0, 1, 12345, IP_ESIGNALED, IP_EPROTO, IP_ECANCELED, INT32_MIN};
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
    unsigned char body[64];
    sc_reset();
    size_t n = error_body(body, codes[i], 0, 1, 1, 0, "km", 2);
    sc_frame(ERROR, RAW, n, body, n);
    expect(IP_EPROTO, "unexpected code");
  }
}

Test(frames, error_frame_shorter_than_its_fixed_part_is_eproto) {
  sc_frame(ERROR, RAW, 19, "0123456789012345678", 19);
  expect(IP_EPROTO, "length out of range");
}

Test(frames, error_frame_longer_than_the_bound_is_eproto) {
  sc_frame(ERROR, RAW, ((uint64_t)4 << 20) + 1, "x", 1);
  expect(IP_EPROTO, "length out of range");
}

Test(frames, error_frame_cut_short_then_exit_is_eproto) {
  unsigned char body[64];
  size_t n = error_body(body, IP_ERAISED, 0, 1, 1, 0, "km", 2);
  sc_frame(ERROR, RAW, n + 10, body, n);
  expect(IP_EPROTO, "incomplete");
}

Test(frames, bytes_after_an_error_frame_are_eproto) {
  unsigned char body[64];
  size_t n = error_body(body, IP_ERAISED, 0, 1, 1, 0, "km", 2);
  sc_frame(ERROR, RAW, n, body, n);
  sc_add("x", 1);
  expect(IP_EPROTO, "after the final frame");
}

/* ---- MEMFD ---------------------------------------------------------------------------------- */

Test(frames, memfd_frame_without_a_descriptor_is_eproto) {
  sc_frame(MEMFD, RAW, 100, NULL, 0);
  expect(IP_EPROTO, "without a descriptor");
}

Test(frames, memfd_frame_with_an_unsealed_memfd_is_eproto) {
  sc.memfd_mode = 2;
  sc.memfd_len = sc.memfd_size = 100;
  expect(IP_EPROTO, "not sealed");
}

Test(frames, memfd_frame_with_a_writable_memfd_is_eproto) {
  sc.memfd_mode = 3; /* shrink and grow sealed, write not */
  sc.memfd_len = sc.memfd_size = 100;
  expect(IP_EPROTO, "not sealed");
}

Test(frames, memfd_smaller_than_announced_is_eproto) {
  sc.memfd_mode = 1;
  sc.memfd_len = 4096;
  sc.memfd_size = 100;
  expect(IP_EPROTO, "smaller than announced");
}

Test(frames, memfd_beyond_max_result_is_e2big) {
  sc.memfd_mode = 1;
  sc.memfd_len = sc.memfd_size = 100;
  expect_max(99, IP_E2BIG, "(100 bytes; the task's max_result is 99)");
}

Test(frames, memfd_after_streamed_data_is_eproto) {
  sc_frame(DATA, RAW, 3, "abc", 3);
  sc.memfd_mode = 1;
  sc.memfd_len = sc.memfd_size = 100;
  expect(IP_EPROTO, "after streamed data");
}

Test(frames, two_descriptors_are_eproto_and_both_closed) {
  /* The baseline includes the library's own descriptors, made by a first call. */
  int base = warm_baseline();
  sc.memfd_mode = 4;
  sc.memfd_len = sc.memfd_size = 100;
  expect(IP_EPROTO, "descriptors");
  cr_assert_eq(count_fds(), base, "the received descriptors were closed (%d, was %d)",
               count_fds(), base);
}

Test(frames, descriptor_after_the_final_frame_is_refused_and_closed) {
  int base = warm_baseline();
  sc.memfd_mode = 1;
  sc.memfd_len = sc.memfd_size = 1;
  sc_value("x"); /* a complete value first, then the MEMFD frame after it */
  /* One recvmsg may bring the value's frames and the descriptor together: the parser then
   * refuses the descriptor as it reads END, else the MEMFD frame as bytes after END. */
  ip_task *t;
  ip_future *f;
  const ip_error *e = expect_x(&t, &f, 0, IP_EPROTO, NULL);
  cr_assert(strstr(e->message, "after the final frame") || strstr(e->message, "descriptor"),
            "message \"%s\" names neither the late frame nor the descriptor", e->message);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert_eq(count_fds(), base, "the received descriptor was closed");
}

/* A descriptor riding on a DATA header is never mapped; whatever the outcome, it is closed by
 * the time the future is freed. */
Test(frames, descriptor_riding_on_a_data_frame_is_closed) {
  int base = warm_baseline();
  sc.memfd_mode = 1;
  sc.memfd_kind = DATA;
  sc.memfd_len = 0;
  sc.memfd_size = 1;
  pack_hdr(sc.after, END, RAW, 0);
  sc.after_len = HDR;
  ip_task *t;
  ip_future *f = run(&t, 0);
  const ip_error *e = ip_future_error(f);
  cr_assert(!e || e->code == IP_EPROTO, "%s", e ? e->message : "");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert_eq(count_fds(), base, "the received descriptor was closed");
  cr_assert(no_children());
  normal_call_works();
}

/* ---- CRASH ---------------------------------------------------------------------------------- */

static size_t crash_body(unsigned char *out, int32_t sig, uint32_t n, const uint64_t *addrs) {
  put32(out, (uint32_t)sig);
  put32(out + 4, n);
  for (uint32_t i = 0; i < n; i++) put64(out + 8 + 8 * i, addrs[i]);
  return 8 + 8 * (size_t)n;
}

Test(frames, crash_frame_then_sigsegv_is_esignaled_with_the_backtrace) {
  unsigned char body[8 + 8 * 3];
  uint64_t addrs[3] = {(uint64_t)(uintptr_t)frames_crash_marker,
                       (uint64_t)(uintptr_t)frames_crash_marker + 1,
                       (uint64_t)(uintptr_t)normal_call_works};
  size_t n = crash_body(body, SIGSEGV, 3, addrs);
  sc_frame(CRASH, RAW, n, body, n);
  sc.end = SEGV;
  ip_task *t;
  ip_future *f;
  const ip_error *e = expect_x(&t, &f, 0, IP_ESIGNALED, "SIGSEGV");
  cr_assert_eq(e->signal, SIGSEGV);
  cr_assert_str_eq(e->kind, "SIGSEGV");
  cr_assert_eq(e->exit_status, -1);
  cr_assert_not_null(e->backtrace, "the CRASH frame's addresses were symbolized");
  cr_assert(strstr(e->backtrace, "frames_crash_marker"), "backtrace: %s", e->backtrace);
  int lines = 0;
  for (const char *p = e->backtrace; *p; p++) lines += *p == '\n';
  cr_assert_eq(lines, 3, "one line per address: %s", e->backtrace);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
  normal_call_works();
}

Test(frames, crash_frame_with_a_bad_address_count_gives_no_backtrace) {
  unsigned char body[8 + 8 * 2];
  uint64_t addrs[2] = {(uint64_t)(uintptr_t)frames_crash_marker, 0};
  size_t n = crash_body(body, SIGSEGV, 2, addrs);
  put32(body + 4, 5); /* says 5 addresses, carries 2 */
  sc_frame(CRASH, RAW, n, body, n);
  sc.end = SEGV;
  ip_task *t;
  ip_future *f;
  const ip_error *e = expect_x(&t, &f, 0, IP_ESIGNALED, NULL);
  cr_assert_null(e->backtrace);
  ip_future_free(f);
  ip_task_free(t);
  normal_call_works();
}

Test(frames, crash_frame_with_wild_addresses_is_still_esignaled) {
  unsigned char body[8 + 8 * 4];
  uint64_t addrs[4] = {0, 1, UINT64_MAX, 0xdeadbeefcafef00dull};
  size_t n = crash_body(body, SIGSEGV, 4, addrs);
  sc_frame(CRASH, RAW, n, body, n);
  sc.end = SEGV;
  expect(IP_ESIGNALED, "SIGSEGV");
}

Test(frames, crash_frame_longer_than_the_bound_is_eproto) {
  unsigned char body[8];
  crash_body(body, SIGSEGV, 0, NULL);
  sc_frame(CRASH, RAW, 8 + 8 * 64 + 1, body, 8);
  sc.end = SEGV;
  expect(IP_EPROTO, "crash frame length");
}

Test(frames, crash_frame_then_a_normal_exit_is_eexited) {
  unsigned char body[16];
  uint64_t a = (uint64_t)(uintptr_t)frames_crash_marker;
  size_t n = crash_body(body, SIGSEGV, 1, &a);
  sc_frame(CRASH, RAW, n, body, n);
  expect(IP_EEXITED, NULL);
}

/* ---- a child that sends garbage and stays alive ------------------------------------------- */

/* The parent stops listening and kills it; the call ends with the protocol error, not a hang. */
Test(frames, garbage_from_a_child_that_keeps_running_is_eproto_and_the_child_is_killed,
     .timeout = 120) {
  sc_add("definitely not a frame header, 32+ bytes long....", 50);
  sc.end = STAY;
  ip_task *t;
  ip_future *f;
  const ip_error *e = expect_x(&t, &f, 0, IP_EPROTO, "bad magic");
  cr_assert_eq(e->signal, SIGKILL);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
  normal_call_works();
}

Test(frames, oversized_data_from_a_child_that_keeps_running_is_e2big, .timeout = 120) {
  sc_frame(DATA, RAW, 1000, "x", 1);
  sc.end = STAY;
  ip_task *t;
  ip_future *f;
  const ip_error *e = expect_x(&t, &f, 10, IP_E2BIG, NULL);
  cr_assert_eq(e->signal, SIGKILL);
  ip_future_free(f);
  ip_task_free(t);
  normal_call_works();
}

/* ---- many hostile calls, nothing left behind ------------------------------------------------ */

Test(frames, hostile_calls_leave_no_descriptor_or_child_behind) {
  int base = warm_baseline();
  for (int round = 0; round < 3; round++) {
    sc_reset();
    sc_add("garbage garbage garbage garbage garbage", 39);
    expect(IP_EPROTO, NULL);
    sc_reset();
    sc.memfd_mode = 2;
    sc.memfd_len = sc.memfd_size = 10;
    expect(IP_EPROTO, NULL);
    sc_reset();
    sc.memfd_mode = 1;
    sc.memfd_len = sc.memfd_size = 10;
    ip_task *t;
    ip_future *f = run(&t, 0);
    cr_assert_not_null(ip_future_value(f));
    ip_future_free(f);
    ip_task_free(t);
    sc_reset();
    unsigned char body[64];
    size_t n = error_body(body, IP_ERAISED, 0, 1, 1, 1, "kmb", 3);
    sc_frame(ERROR, RAW, n, body, n);
    expect(IP_ERAISED, NULL);
  }
  cr_assert_eq(count_fds(), base);
  cr_assert(no_children());
}
