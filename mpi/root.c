/* The root's pool: a backend of the core (see "Pool backends" in inparallel.h) whose calls go
 * to the worker ranks. One thread of its own makes every MPI call of the pool: it sends the
 * queued calls to ranks with room, receives the results and finishes the futures. MPI has no
 * descriptor to sleep on, so while calls are out the thread polls, backing off to a look per
 * millisecond, then, while still nothing comes, to looks a 32nd of that quiet time apart (at
 * most IPM_LOOK_MAX); with none out it sleeps on a condition variable until a call comes.
 *
 * Locks: `mu` guards the queue, the ranks' slots and the flags; the thread drops it around
 * what may block (receiving a large result) and around ip_future_finish, which takes the
 * core's lock. The core calls the backend's functions without its own lock held. */
#include "ipm.h"
#include <errno.h>
#ifdef HAVE_ULFM
#include <mpi-ext.h>
#endif
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct call {
  ip_future *f;
  uint64_t id;
  unsigned char *buf; /* struct ipm_call and the argument, until its sends completed */
  size_t len;
  int rank;           /* where it was sent; -1 while queued */
  bool cancel, cancel_sent;
  struct ipm_cancel cmsg;
  MPI_Request req[3]; /* the call's sends: the frame, its rest (IPM_TAG_MORE), a cancel */
  struct call *next;
};

struct rank {
  struct call *out[IPM_DEPTH]; /* sent and not answered, oldest first */
  int n;
  bool bye;
  bool dead; /* ULFM said it failed: it gets no more calls, and says no goodbye */
};

struct root {
  MPI_Comm comm;
  int me, size;
  struct ipm_registry reg;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct call *qhead, *qtail; /* queued, in the order they were made */
  struct call *sending;       /* answered (or given up) calls whose sends are not complete */
  struct rank *ranks;
  uint64_t next_id;
  size_t out;                 /* calls sent and not answered */
  bool stopping, sleeping;
  char broken[300];           /* MPI failed: every call fails with this */
  ip_pool *pool;              /* the core's pool over this backend */
  pid_t pid;                  /* the process it belongs to */
  struct root *next;          /* the live pools, for ip_mpi_finalize */
};

static pthread_mutex_t pools_mu = PTHREAD_MUTEX_INITIALIZER;
static struct root *pools;

/* ---- finishing ------------------------------------------------------------------------------ */

/* A call answered or given up: its future is finished outside `mu`, after it left every list. */
struct done {
  struct call *c;
  ip_error e;
  void *result;
  size_t len;
  char *strings;
};

static void finish(struct done *d) {
  ip_future_finish(d->c->f, &d->e, d->result, d->len);
  free(d->strings);
}

/* Frees c if its sends have completed (MPI still reads its buffer until then). Under mu. */
static bool free_if_sent(struct call *c) {
  int flag = 1;
  MPI_Testall(3, c->req, &flag, MPI_STATUSES_IGNORE);
  if (!flag) return false;
  free(c->buf);
  free(c);
  return true;
}

/* Frees a call whose sends have completed, or parks it until they do. Under mu. */
static void retire_locked(struct root *r, struct call *c) {
  if (free_if_sent(c)) return;
  c->next = r->sending;
  r->sending = c;
}

static void fail_now(struct root *r, struct call *c, int code, const char *msg) {
  struct done d = {.c = c, .e = {.code = code, .kind = ip_err_name(code), .message = msg,
                                 .exit_status = -1}};
  finish(&d);
  pthread_mutex_lock(&r->mu);
  retire_locked(r, c);
  pthread_mutex_unlock(&r->mu);
}

/* ---- sending ---------------------------------------------------------------------------------- */

