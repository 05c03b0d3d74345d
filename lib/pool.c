/* Pools, the caller's side: the workers' channels, which call goes where, and how each ends.
 *
 * Each worker has its own channel (a stream socket) and at most DEPTH calls sent to it: the
 * one it runs and one waiting behind it, so a worker that finishes starts the next call
 * without a round trip to the caller. Calls beyond that wait here, in the pool's queue, and go
 * to whichever worker has room first. A worker acknowledges each call as it starts it: when
 * a worker dies, the call it acknowledged last is the one that fails, and calls it had not
 * acknowledged go back to the front of the queue, so none is lost and none runs twice.
 *
 * Everything here runs under ip__g.lock, except reading a worker's channel, which only the
 * thread that drives the supervisor does, holding the pool's `io` mutex; ip_pool_free takes
 * that mutex too, so it never frees what a read is filling. Workers and pools that a driver
 * may still name in the batch of events it is handling go to a graveyard, freed by the next
 * driver round. */
#include "internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEPTH 2
#define READ_BUDGET ((size_t)8 << 20)
#define HEAD (IP__FRAME_HDR_SIZE + sizeof(struct ip__call_spec))

/* A CALL frame. The future holds a reference until its call starts (a worker's death before
 * that sends it again); a worker's output queue holds one until it is written. */
struct ip__msg {
  unsigned refs;
  size_t len;
  unsigned char b[];
};

struct out {
  struct out *next;
  struct ip__msg *m;
  size_t off;
};

struct ip__worker {
  void *grave; /* first: the graveyard's link */
  ip_pool *pool;
  pid_t pid;
  int sock;
  bool gone;      /* ended, or its pool freed: its events are stale */
  bool kill_sent; /* the template was asked to kill it */
  bool retiring;  /* sent its max_calls calls and QUIT */
  bool reading;   /* its socket is in the epoll set */
  bool want_out;  /* ... with EPOLLOUT */
  bool skipping;  /* started a call that was canceled: its answer is not read */
  unsigned calls;
  struct {
    ip_future *f; /* NULL once canceled */
    uint32_t id;
  } q[DEPTH];     /* sent, oldest first; q[0] is `cur` once acknowledged */
  int nq;
  ip_future *cur;
  unsigned char hdr[IP__FRAME_HDR_SIZE];
  size_t hdr_have;
  int fd_in; /* a descriptor that arrived before the ACK of the call it belongs to */
  struct out *out_head, *out_tail;
  struct ip__worker *next;
};

struct ip_pool {
  void *grave;
  unsigned gen;
  int ctl;
  pid_t tpid;
  uint64_t epoch;
  unsigned max_calls;
  size_t max_rss;
  struct ip__worker *workers;
  int nlive, want;
  ip_future *qhead, *qtail;
  uint32_t next_id;
  bool closing, broken;
  int spawn_err; /* the template's last failure to fork a worker (an errno), 0 if none */
  char broken_msg[200];
  pthread_mutex_t io;
  ip_pool *next;
  const ip_backend *backend; /* a backend's pool (backend.c): none of the above is used */
  void *bself;
  int calling; /* threads in backend->call, under ip__g.lock; ip_pool_free waits for 0 */
};

static unsigned char staging[64u << 10]; /* the driving thread's alone */

/* ---- small things -------------------------------------------------------------------------- */

static void msg_unref_locked(struct ip__msg *m) {
  if (m && --m->refs == 0) free(m);
}

static void bury_locked(void *obj) {
  *(void **)obj = ip__g.graveyard;
  ip__g.graveyard = obj;
}

void ip__graveyard_free_locked(void) {
  void *g = ip__g.graveyard;
  ip__g.graveyard = NULL;
  while (g) {
    void *next = *(void **)g;
    free(g);
    g = next;
  }
}

static void set_events_locked(struct ip__worker *w, bool out) {
  if (!w->reading || w->want_out == out) return;
  w->want_out = out;
  struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0),
                          .data.ptr = (void *)((uintptr_t)w | IP__TAG_WORKER)};
  epoll_ctl(ip__g.epfd, EPOLL_CTL_MOD, w->sock, &e);
}

static void stop_reading_locked(struct ip__worker *w) {
  if (!w->reading) return;
  epoll_ctl(ip__g.epfd, EPOLL_CTL_DEL, w->sock, NULL);
  w->reading = false;
}

static void drop_output_locked(struct ip__worker *w) {
  while (w->out_head) {
    struct out *o = w->out_head;
    w->out_head = o->next;
    msg_unref_locked(o->m);
    free(o);
  }
  w->out_tail = NULL;
}

/* Writes what the worker's queue holds, as far as its socket takes it now. */
static void flush_locked(struct ip__worker *w) {
  while (w->out_head) {
    struct out *o = w->out_head;
    ssize_t n = send(w->sock, o->m->b + o->off, o->m->len - o->off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) drop_output_locked(w); /* it died: DOWN */
      break;
    }
    if ((o->off += (size_t)n) < o->m->len) continue;
    w->out_head = o->next;
    if (!w->out_head) w->out_tail = NULL;
    msg_unref_locked(o->m);
    free(o);
  }
  set_events_locked(w, w->out_head != NULL);
}

