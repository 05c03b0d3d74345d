/* libFuzzer target: the parent-side frame parser (lib/rx.c) and the outcome built from it
 * (lib/outcome.c), on a future set up the way ip_call sets one up.
 *
 * Input: 3 control bytes, then the byte stream a child would send.
 *   c0 bits 0-2  max_result: 0, 1, 16, 64, 4096, 1 MiB, 4 GiB (the default), UINT64_MAX
 *      bits 3-5  wait status: exit 0, exit 3, exit 125, SIGSEGV, SIGSEGV + core, SIGKILL,
 *                SIGABRT, -1 (reaped by someone else)
 *      bit 6     canceled;  bit 7  timed out
 *   c1 bit 0     a memfd arrives with SCM_RIGHTS; bit 1 fully sealed, else unsealed;
 *      bit 2     serializer "msgpack" instead of "raw"; bits 3-7: memfd size in 61-byte steps
 *   c2 bit 7     recompute the checksum of every header in the stream, so mutations of the
 *                other header fields get past the check; bits 0-6: feed in chunks of that many
 *                bytes (0 = all at once) */
#include "internal.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(c) \
  do {           \
    if (!(c)) __builtin_trap(); \
  } while (0)

static const uint64_t max_results[8] = {0, 1, 16, 64, 4096, 1u << 20, UINT64_C(4) << 30,
                                        UINT64_MAX};
static const int statuses[8] = {0, 3 << 8, 125 << 8, SIGSEGV, SIGSEGV | 0x80, SIGKILL, SIGABRT,
                                -1};

static void fix_checksums(unsigned char *p, size_t n) {
  size_t pos = 0;
  while (pos + IP__FRAME_HDR_SIZE <= n) {
    uint32_t check = ip__fnv1a(p + pos, 28, IP__FNV_SEED);
    memcpy(p + pos + 28, &check, 4);
    uint64_t len;
    memcpy(&len, p + pos + 16, 8);
    unsigned kind = p[pos + 5];
    pos += IP__FRAME_HDR_SIZE;
    if (kind == IP__FRAME_DATA || kind == IP__FRAME_ERROR || kind == IP__FRAME_CRASH)
      pos = len > n - pos ? n : pos + (size_t)len;
  }
}

static int make_memfd(size_t size, int sealed) {
  int fd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) abort(); /* a descriptor leak would end here */
  if (size) {
    char *buf = malloc(size);
    memset(buf, 'v', size);
    if (write(fd, buf, size) != (ssize_t)size) abort();
    free(buf);
  }
  if (sealed && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) abort();
  return fd;
}

static int verbose = -1; /* FUZZ_VERBOSE=1 prints each outcome (for triage) */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  unsigned c0 = data[0], c1 = data[1], c2 = data[2];
  data += 3, size -= 3;

  /* As future_new and ip_call leave it. */
  ip_future *f = calloc(1, sizeof *f);
  f->sock = f->child_sock = f->pidfd = f->reaper_wfd = f->rx.memfd = -1;
  f->wstatus = -1;
  f->err.exit_status = -1;
  pthread_mutex_init(&f->dec_lock, NULL);
  f->ser = ip_serializer_raw();
  f->ser_id = ip__ser_id(c1 & 4 ? "msgpack" : "raw");
  f->max_result = max_results[c0 & 7];
  f->pid = 4242;
  f->err.pid = 4242;
  f->timeout_ms = 100;

  /* What the supervisor would have seen. */
  if (c1 & 1) f->rx.memfd = make_memfd((size_t)(c1 >> 3) * 61, c1 & 2);
  unsigned char *stream = malloc(size ? size : 1); /* exact size: ASan sees any over-read */
  memcpy(stream, data, size);
  if (c2 & 0x80) fix_checksums(stream, size);
  size_t chunk = c2 & 0x7f;
  if (!chunk) chunk = size ? size : 1;
  for (size_t off = 0; off < size; off += chunk)
    ip__rx_feed(f, stream + off, size - off < chunk ? size - off : chunk);
  f->rx.sock_open = false;
  f->wstatus = statuses[(c0 >> 3) & 7];
  f->reaped = true;
  f->cancel_req = c0 & 0x40;
  f->timed_out = c0 & 0x80;

  ip__outcome(f);
  if (verbose < 0) verbose = getenv("FUZZ_VERBOSE") != NULL;
  if (verbose)
    fprintf(stderr, "status %s len %zu: %s\n", ip_err_name(f->status), f->rx.len,
            f->status ? f->err.message : "(value)");

  /* What the outcome promises. */
  if (f->status == 0) {
    CHECK(!f->cancel_req && !f->rx.proto_code);
    CHECK(f->rx.final_kind == IP__FRAME_END || f->rx.final_kind == IP__FRAME_MEMFD);
    CHECK(f->rx.len <= f->max_result);
    CHECK(f->rx.len == 0 || f->rx.payload);
    /* As ip_future_value would: decode and read every byte. */
    void *v = NULL;
    CHECK(f->ser->decode(f->ser, f->rx.payload, f->rx.len, &v) == 0);
    const ip_bytes *b = v;
    unsigned sum = 0;
    for (size_t i = 0; i < b->len; i++) sum += ((const unsigned char *)b->data)[i];
    if (f->rx.final_kind == IP__FRAME_MEMFD) CHECK(sum == 'v' * (unsigned)b->len);
    f->ser->free_value(f->ser, v);
  } else {
    CHECK(f->err.code == f->status);
    CHECK(f->err.kind && f->err.message); /* never NULL for a failure */
    switch (f->status) {
    case IP_EPROTO: case IP_E2BIG: case IP_ENOMEM: case IP_EDECODE: case IP_ERAISED:
    case IP_EENCODE: case IP_EINVAL: case IP_ESIGNALED: case IP_EEXITED: case IP_ECANCELED:
    case IP_ETIMEDOUT:
      break;
    default:
      __builtin_trap(); /* a code the child cannot make us report */
    }
    CHECK(strlen(f->err.message) < (2u << 20));
    if (f->err.backtrace) CHECK(strlen(f->err.backtrace) < (8u << 20));
    CHECK(!f->rx.payload || f->status == IP_EDECODE); /* freed once useless */
  }
  CHECK(f->rx.aux == NULL); /* the outcome consumed it */

  ip__outcome_free(f);
  CHECK(f->rx.memfd < 0);
  pthread_mutex_destroy(&f->dec_lock);
  free(f);
  free(stream);
  return 0;
}