static int send_call_locked(struct root *r, struct call *c, int rank) {
  size_t first = c->len < IPM_CHUNK ? c->len : IPM_CHUNK;
  int rc = MPI_Isend(c->buf, (int)first, MPI_BYTE, rank, IPM_TAG_CALL, r->comm, &c->req[0]);
  /* Larger than a message: the rest follows at once, in order, as IPM_TAG_MORE. Nonblocking,
   * so the thread never waits on a rank that is itself sending a result. */
  if (rc == MPI_SUCCESS && c->len > first) {
    if (c->len - first > IPM_CHUNK) /* over 2 GiB: chunks, each sent after the one before */
      rc = ipm_send_more(c->buf + first, c->len - first, rank, r->comm);
    else
      rc = MPI_Isend(c->buf + first, (int)(c->len - first), MPI_BYTE, rank, IPM_TAG_MORE,
                     r->comm, &c->req[1]);
  }
  if (rc != MPI_SUCCESS) return rc;
  c->rank = rank;
  r->ranks[rank].out[r->ranks[rank].n++] = c;
  r->out++;
  return MPI_SUCCESS;
}

/* ---- dead ranks ------------------------------------------------------------------------------- */

static void fail_now(struct root *r, struct call *c, int code, const char *msg);
static struct call *take_out_locked(struct root *r, int rank, uint64_t id);

#ifdef HAVE_ULFM
/* With ULFM (MPI's fault tolerance, Open MPI 5 built --with-ft=ulfm) an operation that
 * involves a dead rank fails with MPIX_ERR_PROC_FAILED instead of ending the job. The root
 * then acknowledges the failures, fails the calls that were out on each newly dead rank
 * (EEXITED: the process that ran them is gone, with its host perhaps) and sends it no more;
 * the queued calls go to the ranks that live. True when rc was such a failure. Under mu,
 * dropped while futures are finished. */
static bool rank_failures_locked(struct root *r, int rc) {
  int cls = 0;
  MPI_Error_class(rc, &cls);
  if (cls != MPIX_ERR_PROC_FAILED && cls != MPIX_ERR_PROC_FAILED_PENDING) return false;
  MPI_Group failed, all;
  if (MPIX_Comm_failure_ack(r->comm) != MPI_SUCCESS ||
      MPIX_Comm_failure_get_acked(r->comm, &failed) != MPI_SUCCESS)
    return false;
  MPI_Comm_group(r->comm, &all);
  int n = 0;
  MPI_Group_size(failed, &n);
  for (int i = 0; i < n; i++) {
    int rank = MPI_UNDEFINED;
    MPI_Group_translate_ranks(failed, 1, &i, all, &rank);
    if (rank == MPI_UNDEFINED || rank == r->me || r->ranks[rank].dead) continue;
    r->ranks[rank].dead = r->ranks[rank].bye = true;
    char why[120];
    snprintf(why, sizeof why, "rank %d died (its process, or its host) while it ran the call",
             rank);
    while (r->ranks[rank].n) {
      struct call *c = take_out_locked(r, rank, r->ranks[rank].out[0]->id);
      pthread_mutex_unlock(&r->mu);
      fail_now(r, c, IP_EEXITED, why);
      pthread_mutex_lock(&r->mu);
    }
  }
  MPI_Group_free(&failed);
  MPI_Group_free(&all);
  return true;
}
#else
/* Without ULFM a dead rank ends the job (mpirun kills every rank): nothing to do here. */
static bool rank_failures_locked(struct root *r, int rc) {
  (void)r, (void)rc;
  return false;
}
#endif

static int live_workers_locked(const struct root *r) {
  int n = 0;
  for (int i = 0; i < r->size; i++) n += i != r->me && !r->ranks[i].dead;
  return n;
}

/* Queued calls to the ranks with room, the least busy first. Under mu. */
static bool dispatch_locked(struct root *r) {
  bool did = false;
  while (r->qhead) {
    int best = -1;
    for (int i = 0; i < r->size; i++)
      if (i != r->me && !r->ranks[i].dead && r->ranks[i].n < IPM_DEPTH &&
          (best < 0 || r->ranks[i].n < r->ranks[best].n))
        best = i;
    if (best < 0) break;
    struct call *c = r->qhead;
    if (c->cancel) break; /* cancels_locked takes it out first */
    int rc = send_call_locked(r, c, best);
    if (rc != MPI_SUCCESS && rank_failures_locked(r, rc)) continue; /* to another rank */
    if (rc != MPI_SUCCESS) {
      ipm_mpi_fail(rc, "sending a call");
      snprintf(r->broken, sizeof r->broken, "%s", ip_mpi_errmsg());
      return did;
    }
    r->qhead = c->next;
    if (!r->qhead) r->qtail = NULL;
    c->next = NULL;
    did = true;
  }
  return did;
}