static int push_locked(struct ip__worker *w, struct ip__msg *m) {
  struct out *o = malloc(sizeof *o);
  if (!o) return IP_ENOMEM;
  m->refs++;
  *o = (struct out){NULL, m, 0};
  if (w->out_tail) w->out_tail->next = o;
  else w->out_head = o;
  w->out_tail = o;
  return 0;
}

static void push_small_locked(struct ip__worker *w, int kind, uint32_t id) {
  struct ip__msg *m = malloc(sizeof *m + IP__FRAME_HDR_SIZE);
  if (!m) return; /* a CANCEL or QUIT lost to ENOMEM: the call runs, or the worker stays */
  m->refs = 0;
  m->len = IP__FRAME_HDR_SIZE;
  ip__frame_pack_id(m->b, kind, 0, id, 0);
  if (push_locked(w, m) < 0) free(m);
}

/* Completes a pool call that will not run (or not run on): f is not being read. */
static void fail_locked(ip_future *f, int code, const char *message) {
  msg_unref_locked((struct ip__msg *)f->msg);
  f->msg = NULL;
  f->worker = NULL;
  ip__fail_locked(f, code, message);
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static struct ip__worker *pick_locked(ip_pool *p) {
  struct ip__worker *best = NULL;
  for (struct ip__worker *w = p->workers; w; w = w->next) {
    if (w->gone || w->kill_sent || w->retiring || w->nq >= DEPTH) continue;
    if (!best || w->nq < best->nq) best = w;
    if (w->nq == 0) break;
  }
  return best;
}

static void dispatch_locked(ip_pool *p) {
  struct ip__worker *w;
  while (p->qhead && !p->closing && (w = pick_locked(p))) {
    ip_future *f = p->qhead;
    struct ip__msg *m = (struct ip__msg *)f->msg;
    if (push_locked(w, m) < 0) break; /* ENOMEM: it stays queued for the next try */
    p->qhead = f->qnext;
    if (!p->qhead) p->qtail = NULL;
    f->qnext = NULL;
    f->call_id = ++p->next_id;
    f->worker = w;
    ip__frame_pack_id(m->b, IP__FRAME_CALL, 0, f->call_id, m->len - IP__FRAME_HDR_SIZE);
    struct ip__call_spec spec;
    memcpy(&spec, m->b + IP__FRAME_HDR_SIZE, sizeof spec);
    spec.max_rss = p->max_rss;
    memcpy(m->b + IP__FRAME_HDR_SIZE, &spec, sizeof spec);
    w->q[w->nq].f = f;
    w->q[w->nq++].id = f->call_id;
    if (p->max_calls && ++w->calls >= p->max_calls) {
      w->retiring = true;
      push_small_locked(w, IP__FRAME_QUIT, 0);
    }
    flush_locked(w);
  }
}

static void enqueue_front_locked(ip_pool *p, ip_future *f) {
  f->worker = NULL;
  f->qnext = p->qhead;
  p->qhead = f;
  if (!p->qtail) p->qtail = f;
}

/* ---- what workers say ----------------------------------------------------------------------- */

/* Asks the template for something (SPAWN, or KILL of a worker). A small message the template
 * reads at once, so a blocking send is brief. */
static void tell_template(ip_pool *p, uint32_t kind, pid_t pid) {
  struct ip__ctl m = {.kind = kind, .pid = pid};
  while (send(p->ctl, &m, sizeof m, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

/* Takes the i-th call off the worker's list of calls sent. */
static void unsend(struct ip__worker *w, int i) {
  memmove(&w->q[i], &w->q[i + 1], sizeof w->q[0] * (size_t)(w->nq - i - 1));
  w->nq--;
}

static void kill_worker_locked(struct ip__worker *w) {
  if (w->kill_sent || w->gone) return;
  w->kill_sent = true;
  tell_template(w->pool, IP__CTL_KILL, w->pid);
  /* The call waiting behind the one being killed should run elsewhere: ask the worker to
   * skip it, should it get that far. */
  if (w->nq > 1 && w->q[1].f) {
    push_small_locked(w, IP__FRAME_CANCEL, w->q[1].id);
    flush_locked(w);
  }
}

/* The worker broke the protocol: it gets no more attention, and its death settles its call. */
static void garbage_locked(struct ip__worker *w) {
  if (w->cur) w->cur->killed = true;
  w->skipping = true;
  stop_reading_locked(w);
  kill_worker_locked(w);
}

static void cancel_unstarted_locked(ip_future *f) {
  fail_locked(f, IP_ECANCELED, "the call was canceled before it started on a worker");
}

/* The worker skipped a call it was asked to skip. */
static void on_skipped_locked(struct ip__worker *w, uint32_t id) {
  for (int i = 0; i < w->nq; i++) {
    if (w->q[i].id != id) continue;
    ip_future *f = w->q[i].f;
    unsend(w, i);
    if (f) cancel_unstarted_locked(f);
    dispatch_locked(w->pool);
    return;
  }
}

static void on_ack_locked(struct ip__worker *w, uint32_t id) {
  ip_pool *p = w->pool;
  /* Calls before this one were skipped: canceled ones, or one a kill asked it to skip. */
  while (w->nq && w->q[0].id != id) {
    if (w->q[0].f && w->q[0].f->cancel_req) cancel_unstarted_locked(w->q[0].f);
    else if (w->q[0].f) enqueue_front_locked(p, w->q[0].f);
    unsend(w, 0);
  }
  if (!w->nq) {
    garbage_locked(w);
    return;
  }
  ip_future *f = w->q[0].f;
  if (!f) { /* canceled while on its way, and started anyway: end it the only way there is */
    w->skipping = true;
    stop_reading_locked(w);
    kill_worker_locked(w);
    return;
  }
  w->cur = f;
  msg_unref_locked((struct ip__msg *)f->msg);
  f->msg = NULL;
  f->pid = f->err.pid = w->pid;
  if (f->timeout_ms > 0) {
    f->deadline_ns = ip__now_ns() + (int64_t)f->timeout_ms * 1000000;
    ip__g.n_timed++;
  }
  if (f->cancel_req) { /* canceled while its start was on its way: it runs, so it is killed */
    f->killed = true;
    kill_worker_locked(w);
  }
}

/* The current call's answer is complete. */
static void call_done_locked(struct ip__worker *w) {
  ip_future *f = w->cur;
  if (f->killed) { /* a kill is on its way: the worker's death settles the call */
    w->skipping = true;
    stop_reading_locked(w);
    return;
  }
  ip__outcome(f);
  unsend(w, 0);
  w->cur = NULL;
  f->worker = NULL;
  ip__complete_locked(f);
  dispatch_locked(w->pool);
}

/* Parses what was read: the pool's own frames between calls, a call's answer within one. */
static void parse(struct ip__worker *w, const unsigned char *p, size_t n) {
  while (n > 0 && !w->skipping) {
    ip_future *f = w->cur;
    if (f) {
      size_t k = ip__rx_feed(f, p, n);
      p += k, n -= k;
      pthread_mutex_lock(&ip__g.lock);
      if (f->rx.proto_code) garbage_locked(w);
      else if (f->rx.final_kind) call_done_locked(w);
      pthread_mutex_unlock(&ip__g.lock);
      continue;
    }
    if (!ip__frame_gather(w->hdr, &w->hdr_have, &p, &n)) return;
    struct ip__frame_hdr h;
    pthread_mutex_lock(&ip__g.lock);
    if (ip__frame_unpack(w->hdr, &h) || h.len) garbage_locked(w);
    else if (h.kind == IP__FRAME_ACK) on_ack_locked(w, h.call_id);
    else if (h.kind == IP__FRAME_CANCEL) on_skipped_locked(w, h.call_id);
    else garbage_locked(w);
    pthread_mutex_unlock(&ip__g.lock);
  }
}

/* Keeps a descriptor that arrived until the frame it belongs to is parsed. True if one did. */
static bool stash_fds_locked(struct ip__worker *w, struct msghdr *m) {
  bool got = false;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (w->fd_in < 0) w->fd_in = fd, got = true;
      else close(fd); /* one per frame: the call that gets the first finds the rest wrong */
    }
  }
  return got;
}

static void give_fd_locked(struct ip__worker *w) {
  if (w->cur->rx.memfd < 0) w->cur->rx.memfd = w->fd_in;
  else close(w->fd_in);
  w->fd_in = -1;
}

/* Reads the worker's channel, up to `budget` bytes. */
static void read_worker(struct ip__worker *w, size_t budget) {
  while (budget > 0 && w->reading && !w->skipping) {
    ssize_t r = w->cur ? ip__rx_direct(w->cur, w->sock) : -2;
    if (r == -2) {
      struct ip__recv c;
      pthread_mutex_lock(&ip__g.lock); /* a descriptor must be where a fork finds it */
      r = ip__recv(w->sock, staging, sizeof staging, MSG_DONTWAIT, &c);
      bool got_fd = r > 0 && c.m.msg_controllen && stash_fds_locked(w, &c.m);
      pthread_mutex_unlock(&ip__g.lock);
      /* A descriptor comes with the header of the MEMFD frame it belongs to, which the kernel
       * returns last (it never reads past a message that carries descriptors); the bytes
       * before it may finish another call and start this one, so it is handed over there. */
      size_t at = got_fd && r >= (ssize_t)IP__FRAME_HDR_SIZE ? (size_t)r - IP__FRAME_HDR_SIZE : 0;
      if (r > 0) {
        parse(w, staging, at);
        pthread_mutex_lock(&ip__g.lock);
        if (w->cur && w->fd_in >= 0) give_fd_locked(w);
        pthread_mutex_unlock(&ip__g.lock);
        parse(w, staging + at, (size_t)r - at);
        /* Less than asked for: the socket is empty (what comes later wakes epoll again), so
         * the read that would say EAGAIN is saved. */
        if ((size_t)r < sizeof staging && !got_fd) return;
      }
    } else if (w->cur && w->cur->rx.proto_code) {
      pthread_mutex_lock(&ip__g.lock);
      garbage_locked(w);
      pthread_mutex_unlock(&ip__g.lock);
      return;
    }
    if (r == 0) { /* it exited: the template's DOWN message says how */
      pthread_mutex_lock(&ip__g.lock);
      stop_reading_locked(w);
      drop_output_locked(w);
      pthread_mutex_unlock(&ip__g.lock);
      return;
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      pthread_mutex_lock(&ip__g.lock);
      stop_reading_locked(w);
      pthread_mutex_unlock(&ip__g.lock);
      return;
    }
    budget -= (size_t)r < budget ? (size_t)r : budget;
  }
}

/* ---- what the template says ----------------------------------------------------------------- */

static struct ip__worker *add_worker_locked(ip_pool *p, pid_t pid, int fd) {
  struct ip__worker *w = calloc(1, sizeof *w);
  struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP};
  if (w) {
    *w = (struct ip__worker){.pool = p, .pid = pid, .sock = fd, .fd_in = -1, .reading = true};
    e.data.ptr = (void *)((uintptr_t)w | IP__TAG_WORKER);
  }
  if (!w || epoll_ctl(ip__g.epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
    /* Unwatchable: the template ends it, and reports it DOWN like any other. */
    tell_template(p, IP__CTL_KILL, pid);
    close(fd);
    free(w);
    return NULL;
  }
  w->next = p->workers;
  p->workers = w;
  p->nlive++;
  return w;
}

static void unlink_worker_locked(ip_pool *p, struct ip__worker *w) {
  for (struct ip__worker **pp = &p->workers; *pp; pp = &(*pp)->next)
    if (*pp == w) {
      *pp = w->next;
      break;
    }
  w->gone = true;
  stop_reading_locked(w);
  drop_output_locked(w);
  ip__close(&w->sock);
  ip__close(&w->fd_in);
  p->nlive--;
  bury_locked(w);
}

static void fail_queue_locked(ip_pool *p, int code, const char *why) {
  while (p->qhead) {
    ip_future *f = p->qhead;
    p->qhead = f->qnext;
    f->qnext = NULL;
    fail_locked(f, code, why);
  }
  p->qtail = NULL;
}

/* A worker ended. Whatever it wrote is in its socket: read it, then settle its call, send the
 * calls it had not started elsewhere, and let its replacement in. */
static void worker_down(ip_pool *p, struct ip__worker *w, const struct ip__ctl *m) {
  if (w->reading && !w->skipping) read_worker(w, SIZE_MAX);
  ip_future *f = w->cur;
  if (f) {
    f->wstatus = m->status;
    f->rusage = m->ru;
    ip__outcome_symbolize(f);
  }
  pthread_mutex_lock(&ip__g.lock);
  int first = f || w->skipping ? 1 : 0;
  for (int i = w->nq - 1; i >= first; i--) {
    ip_future *q = w->q[i].f;
    if (q && q->cancel_req) cancel_unstarted_locked(q);
    else if (q) enqueue_front_locked(p, q);
  }
  w->nq = 0;
  if (f) {
    ip__outcome(f);
    f->worker = NULL;
    ip__complete_locked(f);
  }
  unlink_worker_locked(p, w);
  pthread_mutex_unlock(&ip__g.lock);
}

static void template_gone_locked(ip_pool *p, const char *why);

/* One message from the template, and the descriptor that came with it (-1 if none). */
static ssize_t recv_ctl(int ctl, struct ip__ctl *m, int *fd, int flags) {
  struct ip__recv c;
  ssize_t r = ip__recv(ctl, m, sizeof *m, flags, &c);
  *fd = -1;
  for (struct cmsghdr *h = r > 0 ? CMSG_FIRSTHDR(&c.m) : NULL; h; h = CMSG_NXTHDR(&c.m, h)) {
    size_t k = h->cmsg_type == SCM_RIGHTS ? (h->cmsg_len - CMSG_LEN(0)) / sizeof(int) : 0;
    for (size_t i = 0; i < k; i++) {
      int x;
      memcpy(&x, CMSG_DATA(h) + i * sizeof(int), sizeof x);
      if (*fd < 0) *fd = x;
      else close(x);
    }
  }
  return r;
}

static void read_ctl(ip_pool *p) {
  for (;;) {
    struct ip__ctl m;
    int fd;
    pthread_mutex_lock(&ip__g.lock);
    ssize_t r = recv_ctl(p->ctl, &m, &fd, MSG_DONTWAIT);
    if (r < 0 && errno == EINTR) {
      pthread_mutex_unlock(&ip__g.lock);
      continue;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pthread_mutex_unlock(&ip__g.lock);
      return;
    }
    if (r != (ssize_t)sizeof m) {
      if (fd >= 0) close(fd);
      template_gone_locked(p, "its template process ended");
      pthread_mutex_unlock(&ip__g.lock);
      return;
    }
    int32_t new_pid = m.kind == IP__CTL_DOWN ? m.new_pid : m.pid;
    if (new_pid > 0 && fd >= 0) add_worker_locked(p, new_pid, fd);
    else if (new_pid < 0) p->spawn_err = -new_pid;
    struct ip__worker *w = NULL;
    if (m.kind == IP__CTL_DOWN)
      for (w = p->workers; w && w->pid != m.pid; w = w->next) {
      }
    pthread_mutex_unlock(&ip__g.lock);
    if (w) worker_down(p, w, &m);
    pthread_mutex_lock(&ip__g.lock);
    if (!p->nlive && p->spawn_err) {
      char why[160];
      snprintf(why, sizeof why, "the pool has no worker: its template could not fork one (%s)",
               strerror(p->spawn_err));
      fail_queue_locked(p, ip__errno_code(p->spawn_err), why);
    } else if (p->nlive < p->want && p->spawn_err) {
      p->spawn_err = 0; /* try again, once per event, until the pool is whole */
      tell_template(p, IP__CTL_SPAWN, 0);
    }
    dispatch_locked(p);
    pthread_mutex_unlock(&ip__g.lock);
  }
}

/* Every call still here fails, and every worker is let go. */
static void fail_all_locked(ip_pool *p, int code, const char *why) {
  fail_queue_locked(p, code, why);
  while (p->workers) {
    struct ip__worker *w = p->workers;
    for (int i = 0; i < w->nq; i++)
      if (w->q[i].f) fail_locked(w->q[i].f, code, why);
    w->nq = 0;
    w->cur = NULL;
    unlink_worker_locked(p, w);
  }
}

static void template_gone_locked(ip_pool *p, const char *why) {
  if (p->broken) return;
  p->broken = true;
  snprintf(p->broken_msg, sizeof p->broken_msg, "pool call: the pool is broken: %s (pid %d)",
           why, (int)p->tpid);
  fail_all_locked(p, IP_EEXITED, p->broken_msg);
  epoll_ctl(ip__g.epfd, EPOLL_CTL_DEL, p->ctl, NULL);
}

void ip__pool_event(void *tag, uint32_t events) {
  uintptr_t kind = (uintptr_t)tag & 3;
  if (kind == IP__TAG_WORKER) {
    struct ip__worker *w = (struct ip__worker *)((uintptr_t)tag & ~(uintptr_t)3);
    ip_pool *p = w->pool;
    pthread_mutex_lock(&p->io);
    if (!w->gone && (events & EPOLLOUT)) {
      pthread_mutex_lock(&ip__g.lock);
      flush_locked(w);
      pthread_mutex_unlock(&ip__g.lock);
    }
    if (!w->gone && (events & ~(uint32_t)EPOLLOUT)) read_worker(w, READ_BUDGET);
    pthread_mutex_unlock(&p->io);
  } else {
    ip_pool *p = (ip_pool *)((uintptr_t)tag & ~(uintptr_t)3);
    pthread_mutex_lock(&p->io);
    if (!p->closing && !p->broken) read_ctl(p);
    pthread_mutex_unlock(&p->io);
  }
}

/* ---- kills ---------------------------------------------------------------------------------- */

void ip__pool_kill_locked(ip_future *f) {
  if (f->killed) return;
  ip_pool *p = f->pool;
  struct ip__worker *w = f->worker;
  if (!w) { /* still in the queue: it only leaves it */
    ip_future **pp = &p->qhead, *prev = NULL;
    while (*pp && *pp != f) prev = *pp, pp = &(*pp)->qnext;
    if (*pp) {
      *pp = f->qnext;
      if (p->qtail == f) p->qtail = prev;
      f->qnext = NULL;
    }
    fail_locked(f, IP_ECANCELED, "the call was canceled while queued; it never started");
    return;
  }
  if (w->cur != f) {
    /* Sent, and not known to have started. First on its worker, the worker is starting it or
     * has: its word (started, or skipped) is on its way, and settles the call. Behind
     * another call, it cannot start before that one ends, so it is canceled now; should the
     * worker reach it in that instant, the worker is ended as it starts it (on_ack). */
    push_small_locked(w, IP__FRAME_CANCEL, f->call_id);
    flush_locked(w);
    if (w->q[0].f == f) return;
    for (int i = 0; i < w->nq; i++)
      if (w->q[i].f == f) w->q[i].f = NULL;
    cancel_unstarted_locked(f);
    return;
  }
  f->killed = true;
  kill_worker_locked(w);
}

bool ip__pool_pid_locked(pid_t pid) {
  for (ip_pool *p = ip__g.pools; p; p = p->next)
    if (p->tpid == pid) return true;
  return false;
}

void ip__pools_at_child(void) {
  for (ip_pool *p = ip__g.pools; p; p = p->next) {
    if (p->ctl >= 0) close(p->ctl);
    for (struct ip__worker *w = p->workers; w; w = w->next) {
      if (w->sock >= 0) close(w->sock);
      if (w->fd_in >= 0) close(w->fd_in);
    }
  }
  ip__g.pools = NULL;
  ip__g.graveyard = NULL;
}

/* ---- the API -------------------------------------------------------------------------------- */

/* Marks where the template's fork is, for the at-fork handlers (fork.c): like a call's child,
 * it keeps the lifeline's read end. */
static ip_future template_mark;

/* One WORKER message; on failure its descriptor, if any, is closed. */
static int recv_worker(int ctl, pid_t *pid, int *fd) {
  struct ip__ctl m;
  ssize_t r;
  while ((r = recv_ctl(ctl, &m, fd, 0)) < 0 && errno == EINTR) {
  }
  int e = r < 0 ? errno : r != (ssize_t)sizeof m || m.kind != IP__CTL_WORKER ? EPIPE
          : m.pid < 0 ? -m.pid : *fd < 0 ? EMFILE : 0; /* a worker without its channel: the
                                                          kernel had no descriptor for it */
  if (e) {
    if (*fd >= 0) close(*fd);
    return e;
  }
  *pid = m.pid;
  return 0;
}

static void reap_template(pid_t pid) {
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
  pthread_mutex_lock(&ip__g.lock);
  ip__remember_pid_locked(pid);
  pthread_mutex_unlock(&ip__g.lock);
}

ip_pool *ip_pool_new(int workers) { return ip_pool_new_fork(workers, NULL, NULL); }

ip_pool *ip_pool_new_fork(int workers, ip_fork_fn fork_fn, void *ud) {
  if (workers < 1) {
    errno = EINVAL;
    return NULL;
  }
  int rc = ip__supervisor_ensure(false);
  if (rc < 0) {
    errno = -rc;
    return NULL;
  }
  ip_pool *p = calloc(1, sizeof *p);
  if (!p) {
    errno = ENOMEM;
    return NULL;
  }
  p->want = workers;
  p->ctl = -1;
  pthread_mutex_init(&p->io, NULL);
  int sv[2], e = 0;
  pthread_mutex_lock(&ip__g.lock);
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
    e = errno;
    pthread_mutex_unlock(&ip__g.lock);
    pthread_mutex_destroy(&p->io);
    free(p);
    errno = e;
    return NULL;
  }
  pid_t caller = ip__g.owner;
  int lifeline = ip__g.lifeline[0];
  p->gen = ip__g.gen;
  ip__g.unrecorded++; /* until tpid is known; see ip__ours_locked */
  pthread_mutex_unlock(&ip__g.lock);

  /* Tasks made from here on are not in the template's copy of memory. */
  p->epoch = ip__task_epoch();
  ip__forking = &template_mark;
  pid_t pid = fork_fn ? fork_fn(ud) : fork();
  if (pid == 0) {
    close(sv[0]);
    ip__template_main(sv[1], workers, caller, lifeline, fork_fn, ud);
  }
  e = pid < 0 ? errno : 0;
  ip__forking = NULL;
  pthread_mutex_lock(&ip__g.lock);
  ip__g.unrecorded--;
  ip__close(&sv[1]);
  p->ctl = sv[0];
  p->tpid = pid > 0 ? pid : 0;
  if (pid > 0) {
    p->next = ip__g.pools;
    ip__g.pools = p;
  }
  pthread_mutex_unlock(&ip__g.lock);
  if (pid < 0) {
    ip_pool_free(p);
    errno = e;
    return NULL;
  }

  /* The workers, forked by the template as it starts. Received under the lock: their
   * descriptors must be where a fork by another thread finds them. */
  pthread_mutex_lock(&ip__g.lock);
  for (int i = 0; i < workers && !e; i++) {
    pid_t wp = 0;
    int fd;
    e = recv_worker(p->ctl, &wp, &fd);
    if (!e && !add_worker_locked(p, wp, fd)) e = ENOMEM; /* it closed fd */
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = (void *)((uintptr_t)p | IP__TAG_POOL)};
  if (!e && epoll_ctl(ip__g.epfd, EPOLL_CTL_ADD, p->ctl, &ev) < 0) e = errno;
  pthread_mutex_unlock(&ip__g.lock);
  if (e) {
    ip_pool_free(p);
    errno = e;
    return NULL;
  }
  return p;
}

int ip_pool_set_max_calls(ip_pool *p, unsigned n) {
  if (!p) return IP_EINVAL;
  pthread_mutex_lock(&ip__g.lock);
  p->max_calls = n;
  pthread_mutex_unlock(&ip__g.lock);
  return 0;
}

int ip_pool_set_max_rss(ip_pool *p, size_t bytes) {
  if (!p) return IP_EINVAL;
  pthread_mutex_lock(&ip__g.lock);
  p->max_rss = bytes;
  pthread_mutex_unlock(&ip__g.lock);
  return 0;
}

int ip_pool_workers(const ip_pool *p) {
  if (!p) return IP_EINVAL;
  if (p->backend) return p->gen == ip__g.gen ? p->backend->workers(p->bself) : 0;
  pthread_mutex_lock(&ip__g.lock);
  int n = p->gen == ip__g.gen && !p->closing ? p->nlive : 0;
  pthread_mutex_unlock(&ip__g.lock);
  return n;
}

struct grow {
  struct ip__msg *m;
  size_t cap;
};

static int append(void *ctx, const void *buf, size_t len) {
  struct grow *g = ctx;
  if (len > g->cap - g->m->len) {
    size_t cap = g->cap * 2;
    if (cap - g->m->len < len) cap = g->m->len + len;
    struct ip__msg *m = realloc(g->m, sizeof *m + cap);
    if (!m) return IP_ENOMEM;
    g->m = m, g->cap = cap;
  }
  memcpy(g->m->b + g->m->len, buf, len);
  g->m->len += len;
  return 0;
}

/* A call of t on a backend's pool, its argument encoded (len bytes at arg, the caller's). */
static void backend_call(ip_pool *p, ip_future *f, ip_task *t, const void *arg, size_t len,
                         const char *fname) {
  pthread_mutex_lock(&ip__g.lock);
  f->pool = p;
  f->backend = true;
  bool closing = p->closing;
  if (!closing) p->calling++; /* ip_pool_free waits until call() returned */
  pthread_mutex_unlock(&ip__g.lock);
  int rc = closing ? IP_EINVAL : p->backend->call(p->bself, f, t, arg, len);
  char why[300];
  if (closing) snprintf(why, sizeof why, "%s: the pool is being freed", fname);
  else if (rc < 0) snprintf(why, sizeof why, "%s: the %s backend refused the call (%s)", fname,
                            p->backend->name, ip_err_name(rc));
  pthread_mutex_lock(&ip__g.lock);
  if (rc < 0 && atomic_load(&f->state) != IP__DONE) ip__fail_locked(f, rc, why);
  if (!closing && --p->calling == 0 && p->closing) pthread_cond_broadcast(&ip__g.cond);
  pthread_mutex_unlock(&ip__g.lock); /* p may be gone from here on */
}

/* ip_pool_call, and ip_pool_call_encoded when `enc` is set (the argument's bytes as they are).
 * `arg` is the caller's pointer either way, for ip_future_arg. */
static ip_future *pool_call(ip_pool *p, ip_task *t, const void *arg, const void *enc,
                            size_t enc_len) {
  const char *fname = enc ? "ip_pool_call_encoded" : "ip_pool_call";
  char why[300];
  ip_future *f = ip__future_new();
  if (!f) return NULL;
  f->arg = (void *)arg;
  if (!p || !t) {
    snprintf(why, sizeof why, "%s: the %s is NULL", fname, !p ? "pool" : "task");
    pthread_mutex_lock(&ip__g.lock);
    ip__fail_locked(f, IP_EINVAL, why);
    pthread_mutex_unlock(&ip__g.lock);
    return f;
  }
  f->ser = t->ser;
  f->ser_id = t->ser_id;
  f->max_result = t->max_result;
  f->timeout_ms = t->timeout_ms;
  if (p->gen != ip__g.gen) {
    ip__fail_early(f, IP_EINVAL, "ip_pool_call: the pool belongs to the parent process (this "
                                 "process is a fork of the one that made it)");
    return f;
  }
  if (!p->backend && t->serial >= p->epoch) {
    ip__fail_early(f, IP_EINVAL, "ip_pool_call: the task was made after the pool, so the pool's "
                                 "workers (copies of this process as it was then) do not have "
                                 "it; make the task before the pool");
    return f;
  }
  if (p->backend && enc) { /* already encoded: the backend takes the caller's bytes as they are */
    backend_call(p, f, t, enc, enc_len, fname);
    return f;
  }
  struct grow g = {malloc(sizeof *g.m + HEAD + (enc ? enc_len : 64)), HEAD + (enc ? enc_len : 64)};
  if (!g.m) {
    ip__fail_early(f, IP_ENOMEM, "ip_pool_call: no memory for the argument");
    return f;
  }
  g.m->refs = 1;
  g.m->len = HEAD;
  struct ip__call_spec spec = {.task = (uint64_t)(uintptr_t)t, .arg_ser_id = t->arg_ser_id,
                               .ser_id = t->ser_id, .max_result = t->max_result,
                               .stdio = (uint32_t)t->stdio};
  memcpy(g.m->b + IP__FRAME_HDR_SIZE, &spec, sizeof spec);
  int rc = enc ? append(&g, enc, enc_len) : t->arg_ser->encode(t->arg_ser, arg, append, &g);
  if (rc != 0) {
    free(g.m);
    if (enc) snprintf(why, sizeof why, "%s: no memory for the %zu-byte argument", fname, enc_len);
    else snprintf(why, sizeof why, "ip_pool_call: the %s serializer could not encode the "
                  "argument (%s)", t->arg_ser->name, ip_err_name(rc));
    pthread_mutex_lock(&ip__g.lock);
    ip__fail_locked(f, enc ? IP_ENOMEM : IP_EENCODE, why);
    pthread_mutex_unlock(&ip__g.lock);
    return f;
  }
  if (p->backend) {
    backend_call(p, f, t, g.m->b + HEAD, g.m->len - HEAD, fname);
    free(g.m);
    return f;
  }
  f->msg = (unsigned char *)g.m;
  /* A deadline must be kept while nobody waits: timed calls get the supervisor thread. */
  if ((rc = ip__supervisor_ensure(t->timeout_ms > 0)) < 0) {
    free(g.m);
    f->msg = NULL;
    ip__fail_early(f, rc, "ip_pool_call: could not set up the supervisor");
    return f;
  }
  pthread_mutex_lock(&ip__g.lock);
  f->pool = p;
  if (p->broken || p->closing) {
    fail_locked(f, p->broken ? IP_EEXITED : IP_EINVAL,
                p->broken ? p->broken_msg : "ip_pool_call: the pool is being freed");
  } else {
    ip__link_locked(f);
    if (p->qtail) p->qtail->qnext = f;
    else p->qhead = f;
    p->qtail = f;
    dispatch_locked(p);
  }
  pthread_mutex_unlock(&ip__g.lock);
  return f;
}

ip_future *ip_pool_call(ip_pool *p, ip_task *t, const void *arg) {
  return pool_call(p, t, arg, NULL, 0);
}

ip_future *ip_pool_call_encoded(ip_pool *p, ip_task *t, const void *arg, size_t len) {
  static const char none; /* an empty encoding is still an encoding */
  return pool_call(p, t, arg, arg ? arg : &none, len); /* `arg` is what ip_future_arg gives */
}

static void backend_pool_free(ip_pool *p) {
  if (p->gen == ip__g.gen) {
    pthread_mutex_lock(&ip__g.lock);
    p->closing = true; /* ip_pool_call refuses from here on */
    /* A call that came before is let out of the backend's call() first: the backend must not
     * be released under it, and what it took, its free() finishes. */
    while (p->calling) pthread_cond_wait(&ip__g.cond, &ip__g.lock);
    pthread_mutex_unlock(&ip__g.lock);
    p->backend->free(p->bself);
  }
  free(p); /* in a fork child only the memory is ours: the backend is the parent's */
}

void ip_pool_free(ip_pool *p) {
  if (!p) return;
  if (p->backend) {
    backend_pool_free(p);
    return;
  }
  if (p->gen != ip__g.gen) { /* the parent's pool, copied by fork: only the memory is ours */
    while (p->workers) {
      struct ip__worker *w = p->workers;
      p->workers = w->next;
      free(w);
    }
    free(p);
    return;
  }
  pthread_mutex_lock(&p->io);
  pthread_mutex_lock(&ip__g.lock);
  p->closing = true;
  fail_all_locked(p, IP_ECANCELED, "the pool was freed before the call ended");
  for (ip_pool **pp = &ip__g.pools; *pp; pp = &(*pp)->next)
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  if (p->ctl >= 0 && !p->broken) epoll_ctl(ip__g.epfd, EPOLL_CTL_DEL, p->ctl, NULL);
  /* The template's end: on EOF it kills and reaps every worker, then exits. */
  ip__close(&p->ctl);
  pid_t tpid = p->tpid;
  if (tpid > 0) ip__remember_pid_locked(tpid);
  pthread_mutex_unlock(&ip__g.lock);
  pthread_mutex_unlock(&p->io);
  if (tpid > 0) reap_template(tpid);
  pthread_mutex_lock(&ip__g.lock);
  bury_locked(p); /* its mutex too: a driver with a stale event may still take it */
  /* Nobody drives: nobody can hold a stale pointer to what was buried. */
  if (!ip__g.started && !ip__g.driving) ip__graveyard_free_locked();
  pthread_mutex_unlock(&ip__g.lock);
}

/* ---- backends' pools (see backend.c) ---------------------------------------------------------- */

ip_pool *ip_pool_new_backend(const ip_backend *b, void *self) {
  if (!b || b->abi != IP_BACKEND_ABI || !b->call || !b->cancel || !b->workers || !b->free) {
    errno = EINVAL;
    return NULL;
  }
  ip__init();
  ip_pool *p = calloc(1, sizeof *p);
  if (!p) {
    errno = ENOMEM;
    return NULL;
  }
  p->gen = ip__g.gen;
  p->ctl = -1;
  p->backend = b;
  p->bself = self;
  return p;
}

const ip_backend *ip__pool_backend(const ip_pool *p, void **self) {
  if (!p || !p->backend) return NULL;
  if (self) *self = p->bself;
  return p->backend;
}

int ip_task_set_arg_serializer(ip_task *t, const ip_serializer *s) {
  if (!s) s = ip_serializer_raw();
  if (!t || ip__serializer_check(s) < 0) return IP_EINVAL;
  t->arg_ser = s;
  t->arg_ser_id = ip__ser_id(s->name);
  return 0;
}
