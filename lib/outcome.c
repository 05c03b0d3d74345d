/* How a call ended: turning what the supervisor saw (frames, wait status, rusage) into the
 * future's status and ip_error, and the completion that wakes everyone waiting. */
#include "internal.h"
#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static void set_static(ip_future *f, int code, const char *message) {
  f->status = code;
  f->err.code = code;
  f->err.kind = ip_err_name(code);
  f->err.message = message ? message : ip_strerror(code);
  f->err.backtrace = NULL;
}

/* Copies the three strings into one allocation owned by the future. Lengths may be -1 for
 * NUL-terminated text. Falls back on static text when memory is short. */
static void set_error(ip_future *f, int code, const char *kind, int kind_len, const char *msg,
                      int msg_len, const char *bt, int bt_len) {
  size_t kl = !kind ? 0 : kind_len < 0 ? strlen(kind) : (size_t)kind_len;
  size_t ml = !msg ? 0 : msg_len < 0 ? strlen(msg) : (size_t)msg_len;
  size_t bl = !bt ? 0 : bt_len < 0 ? strlen(bt) : (size_t)bt_len;
  free(f->err_strings);
  f->err_strings = malloc(kl + ml + bl + 3);
  set_static(f, code, NULL);
  if (!f->err_strings) return;
  char *p = f->err_strings;
  if (kl) {
    f->err.kind = memcpy(p, kind, kl);
    p[kl] = '\0';
    p += kl + 1;
  }
  f->err.message = memcpy(p, msg ? msg : "", ml);
  p[ml] = '\0';
  p += ml + 1;
  if (bl) {
    f->err.backtrace = memcpy(p, bt, bl);
    p[bl] = '\0';
  }
}

static const char *signame(int sig) {
#ifdef HAVE_SIGABBREV_NP
  const char *s = sigabbrev_np(sig);
  if (s) return s;
#endif
  return "?";
}

/* The addresses a crashing child sent, symbolized here: the parent has the same mappings
 * (it is the image the child was forked from). */
static char *crash_backtrace(const unsigned char *body, size_t len, int *sig) {
  int32_t s;
  uint32_t n;
  memcpy(&s, body, 4);
  memcpy(&n, body + 4, 4);
  *sig = s;
  if (n == 0 || n > IP__CRASH_FRAMES_MAX || len != 8 + 8 * (size_t)n) return NULL;
  void *addrs[IP__CRASH_FRAMES_MAX];
  for (uint32_t i = 0; i < n; i++) {
    uint64_t a;
    memcpy(&a, body + 8 + 8 * i, 8);
    /* Frames 0 and 1 are the signal trampoline and the interrupted instruction; the rest are
     * return addresses, one byte back of which lies inside the calling function. */
    addrs[i] = (void *)(uintptr_t)(i >= 2 ? a - 1 : a);
  }
  return ip__symbolize(addrs, (int)n);
}

void ip__outcome_symbolize(ip_future *f) {
  struct ip__rx *rx = &f->rx;
  int crash_sig = 0;
  if (rx->aux && rx->cur.kind == IP__FRAME_CRASH && !rx->in_body && !rx->crash_text)
    rx->crash_text = crash_backtrace(rx->aux, rx->aux_len, &crash_sig);
}