/* Cancels: a queued call leaves the queue and fails now; a sent one is canceled by its rank,
 * whose answer finishes it. Under mu; queued ones are handed back in *gone. */
static bool cancels_locked(struct root *r, struct call **gone) {
  bool did = false;
  for (struct call **pp = &r->qhead, *prev = NULL; *pp;) {
    struct call *c = *pp;
    if (!c->cancel) {
      prev = c, pp = &c->next;
      continue;
    }
    *pp = c->next;
    if (r->qtail == c) r->qtail = prev;
    c->next = *gone;
    *gone = c;
    did = true;
  }
  for (int i = 0; i < r->size; i++)
    for (int k = 0; k < r->ranks[i].n; k++) {
      struct call *c = r->ranks[i].out[k];
      if (!c->cancel || c->cancel_sent) continue;
      c->cancel_sent = did = true;
      c->cmsg.id = c->id;
      MPI_Isend(&c->cmsg, sizeof c->cmsg, MPI_BYTE, i, IPM_TAG_CANCEL, r->comm, &c->req[2]);
    }
  return did;
}

/* ---- receiving -------------------------------------------------------------------------------- */

static struct call *take_out_locked(struct root *r, int rank, uint64_t id) {
  struct rank *k = &r->ranks[rank];
  for (int i = 0; i < k->n; i++) {
    if (k->out[i]->id != id) continue;
    struct call *c = k->out[i];
    memmove(&k->out[i], &k->out[i + 1], (size_t)(k->n - i - 1) * sizeof *k->out);
    k->n--;
    r->out--;
    return c;
  }
  return NULL;
}

/* One message from a worker rank, if one is waiting (*got): a result, or its goodbye. Called
 * with mu held; returns with it held, having dropped it while a large result came in and while
 * the future was finished. MPI_SUCCESS or MPI's error. */
static int receive_locked(struct root *r, bool *got) {
  int flag = 0, count = 0;
  MPI_Status st;
  int rc = MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, r->comm, &flag, &st);
  *got = rc == MPI_SUCCESS && flag;
  if (!*got) return rc;
  int src = st.MPI_SOURCE;
  MPI_Get_count(&st, MPI_BYTE, &count);
  unsigned char *m = malloc(count > 0 ? (size_t)count : 1);
  if (!m) return MPI_ERR_NO_MEM;
  rc = MPI_Recv(m, count, MPI_BYTE, src, st.MPI_TAG, r->comm, MPI_STATUS_IGNORE);
  if (rc != MPI_SUCCESS || st.MPI_TAG != IPM_TAG_RESULT) {
    if (rc == MPI_SUCCESS && st.MPI_TAG == IPM_TAG_BYE) r->ranks[src].bye = true;
    free(m);
    return rc;
  }
  struct ipm_result h;
  if ((size_t)count < sizeof h) {
    free(m);
    return MPI_ERR_TRUNCATE;
  }
  memcpy(&h, m, sizeof h);
  size_t strings = (size_t)h.kind_len + h.msg_len + h.bt_len;
  if (sizeof h + strings + h.inline_len != (size_t)count || h.inline_len > h.len) {
    free(m);
    return MPI_ERR_TRUNCATE;
  }
  struct call *c = take_out_locked(r, src, h.id);
  struct done d = {.c = c, .len = h.len};
  pthread_mutex_unlock(&r->mu);
  /* The rest of a large result comes from where it is on the worker, straight into the
   * buffer the future will own. */
  if (h.len && (d.result = malloc(h.len)) == NULL) rc = MPI_ERR_NO_MEM;
  if (d.result) {
    memcpy(d.result, m + sizeof h + strings, h.inline_len);
    rc = ipm_recv_more((unsigned char *)d.result + h.inline_len, h.len - h.inline_len, src,
                       r->comm);
  }
  if (c && rc == MPI_SUCCESS) {
    const char *s = (const char *)m + sizeof h;
    d.e = (ip_error){.code = h.code, .raised_code = h.raised_code, .exit_status = h.exit_status,
                     .signal = h.signal, .core_dumped = h.core_dumped, .pid = h.pid,
                     .rusage = h.rusage};
    if (h.code != 0) {
      free(d.result);
      d.result = NULL;
      d.len = 0;
      d.strings = malloc(strings + 3);
      if (d.strings) {
        char *p = d.strings;
        d.e.kind = memcpy(p, s, h.kind_len), p[h.kind_len] = '\0', p += h.kind_len + 1;
        d.e.message = memcpy(p, s + h.kind_len, h.msg_len), p[h.msg_len] = '\0', p += h.msg_len + 1;
        d.e.backtrace = h.bt_len ? memcpy(p, s + h.kind_len + h.msg_len, h.bt_len) : NULL;
        p[h.bt_len] = '\0';
      } else {
        d.e.kind = ip_err_name(h.code), d.e.message = "the failure's text did not fit in memory";
      }
    }
    finish(&d);
  } else if (c) { /* its result could not be received: the call fails, not the pool */
    free(d.result);
    char why[160];
    snprintf(why, sizeof why, "the %llu-byte result could not be received from rank %d",
             (unsigned long long)h.len, src);
    struct done x = {.c = c, .e = {.code = IP_EPROTO, .kind = ip_err_name(IP_EPROTO),
                                   .message = why, .exit_status = -1, .pid = h.pid}};
    finish(&x);
  } else {
    free(d.result); /* an answer to a call already given up (the pool is being freed) */
  }
  free(m);
  pthread_mutex_lock(&r->mu);
  if (c) retire_locked(r, c);
  return rc;
}

