/* A worker rank's service: it takes calls from the root, runs each in a child of its own
 * (ip_call_encoded) or on a local pool of one reused process (ip_pool_call_encoded), and
 * sends the outcome back: the result's bytes as the child's serializer made them, or the
 * failure with everything ip_error says. A call that crashes, times out or is killed fails
 * alone; the rank serves on.
 *
 * It holds up to IPM_DEPTH calls (the root sends no more), runs one at a time, and polls MPI
 * between looks at the running call: each look is an ip_future_wait, which sleeps in the
 * kernel and returns as soon as the call ends, of a millisecond, or for a call that has run
 * long a 32nd of its time so far, at most IPM_LOOK_MAX (ipm_look_ns): what the root says
 * meanwhile (a cancel, its STOP) waits that long at most. Idle, it polls MPI with a back-off to
 * one look per millisecond. */
#include "ipm.h"
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct held {
  uint64_t id;
  uint32_t task;
  unsigned char *msg; /* the CALL frame: struct ipm_call, then the argument */
  uint64_t len;       /* the argument's */
};

struct server {
  MPI_Comm comm;
  int root;
  struct ipm_registry *reg;
  ip_pool *local; /* reuse: one worker process, made once */
  struct held q[IPM_DEPTH];
  int nq;
  ip_future *cur;
  uint64_t cur_id;
  int64_t cur_start; /* ipm_now_ns when it started */
  bool stop;
};

/* The outcome of call `id` to the root. Blocking sends: the root's thread always receives. */
static int answer(struct server *s, uint64_t id, ip_future *f, int code, const char *why) {
  struct ipm_result h = {.id = id, .code = code, .exit_status = -1};
  const char *kind = code ? ip_err_name(code) : "", *msg = why ? why : "", *bt = NULL;
  const unsigned char *bytes = NULL;
  size_t len = 0;
  if (f) {
    h.pid = (int32_t)ip_future_pid(f);
    ip_future_rusage(f, &h.rusage);
    bytes = ip_future_bytes(f, &len);
    if (!bytes) {
      const ip_error *e = ip_future_error(f);
      h.code = e->code, h.raised_code = e->raised_code, h.exit_status = e->exit_status;
      h.signal = e->signal, h.core_dumped = e->core_dumped, h.rusage = e->rusage;
      kind = e->kind, msg = e->message, bt = e->backtrace;
    }
  }
  h.kind_len = (uint32_t)strlen(kind);
  h.msg_len = (uint32_t)strlen(msg);
  h.bt_len = bt ? (uint32_t)strlen(bt) : 0;
  h.len = len;
  h.inline_len = (uint32_t)(len <= IPM_INLINE ? len : 0);
  size_t total = sizeof h + h.kind_len + h.msg_len + h.bt_len + h.inline_len;
  unsigned char *m = malloc(total);
  if (!m) return MPI_ERR_NO_MEM;
  unsigned char *p = m;
  memcpy(p, &h, sizeof h), p += sizeof h;
  memcpy(p, kind, h.kind_len), p += h.kind_len;
  memcpy(p, msg, h.msg_len), p += h.msg_len;
  if (h.bt_len) memcpy(p, bt, h.bt_len), p += h.bt_len;
  if (h.inline_len) memcpy(p, bytes, h.inline_len);
  int rc = MPI_Send(m, (int)total, MPI_BYTE, s->root, IPM_TAG_RESULT, s->comm);
  free(m);
  /* A large result goes from where it is (an in-place result: the child's memfd, mapped). */
  if (rc == MPI_SUCCESS && len > h.inline_len) rc = ipm_send_more(bytes, len, s->root, s->comm);
  return rc;
}

static int start(struct server *s) {
  struct held h = s->q[0];
  memmove(&s->q[0], &s->q[1], (size_t)(--s->nq) * sizeof *s->q);
  ip_task *t = h.task < s->reg->n ? s->reg->tasks[h.task] : NULL;
  const unsigned char *arg = h.msg + sizeof(struct ipm_call);
  int rc = MPI_SUCCESS;
  if (!t) {
    char why[120];
    snprintf(why, sizeof why, "no task %u on this rank (it has %u)", h.task, s->reg->n);
    rc = answer(s, h.id, NULL, IP_EPROTO, why);
  } else {
    /* The child has its own copy of the argument (fork), the local pool a copy it sends:
     * the frame can go at once either way. */
    s->cur = s->local ? ip_pool_call_encoded(s->local, t, arg, h.len)
                      : ip_call_encoded(t, arg, h.len);
    s->cur_id = h.id;
    s->cur_start = ipm_now_ns();
    if (!s->cur) rc = answer(s, h.id, NULL, IP_ENOMEM, "no memory for the call's future");
  }
  free(h.msg);
  return rc;
}

