/* Futures: waiting on one, reading its outcome, decoding its value, canceling, freeing. */
#include "internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static bool is_done(const ip_future *f) {
  return atomic_load_explicit(&((ip_future *)f)->state, memory_order_acquire) == IP__DONE;
}

static bool done_pred(void *f) { return is_done(f); }

static void decode(ip_future *f) {
  f->decoded = true;
#ifdef MADV_POPULATE_READ
  /* An in-place result is read next: fill its page table in one call, here in the caller's
   * thread rather than in the supervisor's. Linux < 5.14 says EINVAL; faults then do it. */
  if (f->rx.mapped && f->rx.len) madvise(f->rx.payload, f->rx.len, MADV_POPULATE_READ);
#endif
  int rc = f->ser->decode(f->ser, f->rx.payload, f->rx.len, &f->value);
  if (rc == 0) return;
  char msg[200];
  snprintf(msg, sizeof msg, "the %s serializer could not decode the %zu-byte result of child %d "
           "(%s)", f->ser->name, f->rx.len, (int)f->pid, rc < 0 ? ip_err_name(rc) : "failed");
  free(f->err_strings);
  f->err_strings = strdup(msg);
  f->value = NULL;
  f->err.code = f->status = IP_EDECODE;
  f->err.kind = ip_err_name(IP_EDECODE);
  f->err.message = f->err_strings ? f->err_strings : ip_strerror(IP_EDECODE);
  f->err.raised_code = rc;
}

int ip_future_wait(ip_future *f, int timeout_ms) {
  if (!f) return IP_EINVAL;
  if (is_done(ip__fresh(f))) return 0;
  return ip__wait(done_pred, f, timeout_ms, true);
}

int ip_future_done(const ip_future *f) {
  if (!f) return 0;
  if (is_done(ip__fresh(f))) return 1;
  ip__progress(); /* nobody may be driving: a caller that polls this must see progress */
  return is_done(f);
}

int ip_future_status(const ip_future *f) {
  if (!f) return IP_EINVAL;
  return is_done(ip__fresh(f)) ? ip__settle(f)->status : IP_EAGAIN;
}

const ip_error *ip_future_error(const ip_future *f) {
  if (!f || !is_done(ip__fresh(f)) || ip__settle(f)->status == 0) return NULL;
  return &f->err;
}

pid_t ip_future_pid(const ip_future *f) {
  if (!f) return 0;
  if (!f->pool) return f->pid; /* set before ip_call returned */
  pthread_mutex_lock(&ip__g.lock); /* a pool call's is set when a worker starts it */
  pid_t pid = f->pid;
  pthread_mutex_unlock(&ip__g.lock);
  return pid;
}
void *ip_future_arg(const ip_future *f) { return f ? f->arg : NULL; }

int ip_future_rusage(const ip_future *f, struct rusage *out) {
  if (!f || !out) return IP_EINVAL;
  if (!is_done(ip__fresh(f))) return IP_EAGAIN;
  *out = f->rusage;
  return 0;
}

/* The outcome is read-only once `settled`; before that the first reader decodes, under
 * dec_lock, and every other reader waits for it there. */
ip_future *ip__settle(const ip_future *cf) {
  ip_future *f = (ip_future *)cf;
  if (atomic_load_explicit(&f->settled, memory_order_acquire)) return f;
  pthread_mutex_lock(&f->dec_lock);
  if (!atomic_load_explicit(&f->settled, memory_order_relaxed)) {
    if (f->status == 0) decode(f);
    atomic_store_explicit(&f->settled, true, memory_order_release);
  }
  pthread_mutex_unlock(&f->dec_lock);
  return f;
}

const void *ip_future_value(ip_future *f) {
  if (!f) return NULL;
  while (!is_done(ip__fresh(f))) ip__wait(done_pred, f, -1, true); /* signals: just keep waiting */
  ip__settle(f);
  return f->status == 0 ? f->value : NULL;
}

int ip_future_cancel(ip_future *f) {
  if (!f) return IP_EINVAL;
  pthread_mutex_lock(&ip__g.lock);
  ip__adopt_locked(f);
  if (is_done(f)) {
    pthread_mutex_unlock(&ip__g.lock);
    return IP_EALREADY;
  }
  f->cancel_req = true;
  void *self;
  const ip_backend *b = f->pool ? ip__pool_backend(f->pool, &self) : NULL;
  if (b) { /* the backend finishes it, without our lock: it may take its own */
    pthread_mutex_unlock(&ip__g.lock);
    b->cancel(self, f);
    ip__wait(done_pred, f, -1, false);
    return 0;
  }
  ip__kill_locked(f);
  pthread_mutex_unlock(&ip__g.lock);
  /* SIGKILL cannot be ignored: the supervisor (this thread, if no other drives) reaps the
   * child promptly. */
  ip__wait(done_pred, f, -1, false); /* returns only once f is done */
  return 0;
}

const void *ip_future_bytes(ip_future *f, size_t *len) {
  if (len) *len = 0;
  if (!f || !is_done(ip__fresh(f)) || f->status != 0 || f->orphan) return NULL;
  if (len) *len = f->rx.len;
  return f->rx.payload ? f->rx.payload : (const void *)"";
}

void ip_future_free(ip_future *f) {
  if (!f) return;
  if (!is_done(ip__fresh(f))) ip_future_cancel(f);
  pthread_mutex_lock(&ip__g.lock);
  ip_list *l = f->list;
  size_t slot = f->slot;
  if (l) {
    ip__list_adopt_locked(l);
    ip__list_detach_locked(f);
  }
  pthread_mutex_unlock(&ip__g.lock);
  if (l) ip__list_vacate(l, slot); /* freed while in a list: the list forgets it */
  if (f->orphan) { /* see ip__orphan */
    free(f);
    return;
  }
  if (f->decoded && f->value && f->ser->free_value) f->ser->free_value(f->ser, f->value);
  ip__outcome_free(f);
  pthread_mutex_destroy(&f->dec_lock);
  free(f);
}