/* Frees the calls whose sends completed since. Under mu. */
static void reap_sends_locked(struct root *r) {
  for (struct call **pp = &r->sending; *pp;) {
    struct call *c = *pp, *next = c->next;
    if (free_if_sent(c)) *pp = next;
    else pp = &c->next;
  }
}

/* ---- the thread ------------------------------------------------------------------------------- */

/* Fails every call of the pool, queued or out, with code. Under mu, dropped meanwhile. */
static void fail_all_locked(struct root *r, int code, const char *msg) {
  for (;;) {
    struct call *c = r->qhead;
    if (c) {
      r->qhead = c->next;
      if (!r->qhead) r->qtail = NULL;
    }
    for (int i = 0; !c && i < r->size; i++)
      if (r->ranks[i].n) c = take_out_locked(r, i, r->ranks[i].out[0]->id);
    if (!c) return;
    pthread_mutex_unlock(&r->mu);
    fail_now(r, c, code, msg);
    pthread_mutex_lock(&r->mu);
  }
}

/* The pool's end: its calls fail, every rank is told to stop, and what they still send is
 * read (and dropped) until each said goodbye, so no send of either side is left pending. */
static void shut_down_locked(struct root *r) {
  fail_all_locked(r, IP_ECANCELED, r->broken[0] ? r->broken
                                                : "the pool was freed before the call ended");
  if (r->broken[0]) return; /* MPI failed: nothing more can be said to the ranks */
  int workers = 0;
  for (int i = 0; i < r->size; i++) {
    if (i == r->me || r->ranks[i].dead) continue;
    workers++;
    MPI_Send(NULL, 0, MPI_BYTE, i, IPM_TAG_STOP, r->comm);
  }
  for (;;) {
    int byes = 0;
    for (int i = 0; i < r->size; i++) byes += r->ranks[i].bye && !r->ranks[i].dead;
    if (byes == workers) break;
    bool got;
    if (receive_locked(r, &got) != MPI_SUCCESS) break;
    if (!got) {
      pthread_mutex_unlock(&r->mu);
      sched_yield();
      pthread_mutex_lock(&r->mu);
    }
  }
  while (r->sending) {
    reap_sends_locked(r);
    if (r->sending) {
      pthread_mutex_unlock(&r->mu);
      sched_yield();
      pthread_mutex_lock(&r->mu);
    }
  }
}

