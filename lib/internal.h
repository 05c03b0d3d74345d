/* Private to libinparallel: the shapes every lib/ file shares. Names are ip__*. */
#ifndef IP_INTERNAL_H
#define IP_INTERNAL_H

#include "config.h"
#include <inparallel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <signal.h>
#include <sys/socket.h>

#include "frame.h"

#define IP__MAX_RLIMITS 8
#define IP__DEFAULT_MAX_RESULT (UINT64_C(4) << 30)
/* At or above this size ip_bytes_alloc() in a child builds the result in a memfd. Below it the
 * memfd set-up (create, truncate, map, seal, pass, map again) costs more than a copy. */
#define IP__INPLACE_MIN ((size_t)1 << 20)
/* How many pids of completed calls the library remembers (see ip__ours_locked). */
#define IP__RECENT 256

/* ---- tasks ---------------------------------------------------------------------------- */

struct ip__rlimit {
  int resource;
  struct rlimit lim;
};

struct ip_task {
  ip_fn fn;
  const ip_serializer *ser;
  uint32_t ser_id;
  const ip_serializer *arg_ser; /* how a pool call's argument travels */
  uint32_t arg_ser_id;
  uint64_t serial; /* order of creation: a pool runs only tasks older than itself */
  int timeout_ms;
  int pdeathsig;
  int stdio;
  int crash_report;
  uint64_t max_result;
  ip_fork_fn fork_fn;
  void *fork_ud;
  int n_rlimits;
  struct ip__rlimit rlimits[IP__MAX_RLIMITS];
  char *name;            /* ip_task_set_name; NULL if unnamed */
  ip_task *named_next;   /* the registry of named tasks, in naming order, under ip__g.lock */
};

/* ---- futures -------------------------------------------------------------------------- */

enum { IP__RUNNING = 0, IP__DONE = 1 };

/* What the supervisor has read from one child so far. Touched only by the supervisor while
 * the call is in flight, and only by the owner after it completed. */
struct ip__rx {
  unsigned char hdr[IP__FRAME_HDR_SIZE];
  size_t hdr_have;
  struct ip__frame_hdr cur;
  bool in_body;
  uint64_t body_left;
  unsigned char *payload; /* value bytes: heap, or a read-only memfd mapping */
  size_t len, cap;
  bool mapped;
  unsigned char *aux; /* body of an error or crash frame */
  size_t aux_len;
  char *crash_text;   /* a crash frame's stack, symbolized (ip__outcome_symbolize) */
  int final_kind; /* IP__FRAME_END, _MEMFD or _ERROR once the child's answer is complete */
  int memfd;      /* descriptor received with SCM_RIGHTS, -1 if none */
  int proto_code; /* IP_EPROTO / IP_E2BIG / IP_ENOMEM once the stream went wrong */
  const char *proto_msg;
  uint64_t too_big; /* with IP_E2BIG: the size that broke max_result (for a DATA frame the bytes
                       received so far plus the frame's, a lower bound) */
  bool sock_open;
};

struct ip_future {
  /* Set by ip_call, read-only afterwards. */
  unsigned gen; /* ip__g.gen of the process that made it; see ip__fresh */
  const ip_serializer *ser;
  uint32_t ser_id;
  uint64_t max_result;
  void *arg;
  pid_t pid;
  int64_t deadline_ns; /* CLOCK_MONOTONIC; 0 = none */
  int timeout_ms;

  /* Supervisor-owned while in flight. Every descriptor of a call is created, stored and
   * closed under ip__g.lock, so a fork by any thread knows exactly which ones to close. */
  int sock, pidfd;
  int child_sock; /* the child's end, until the fork is done */
  int reaper_wfd; /* see exit_pipe */
  struct ip__rx rx;
  int wstatus; /* from wait4; -1 when someone else reaped the child */
  bool reaped; /* set under ip__g.lock, in the same hold as the reap (see on_child_exit) */
  bool exit_pipe; /* no pidfd (old kernel, valgrind): `pidfd` is a pipe that a reaper thread
                     closes once it has reaped the child and filled wstatus and rusage */

  /* A pool call's (pool.c), under ip__g.lock. `msg` is the CALL frame, argument encoded,
   * until it is handed to a worker; `worker` is where it was sent, NULL while queued. */
  struct ip_pool *pool;
  bool backend; /* `pool` is a backend's: ip_future_finish may complete it. A completed
                   future may outlive its pool, so this is never read through `pool`. */
  struct ip__worker *worker;
  uint32_t call_id;
  unsigned char *msg;
  size_t msg_len;
  ip_future *qnext;

