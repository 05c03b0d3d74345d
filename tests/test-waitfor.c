/* ip_waitfor_next: the rules the header gives for it, exactly, and ip_list. */
#define _GNU_SOURCE
#include "helpers.h"
#include <pthread.h>
#include <signal.h>
#include <time.h>

/* A guard against hangs only (a wake-up the library forgets would block a test forever);
 * no test depends on how long anything takes. */
TestSuite(waitfor, .timeout = 120);
TestSuite(list, .timeout = 120);

/* ---- helpers --------------------------------------------------------------------------------- */

static void *return_int_as_text(void *arg) {
  char buf[32];
  snprintf(buf, sizeof buf, "%d", *(int *)arg);
  return bytes_of(buf);
}


/* One step that must succeed; returns 'N' (ask), 'F' (future) or '.' (end). step() may block
 * until a completion; now() must answer without waiting (timeout 0), so a step that wrongly
 * waits fails the test instead of hanging it. */
static char step_in(ip_waitfor *w, ip_list *l, int cf, int timeout_ms, ip_future **out) {
  int rc = ip_waitfor_step(w, l, cf, timeout_ms, out);
  switch (rc) {
  case IP_WAITFOR_END: return '.';
  case IP_WAITFOR_FUTURE: cr_assert_not_null(*out, "a future step without a future"); return 'F';
  case IP_WAITFOR_ASK: cr_assert_null(*out, "an ask with a future"); return 'N';
  default: cr_assert_fail("ip_waitfor_step returned %d (%s)", rc, ip_err_name(rc)); return '?';
  }
}
static char step(ip_waitfor *w, ip_list *l, int cf, ip_future **out) {
  return step_in(w, l, cf, -1, out);
}
static char now(ip_waitfor *w, ip_list *l, int cf, ip_future **out) {
  return step_in(w, l, cf, 0, out);
}

/* ---- the rules of ip_waitfor_next, case by case ---------------------------------------------- */

Test(waitfor, empty_list_with_factor_asks_exactly_once_then_ends) {
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f = (ip_future *)1;
  cr_assert_eq(ip_waitfor_next(&w, l, 3, -1, &f), 1);
  cr_assert_null(f, "the ask hands back nothing");
  f = (ip_future *)1;
  cr_assert_eq(ip_waitfor_next(&w, l, 3, -1, &f), 0, "declined on an empty list: the end");
  cr_assert_null(f);
  ip_list_free(l);
}

Test(waitfor, empty_list_without_factor_ends_at_once) {
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f = (ip_future *)1;
  cr_assert_eq(ip_waitfor_next(&w, l, 0, -1, &f), 0);
  cr_assert_null(f);
  ip_list_free(l);
}

Test(waitfor, factor_one_over_twelve_tasks_started_one_per_ask_asks_thirteen_times) {
  int base = warm_baseline();
  ip_task *t = ip_task_new(return_int_as_text, NULL);
  ip_list *l = ip_list_new();
  int args[12], started = 0, asks = 0, got = 0;
  bool seen[12] = {false};
  char seq[64] = "";
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  char c;
  while ((c = step(&w, l, 1, &f)) != '.') {
    cr_assert_lt(strlen(seq), sizeof seq - 2);
    strncat(seq, &c, 1);
    if (c == 'N') {
      asks++;
      if (started < 12) {
        args[started] = started;
        cr_assert_eq(ip_list_push(l, ip_call(t, &args[started])), 0);
        started++;
      }
    } else {
      int i = *(int *)ip_future_arg(f);
      char want[8];
      snprintf(want, sizeof want, "%d", i);
      cr_assert_str_eq(str_of(f), want);
      cr_assert_not(seen[i], "future %d handed back twice", i);
      seen[i] = true;
      got++;
      ip_future_free(f);
    }
  }
  cr_assert_eq(asks, 13, "sequence %s", seq);
  cr_assert_eq(got, 12, "sequence %s", seq);
  cr_assert_str_eq(seq, "NFNFNFNFNFNFNFNFNFNFNFNFN");
  cr_assert_eq(ip_list_len(l), 0);
  ip_list_free(l);
  ip_task_free(t);
  cr_assert(no_children());
  cr_assert_eq(count_fds(), base);
}

