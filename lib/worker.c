/* A pool worker: a process forked from its pool's template that runs calls one after another.
 * It reads CALL frames from its channel, acknowledges each call as it starts it (so the
 * caller knows which calls a death takes with it and which it may send elsewhere), runs it
 * as a forked child would, and sends the same answer frames. It exits when told to (QUIT),
 * when it grew past the pool's max_rss, or when the caller's end of the channel closes. */
#include "internal.h"
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define IN_BUF (64u << 10)

static struct {
  int sock;
  unsigned char *buf; /* bytes read and not yet taken */
  size_t have, at;
} in;

/* Waits for more bytes; false at end of stream or on error. */
static bool fill(void) {
  if (in.at && in.at == in.have) in.at = in.have = 0;
  if (in.have == IN_BUF) {
    memmove(in.buf, in.buf + in.at, in.have - in.at);
    in.have -= in.at, in.at = 0;
    if (in.have == IN_BUF) return true; /* full of frames already */
  }
  for (;;) {
    ssize_t r = recv(in.sock, in.buf + in.have, IN_BUF - in.have, 0);
    if (r > 0) {
      in.have += (size_t)r;
      return true;
    }
    if (r < 0 && errno == EINTR) continue;
    return false;
  }
}

/* Copies exactly n bytes out of the stream, reading as needed. */
static bool take(void *dst, size_t n) {
  unsigned char *d = dst;
  while (n) {
    if (in.at == in.have && !fill()) return false;
    size_t k = in.have - in.at < n ? in.have - in.at : n;
    memcpy(d, in.buf + in.at, k);
    d += k, n -= k, in.at += k;
  }
  return true;
}

/* Whether a CANCEL for `id` already sits in the stream, behind the call about to start: the
 * caller canceled it while it was queued here. Looks only at what was read (no system call
 * per call for a rare case): a CANCEL that comes later finds the call started, and the
 * caller then ends it by ending the worker. */
static bool canceled_ahead(uint32_t id) {
  size_t at = in.at;
  while (in.have - at >= IP__FRAME_HDR_SIZE) {
    struct ip__frame_hdr h;
    if (ip__frame_unpack(in.buf + at, &h)) return false;
    if (h.kind == IP__FRAME_CANCEL && h.call_id == id) return true;
    if (h.len > in.have - at - IP__FRAME_HDR_SIZE) return false;
    at += IP__FRAME_HDR_SIZE + (size_t)h.len;
  }
  return false;
}

static void send_small(int kind, uint32_t id) {
  unsigned char h[IP__FRAME_HDR_SIZE];
  ip__frame_pack_id(h, kind, 0, id, 0);
  ssize_t w;
  while ((w = send(in.sock, h, sizeof h, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  if (w != (ssize_t)sizeof h) _exit(0); /* the caller is gone */
}

/* Answers a started call that cannot run here with an ERROR frame, as a forked child would. */
static void refuse(int code, const char *msg) {
  size_t len = ip__error_body_size(ip_err_name(code), msg, NULL);
  unsigned char h[IP__FRAME_HDR_SIZE], *body = malloc(len);
  if (!body) _exit(1);
  ip__error_body_pack(body, code, 0, ip_err_name(code), msg, NULL);
  ip__frame_pack(h, IP__FRAME_ERROR, 0, len);
  struct iovec iov[2] = {{h, sizeof h}, {body, len}};
  struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
  ssize_t w;
  while ((w = sendmsg(in.sock, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  free(body);
  if (w != (ssize_t)(sizeof h + len)) _exit(0);
}

static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "re");
  unsigned long size = 0, rss = 0;
  if (!f) return 0;
  int n = fscanf(f, "%lu %lu", &size, &rss);
  fclose(f);
  return n == 2 ? (size_t)rss * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

/* Acknowledged first: from here on a crash, even in the argument's decoder, is this call's
 * and fails it alone, rather than sending it to the next worker to crash there too. */
static void run(uint32_t id, const struct ip__call_spec *spec, unsigned char *arg, size_t len) {
  const ip_task *t = (const ip_task *)(uintptr_t)spec->task;
  send_small(IP__FRAME_ACK, id);
  if (t->arg_ser_id != spec->arg_ser_id || t->ser_id != spec->ser_id) {
    /* The caller changed the task's serializers after the pool was made; this copy of the
     * task still has the old ones, and would misread the argument. */
    refuse(IP_EINVAL, "the task's serializers were changed after the pool was made; the "
                      "pool's workers have the task as it was then");
    return;
  }
  void *value = NULL;
  int rc = t->arg_ser->decode(t->arg_ser, arg, len, &value);
  if (rc != 0) {
    char msg[200];
    snprintf(msg, sizeof msg, "the %s serializer could not decode the %zu-byte argument in "
             "worker %d (%s)", t->arg_ser->name, len, (int)getpid(), ip_err_name(rc));
    refuse(IP_EDECODE, msg);
    return;
  }
  ip__worker_call(t, in.sock, spec, value);
  if (t->arg_ser->free_value) t->arg_ser->free_value(t->arg_ser, value);
}

void ip__worker_main(int sock) {
  in.sock = sock;
  if (!(in.buf = malloc(IN_BUF))) _exit(1);
  ip__bytes_call_end(); /* from here on every ip_bytes buffer lasts one call */
  for (;;) {
    struct ip__frame_hdr h;
    unsigned char hdr[IP__FRAME_HDR_SIZE];
    if (!take(hdr, sizeof hdr) || ip__frame_unpack(hdr, &h)) _exit(0);
    if (h.kind == IP__FRAME_QUIT) _exit(0);
    if (h.kind != IP__FRAME_CALL || h.len < sizeof(struct ip__call_spec)) continue; /* CANCEL */
    struct ip__call_spec spec;
    size_t len = (size_t)h.len - sizeof spec;
    unsigned char *arg = malloc(len ? len : 1);
    if (!take(&spec, sizeof spec) || !arg || !take(arg, len)) _exit(1);
    if (!canceled_ahead(h.call_id)) run(h.call_id, &spec, arg, len);
    else send_small(IP__FRAME_CANCEL, h.call_id); /* the caller may be waiting to know */
    free(arg);
    if (spec.max_rss && rss_bytes() > spec.max_rss) _exit(0); /* the pool replaces us */
  }
}