static int cancel(struct server *s, uint64_t id) {
  if (s->cur && s->cur_id == id) { /* ends its child; the answer goes out as it completes */
    ip_future_cancel(s->cur);
    return MPI_SUCCESS;
  }
  for (int i = 0; i < s->nq; i++) {
    if (s->q[i].id != id) continue;
    free(s->q[i].msg);
    memmove(&s->q[i], &s->q[i + 1], (size_t)(s->nq - i - 1) * sizeof *s->q);
    s->nq--;
    return answer(s, id, NULL, IP_ECANCELED, "the call was canceled before its rank started it");
  }
  return MPI_SUCCESS; /* answered already: the root takes that answer */
}

/* Every message the root sent that is here. *got: whether there was one. */
static int take_in(struct server *s, bool *got) {
  int flag = 0, count = 0;
  MPI_Status st;
  *got = false;
  for (;;) {
    int rc = MPI_Iprobe(s->root, MPI_ANY_TAG, s->comm, &flag, &st);
    if (rc != MPI_SUCCESS || !flag) return rc;
    *got = true;
    MPI_Get_count(&st, MPI_BYTE, &count);
    unsigned char *m = malloc(count > 0 ? (size_t)count : 1);
    if (!m) return MPI_ERR_NO_MEM;
    if ((rc = MPI_Recv(m, count, MPI_BYTE, s->root, st.MPI_TAG, s->comm, MPI_STATUS_IGNORE)) !=
        MPI_SUCCESS) {
      free(m);
      return rc;
    }
    if (st.MPI_TAG == IPM_TAG_STOP) {
      free(m);
      s->stop = true;
      continue; /* nothing follows it, but what came before it was read first */
    }
    if (st.MPI_TAG == IPM_TAG_CANCEL && (size_t)count >= sizeof(struct ipm_cancel)) {
      struct ipm_cancel c;
      memcpy(&c, m, sizeof c);
      free(m);
      if ((rc = cancel(s, c.id)) != MPI_SUCCESS) return rc;
      continue;
    }
    struct ipm_call h;
    if (st.MPI_TAG != IPM_TAG_CALL || (size_t)count < sizeof h || s->nq == IPM_DEPTH) {
      free(m);
      return MPI_ERR_TAG;
    }
    memcpy(&h, m, sizeof h);
    size_t total = sizeof h + h.len;
    if ((size_t)count < total) { /* the rest follows as IPM_TAG_MORE */
      unsigned char *all = realloc(m, total);
      if (!all) {
        free(m);
        return MPI_ERR_NO_MEM;
      }
      m = all;
      if ((rc = ipm_recv_more(m + count, total - (size_t)count, s->root, s->comm)) != MPI_SUCCESS) {
        free(m);
        return rc;
      }
    }
    s->q[s->nq++] = (struct held){.id = h.id, .task = h.task, .msg = m, .len = h.len};
  }
}

int ipm_serve(MPI_Comm comm, int root, struct ipm_registry *reg) {
  struct server s = {.comm = comm, .root = root, .reg = reg};
  /* A pool made now has every task: they were all named (so made) before ip_mpi_pool. If it
   * cannot be made, the calls fork one by one instead, which is slower but the same. */
  if (reg->reuse) s.local = ip_pool_new_fork(1, ipm_fork_fn, ipm_fork_ud);
  unsigned idle = 0;
  int rc = MPI_SUCCESS;
  while (rc == MPI_SUCCESS) {
    bool got;
    if ((rc = take_in(&s, &got)) != MPI_SUCCESS) break;
    if (s.stop) break;
    if (!s.cur && s.nq) {
      if ((rc = start(&s)) != MPI_SUCCESS) break;
      got = true;
    }
    if (s.cur) {
      int ms = (int)(ipm_look_ns(10, ipm_now_ns() - s.cur_start) / 1000000); /* 1 .. 10 */
      if (ip_future_wait(s.cur, ms) == 0) { /* sleeps in the kernel until the call ends */
        rc = answer(&s, s.cur_id, s.cur, 0, NULL);
        ip_future_free(s.cur);
        s.cur = NULL;
        idle = 0;
      }
      continue;
    }
    if (got) {
      idle = 0;
      continue;
    }
    if (++idle < 32) {
      sched_yield();
      continue;
    }
    /* The root's ramp, 1 us to about 1 ms, without its stretch: an idle rank answers fast. */
    struct timespec ts = {0, ipm_look_ns(idle - 32, 0)};
    nanosleep(&ts, NULL);
  }
  /* STOP, or MPI failed: what runs and what waits is dropped (the root gave up on it). */
  if (s.cur) ip_future_free(s.cur); /* cancels it: its child and the child's group end */
  for (int i = 0; i < s.nq; i++) free(s.q[i].msg);
  ip_pool_free(s.local);
  if (rc == MPI_SUCCESS) rc = MPI_Send(NULL, 0, MPI_BYTE, root, IPM_TAG_BYE, comm);
  int code = rc == MPI_SUCCESS ? 0 : ipm_mpi_fail(rc, "serving the root's calls");
  MPI_Comm_free(&comm);
  ipm_registry_free(reg);
  return code;
}