  /* Under ip__g.lock. */
  _Atomic int state;
  bool cancel_req, timed_out, killed, orphan;
  uint64_t done_seq;
  ip_future *prev, *next; /* in-flight list */
  ip_list *list;          /* the list it is in, if any; `slot` is its index in list->items */
  size_t slot;
  bool queued;            /* on list's completion queue (dprev/dnext) */
  ip_future *dprev, *dnext;

  /* Outcome, written before state becomes DONE, then read-only (except decoding). */
  int status;
  ip_error err;
  char *err_strings; /* owns err.kind/message/backtrace text unless they are static */
  struct rusage rusage;

  /* Decoding, on the first look at the outcome (ip__settle), in whichever thread that is.
   * `settled` is set, with release order, once status, err and value are final. */
  pthread_mutex_t dec_lock;
  _Atomic bool settled;
  bool decoded;
  void *value;
};

/* ---- lists -------------------------------------------------------------------------------- */

/* The caller's list. `items` is the caller's alone (a list is used by one thread at a time);
 * the completion queue is shared with the supervisor and guarded by ip__g.lock. A waitfor
 * step takes the queue's head and leaves a hole (NULL) in items, so it costs O(1); holes are
 * squeezed out once they outnumber the futures, or before anything reads by index. */
struct ip_list {
  unsigned gen;          /* as in ip_future: a list copied into a fork child is rebuilt */
  ip_future **items;
  size_t used, len, cap; /* slots in use (holes included), futures, slots allocated */
  ip_future *done_head, *done_tail; /* completed members, earliest completion first */
};

/* Under the lock: appends f to its list's completion queue (it just completed, or it was
 * done when pushed: then it goes where its completion order puts it). */
void ip__list_enqueue_locked(ip_future *f);
/* Under the lock: takes f off its list's completion queue and out of the list's reach. */
void ip__list_detach_locked(ip_future *f);
/* Frees f's slot (leaves a hole) in a list it was detached from. */
void ip__list_vacate(ip_list *l, size_t slot);
/* Under the lock: in a fork child, a list of the parent's: every future in it becomes an
 * orphan (see ip__adopt_locked) and the queue is rebuilt from them. */
void ip__list_adopt_locked(ip_list *l);

/* ---- process-wide state ----------------------------------------------------------------- */

struct ip__waiter {
  unsigned gen; /* as in ip_future: a waiter copied into a fork child is stale */
  int efd;
  bool armed;
  struct ip__waiter *next, *prev;
};

struct ip__global {
  pthread_mutex_t lock; /* guards everything below, the handle registry and the serializers */
  pthread_cond_t cond;  /* broadcast on every completion, for waits that ignore signals */
  pid_t owner;          /* process this state belongs to; reset after fork */
  unsigned gen;         /* +1 in every fork child: futures and waiters of an older generation
                           are the parent's, copied (see ip__fresh) */
  ip_future *forking;   /* the call being forked, from the forking thread's ip__forking, set
                           under the lock by the prepare handler */
  bool started;         /* supervisor thread running (then it alone drives the loop) */
  bool driving;         /* a waiting thread runs the supervisor loop (see supervisor.c) */
  bool want_thread;     /* ip_use_supervisor_thread() was called: every call ensures it */
  bool stopping;
  pthread_t thread;
  int epfd, wake_fd, ready_fd;
  int lifeline[2];      /* [0] reopened by each child; [1] held by this process only */
  int sigchld_fd;       /* signalfd for SIGCHLD: how a waiting thread tells the library's
                           children's SIGCHLD from the host's (see wait.c) */
  ip_future *inflight;  /* doubly linked */
  size_t n_inflight, n_timed;
  uint64_t seq;         /* completion counter */
  unsigned unrecorded;  /* calls between fork() and storing their child's pid */
  pid_t recent[IP__RECENT];    /* pids of the latest completed calls, for telling SIGCHLDs apart */
  unsigned recent_at;
  struct ip__waiter *waiters;
  struct ip_pool *pools;      /* live pools of this process (pool.c) */
  ip_task *named;             /* named tasks, in naming order (task.c) */
  void *graveyard;            /* pool memory a driver may still name in its current batch */
  /* In a fork child: the parent's lists as they were, kept only so the copies stay reachable
   * (a leak checker would otherwise count them as lost). Never walked. */
  ip_future *parent_inflight;
  struct ip__waiter *parent_waiters;
};

extern struct ip__global ip__g;
/* The call whose fork() this thread is in (and so, in that call's child, its own call). */
extern __thread ip_future *ip__forking;

/* One-time and per-process set-up (atfork handlers, backtrace warm-up). */
void ip__init(void);
/* Registers the at-fork handlers (fork.c). */
void ip__fork_handlers_install(void);
/* Sets up the supervisor's descriptors in this process if needed and, with `thread` (or after
 * ip_use_supervisor_thread), starts its thread. Call without the lock. 0 or a code. */