static void *run(void *arg) {
  struct root *r = arg;
  unsigned idle = 0;
  int64_t quiet_since = 0; /* when the looks that found nothing began to sleep */
  pthread_mutex_lock(&r->mu);
  while (!r->stopping && !r->broken[0]) {
    struct call *gone = NULL;
    bool did = cancels_locked(r, &gone);
    while (gone) {
      struct call *c = gone;
      gone = c->next;
      pthread_mutex_unlock(&r->mu);
      fail_now(r, c, IP_ECANCELED, "the call was canceled while queued; it never started");
      pthread_mutex_lock(&r->mu);
    }
    did |= dispatch_locked(r);
    bool got = true;
    int rc = MPI_SUCCESS;
    while (got && (rc = receive_locked(r, &got)) == MPI_SUCCESS) did |= got;
    if (rc != MPI_SUCCESS && rank_failures_locked(r, rc)) {
      if (!live_workers_locked(r)) { /* the queued calls have nowhere left to go */
        snprintf(r->broken, sizeof r->broken, "every worker rank died");
        break;
      }
      continue;
    }
    if (rc != MPI_SUCCESS) {
      ipm_mpi_fail(rc, "receiving a result");
      snprintf(r->broken, sizeof r->broken, "%s", ip_mpi_errmsg());
      break;
    }
    reap_sends_locked(r);
    if (did) {
      idle = 0;
      continue;
    }
    if (!r->out && !r->qhead && !r->sending) { /* nothing to wait for: sleep until a call */
      r->sleeping = true;
      pthread_cond_wait(&r->cv, &r->mu);
      r->sleeping = false;
      idle = 0;
      continue;
    }
    /* Calls are out: look again soon, then less and less often, down to once a millisecond,
     * then (calls that run long) to a 32nd of the time nothing came: a result is seen at most
     * that much later, and each look costs a wake-up (some 15-20 us of CPU on a VM), so
     * looks a millisecond apart alone cost close to 20 ms of CPU a second. A new call or a
     * cancel wakes the thread at once. */
    if (++idle < 32) {
      pthread_mutex_unlock(&r->mu);
      sched_yield();
      pthread_mutex_lock(&r->mu);
      continue;
    }
    if (idle == 32) quiet_since = ipm_now_ns();
    long ns = ipm_look_ns(idle - 32, ipm_now_ns() - quiet_since);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += ns;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    r->sleeping = true;
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    r->sleeping = false;
  }
  shut_down_locked(r);
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

/* ---- the backend ------------------------------------------------------------------------------ */

static void wake_locked(struct root *r) {
  if (r->sleeping) pthread_cond_signal(&r->cv);
}

static int b_call(void *self, ip_future *f, ip_task *t, const void *arg, size_t len) {
  struct root *r = self;
  uint32_t idx = 0;
  while (idx < r->reg.n && r->reg.tasks[idx] != t) idx++;
  if (idx == r->reg.n) {
    char msg[400];
    const char *name = ip_task_name(t);
    if (name)
      snprintf(msg, sizeof msg, "ip_pool_call: task \"%s\" was not named when ip_mpi_pool "
               "checked the ranks' tasks, so the worker ranks do not know it: name every task "
               "before ip_mpi_pool", name);
    else
      snprintf(msg, sizeof msg, "ip_pool_call: the task has no name; tasks travel to other "
               "ranks by name (ip_task_set_name on every rank, before ip_mpi_init)");
    ip_error e = {.code = IP_EINVAL, .kind = ip_err_name(IP_EINVAL), .message = msg,
                  .exit_status = -1};
    ip_future_finish(f, &e, NULL, 0);
    return 0;
  }
  struct call *c = calloc(1, sizeof *c);
  unsigned char *buf = malloc(sizeof(struct ipm_call) + len);
  if (!c || !buf) {
    free(c);
    free(buf);
    return IP_ENOMEM;
  }
  for (int i = 0; i < 3; i++) c->req[i] = MPI_REQUEST_NULL;
  c->f = f;
  c->buf = buf;
  c->len = sizeof(struct ipm_call) + len;
  c->rank = -1;
  memcpy(buf + sizeof(struct ipm_call), arg, len);
  pthread_mutex_lock(&r->mu);
  if (r->stopping || r->broken[0]) {
    char msg[300];
    snprintf(msg, sizeof msg, "%s", r->broken[0] ? r->broken : "ip_pool_call: the pool is being freed");
    pthread_mutex_unlock(&r->mu);
    free(buf);
    free(c);
    ip_error e = {.code = IP_EPROTO, .kind = ip_err_name(IP_EPROTO), .message = msg,
                  .exit_status = -1};
    if (!r->broken[0]) e.code = IP_EINVAL, e.kind = ip_err_name(IP_EINVAL);
    ip_future_finish(f, &e, NULL, 0);
    return 0;
  }
  c->id = ++r->next_id;
  struct ipm_call h = {.id = c->id, .task = idx, .len = len};
  memcpy(buf, &h, sizeof h);
  if (r->qtail) r->qtail->next = c;
  else r->qhead = c;
  r->qtail = c;
  wake_locked(r);
  pthread_mutex_unlock(&r->mu);
  return 0;
}

static void b_cancel(void *self, ip_future *f) {
  struct root *r = self;
  pthread_mutex_lock(&r->mu);
  struct call *c = r->qhead;
  while (c && c->f != f) c = c->next;
  for (int i = 0; !c && i < r->size; i++)
    for (int k = 0; !c && k < r->ranks[i].n; k++)
      if (r->ranks[i].out[k]->f == f) c = r->ranks[i].out[k];
  /* Not found: it is being finished right now, which is all a cancel asks. */
  if (c) c->cancel = true;
  wake_locked(r);
  pthread_mutex_unlock(&r->mu);
}

static int b_workers(void *self) {
  struct root *r = self;
  pthread_mutex_lock(&r->mu);
  int n = live_workers_locked(r);
  pthread_mutex_unlock(&r->mu);
  return n;
}

static void root_free(struct root *r) {
  MPI_Comm_free(&r->comm);
  ipm_registry_free(&r->reg);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r->ranks);
  free(r);
}

