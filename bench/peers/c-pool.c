/* inparallel's C pool: ip_pool_new(C), one ip_pool_call per item, 2 * C calls in flight
 * through ip_waitfor_next (each worker has the next call waiting when it ends one), then
 * ip_pool_free. Timed from before ip_pool_new to after ip_pool_free, as for every pool of
 * bench/peers: what doing N calls costs a program that has no pool yet.
 *
 *   trivial  N calls of x -> x + 1: the argument travels as 8 raw bytes, the result too.
 *   big      a pool of 1 worker, one call that copies BYTES bytes (made before the pool, so
 *            the worker has them) into ip_bytes_alloc; the caller reads every page of it.
 * Before the timed run, the same run at a tenth of the size warms the caller's code. */
#include "peer.h"

static const char *const PEER = "c-pool";

static void *add_one(void *arg) {
  const ip_bytes *in = arg;
  uint64_t x;
  if (!in || in->len != sizeof x) ip_raise(EINVAL, "expected 8 bytes");
  memcpy(&x, in->data, sizeof x);
  uint64_t v = peer_trivial(x);
  return ip_bytes_copy(&v, sizeof v);
}

static const unsigned char *g_src; /* the workers inherit it */

static void *big_result(void *arg) {
  const ip_bytes *in = arg;
  size_t len;
  memcpy(&len, in->data, sizeof len);
  ip_bytes *b = ip_bytes_alloc(len);
  if (!b) ip_raise(ENOMEM, "ip_bytes_alloc(%zu)", len);
  memcpy(b->data, g_src, len);
  return b;
}

static ip_pool *pool_new(int workers) {
  ip_pool *p = ip_pool_new(workers);
  if (!p) peer_fail(PEER, "ip_pool_new", strerror(errno));
  return p;
}

static double trivial(ip_task *t, long n, int conc) {
  double t0 = peer_now();
  ip_pool *p = pool_new(conc);
  ip_list *l = ip_list_new();
  if (!l) peer_fail(PEER, "ip_list_new", strerror(errno));
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  long started = 0;
  uint64_t sum = 0;
  int rc;
  while ((rc = ip_waitfor_next(&w, l, 2 * conc, -1, &f)) == 1) {
    if (!f) {
      if (started < n) {
        uint64_t x = (uint64_t)++started;
        ip_bytes arg = {&x, sizeof x};
        ip_future *nf = ip_pool_call(p, t, &arg);
        if (!nf || ip_list_push(l, nf) < 0) peer_fail(PEER, "ip_pool_call", strerror(errno));
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
  if (rc < 0) peer_fail(PEER, "ip_waitfor_next", ip_strerror(rc));
  ip_list_free(l);
  ip_pool_free(p);
  double s = peer_now() - t0;
  if (sum != peer_trivial_sum((uint64_t)n)) peer_fail(PEER, "trivial", "wrong sum");
  return s;
}

static double big(ip_task *t, size_t len) {
  double t0 = peer_now();
  ip_pool *p = pool_new(1);
  ip_bytes arg = {&len, sizeof len};
  ip_future *f = ip_pool_call(p, t, &arg);
  if (!f) peer_fail(PEER, "ip_pool_call", strerror(errno));
  const ip_bytes *b = ip_future_value(f);
  if (!b) peer_fail(PEER, "the big call", ip_future_error(f)->message);
  if (b->len != len || peer_read_big(b->data, g_src, len) < 0)
    peer_fail(PEER, "the big call", "wrong result");
  ip_pool_free(p);
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