int ip__supervisor_ensure(bool thread);
/* One round of the supervisor loop: waits up to timeout_ms (-1: no limit; a deadline may cut
 * it short) and handles what came. Only the thread that drives may call it. Returns
 * epoll_wait's result: -1 with errno EINTR when a signal handler ran. `*sigchld` (may be
 * NULL) is set when a SIGCHLD became pending for this thread (see wait.c). */
int ip__supervise_once(int timeout_ms, bool *sigchld);
/* Whether `pid` is, or lately was, the child of one of the library's calls. Under the lock. */
bool ip__ours_locked(pid_t pid);
/* Adds `pid` to the pids ip__ours_locked remembers. Under the lock. */
void ip__remember_pid_locked(pid_t pid);
/* SIGKILLs the process group a call's child leads. Only while the child is unreaped: until
 * then the group's id cannot have passed to anyone else. */
void ip__kill_group(pid_t pid);
/* Handles what is ready without blocking, when no thread drives: for callers that only look
 * (ip_future_done, a waitfor step) in a process without a supervisor thread. */
void ip__progress(void);
/* SIGKILLs f's child once (pidfd, or pid while it is not reaped). Under the lock. */
void ip__kill_locked(ip_future *f);
/* Puts f on the in-flight list. */
void ip__link_locked(ip_future *f);
/* Takes f off the in-flight list (no-op when it is not on it). */
void ip__unlink_locked(ip_future *f);
/* Wakes the supervisor so it re-reads deadlines. */
void ip__supervisor_kick(void);
/* Watches a started call: links it in flight and registers its descriptors. */
int ip__supervisor_add(ip_future *f);
/* Stops the supervisor thread and closes its descriptors (library unload). */
void ip__supervisor_shutdown(void);

/* Frame parsing (rx.c), by whoever drives. ip__rx_feed parses bytes already read, up to
 * the end of the final frame, and returns how many it took; ip__rx_drain reads the socket
 * (up to `budget` bytes) and returns false at end of stream; ip__rx_direct receives from fd
 * straight into the value's buffer while a large DATA body is coming (-2 when none is). */
size_t ip__rx_feed(ip_future *f, const unsigned char *p, size_t n);
bool ip__rx_drain(ip_future *f, size_t budget);
ssize_t ip__rx_direct(ip_future *f, int fd);
/* Takes a descriptor that arrived with SCM_RIGHTS for f's in-place result. Under the lock. */
void ip__rx_take_fds(ip_future *f, struct msghdr *m);
/* A recvmsg that may bring descriptors (up to 4, close-on-exec), into buf; `flags` are
 * recvmsg's. Descriptors are in c->m's control part. A caller that may race a fork holds
 * ip__g.lock until it has put them where the at-fork handler finds them. */
struct ip__recv {
  struct msghdr m;
  struct iovec iov;
  union {
    struct cmsghdr c;
    char b[CMSG_SPACE(sizeof(int) * 4)];
  } u;
};
ssize_t ip__recv(int fd, void *buf, size_t len, int flags, struct ip__recv *c);

/* ---- pools (pool.c, template.c, worker.c) ------------------------------------------------- */

/* Supervisor events for a pool's descriptors: tags are the worker's or pool's address with
 * these low bits. */
#define IP__TAG_WORKER ((uintptr_t)2)
#define IP__TAG_POOL ((uintptr_t)3)
void ip__pool_event(void *tag, uint32_t events);
/* Under the lock: a pool call's kill (timeout, cancel). */
void ip__pool_kill_locked(ip_future *f);
/* Under the lock: whether pid is one of the pools' template processes. */
bool ip__pool_pid_locked(pid_t pid);
/* In a fork child: closes every pool descriptor of the parent's (no page written). */
void ip__pools_at_child(void);
/* Frees the graveyard. Under the lock, by a driver, before it waits for events. */
void ip__graveyard_free_locked(void);
uint64_t ip__task_epoch(void);
/* The backend of a backend's pool (and its self), or NULL for a pool of workers. */
const ip_backend *ip__pool_backend(const ip_pool *p, void **self);

/* The template's control messages (SOCK_SEQPACKET, one struct per message). */
enum { IP__CTL_SPAWN = 1, IP__CTL_KILL, IP__CTL_WORKER, IP__CTL_DOWN };
struct ip__ctl {
  uint32_t kind;
  int32_t pid;      /* KILL, DOWN: the worker; WORKER: the new one, or -errno */
  int32_t status;   /* DOWN: wait status */
  int32_t new_pid;  /* DOWN: the replacement (its socket comes with SCM_RIGHTS), or -errno */
  struct rusage ru; /* DOWN */
};
/* The body of a CALL frame before the argument's bytes. */
struct ip__call_spec {
  uint64_t task;    /* the ip_task's address: the worker's copy of the caller's memory has it */
  uint32_t arg_ser_id, ser_id;
  uint64_t max_result, max_rss;
  uint32_t stdio, reserved;
};
_Noreturn void ip__template_main(int ctl, int workers, pid_t caller, int lifeline_r,
                                 ip_fork_fn fork_fn, void *fork_ud);