static void b_free(void *self) {
  struct root *r = self;
  pthread_mutex_lock(&pools_mu);
  for (struct root **pp = &pools; *pp; pp = &(*pp)->next)
    if (*pp == r) {
      *pp = r->next;
      break;
    }
  pthread_mutex_unlock(&pools_mu);
  pthread_mutex_lock(&r->mu);
  r->stopping = true;
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
  pthread_join(r->thread, NULL);
  root_free(r);
}

static const ip_backend backend = {
    .abi = IP_BACKEND_ABI, .name = "mpi", .call = b_call, .cancel = b_cancel,
    .workers = b_workers, .free = b_free};

ip_pool *ipm_root_pool(MPI_Comm comm, int root, struct ipm_registry *reg) {
  struct root *r = calloc(1, sizeof *r);
  int size;
  MPI_Comm_size(comm, &size);
  if (r && !(r->ranks = calloc((size_t)size, sizeof *r->ranks))) {
    free(r);
    r = NULL;
  }
  if (!r) {
    /* The ranks serve already and wait for a STOP that cannot be sent without memory: MPI's
     * own abort is the one way to end them. */
    ipm_fail(IP_ENOMEM, "inparallel-mpi: no memory for the pool");
    MPI_Abort(comm, 1);
    errno = ENOMEM;
    return NULL;
  }
  r->comm = comm;
  r->pid = getpid();
  r->me = root;
  r->size = size;
  r->reg = *reg;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  int e = 0;
  if (pthread_create(&r->thread, NULL, run, r) != 0) {
    e = EAGAIN;
    pthread_mutex_lock(&r->mu); /* the ranks serve already: they are told to stop */
    shut_down_locked(r);
    pthread_mutex_unlock(&r->mu);
  } else if (!(r->pool = ip_pool_new_backend(&backend, r))) {
    e = errno;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
  }
  if (e) {
    ipm_fail(-e, "inparallel-mpi: %s", e == EAGAIN ? "no thread for the pool"
                                                   : "no memory for the pool");
    root_free(r);
    errno = e;
    return NULL;
  }
  pthread_mutex_lock(&pools_mu);
  r->next = pools;
  pools = r;
  pthread_mutex_unlock(&pools_mu);
  return r->pool;
}

void ipm_root_pools_free(void) {
  for (;;) { /* ip_pool_free takes the pool off the list (b_free) */
    pthread_mutex_lock(&pools_mu);
    struct root *r = pools;
    pthread_mutex_unlock(&pools_mu);
    if (!r) return;
    if (r->pid != getpid()) { /* a fork child's copy: the pools are the parent's */
      pools = NULL;
      return;
    }
    ip_pool_free(r->pool);
  }
}
