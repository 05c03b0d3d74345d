/* The floor of bench/peers: inparallel's C core, a fork per call (ip_call), the calls kept
 * C at a time with ip_waitfor_next. Every other figure of the chart is a ratio to this one.
 *
 *   trivial  from the first ip_call to the last result summed: N calls of x -> x + 1, an
 *            8-byte raw result each.
 *   big      ip_call of a task that copies BYTES bytes (made before the call, so inherited)
 *            into ip_bytes_alloc, to the caller having read every page of the value (it
 *            travels in place: a memfd the caller maps).
 * Before the timed run, the same run at a tenth of the size warms both processes' code. */
#include "peer.h"

static const char *const PEER = "c-fork";

static void *add_one(void *arg) {
  uint64_t v = peer_trivial((uint64_t)(uintptr_t)arg);
  return ip_bytes_copy(&v, sizeof v);
}

static const unsigned char *g_src; /* the children inherit it */

static void *big_result(void *arg) {
  size_t len = (size_t)(uintptr_t)arg;
  ip_bytes *b = ip_bytes_alloc(len);
  if (!b) ip_raise(ENOMEM, "ip_bytes_alloc(%zu)", len);
  memcpy(b->data, g_src, len);
  return b;
}

static double trivial(ip_task *t, long n, int conc) {
  ip_list *l = ip_list_new();
  if (!l) peer_fail(PEER, "ip_list_new", strerror(errno));
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  long started = 0;
  uint64_t sum = 0;
  int rc;
  double t0 = peer_now();
  while ((rc = ip_waitfor_next(&w, l, conc, -1, &f)) == 1) {
    if (!f) {
      if (started < n) {
        started++;
        ip_future *nf = ip_call(t, (void *)(uintptr_t)started);
        if (!nf || ip_list_push(l, nf) < 0) peer_fail(PEER, "ip_call", strerror(errno));
      }
      continue;
    }
    const ip_bytes *b = ip_future_value(f);
    if (!b || b->len != sizeof sum)
      peer_fail(PEER, "a call", b ? "wrong length" : ip_future_error(f)->message);
    uint64_t v;
    memcpy(&v, b->data, sizeof v);
    sum += v;
    ip_future_free(f);
  }
  double s = peer_now() - t0;
  if (rc < 0) peer_fail(PEER, "ip_waitfor_next", ip_strerror(rc));
  if (sum != peer_trivial_sum((uint64_t)n)) peer_fail(PEER, "trivial", "wrong sum");
  ip_list_free(l);
  return s;
}

static double big(ip_task *t, size_t len) {
  double t0 = peer_now();
  ip_future *f = ip_call(t, (void *)(uintptr_t)len);
  if (!f) peer_fail(PEER, "ip_call", strerror(errno));
  const ip_bytes *b = ip_future_value(f);
  if (!b) peer_fail(PEER, "the big call", ip_future_error(f)->message);
  if (b->len != len || peer_read_big(b->data, g_src, len) < 0)
    peer_fail(PEER, "the big call", "wrong result");
  double s = peer_now() - t0;
  ip_future_free(f);
  return s;
}

int main(int argc, char **argv) {
  struct peer_args a = peer_parse(PEER, argc, argv);
  double s;
  if (a.big) {
    if (!(g_src = peer_source(a.bytes))) peer_fail(PEER, "mmap", strerror(errno));
    ip_task *t = ip_task_new(big_result, NULL);
    if (!t) peer_fail(PEER, "ip_task_new", strerror(errno));
    big(t, a.bytes / 10);
    s = big(t, a.bytes);
    ip_task_free(t);
  } else {
    ip_task *t = ip_task_new(add_one, NULL);
    if (!t) peer_fail(PEER, "ip_task_new", strerror(errno));
    trivial(t, a.n / 10 + 1, a.conc);
    s = trivial(t, a.n, a.conc);
    ip_task_free(t);
  }
  peer_report(PEER, &a, s);
  return 0;
}