_Noreturn void ip__worker_main(int sock);
/* One pool call in a worker: runs fn and sends its answer, then returns (an ip_raise in
 * the worker's thread lands back here; in another thread it ends the worker). */
void ip__worker_call(const ip_task *t, int sock, const struct ip__call_spec *spec, void *arg);
/* Arms the child's lifeline (see child.c): SIGKILL for its process group when the caller
 * dies. Exits when `parent` is no longer the parent. */
void ip__arm_lifeline(int lifeline_r, pid_t parent, bool main_thread);
void ip__arm_crash_report(void);
/* In a worker: frees every ip_bytes buffer made during the call that just ended. */
void ip__bytes_call_end(void);

/* Decodes a completed future once, in the calling thread, so status, error and value agree
 * from the first look on. Returns f. */
ip_future *ip__settle(const ip_future *f);

/* A future copied into a fork child belongs to the parent. The child's at-fork handler does
 * not touch it (every page it wrote would cost each child a copy-on-write fault); instead the
 * first use in the child turns it into a canceled orphan. Call at the top of every function
 * that reads a future's state; ip__adopt_locked with the lock held. */
void ip__adopt_locked(ip_future *f);
static inline ip_future *ip__fresh(const ip_future *f) {
  ip_future *m = (ip_future *)f;
  if (m->gen != ip__g.gen) {
    pthread_mutex_lock(&ip__g.lock);
    ip__adopt_locked(m);
    pthread_mutex_unlock(&ip__g.lock);
  }
  return m;
}

/* Completion, under the lock: marks f done and wakes waiters. */
void ip__complete_locked(ip_future *f);
/* After fork, in the child: a future of the parent's completes as canceled. Its buffers may
 * have been mid-update by the parent's supervisor, so the child never frees them. */
void ip__orphan(ip_future *f);
/* Fails f as e says: every field, strings copied (a backend's outcome). Under the lock. */
void ip__fail_as_locked(ip_future *f, const ip_error *e);
/* Fails a future that never got a child; `message` must be static text. */
void ip__fail_early(ip_future *f, int code, const char *message);
/* The same under the lock, with the message copied. */
void ip__fail_locked(ip_future *f, int code, const char *message);
/* A new future, not started. NULL when out of memory. */
ip_future *ip__future_new(void);
/* Symbolizes a crash frame's stack, if the child sent one: slow (a helper process may be
 * forked), so the supervisor calls it before it takes the lock to complete f. */
void ip__outcome_symbolize(ip_future *f);
/* Builds f->err from the rx state and wait status (supervisor, under the lock). */
void ip__outcome(ip_future *f);
/* Frees the bytes of f's value. */
void ip__outcome_free_payload(ip_future *f);
/* Frees the outcome strings and buffers of f. */
void ip__outcome_free(ip_future *f);

/* Waiting: block the calling thread until done(ctx) holds, both evaluated under the lock.
 * Returns 0, IP_ETIMEDOUT, or IP_EINTR (only when interruptible). */
typedef bool (*ip__pred)(void *ctx);
int ip__wait(ip__pred done, void *ctx, int timeout_ms, bool interruptible);
void ip__wake_waiters_locked(void);

/* Child side. */
/* `enc` non-NULL: the argument is encoded (enc_len bytes) and the child decodes it with t's
 * argument serializer before fn runs (ip_call_encoded). */
_Noreturn void ip__child_main(const ip_task *t, int sock, int lifeline_r, pid_t parent,
                              bool main_thread, void *arg, const void *enc, size_t enc_len);

/* Serializers. */
uint32_t ip__ser_id(const char *name);
int ip__serializer_check(const ip_serializer *s);
void ip__serializers_reset(void);

/* Return addresses as text, one line per frame (see symbolize.c for the format); malloc'ed,
 * NULL if none. With libdw it forks a helper process, so call it without ip__g.lock (the
 * at-fork handlers take it). */
char *ip__symbolize(void *const *addrs, int n);

/* Small utilities. */
int64_t ip__now_ns(void);
int ip__errno_code(int err); /* errno -> IP_E* */
void ip__close(int *fd);
void ip__format_rusage(char *buf, size_t n, const struct rusage *ru);

#endif