Test(waitfor, five_added_on_one_ask_with_factor_three_gives_N_F_F_F_F_F_N) {
  ip_task *t = ip_task_new(return_int_as_text, NULL);
  ip_list *l = ip_list_new();
  int args[5];
  ip_future *fs[5];
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  char seq[16] = "";
  char c = now(&w, l, 3, &f);
  strncat(seq, &c, 1);
  cr_assert_eq(c, 'N');
  for (int i = 0; i < 5; i++) {
    args[i] = i;
    fs[i] = ip_call(t, &args[i]);
    cr_assert_eq(ip_list_push(l, fs[i]), 0);
  }
  for (int i = 0; i < 5; i++) cr_assert_eq(ip_future_wait(fs[i], -1), 0);
  while ((c = now(&w, l, 3, &f)) != '.') {
    cr_assert_lt(strlen(seq), sizeof seq - 2, "sequence %s", seq);
    strncat(seq, &c, 1);
    if (f) ip_future_free(f); /* on N: add nothing */
  }
  cr_assert_str_eq(seq, "NFFFFFN");
  ip_list_free(l);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(waitfor, factor_sixteen_fills_sixteen_slots_before_handing_back_anything) {
  int base = warm_baseline();
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  for (int i = 0; i < 16; i++) {
    cr_assert_eq(now(&w, l, 16, &f), 'N', "ask %d", i + 1);
    cr_assert_eq(ip_list_push(l, ip_call(t, &g)), 0);
  }
  /* Full and nothing done: it must wait now (a poll says so without blocking). */
  cr_assert_eq(ip_waitfor_next(&w, l, 16, 0, &f), IP_ETIMEDOUT);
  cr_assert_eq(ip_list_len(l), 16);
  gate_release(&g, 16);
  int got = 0;
  char c;
  while ((c = step(&w, l, 16, &f)) != '.') {
    if (c == 'F') {
      cr_assert_str_eq(str_of(f), "released");
      ip_future_free(f);
      got++;
    }
  }
  cr_assert_eq(got, 16);
  ip_list_free(l);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
  cr_assert_eq(count_fds(), base);
}

Test(waitfor, after_a_declined_ask_it_waits_for_a_completion_before_asking_again) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  cr_assert_eq(now(&w, l, 3, &f), 'N');
  ip_future *f1 = ip_call(t, &g);
  cr_assert_eq(ip_list_push(l, f1), 0);
  cr_assert_eq(now(&w, l, 3, &f), 'N', "grew below the factor: asks again at once");
  /* Decline: add nothing. Now it must not ask, only wait. */
  cr_assert_eq(ip_waitfor_next(&w, l, 3, 0, &f), IP_ETIMEDOUT);
  cr_assert_eq(ip_waitfor_next(&w, l, 3, 0, &f), IP_ETIMEDOUT, "still no ask after a timeout");
  gate_release(&g, 1);
  cr_assert_eq(ip_future_wait(f1, -1), 0);
  cr_assert_eq(now(&w, l, 3, &f), 'F', "a completion is handed back without waiting");
  cr_assert_eq(f, f1);
  ip_future_free(f);
  cr_assert_eq(now(&w, l, 3, &f), 'N', "a completion re-enables asking");
  cr_assert_eq(now(&w, l, 3, &f), '.');
  ip_list_free(l);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

Test(waitfor, declined_then_growing_again_after_a_completion_keeps_filling) {
  /* After a completion re-enabled asking, adding one per ask fills up to the factor again. */
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  cr_assert_eq(now(&w, l, 2, &f), 'N');
  cr_assert_eq(ip_list_push(l, ip_call(t, &g)), 0);
  cr_assert_eq(now(&w, l, 2, &f), 'N');
  cr_assert_eq(ip_list_push(l, ip_call(t, &g)), 0);
  cr_assert_eq(ip_waitfor_next(&w, l, 2, 0, &f), IP_ETIMEDOUT, "full: waits");
  gate_release(&g, 1);
  cr_assert_eq(step(&w, l, 2, &f), 'F');
  ip_future_free(f);
  cr_assert_eq(now(&w, l, 2, &f), 'N');
  cr_assert_eq(ip_list_push(l, ip_call(t, &g)), 0);
  cr_assert_eq(ip_waitfor_next(&w, l, 2, 0, &f), IP_ETIMEDOUT, "full again: waits");
  gate_release(&g, 2);
  int got = 0;
  char c;
  while ((c = step(&w, l, 2, &f)) != '.')
    if (c == 'F') got++, ip_future_free(f);
  cr_assert_eq(got, 2);
  ip_list_free(l);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

/* ---- completion order ------------------------------------------------------------------------ */

Test(waitfor, futures_come_back_in_completion_order_not_list_order) {
  enum { N = 4 };
  static const int order[N] = {2, 0, 3, 1};
  struct gate g[N];
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_list *l = ip_list_new();
  ip_future *fs[N];
  for (int i = 0; i < N; i++) {
    gate_open(&g[i]);
    fs[i] = ip_call(t, &g[i]);
    cr_assert_eq(ip_list_push(l, fs[i]), 0);
  }
  for (int k = 0; k < N; k++) { /* complete them one by one in the chosen order */
    gate_release(&g[order[k]], 1);
    cr_assert_eq(ip_future_wait(fs[order[k]], -1), 0);
  }
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  for (int k = 0; k < N; k++) {
    cr_assert_eq(now(&w, l, 0, &f), 'F');
    cr_assert_eq(f, fs[order[k]], "position %d: expected future %d", k, order[k]);
    ip_future_free(f);
  }
  cr_assert_eq(now(&w, l, 0, &f), '.');
  ip_list_free(l);
  ip_task_free(t);
  for (int i = 0; i < N; i++) gate_close(&g[i]);
  cr_assert(no_children());
}

Test(waitfor, a_blocking_step_wakes_for_the_one_that_completed) {
  enum { N = 3 };
  static const int order[N] = {1, 2, 0};
  struct gate g[N];
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_list *l = ip_list_new();
  ip_future *fs[N];
  for (int i = 0; i < N; i++) {
    gate_open(&g[i]);
    fs[i] = ip_call(t, &g[i]);
    cr_assert_eq(ip_list_push(l, fs[i]), 0);
  }
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  for (int k = 0; k < N; k++) {
    cr_assert_eq(ip_waitfor_next(&w, l, 0, 0, &f), IP_ETIMEDOUT, "nothing released yet");
    gate_release(&g[order[k]], 1);
    cr_assert_eq(step(&w, l, 0, &f), 'F');
    cr_assert_eq(f, fs[order[k]]);
    cr_assert_eq(ip_list_len(l), (size_t)(N - k - 1));
    ip_future_free(f);
  }
  cr_assert_eq(now(&w, l, 0, &f), '.');
  ip_list_free(l);
  ip_task_free(t);
  for (int i = 0; i < N; i++) gate_close(&g[i]);
  cr_assert(no_children());
}

Test(waitfor, already_failed_futures_are_handed_back_in_creation_order) {
  int args[3];
  ip_future *fs[3];
  ip_list *l = ip_list_new();
  for (int i = 2; i >= 0; i--) { /* pushed in reverse, completed (failed) in 2, 1, 0 order */
    fs[i] = ip_call(NULL, &args[i]);
    cr_assert_eq(ip_list_push(l, fs[i]), 0);
  }
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  for (int i = 2; i >= 0; i--) {
    cr_assert_eq(now(&w, l, 0, &f), 'F');
    cr_assert_eq(f, fs[i]);
    cr_assert_eq(ip_future_status(f), IP_EINVAL);
    ip_future_free(f);
  }
  cr_assert_eq(now(&w, l, 0, &f), '.');
  ip_list_free(l);
}

Test(waitfor, a_future_removed_between_steps_is_not_handed_back) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_list *l = ip_list_new();
  ip_future *f0 = ip_call(t, &g), *f1 = ip_call(t, &g);
  ip_list_push(l, f0);
  ip_list_push(l, f1);
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  cr_assert_eq(ip_waitfor_next(&w, l, 0, 0, &f), IP_ETIMEDOUT);
  cr_assert_eq(ip_list_remove(l, 0), f0);
  gate_release(&g, 2);
  cr_assert_eq(ip_future_wait(f0, -1), 0);
  cr_assert_eq(ip_future_wait(f1, -1), 0);
  cr_assert_eq(now(&w, l, 0, &f), 'F');
  cr_assert_eq(f, f1);
  ip_future_free(f);
  cr_assert_eq(now(&w, l, 0, &f), '.');
  ip_future_free(f0);
  ip_list_free(l);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

/* ---- arguments, timeouts, signals ------------------------------------------------------------ */

Test(waitfor, negative_factor_is_einval) {
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  cr_assert_eq(ip_waitfor_next(&w, l, -1, -1, &f), IP_EINVAL);
  cr_assert_eq(ip_waitfor_next(&w, l, -16, 0, &f), IP_EINVAL);
  ip_list_free(l);
}

Test(waitfor, null_arguments_are_einval) {
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  cr_assert_eq(ip_waitfor_next(NULL, l, 0, -1, &f), IP_EINVAL);
  cr_assert_eq(ip_waitfor_next(&w, NULL, 0, -1, &f), IP_EINVAL);
  cr_assert_eq(ip_waitfor_next(&w, l, 0, -1, NULL), IP_EINVAL);
  cr_assert_eq(ip_waitfor_next(&w, l, 3, -1, NULL), IP_EINVAL);
  ip_list_free(l);
}

Test(waitfor, timeout_returns_etimedout_and_calling_again_resumes) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_list *l = ip_list_new();
  ip_future *f1 = ip_call(t, &g);
  ip_list_push(l, f1);
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f = (ip_future *)1;
  cr_assert_eq(ip_waitfor_next(&w, l, 0, 20, &f), IP_ETIMEDOUT);
  cr_assert_eq(ip_list_len(l), 1, "a timeout takes nothing out of the list");
  cr_assert_eq(ip_waitfor_next(&w, l, 0, 0, &f), IP_ETIMEDOUT);
  gate_release(&g, 1);
  cr_assert_eq(step(&w, l, 0, &f), 'F');
  cr_assert_eq(f, f1);
  ip_future_free(f);
  cr_assert_eq(now(&w, l, 0, &f), '.');
  ip_list_free(l);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

static volatile sig_atomic_t n_signals;
static void on_usr1(int sig) { n_signals++; }

static void install_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1; /* no SA_RESTART */
  sigemptyset(&sa.sa_mask);
  cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
}

/* A periodic timer aimed at this thread: it keeps interrupting until the wait notices, so
 * nothing depends on when the wait starts. */
static timer_t start_signal_timer(void) {
  install_handler();
  struct sigevent sev;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = SIGUSR1;
  sev._sigev_un._tid = gettid();
  timer_t tm;
  cr_assert_eq(timer_create(CLOCK_MONOTONIC, &sev, &tm), 0);
  struct itimerspec its = {{0, 5000000}, {0, 5000000}};
  cr_assert_eq(timer_settime(tm, 0, &its, NULL), 0);
  return tm;
}

Test(waitfor, eintr_when_a_signal_handler_runs_during_the_wait_then_resumes) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_list *l = ip_list_new();
  ip_future *f1 = ip_call(t, &g), *f2 = ip_call(t, &g);
  ip_list_push(l, f1);
  ip_list_push(l, f2);
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  n_signals = 0;
  timer_t tm = start_signal_timer();
  /* Signals arrive every 5 ms until the wait returns; the long timeout only turns a library
   * that ignores them into a failure (IP_ETIMEDOUT) instead of a hang. */
  int rc = ip_waitfor_next(&w, l, 0, 60000, &f);
  timer_delete(tm);
  cr_assert_eq(rc, IP_EINTR, "got %d (%s)", rc, ip_err_name(rc));
  cr_assert_gt(n_signals, 0);
  cr_assert_eq(ip_list_len(l), 2);
  gate_release(&g, 2);
  int got = 0;
  char c;
  while ((c = step(&w, l, 0, &f)) != '.') {
    cr_assert_eq(c, 'F');
    ip_future_free(f);
    got++;
  }
  cr_assert_eq(got, 2);
  ip_list_free(l);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

/* The same from another thread: it keeps signalling the waiting thread with pthread_kill until
 * that thread says its wait returned, so the first signal may come early without harm. */
struct pester {
  pthread_t target;
  volatile int stop;
  int pipe_fd[2]; /* written when stop is set, so the pester never needs to sleep blindly */
};
static void *pester_thread(void *p) {
  struct pester *ps = p;
  while (!__atomic_load_n(&ps->stop, __ATOMIC_ACQUIRE)) {
    pthread_kill(ps->target, SIGUSR1);
    /* Pace the signals on a kernel timeout on the pipe: it returns at once when stop is set. */
    struct timespec ts = {0, 2000000};
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(ps->pipe_fd[0], &rd);
    pselect(ps->pipe_fd[0] + 1, &rd, NULL, NULL, &ts, NULL);
  }
  return NULL;
}

Test(waitfor, eintr_with_a_factor_from_a_signal_sent_by_another_thread) {
  struct gate g;
  gate_open(&g);
  install_handler();
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  cr_assert_eq(now(&w, l, 1, &f), 'N');
  ip_list_push(l, ip_call(t, &g));
  struct pester ps = {.target = pthread_self()};
  cr_assert_eq(pipe(ps.pipe_fd), 0);
  pthread_t th;
  n_signals = 0;
  cr_assert_eq(pthread_create(&th, NULL, pester_thread, &ps), 0);
  int rc = ip_waitfor_next(&w, l, 1, 60000, &f); /* see above: a hang guard only */
  __atomic_store_n(&ps.stop, 1, __ATOMIC_RELEASE);
  cr_assert_eq(write(ps.pipe_fd[1], "s", 1), 1);
  pthread_join(th, NULL);
  close(ps.pipe_fd[0]);
  close(ps.pipe_fd[1]);
  cr_assert_eq(rc, IP_EINTR, "got %d (%s)", rc, ip_err_name(rc));
  cr_assert_eq(ip_list_len(l), 1);
  gate_release(&g, 1);
  cr_assert_eq(step(&w, l, 1, &f), 'F', "resumes where it was");
  ip_future_free(f);
  cr_assert_eq(now(&w, l, 1, &f), 'N');
  cr_assert_eq(now(&w, l, 1, &f), '.');
  ip_list_free(l);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

/* ---- ip_list --------------------------------------------------------------------------------- */

Test(list, push_at_remove_keep_order) {
  int args[4];
  ip_future *fs[4];
  ip_list *l = ip_list_new();
  cr_assert_not_null(l);
  cr_assert_eq(ip_list_len(l), 0);
  for (int i = 0; i < 4; i++) {
    fs[i] = ip_call(NULL, &args[i]); /* already failed: no child needed */
    cr_assert_eq(ip_list_push(l, fs[i]), 0);
    cr_assert_eq(ip_list_len(l), (size_t)i + 1);
  }
  for (int i = 0; i < 4; i++) cr_assert_eq(ip_list_at(l, i), fs[i]);
  cr_assert_null(ip_list_at(l, 4));
  cr_assert_null(ip_list_at(l, (size_t)-1));

  cr_assert_eq(ip_list_remove(l, 1), fs[1]);
  cr_assert_eq(ip_list_len(l), 3);
  cr_assert_eq(ip_list_at(l, 0), fs[0]);
  cr_assert_eq(ip_list_at(l, 1), fs[2]);
  cr_assert_eq(ip_list_at(l, 2), fs[3]);
  cr_assert_null(ip_list_remove(l, 3));
  cr_assert_eq(ip_list_len(l), 3);
  cr_assert_eq(ip_list_remove(l, 2), fs[3], "removing the last");
  cr_assert_eq(ip_list_remove(l, 0), fs[0], "removing the first");
  cr_assert_eq(ip_list_len(l), 1);
  cr_assert_eq(ip_list_at(l, 0), fs[2]);
  cr_assert_eq(ip_list_remove(l, 0), fs[2]);
  cr_assert_eq(ip_list_len(l), 0);
  cr_assert_null(ip_list_remove(l, 0));
  cr_assert_null(ip_list_at(l, 0));
  ip_list_free(l);
  for (int i = 0; i < 4; i++) ip_future_free(fs[i]); /* the list never owned them */
}

Test(list, grows_past_its_first_allocation_in_order) {
  enum { N = 100 };
  int args[N];
  ip_future *fs[N];
  ip_list *l = ip_list_new();
  for (int i = 0; i < N; i++) {
    fs[i] = ip_call(NULL, &args[i]);
    cr_assert_eq(ip_list_push(l, fs[i]), 0);
  }
  cr_assert_eq(ip_list_len(l), N);
  for (int i = 0; i < N; i++) cr_assert_eq(ip_list_at(l, i), fs[i]);
  ip_list_free(l);
  for (int i = 0; i < N; i++) ip_future_free(fs[i]);
}

/* A future is in one list at a time: it is handed back once, by the list it is in. Pushing
 * it into another list moves it (a waitfor loop given up half way leaves its list behind). */
Test(list, a_future_is_in_one_list_at_a_time) {
  ip_future *f = ip_call(NULL, NULL), *g = ip_call(NULL, NULL);
  ip_list *l = ip_list_new(), *m = ip_list_new();
  cr_assert_eq(ip_list_push(l, f), 0);
  cr_assert_eq(ip_list_push(l, g), 0);
  cr_assert_eq(ip_list_push(l, f), IP_EALREADY);
  cr_assert_eq(ip_list_len(l), 2);
  cr_assert_eq(ip_list_push(m, f), 0);
  cr_assert_eq(ip_list_len(l), 1, "f moved out of l");
  cr_assert_eq(ip_list_at(l, 0), g);
  cr_assert_eq(ip_list_len(m), 1);
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *out;
  cr_assert_eq(ip_waitfor_next(&w, l, 0, -1, &out), 1);
  cr_assert_eq(out, g);
  cr_assert_eq(ip_waitfor_next(&w, l, 0, -1, &out), 0, "f is handed back by m only");
  ip_waitfor w2 = IP_WAITFOR_INIT;
  cr_assert_eq(ip_waitfor_next(&w2, m, 0, -1, &out), 1);
  cr_assert_eq(out, f);
  cr_assert_eq(ip_list_push(l, f), 0, "out of every list, it may go into any");
  ip_list_free(l);
  cr_assert_eq(ip_list_push(m, f), 0, "a freed list lets go of its futures");
  ip_list_free(m);
  ip_future_free(f);
  ip_future_free(g);
}

/* ip_waitfor_next is the same loop with an ask as 1 and *out = NULL, as code written against
 * it expects. */
Test(waitfor, next_is_step_with_an_ask_as_one_and_no_future) {
  ip_task *t = ip_task_new(return_int_as_text, NULL);
  static int seven = 7;
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f = (ip_future *)&w; /* anything but NULL */
  cr_assert_eq(ip_waitfor_next(&w, l, 2, -1, &f), 1);
  cr_assert_null(f, "an ask hands back no future");
  cr_assert_eq(ip_list_push(l, ip_call(t, &seven)), 0);
  int rc;
  while ((rc = ip_waitfor_next(&w, l, 2, -1, &f)) == 1 && !f) {
  }
  cr_assert_eq(rc, 1);
  cr_assert_not_null(f);
  cr_assert_str_eq(str_of(f), "7");
  ip_future_free(f);
  cr_assert_eq(ip_waitfor_next(&w, l, 2, -1, &f), 1, "the last ask on an empty list");
  cr_assert_null(f);
  cr_assert_eq(ip_waitfor_next(&w, l, 2, -1, &f), 0, "declined: the end");
  ip_list_free(l);
  ip_task_free(t);
}

/* Freeing a future takes it out of its list. */
Test(list, a_freed_future_leaves_its_list) {
  ip_task *t = ip_task_new(return_int_as_text, NULL);
  ip_list *l = ip_list_new();
  ip_future *f[3];
  static int args[3] = {7, 7, 7};
  for (int i = 0; i < 3; i++) {
    f[i] = ip_call(t, &args[i]);
    cr_assert_eq(ip_list_push(l, f[i]), 0);
  }
  ip_future_free(f[1]);
  cr_assert_eq(ip_list_len(l), 2);
  cr_assert_eq(ip_list_at(l, 0), f[0]);
  cr_assert_eq(ip_list_at(l, 1), f[2]);
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *out;
  int got = 0;
  while (ip_waitfor_next(&w, l, 0, -1, &out) == 1) {
    cr_assert(out == f[0] || out == f[2]);
    cr_assert_str_eq(str_of(out), "7");
    ip_future_free(out);
    got++;
  }
  cr_assert_eq(got, 2);
  ip_list_free(l);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(list, null_arguments) {
  ip_list *l = ip_list_new();
  ip_future *f = ip_call(NULL, NULL);
  cr_assert_eq(ip_list_push(NULL, f), IP_EINVAL);
  cr_assert_eq(ip_list_push(l, NULL), IP_EINVAL);
  cr_assert_eq(ip_list_len(l), 0, "a refused push adds nothing");
  cr_assert_eq(ip_list_len(NULL), 0);
  cr_assert_null(ip_list_at(NULL, 0));
  cr_assert_null(ip_list_remove(NULL, 0));
  ip_list_free(NULL);
  ip_list_free(l);
  ip_future_free(f);
}

