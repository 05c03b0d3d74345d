/* Everything a task's child does between fork() and _exit(): arm its lifeline to the parent,
 * apply the task's limits, run fn, encode and send the value (or the failure), exit. */
#include "internal.h"
#include <execinfo.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* Exit statuses for the rare cases where the child cannot even report. */
#define EXIT_SEND_FAILED 125

#define OUT_BUF (64u << 10)   /* small writes are gathered up to this size */
#define OUT_DIRECT (32u << 10) /* writes from this size on go straight to the socket */

static struct {
  pid_t pid; /* getpid() of the child while it runs a call; 0 elsewhere */
  int sock;
  uint32_t ser_id;
  int stdio;
  uint64_t max_result;
  volatile sig_atomic_t sending; /* a frame is half written: the crash handler keeps out */
  atomic_int raising; /* one failure per call: a second raiser waits for _exit */
  uint64_t total;
  int refused; /* a write was refused: the value is incomplete whatever encode() says */
  uint64_t too_big; /* with refused: the bytes written so far plus the refused write */
  bool encoding;    /* encode() runs: ip_encode_error records its message */
  char *encode_why; /* ip_encode_error's last message (malloc'ed), or NULL */
  /* In a pool worker: where a failure sent from the worker's own thread resumes (the next
   * call), and what the failure allocated on its way there. */
  sigjmp_buf *resume;
  pthread_t thread;
  void *failure_mem[3];
  size_t n;
  unsigned char buf[OUT_BUF];
} me;

static char altstack[64 << 10];

int ip_in_child(void) { return me.pid != 0 && me.pid == getpid(); }

/* ---- sending ------------------------------------------------------------------------------ */

static void send_all(struct iovec *iov, int n) {
  me.sending = 1;
  while (n > 0) {
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t w = sendmsg(me.sock, &m, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      _exit(EXIT_SEND_FAILED); /* the parent is gone or canceled us */
    }
    while (n > 0 && (size_t)w >= iov->iov_len) {
      w -= (ssize_t)iov->iov_len;
      iov++, n--;
    }
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + w;
      iov->iov_len -= (size_t)w;
    }
  }
  me.sending = 0;
}

static void send_frame(int kind, const void *body, size_t len) {
  unsigned char hdr[IP__FRAME_HDR_SIZE];
  ip__frame_pack(hdr, kind, me.ser_id, len);
  struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)body, len}};
  send_all(iov, len ? 2 : 1);
}

/* Flushes the gathered bytes as a DATA frame; with `end`, appends the END frame to the same
 * system call, so a small result costs the child one sendmsg. */
static void flush_out(bool end) {
  unsigned char h1[IP__FRAME_HDR_SIZE], h2[IP__FRAME_HDR_SIZE];
  struct iovec iov[3];
  int n = 0;
  if (me.n) {
    ip__frame_pack(h1, IP__FRAME_DATA, me.ser_id, me.n);
    iov[n++] = (struct iovec){h1, sizeof h1};
    iov[n++] = (struct iovec){me.buf, me.n};
  }
  if (end) {
    ip__frame_pack(h2, IP__FRAME_END, me.ser_id, me.total);
    iov[n++] = (struct iovec){h2, sizeof h2};
  }
  if (n) send_all(iov, n);
  me.n = 0;
}

