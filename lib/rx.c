/* Reading a child's frames: the parser that turns the bytes of a socket (and a descriptor
 * passed with SCM_RIGHTS) into a value buffer, an error body or a crash record. It runs in
 * the supervisor thread and trusts nothing: every length is bounded before it is used. */
#include "internal.h"
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define STAGING (64u << 10)
#define DIRECT_MIN (16u << 10) /* body bytes left from which recv goes to the payload */

static unsigned char staging[STAGING]; /* only the supervisor thread touches it */

static void proto(ip_future *f, int code, const char *why) {
  if (!f->rx.proto_code) {
    f->rx.proto_code = code;
    f->rx.proto_msg = why;
  }
}

static bool reserve(ip_future *f, size_t need, uint64_t hint) {
  struct ip__rx *rx = &f->rx;
  if (need <= rx->cap) return true;
  size_t ncap = rx->cap * 2;
  if (ncap < need) ncap = need;
  if (hint > ncap && hint - ncap < ((size_t)256 << 20)) ncap = (size_t)hint;
  /* A small result gets its exact size (the frame header gave it): a 4 KiB buffer for a few
   * bytes is one more page written after the fork, a copy-on-write fault while that child
   * lives. Larger ones start at 4 KiB and double. */
  if (ncap < 4096) ncap = hint >= need && hint < 4096 ? (size_t)hint : 4096;
  unsigned char *p = realloc(rx->payload, ncap);
  if (!p) {
    proto(f, IP_ENOMEM, "no memory for the result");
    return false;
  }
  rx->payload = p;
  rx->cap = ncap;
  return true;
}

static void take_memfd(ip_future *f, uint64_t len) {
  struct ip__rx *rx = &f->rx;
  struct stat st;
  int seals = fcntl(rx->memfd, F_GET_SEALS);
  const int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
  if (rx->memfd < 0) return proto(f, IP_EPROTO, "in-place result without a descriptor");
  if (rx->len) return proto(f, IP_EPROTO, "in-place result after streamed data");
  if (len > f->max_result) {
    rx->too_big = len;
    return proto(f, IP_E2BIG, "in-place result exceeds max_result");
  }
  if (fstat(rx->memfd, &st) < 0 || (uint64_t)st.st_size < len)
    return proto(f, IP_EPROTO, "in-place result smaller than announced");
  /* Unsealed memory could shrink under our mapping and kill us with SIGBUS. */
  if (seals < 0 || (seals & need) != need) return proto(f, IP_EPROTO, "in-place result not sealed");
  if (len) {
    void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, rx->memfd, 0);
    if (p == MAP_FAILED) return proto(f, IP_ENOMEM, "could not map the in-place result");
    rx->payload = p;
    rx->mapped = true;
    rx->len = rx->cap = len;
  }
  pthread_mutex_lock(&ip__g.lock);
  ip__close(&rx->memfd);
  pthread_mutex_unlock(&ip__g.lock);
  rx->final_kind = IP__FRAME_MEMFD;
}

static void start_frame(ip_future *f) {
  struct ip__rx *rx = &f->rx;
  const struct ip__frame_hdr *h = &rx->cur;
  /* A pool's own frames (CALL, ACK, ...) and call ids never belong in a call's answer. */
  if (h->kind > IP__FRAME_CRASH) return proto(f, IP_EPROTO, "unknown frame kind in an answer");
  if (h->call_id != 0) return proto(f, IP_EPROTO, "reserved header bits set (a call id)");
  if ((h->kind == IP__FRAME_END || h->kind == IP__FRAME_ERROR) && rx->memfd >= 0)
    return proto(f, IP_EPROTO, "a descriptor came with a frame that carries none");
  if (h->kind <= IP__FRAME_MEMFD && h->ser_id != f->ser_id)
    return proto(f, IP_EDECODE, "the result was encoded by another serializer");
  switch (h->kind) {
  case IP__FRAME_DATA:
    if (h->len > f->max_result - rx->len) {
      rx->too_big = h->len > UINT64_MAX - rx->len ? UINT64_MAX : rx->len + h->len;
      return proto(f, IP_E2BIG, "result exceeds max_result");
    }
    break;
  case IP__FRAME_END:
    if (h->len != rx->len) return proto(f, IP_EPROTO, "result length does not match its end frame");
    rx->final_kind = IP__FRAME_END;
    return;
  case IP__FRAME_MEMFD:
    return take_memfd(f, h->len);
  default: /* ERROR, CRASH: bounded by ip__frame_unpack */
    free(rx->aux);
    rx->aux_len = 0;
    if (!(rx->aux = malloc(h->len))) return proto(f, IP_ENOMEM, "no memory for an error frame");
    break;
  }
  rx->in_body = h->len > 0;
  rx->body_left = h->len;
}

