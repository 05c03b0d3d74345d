/* What fork() does to the library, in one place. A fork by anyone (ip_call, the host, another
 * library) copies every call in flight into the new process, where the calls are not its
 * own: the child must close their descriptors at once (or it would hold another call's
 * channel, or the parent's lifeline, open), and must treat the futures, lists and waiters it
 * inherited as the parent's. The in-flight list exists first of all for the first of these. */
#include "internal.h"
#include <stdlib.h>
#include <unistd.h>

/* Set around fork() so the at-fork child handler knows which call the new process is for,
 * and keeps the descriptors that call's child needs. */
__thread ip_future *ip__forking;

/* ---- the in-flight list ------------------------------------------------------------------ */

void ip__link_locked(ip_future *f) {
  f->prev = NULL;
  f->next = ip__g.inflight;
  if (f->next) f->next->prev = f;
  ip__g.inflight = f;
  ip__g.n_inflight++;
  if (f->deadline_ns) ip__g.n_timed++;
}

void ip__unlink_locked(ip_future *f) {
  if (f->prev) f->prev->next = f->next;
  else if (ip__g.inflight == f) ip__g.inflight = f->next;
  else return; /* not linked */
  if (f->next) f->next->prev = f->prev;
  f->prev = f->next = NULL;
  ip__g.n_inflight--;
  if (f->deadline_ns) ip__g.n_timed--;
}

/* ---- the at-fork handlers ------------------------------------------------------------------ */

static void at_prepare(void) {
  pthread_mutex_lock(&ip__g.lock);
  ip__g.forking = ip__forking; /* read here, in the parent: the child reads no TLS */
}

static void at_parent(void) {
  ip__g.forking = NULL;
  pthread_mutex_unlock(&ip__g.lock);
}

/* Not ip__close: the descriptors are the parent's numbers in the parent's futures, and this
 * handler writes no page but ip__g's (each page written costs every task's child a
 * copy-on-write fault). */
static void close_fd(int fd) {
  if (fd >= 0) close(fd);
}

/* In a new child (ours or the host's) the supervisor thread does not exist and every call in
 * flight belongs to the parent. The parent's futures and waiters are only read here, and
 * become orphans on first use (ip__fresh, waiter()). */
static void at_child(void) {
  ip_future *mine = ip__g.forking;
  /* Assignments, not pthread_*_init: no libc code page to fault in. The prepare handler's
   * lock and any waiters of the parent's threads are meaningless here. */
  ip__g.lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
  ip__g.cond = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
  for (ip_future *f = ip__g.inflight; f; f = f->next) {
    close_fd(f->sock);
    close_fd(f->pidfd);
    close_fd(f->reaper_wfd);
    close_fd(f->rx.memfd);
    if (f != mine) close_fd(f->child_sock); /* ip_call's child keeps its own end */
  }
  for (struct ip__waiter *w = ip__g.waiters; w; w = w->next) close_fd(w->efd);
  ip__pools_at_child();
  ip__g.gen++;
  ip__g.forking = NULL;
  ip__g.parent_inflight = ip__g.inflight;
  ip__g.parent_waiters = ip__g.waiters;
  ip__g.inflight = NULL;
  ip__g.n_inflight = ip__g.n_timed = 0;
  ip__g.unrecorded = 0;
  ip__g.waiters = NULL;
  ip__close(&ip__g.epfd);
  ip__close(&ip__g.wake_fd);
  ip__close(&ip__g.ready_fd);
  ip__close(&ip__g.sigchld_fd);
  ip__close(&ip__g.lifeline[1]);
  /* ip_call's own child still needs the read end to arm its lifeline; it closes it. */
  if (!mine) ip__close(&ip__g.lifeline[0]);
  else ip__g.lifeline[0] = -1;
  ip__g.started = false;
  ip__g.driving = false;
  ip__g.stopping = false;
  ip__g.owner = 0; /* getpid() when the supervisor starts */
}

void ip__fork_handlers_install(void) { pthread_atfork(at_prepare, at_parent, at_child); }

/* ---- what a child inherited ---------------------------------------------------------------- */

void ip__adopt_locked(ip_future *f) {
  if (f->gen == ip__g.gen) return;
  f->gen = ip__g.gen;
  /* at_child closed whatever descriptors the call still held; the numbers may name new
   * files by now. */
  f->sock = f->child_sock = f->pidfd = f->reaper_wfd = f->rx.memfd = -1;
  /* A thread of the parent's may have held it at the fork; no such thread is here. */
  f->dec_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
  if (atomic_load_explicit(&f->state, memory_order_relaxed) != IP__DONE) ip__orphan(f);
}

void ip__orphan(ip_future *f) {
  f->orphan = true;
  f->err_strings = NULL;
  f->err.code = f->status = IP_ECANCELED;
  f->err.kind = ip_err_name(IP_ECANCELED);
  f->err.message = "the call belongs to the parent process (this process was forked while it "
                   "ran)";
  f->err.backtrace = NULL;
  f->prev = f->next = NULL;
  f->done_seq = ++ip__g.seq;
  atomic_store_explicit(&f->state, IP__DONE, memory_order_relaxed);
  atomic_store_explicit(&f->settled, true, memory_order_relaxed);
}