void ip__outcome(ip_future *f) {
  struct ip__rx *rx = &f->rx;
  char msg[512], ru[96];
  int ws = f->wstatus;
  bool ok = !f->cancel_req && !rx->proto_code &&
            (rx->final_kind == IP__FRAME_END || rx->final_kind == IP__FRAME_MEMFD);
  if (!ok) ip__format_rusage(ru, sizeof ru, &f->rusage); /* only failures quote it */
  f->err.pid = f->pid;
  f->err.rusage = f->rusage;
  f->err.exit_status = ws != -1 && WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
  f->err.signal = ws != -1 && WIFSIGNALED(ws) ? WTERMSIG(ws) : 0;
  f->err.core_dumped = ws != -1 && WIFSIGNALED(ws) && WCOREDUMP(ws);

  if (f->cancel_req) {
    snprintf(msg, sizeof msg, "call canceled; child %d was killed (%s)", (int)f->pid, ru);
    set_error(f, IP_ECANCELED, NULL, 0, msg, -1, NULL, 0);
  } else if (rx->proto_code) {
    static const char *const what[] = {"malformed frame", "result too large", "out of memory",
                                       "wrong serializer"};
    int k = rx->proto_code == IP_E2BIG ? 1 : rx->proto_code == IP_ENOMEM ? 2
            : rx->proto_code == IP_EDECODE ? 3 : 0;
    int n = snprintf(msg, sizeof msg, "%s from child %d: %s", what[k], (int)f->pid, rx->proto_msg);
    if (rx->proto_code == IP_E2BIG && n > 0 && (size_t)n < sizeof msg)
      snprintf(msg + n, sizeof msg - (size_t)n, " (%s%llu bytes; the task's max_result is %llu)",
               rx->cur.kind == IP__FRAME_MEMFD ? "" : "at least ", (unsigned long long)rx->too_big,
               (unsigned long long)f->max_result);
    set_error(f, rx->proto_code, NULL, 0, msg, -1, NULL, 0);
  } else if (rx->final_kind == IP__FRAME_END || rx->final_kind == IP__FRAME_MEMFD) {
    f->status = 0;
  } else if (rx->final_kind == IP__FRAME_ERROR) {
    struct ip__error_body b;
    const char *why = ip__error_body_unpack(rx->aux, rx->aux_len, &b);
    if (why) {
      snprintf(msg, sizeof msg, "malformed frame from child %d: %s", (int)f->pid, why);
      set_error(f, IP_EPROTO, NULL, 0, msg, -1, NULL, 0);
    } else {
      set_error(f, b.code, b.kind, (int)b.kind_len, b.msg, (int)b.msg_len, b.bt, (int)b.bt_len);
      f->err.raised_code = b.raised_code;
    }
  } else if (f->timed_out) {
    snprintf(msg, sizeof msg, "child %d was killed after running longer than the task's timeout "
             "of %d ms (%s)", (int)f->pid, f->timeout_ms, ru);
    set_error(f, IP_ETIMEDOUT, NULL, 0, msg, -1, NULL, 0);
  } else if (ws != -1 && WIFSIGNALED(ws)) {
    int sig = WTERMSIG(ws);
    char *bt = rx->crash_text;
    rx->crash_text = NULL;
    char kind[16];
    snprintf(kind, sizeof kind, "SIG%s", signame(sig));
    snprintf(msg, sizeof msg, "child %d was killed by signal %d (%s: %s)%s (%s)", (int)f->pid, sig,
             kind, strsignal(sig), WCOREDUMP(ws) ? ", core dumped" : "", ru);
    set_error(f, IP_ESIGNALED, kind, -1, msg, -1, bt, -1);
    free(bt);
  } else if (ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0 &&
             (rx->len || rx->hdr_have || rx->in_body)) {
    snprintf(msg, sizeof msg, "child %d exited with status 0 after sending an incomplete result "
             "(%zu bytes) (%s)", (int)f->pid, rx->len, ru);
    set_error(f, IP_EPROTO, NULL, 0, msg, -1, NULL, 0);
  } else if (ws != -1) {
    snprintf(msg, sizeof msg, "child %d exited with status %d without sending a result (%s)",
             (int)f->pid, WEXITSTATUS(ws), ru);
    set_error(f, IP_EEXITED, NULL, 0, msg, -1, NULL, 0);
  } else {
    snprintf(msg, sizeof msg, "child %d ended without a result and was reaped by someone else "
             "(a waitpid(-1) in the host?), so its exit status is unknown", (int)f->pid);
    set_error(f, IP_EEXITED, NULL, 0, msg, -1, NULL, 0);
  }
  if (f->status != 0 && f->err.code != IP_EDECODE) {
    /* The value's bytes are of no use to anyone now. */
    ip__outcome_free_payload(f);
  }
  free(rx->aux);
  rx->aux = NULL;
  rx->aux_len = 0;
  free(rx->crash_text);
  rx->crash_text = NULL;
}

void ip__outcome_free_payload(ip_future *f) {
  struct ip__rx *rx = &f->rx;
  if (rx->mapped) munmap(rx->payload, rx->len);
  else free(rx->payload);
  rx->payload = NULL;
  rx->len = rx->cap = 0;
  rx->mapped = false;
}

void ip__outcome_free(ip_future *f) {
  ip__outcome_free_payload(f);
  free(f->rx.aux);
  f->rx.aux = NULL;
  ip__close(&f->rx.memfd);
  free(f->err_strings);
  f->err_strings = NULL;
}

void ip__complete_locked(ip_future *f) {
  ip__unlink_locked(f);
  f->done_seq = ++ip__g.seq;
  if (f->pid > 0 && !f->pool) ip__remember_pid_locked(f->pid); /* a worker is not our child */
  atomic_store_explicit(&f->state, IP__DONE, memory_order_release);
  ip__list_enqueue_locked(f);
  pthread_cond_broadcast(&ip__g.cond);
  ip__wake_waiters_locked();
}

void ip__fail_locked(ip_future *f, int code, const char *message) {
  set_error(f, code, NULL, 0, message, -1, NULL, 0);
  f->err.pid = f->pid;
  ip__complete_locked(f);
}

void ip__fail_as_locked(ip_future *f, const ip_error *e) {
  set_error(f, e->code, e->kind, -1, e->message, -1, e->backtrace, -1);
  f->err.raised_code = e->raised_code;
  f->err.exit_status = e->exit_status;
  f->err.signal = e->signal;
  f->err.core_dumped = e->core_dumped;
  f->err.rusage = e->rusage;
  f->err.pid = e->pid;
  ip__complete_locked(f);
}

void ip__fail_early(ip_future *f, int code, const char *message) {
  pthread_mutex_lock(&ip__g.lock);
  set_static(f, code, message);
  f->err.pid = f->pid;
  ip__complete_locked(f);
  pthread_mutex_unlock(&ip__g.lock);
}