size_t ip__rx_feed(ip_future *f, const unsigned char *p, size_t n) {
  struct ip__rx *rx = &f->rx;
  size_t n0 = n;
  while (n > 0 && !rx->proto_code && !rx->final_kind) {
    if (!rx->in_body) {
      if (!ip__frame_gather(rx->hdr, &rx->hdr_have, &p, &n)) break;
      const char *why = ip__frame_unpack(rx->hdr, &rx->cur);
      if (why) {
        proto(f, IP_EPROTO, why);
        break;
      }
      start_frame(f);
      continue;
    }
    size_t take = rx->body_left < n ? (size_t)rx->body_left : n;
    if (rx->cur.kind == IP__FRAME_DATA) {
      if (!reserve(f, rx->len + take, rx->len + rx->body_left)) break;
      memcpy(rx->payload + rx->len, p, take);
      rx->len += take;
    } else {
      memcpy(rx->aux + rx->aux_len, p, take);
      rx->aux_len += take;
    }
    p += take, n -= take;
    if ((rx->body_left -= take) == 0) {
      rx->in_body = false;
      if (rx->cur.kind == IP__FRAME_ERROR) rx->final_kind = IP__FRAME_ERROR;
    }
  }
  return n0 - n;
}

void ip__rx_take_fds(ip_future *f, struct msghdr *m) {
  if (m->msg_flags & MSG_CTRUNC) proto(f, IP_EPROTO, "too many descriptors from the child");
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (f->rx.memfd < 0 && k == 1) f->rx.memfd = fd;
      else {
        close(fd);
        proto(f, IP_EPROTO, "unexpected descriptors from the child");
      }
    }
  }
}

ssize_t ip__rx_direct(ip_future *f, int fd) {
  struct ip__rx *rx = &f->rx;
  if (!rx->in_body || rx->cur.kind != IP__FRAME_DATA || rx->body_left < DIRECT_MIN) return -2;
  /* The bulk of a large result goes straight into its buffer: no staging copy. */
  if (!reserve(f, rx->len + DIRECT_MIN, rx->len + rx->body_left)) return -2;
  size_t room = rx->cap - rx->len;
  if (room > rx->body_left) room = (size_t)rx->body_left;
  ssize_t r = recv(fd, rx->payload + rx->len, room, MSG_DONTWAIT);
  if (r > 0) {
    rx->len += (size_t)r;
    if ((rx->body_left -= (uint64_t)r) == 0) rx->in_body = false;
  }
  return r;
}

ssize_t ip__recv(int fd, void *buf, size_t len, int flags, struct ip__recv *c) {
  c->iov = (struct iovec){buf, len};
  c->m = (struct msghdr){.msg_iov = &c->iov, .msg_iovlen = 1, .msg_control = c->u.b,
                         .msg_controllen = sizeof c->u.b};
  return recvmsg(fd, &c->m, flags | MSG_CMSG_CLOEXEC);
}

/* Reads what the socket holds, up to `budget` bytes. Returns false at end of stream. */
bool ip__rx_drain(ip_future *f, size_t budget) {
  struct ip__rx *rx = &f->rx;
  while (budget > 0 && !rx->proto_code) {
    ssize_t r = ip__rx_direct(f, f->sock);
    if (rx->proto_code) break;
    if (r == -2) {
      struct ip__recv c;
      /* Under the lock: a descriptor that arrives must be in f (where a fork finds and
       * closes it) before any fork can copy it. */
      pthread_mutex_lock(&ip__g.lock);
      r = ip__recv(f->sock, staging, sizeof staging, MSG_DONTWAIT, &c);
      if (r >= 0 && c.m.msg_controllen) ip__rx_take_fds(f, &c.m);
      pthread_mutex_unlock(&ip__g.lock);
      if (r > 0 && ip__rx_feed(f, staging, (size_t)r) < (size_t)r && !rx->proto_code)
        proto(f, IP_EPROTO, "bytes after the final frame");
    }
    if (r == 0) return false;
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    budget -= (size_t)r < budget ? (size_t)r : budget;
  }
  return true;
}