static int out_write(void *ctx, const void *buf, size_t len) {
  if (me.refused) return me.refused;
  if (len > me.max_result - me.total) {
    me.too_big = len > UINT64_MAX - me.total ? UINT64_MAX : me.total + len;
    return me.refused = IP_E2BIG;
  }
  me.total += len;
  if (len >= OUT_DIRECT) {
    if (me.total > (8u << 20)) {
      /* A big result: a deeper socket buffer halves the context switches it costs. */
      int sz = 4 << 20;
      setsockopt(me.sock, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    flush_out(false);
    send_frame(IP__FRAME_DATA, buf, len);
    return 0;
  }
  if (me.n + len > OUT_BUF) flush_out(false);
  memcpy(me.buf + me.n, buf, len);
  me.n += len;
  return 0;
}

static void send_memfd(int fd, size_t len) {
  unsigned char hdr[IP__FRAME_HDR_SIZE];
  ip__frame_pack(hdr, IP__FRAME_MEMFD, me.ser_id, len);
  union {
    struct cmsghdr c;
    char b[CMSG_SPACE(sizeof(int))];
  } u;
  memset(&u, 0, sizeof u);
  struct iovec iov = {hdr, sizeof hdr};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                     .msg_controllen = sizeof u.b};
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  me.sending = 1;
  ssize_t w;
  while ((w = sendmsg(me.sock, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  if (w != (ssize_t)sizeof hdr) _exit(EXIT_SEND_FAILED);
  me.sending = 0;
}

/* Only streams with bytes pending are flushed or purged: fflush and __fpurge write to the
 * FILE (its lock, its pointers), and each such page written costs a copy-on-write fault. */
static void finish_stdio(void) {
  if (me.stdio & IP_STDIO_FLUSH_ALL) fflush(NULL);
  else if (me.stdio & IP_STDIO_FLUSH_STD) {
    if (__fpending(stdout)) fflush(stdout);
    if (__fpending(stderr)) fflush(stderr);
  }
}

/* ---- failures ------------------------------------------------------------------------------- */

/* The stack as text, from the frame that returns to `caller` outwards: the library's own
 * frames (and a sanitizer's interceptor, when there is one) are left out. */
static char *backtrace_text(void *caller) {
  void *all[IP__CRASH_FRAMES_MAX + 8];
  int total = backtrace(all, IP__CRASH_FRAMES_MAX + 8), skip = 0;
  while (skip < total && all[skip] != caller) skip++;
  if (skip == total) skip = 0;
  int n = total - skip;
  if (n > (int)IP__CRASH_FRAMES_MAX) n = IP__CRASH_FRAMES_MAX;
  if (n <= 0) return NULL;
  void **addrs = all + skip;
  /* These are return addresses: the instruction after each call. After a call to a
   * noreturn function (ip_raise is one) that is past the caller's end, where no symbol
   * covers it; one byte back is inside the call. */
  for (int i = 0; i < n; i++) addrs[i] = (char *)addrs[i] - 1;
  return ip__symbolize(addrs, n);
}

/* The call's answer is sent: a forked child exits; a pool worker's thread goes back for the
 * next call (another thread of a worker cannot unwind the worker's, so it ends the worker,
 * which the pool replaces; the call has its answer by then). */
static _Noreturn void call_over(void) {
  finish_stdio();
  if (me.resume && pthread_equal(pthread_self(), me.thread)) siglongjmp(*me.resume, 1);
  _exit(0);
}

static _Noreturn void send_error(int code, int raised_code, const char *kind, const char *msg,
                                 const char *bt) {
  size_t len = ip__error_body_size(kind, msg, bt);
  unsigned char *body = malloc(len);
  if (!body) {
    /* Too little memory even to say why: send the bare code. */
    static unsigned char small[20];
    ip__error_body_pack(small, code, raised_code, NULL, NULL, NULL);
    send_frame(IP__FRAME_ERROR, small, sizeof small);
  } else {
    ip__error_body_pack(body, code, raised_code, kind, msg, bt);
    send_frame(IP__FRAME_ERROR, body, len);
    free(body);
  }
  call_over();
}

static _Noreturn void not_in_child(const char *fn) {
  fprintf(stderr,
          "inparallel: %s() was called outside a task's child process; it can only fail a "
          "call from inside one. Aborting.\n",
          fn);
  abort();
}

void ip_raise_error(int code, int raised_code, const char *kind, const char *message,
                    const char *backtrace) {
  if (!ip_in_child()) not_in_child("ip_raise_error");
  if (code != IP_EENCODE && code != IP_EINVAL && code != IP_E2BIG && code != IP_ENOMEM)
    code = IP_ERAISED;
  if (atomic_exchange(&me.raising, 1))
    for (;;) pause(); /* another thread is failing the call; _exit ends us both */
  if (me.n) me.n = 0;                  /* drop a half-gathered value */
  send_error(code, raised_code, kind ? kind : ip_err_name(code), message ? message : "",
             backtrace);
}

static _Noreturn void raise_v(int code, const char *fmt, va_list ap, void *caller) {
  char *msg = NULL;
  if (!fmt || vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  const char *kind = NULL;
#ifdef HAVE_STRERRORNAME_NP
  if (code > 0) kind = strerrorname_np(code);
#endif
  char *bt = backtrace_text(caller);
  me.failure_mem[0] = msg;
  me.failure_mem[1] = bt;
  ip_raise_error(IP_ERAISED, code, kind ? kind : "ERAISED", msg ? msg : "", bt);
}

__attribute__((noinline)) void ip_vraise(int code, const char *fmt, va_list ap) {
  if (!ip_in_child()) not_in_child("ip_vraise");
  raise_v(code, fmt, ap, __builtin_return_address(0));
}

__attribute__((noinline)) void ip_raise(int code, const char *fmt, ...) {
  if (!ip_in_child()) not_in_child("ip_raise");
  va_list ap;
  va_start(ap, fmt);
  raise_v(code, fmt, ap, __builtin_return_address(0));
}

int ip_encode_error(int code, const char *fmt, ...) {
  if (!ip_in_child() || !me.encoding || !fmt) return code;
  char *why = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&why, fmt, ap) < 0) why = NULL;
  va_end(ap);
  free(me.encode_why);
  me.encode_why = why;
  return code;
}

/* ---- crashes ------------------------------------------------------------------------------- */

static void on_crash(int sig, siginfo_t *si, void *uc) {
  if (!me.sending && me.pid == getpid()) {
    unsigned char frame[IP__FRAME_HDR_SIZE + IP__CRASH_BODY_MAX];
    void *all[IP__CRASH_FRAMES_MAX + 1];
    int n = backtrace(all, IP__CRASH_FRAMES_MAX + 1) - 1; /* warmed up: no dlopen here */
    void **addrs = all + 1;                                 /* without on_crash itself */
    if (n < 0) n = 0;
    int32_t s = sig;
    uint32_t un = (uint32_t)n;
    size_t body = 8 + 8 * (size_t)n;
    unsigned char *p = frame + IP__FRAME_HDR_SIZE;
    memcpy(p, &s, 4);
    memcpy(p + 4, &un, 4);
    for (int i = 0; i < n; i++) {
      uint64_t a = (uint64_t)(uintptr_t)addrs[i];
      memcpy(p + 8 + 8 * i, &a, 8);
    }
    ip__frame_pack(frame, IP__FRAME_CRASH, me.ser_id, body);
    me.sending = 1;
    ssize_t w = write(me.sock, frame, IP__FRAME_HDR_SIZE + body);
    (void)w;
  }
  /* SA_RESETHAND made the action default again: a fault re-runs and kills us; a signal that
   * was sent (kill, abort) is raised once more and does the same. */
  raise(sig);
}

static const int crash_sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

/* What the crash report replaced, for a pool worker whose next task reports its own crashes
 * (a runtime's handlers: Ruby's turns a machine stack overflow into SystemStackError). */
static struct {
  bool armed;
  stack_t ss;
  struct sigaction sa[sizeof crash_sigs / sizeof *crash_sigs];
} before;

void ip__arm_crash_report(void) {
  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
  sigaltstack(&ss, &before.ss); /* so a stack overflow can still report */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_crash;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof crash_sigs / sizeof *crash_sigs; i++)
    sigaction(crash_sigs[i], &sa, &before.sa[i]);
  before.armed = true;
}

/* A worker runs tasks with and without the crash report: the system calls come only when the
 * setting changes from one call to the next. */
static void crash_report(bool on) {
  if (on == before.armed) return;
  if (on) {
    ip__arm_crash_report();
    return;
  }
  for (size_t i = 0; i < sizeof crash_sigs / sizeof *crash_sigs; i++)
    sigaction(crash_sigs[i], &before.sa[i], NULL);
  sigaltstack(&before.ss, NULL);
  before.armed = false;
}

/* What the parent will refuse of a descriptor an inplace hook gave, refused here instead,
 * where the serializer can be named. */
static void check_inplace(const ip_serializer *s, int fd, size_t len) {
  const int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
  int seals = fcntl(fd, F_GET_SEALS);
  struct stat st;
  char msg[300];
  if (seals < 0 || (seals & need) != need) {
    snprintf(msg, sizeof msg, "the %s serializer's inplace hook gave descriptor %d, which is not "
             "sealed against writing, growing and shrinking (F_SEAL_WRITE, F_SEAL_GROW, "
             "F_SEAL_SHRINK)", s->name, fd);
  } else if (fstat(fd, &st) < 0) {
    snprintf(msg, sizeof msg, "the %s serializer's inplace hook gave descriptor %d, which fstat "
             "refuses: %s", s->name, fd, strerror(errno));
  } else if ((uint64_t)st.st_size < len) {
    snprintf(msg, sizeof msg, "the %s serializer's inplace hook gave a descriptor of %lld bytes "
             "for a result of %zu", s->name, (long long)st.st_size, len);
  } else {
    return;
  }
  send_error(IP_EENCODE, 0, NULL, msg, NULL);
}

/* Encodes `value` with the task's serializer and sends it (or the failure to). */
static void send_result(const ip_task *t, void *value) {

  finish_stdio();
  size_t len = 0;
  int memfd = t->ser->inplace ? t->ser->inplace(t->ser, value, &len) : -1;
  if (memfd >= 0) {
    check_inplace(t->ser, memfd, len);
    if (len > me.max_result) {
      char msg[200];
      snprintf(msg, sizeof msg, "the result of child %d is %zu bytes, more than the task's "
               "max_result of %llu bytes", (int)me.pid, len, (unsigned long long)me.max_result);
      send_error(IP_E2BIG, 0, NULL, msg, NULL);
    }
    send_memfd(memfd, len);
    return;
  }
  me.encode_why = NULL;
  me.encoding = true;
  int rc = t->ser->encode(t->ser, value, out_write, NULL);
  me.encoding = false;
  if (me.refused) {
    char msg[200];
    /* Nothing past the limit is encoded, so the size is known only from below. */
    snprintf(msg, sizeof msg, "the result of child %d is at least %llu bytes, more than the "
             "task's max_result of %llu bytes", (int)me.pid, (unsigned long long)me.too_big,
             (unsigned long long)me.max_result);
    me.n = 0;
    send_error(IP_E2BIG, 0, NULL, msg, NULL);
  }
  if (rc != 0) {
    char *msg = NULL;
    me.failure_mem[2] = NULL;
    int l = me.encode_why
                ? asprintf(&msg, "the %s serializer could not encode the result: %s",
                           t->ser->name, me.encode_why)
                : asprintf(&msg, "the %s serializer could not encode the result (it returned %d)",
                           t->ser->name, rc);
    me.n = 0;
    me.failure_mem[2] = l < 0 ? NULL : msg;
    send_error(IP_EENCODE, rc, NULL, l < 0 ? "the result could not be encoded" : msg, NULL);
  }
  flush_out(true);
}

/* ---- start-up ------------------------------------------------------------------------------ */

/* The call must not outlive the parent process. PR_SET_PDEATHSIG would fire when the *thread*
 * that forked exits, so instead the child opens its own file description of a pipe whose
 * only writer is the parent process and asks for SIGKILL on it (F_SETSIG): when the parent
 * dies, the last writer closes, and the kernel delivers the signal, to the child's whole
 * process group, so whatever the call started dies with it. The pipe never carries data, so
 * nothing else can trigger it. */
void ip__arm_lifeline(int lifeline_r, pid_t parent, bool main_thread) {
  bool armed = false;
  if (lifeline_r >= 0) {
    /* Formatted by hand: snprintf here costs every child several copy-on-write faults. */
    char path[32] = "/proc/self/fd/", digits[12];
    int nd = 0;
    for (unsigned v = (unsigned)lifeline_r; v || !nd; v /= 10) digits[nd++] = (char)('0' + v % 10);
    char *p = path + strlen(path);
    while (nd) *p++ = digits[--nd];
    *p = '\0';
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
      pid_t self = getpid();
      armed = fcntl(fd, F_SETOWN, getpgrp() == self ? -self : self) == 0 &&
              fcntl(fd, F_SETSIG, SIGKILL) == 0 &&
              fcntl(fd, F_SETFL, O_RDONLY | O_NONBLOCK | O_ASYNC) == 0;
      if (!armed) close(fd);
    }
  }
  /* Without /proc, fall back on PDEATHSIG where it means "the process": the main thread. */
  if (!armed && main_thread) prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(EXIT_SEND_FAILED); /* the parent died before we armed */
}

/* A call starts: what its answer is sent with, and nothing of the last call's. */
static void begin_call(int sock, uint32_t ser_id, int stdio, uint64_t max_result) {
  me.sock = sock;
  me.ser_id = ser_id;
  me.stdio = stdio;
  me.max_result = max_result;
  me.total = 0;
  me.refused = 0;
  me.too_big = 0;
  me.n = 0;
  me.sending = 0;
  atomic_store_explicit(&me.raising, 0, memory_order_relaxed);
}

void ip__child_main(const ip_task *t, int sock, int lifeline_r, pid_t parent, bool main_thread,
                    void *arg, const void *enc, size_t enc_len) {
  me.pid = getpid();
  begin_call(sock, t->ser_id, t->stdio, t->max_result);

  /* A process group of its own: everything the call starts (a shell, its pipeline, their
   * children) is in it, so a timeout, a cancel or the parent's death ends all of it with one
   * kill(-pgid). */
  setpgid(0, 0);
  if (t->pdeathsig) ip__arm_lifeline(lifeline_r, parent, main_thread);
  if (lifeline_r >= 0) close(lifeline_r);
  if (t->stdio & IP_STDIO_PURGE_INHERITED) {
    if (__fpending(stdout)) __fpurge(stdout);
    if (__fpending(stderr)) __fpurge(stderr);
  }
  for (int i = 0; i < t->n_rlimits; i++) {
    if (setrlimit(t->rlimits[i].resource, &t->rlimits[i].lim) < 0) {
      char msg[160];
      snprintf(msg, sizeof msg, "setrlimit(%d, %llu, %llu) failed in the child: %s",
               t->rlimits[i].resource, (unsigned long long)t->rlimits[i].lim.rlim_cur,
               (unsigned long long)t->rlimits[i].lim.rlim_max, strerror(errno));
      send_error(IP_EINVAL, errno, "EINVAL", msg, NULL);
    }
  }
  if (t->crash_report) ip__arm_crash_report();

  if (enc) { /* after the crash handlers: a decoder's crash is reported like fn's */
    int rc = t->arg_ser->decode(t->arg_ser, enc, enc_len, &arg);
    if (rc != 0) {
      char msg[200];
      snprintf(msg, sizeof msg, "the %s serializer could not decode the %zu-byte argument in "
               "child %d (%s)", t->arg_ser->name, enc_len, (int)getpid(), ip_err_name(rc));
      send_error(IP_EDECODE, rc, ip_err_name(IP_EDECODE), msg, NULL);
    }
  }
  void *value = t->fn(arg);
  send_result(t, value);
  _exit(0);
}

/* ---- pool workers ------------------------------------------------------------------------ */

void ip__worker_call(const ip_task *t, int sock, const struct ip__call_spec *spec, void *arg) {
  static sigset_t mask; /* the worker's, restored after a failure unwound a signal handler */
  static bool started;
  sigjmp_buf resume;
  if (!started) { /* a worker runs only here, and never forks into another worker */
    started = true;
    me.pid = getpid();
    sigprocmask(SIG_SETMASK, NULL, &mask);
  }
  begin_call(sock, t->ser_id, (int)spec->stdio, spec->max_result);
  crash_report(t->crash_report);
  me.thread = pthread_self();
  /* No mask saved here: that is a system call per call. A failure raised inside a signal
   * handler is rare, and the mask is put back below when one comes back this way. */
  if (sigsetjmp(resume, 0) == 0) {
    me.resume = &resume;
    send_result(t, t->fn(arg));
    finish_stdio();
  } else {
    sigprocmask(SIG_SETMASK, &mask, NULL);
  }
  me.resume = NULL;
  for (size_t i = 0; i < sizeof me.failure_mem / sizeof *me.failure_mem; i++) {
    free(me.failure_mem[i]);
    me.failure_mem[i] = NULL;
  }
  free(me.encode_why);
  me.encode_why = NULL;
  ip__bytes_call_end();
}

