/* Canceling, freeing running futures, and the task timeout. */
#define _GNU_SOURCE
#include "helpers.h"
#include <pthread.h>
#include <sched.h>
#include <signal.h>

/* A guard against hangs only (a wake-up the library forgets would block a test forever);
 * no test depends on how long anything takes. */
TestSuite(cancel, .timeout = 120);

/* ---- helpers --------------------------------------------------------------------------------- */

static void *return_hello(void *arg) { return bytes_of("hello"); }


/* ---- ip_future_cancel ------------------------------------------------------------------------ */

Test(cancel, cancel_kills_a_blocked_child_and_reaps_it_at_once) {
  int base = warm_baseline();
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *f = ip_call(t, &g);
  pid_t pid = ip_future_pid(f);
  cr_assert_gt(pid, 0);
  cr_assert_eq(ip_future_wait(f, 0), IP_ETIMEDOUT, "blocked on the gate");
  cr_assert_eq(ip_future_cancel(f), 0);
  cr_assert(pid_gone(pid), "child %d still exists (zombie?) after cancel returned", (int)pid);
  cr_assert_eq(ip_future_done(f), 1);
  cr_assert_eq(ip_future_status(f), IP_ECANCELED);
  cr_assert_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_ECANCELED);
  cr_assert_str_eq(e->kind, "ECANCELED");
  cr_assert_eq(e->signal, SIGKILL);
  cr_assert_eq(e->pid, pid);
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
  cr_assert_eq(count_fds(), base);
}

Test(cancel, cancel_kills_a_stopped_child) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *f = ip_call(t, &g);
  pid_t pid = ip_future_pid(f);
  cr_assert_eq(kill(pid, SIGSTOP), 0);
  cr_assert_eq(ip_future_wait(f, 0), IP_ETIMEDOUT, "a stop is not an end");
  cr_assert_eq(ip_future_cancel(f), 0);
  cr_assert(pid_gone(pid));
  cr_assert_eq(ip_future_status(f), IP_ECANCELED);
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

Test(cancel, cancel_twice_reports_ealready_and_keeps_ecanceled) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *f = ip_call(t, &g);
  cr_assert_eq(ip_future_cancel(f), 0);
  cr_assert_eq(ip_future_cancel(f), IP_EALREADY);
  cr_assert_eq(ip_future_status(f), IP_ECANCELED);
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

Test(cancel, cancel_on_a_done_future_is_ealready_and_keeps_its_value) {
  ip_task *t = ip_task_new(return_hello, NULL);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  cr_assert_eq(ip_future_cancel(f), IP_EALREADY);
  cr_assert_eq(ip_future_status(f), 0);
  cr_assert_null(ip_future_error(f));
  cr_assert_str_eq(str_of(f), "hello");
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(cancel, cancel_after_the_value_was_read_keeps_the_value) {
  ip_task *t = ip_task_new(return_hello, NULL);
  ip_future *f = ip_call(t, NULL);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b);
  cr_assert_eq(ip_future_cancel(f), IP_EALREADY);
  cr_assert_eq(ip_future_value(f), b);
  cr_assert_eq(memcmp(b->data, "hello", 5), 0);
  ip_future_free(f);
  ip_task_free(t);
}

Test(cancel, cancel_on_a_future_that_never_started_is_ealready) {
  ip_future *f = ip_call(NULL, NULL);
  cr_assert_eq(ip_future_cancel(f), IP_EALREADY);
  cr_assert_eq(ip_future_status(f), IP_EINVAL, "its outcome stands");
  ip_future_free(f);
}

Test(cancel, cancel_null_is_einval) { cr_assert_eq(ip_future_cancel(NULL), IP_EINVAL); }

static void *wait_thread(void *p) {
  ip_future *f = p;
  return (void *)(intptr_t)ip_future_wait(f, -1);
}

Test(cancel, a_thread_waiting_on_the_future_wakes_when_it_is_canceled) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *f = ip_call(t, &g);
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, wait_thread, f), 0);
  cr_assert_eq(ip_future_cancel(f), 0);
  void *rc;
  pthread_join(th, &rc);
  cr_assert_eq((int)(intptr_t)rc, 0);
  cr_assert_eq(ip_future_status(f), IP_ECANCELED);
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

Test(cancel, a_canceled_future_in_a_waitfor_list_comes_back_canceled) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_list *l = ip_list_new();
  ip_future *f1 = ip_call(t, &g), *f2 = ip_call(t, &g);
  ip_list_push(l, f1);
  ip_list_push(l, f2);
  cr_assert_eq(ip_future_cancel(f2), 0);
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  cr_assert_eq(ip_waitfor_next(&w, l, 0, -1, &f), 1);
  cr_assert_eq(f, f2);
  cr_assert_eq(ip_future_status(f), IP_ECANCELED);
  gate_release(&g, 1);
  cr_assert_eq(ip_waitfor_next(&w, l, 0, -1, &f), 1);
  cr_assert_eq(f, f1);
  cr_assert_str_eq(str_of(f1), "released");
  cr_assert_eq(ip_waitfor_next(&w, l, 0, -1, &f), 0);
  ip_future_free(f1);
  ip_future_free(f2);
  ip_list_free(l);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

/* ---- freeing running futures ----------------------------------------------------------------- */

Test(cancel, freeing_a_running_future_leaves_no_child) {
  int base = warm_baseline();
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *f = ip_call(t, &g);
  pid_t pid = ip_future_pid(f);
  cr_assert_gt(pid, 0);
  cr_assert_eq(ip_future_wait(f, 0), IP_ETIMEDOUT);
  ip_future_free(f);
  cr_assert(pid_gone(pid), "child %d outlived its future", (int)pid);
  cr_assert(no_children());
  ip_task_free(t);
  gate_close(&g);
  cr_assert_eq(count_fds(), base);
}

Test(cancel, freeing_many_running_futures_leaves_no_child) {
  enum { N = 20 };
  int base = warm_baseline();
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *fs[N];
  pid_t pids[N];
  for (int i = 0; i < N; i++) {
    fs[i] = ip_call(t, &g);
    pids[i] = ip_future_pid(fs[i]);
    cr_assert_gt(pids[i], 0);
  }
  for (int i = 0; i < N; i++) ip_future_free(fs[i]);
  for (int i = 0; i < N; i++) cr_assert(pid_gone(pids[i]));
  cr_assert(no_children());
  ip_task_free(t);
  gate_close(&g);
  cr_assert_eq(count_fds(), base);
}

/* ---- task timeout ---------------------------------------------------------------------------- */

Test(cancel, task_timeout_kills_a_child_blocked_forever) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  cr_assert_eq(ip_task_set_timeout(t, 100), 0);
  ip_future *f = ip_call(t, &g); /* never released */
  pid_t pid = ip_future_pid(f);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  cr_assert_eq(ip_future_status(f), IP_ETIMEDOUT);
  cr_assert_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_ETIMEDOUT);
  cr_assert_str_eq(e->kind, "ETIMEDOUT");
  cr_assert_eq(e->signal, SIGKILL);
  cr_assert_eq(e->exit_status, -1);
  cr_assert_eq(e->pid, pid);
  cr_assert_not_null(strstr(e->message, "100 ms"), "message: %s", e->message);
  cr_assert(pid_gone(pid));
  cr_assert_eq(ip_future_cancel(f), IP_EALREADY);
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

Test(cancel, task_timeout_applies_to_every_call_of_the_task) {
  enum { N = 4 };
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  cr_assert_eq(ip_task_set_timeout(t, 100), 0);
  ip_future *fs[N];
  for (int i = 0; i < N; i++) fs[i] = ip_call(t, &g);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(ip_future_wait(fs[i], -1), 0);
    cr_assert_eq(ip_future_status(fs[i]), IP_ETIMEDOUT, "call %d", i);
    ip_future_free(fs[i]);
  }
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

Test(cancel, fast_task_with_a_long_timeout_succeeds) {
  ip_task *t = ip_task_new(return_hello, NULL);
  cr_assert_eq(ip_task_set_timeout(t, 600000), 0);
  ip_future *f = ip_call(t, NULL);
  cr_assert_str_eq(str_of(f), "hello");
  cr_assert_eq(ip_future_status(f), 0);
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

Test(cancel, released_before_the_timeout_the_call_succeeds) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  cr_assert_eq(ip_task_set_timeout(t, 600000), 0);
  ip_future *f = ip_call(t, &g);
  gate_release(&g, 1);
  cr_assert_str_eq(str_of(f), "released");
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

Test(cancel, cancel_before_the_timeout_reports_ecanceled) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  cr_assert_eq(ip_task_set_timeout(t, 600000), 0);
  ip_future *f = ip_call(t, &g);
  cr_assert_eq(ip_future_cancel(f), 0);
  cr_assert_eq(ip_future_status(f), IP_ECANCELED);
  ip_future_free(f);
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}

Test(cancel, timeout_setter_rejects_null) { cr_assert_eq(ip_task_set_timeout(NULL, 5), IP_EINVAL); }

/* ---- concurrency ----------------------------------------------------------------------------- */

struct cancel_job {
  ip_future **fs;
  int from, to, step;
  int zero, already, other;
};

static void *cancel_range(void *p) {
  struct cancel_job *j = p;
  for (int i = j->from; i != j->to; i += j->step) {
    int rc = ip_future_cancel(j->fs[i]);
    if (rc == 0) j->zero++;
    else if (rc == IP_EALREADY) j->already++;
    else j->other++;
  }
  return NULL;
}

Test(cancel, many_futures_canceled_concurrently_from_two_threads) {
  enum { N = 24 };
  int base = warm_baseline();
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *fs[N];
  pid_t pids[N];
  for (int i = 0; i < N; i++) {
    fs[i] = ip_call(t, &g);
    pids[i] = ip_future_pid(fs[i]);
  }
  struct cancel_job a = {fs, 0, N, 2, 0, 0, 0}, b = {fs, 1, N + 1, 2, 0, 0, 0};
  pthread_t ta, tb;
  cr_assert_eq(pthread_create(&ta, NULL, cancel_range, &a), 0);
  cr_assert_eq(pthread_create(&tb, NULL, cancel_range, &b), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  cr_assert_eq(a.zero, N / 2);
  cr_assert_eq(b.zero, N / 2);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(ip_future_status(fs[i]), IP_ECANCELED, "future %d", i);
    cr_assert(pid_gone(pids[i]));
    ip_future_free(fs[i]);
  }
  cr_assert(no_children());
  ip_task_free(t);
  gate_close(&g);
  cr_assert_eq(count_fds(), base);
}

/* A first cancel that meets the child's own exit: the supervisor thread reaps the child while
 * this thread cancels. Each round waits until the child has ended (or is already reaped) and
 * cancels at once, so that many cancels land while the supervisor is taking in the end. Either
 * the cancel came first (ECANCELED) or the call was over (EALREADY, its value stands). Under
 * ThreadSanitizer (tests/tsan.sh) this is where the reaping and the kill meet. */
Test(cancel, a_cancel_racing_the_childs_own_exit_is_canceled_or_already_done) {
  enum { ROUNDS = 200 };
  cr_assert_eq(ip_use_supervisor_thread(), 0);
  ip_task *t = ip_task_new(return_hello, NULL);
  cr_assert_not_null(t);
  int canceled = 0, already = 0;
  for (int i = 0; i < ROUNDS; i++) {
    ip_future *f = ip_call(t, NULL);
    pid_t pid = ip_future_pid(f);
    cr_assert_gt(pid, 0);
    siginfo_t si;
    for (;;) { /* until it ended; ECHILD: the supervisor reaped it already */
      memset(&si, 0, sizeof si);
      if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == pid)
        break;
      sched_yield();
    }
    int rc = ip_future_cancel(f);
    if (rc == 0) {
      canceled++;
      cr_assert_eq(ip_future_status(f), IP_ECANCELED, "round %d", i);
    } else {
      already++;
      cr_assert_eq(rc, IP_EALREADY, "round %d", i);
      cr_assert_eq(ip_future_status(f), 0, "round %d", i);
      cr_assert_str_eq(str_of(f), "hello", "round %d", i);
    }
    ip_future_free(f);
    cr_assert(pid_gone(pid), "round %d: child %d left behind", i, (int)pid);
  }
  cr_log_info("%d canceled, %d already done", canceled, already);
  cr_assert(no_children());
  ip_task_free(t);
}

Test(cancel, two_threads_canceling_the_same_futures_both_return_and_all_end_canceled) {
  enum { N = 16 };
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *fs[N];
  for (int i = 0; i < N; i++) fs[i] = ip_call(t, &g);
  /* One walks forward, the other backward, so they meet on the same futures. */
  struct cancel_job a = {fs, 0, N, 1, 0, 0, 0}, b = {fs, N - 1, -1, -1, 0, 0, 0};
  pthread_t ta, tb;
  cr_assert_eq(pthread_create(&ta, NULL, cancel_range, &a), 0);
  cr_assert_eq(pthread_create(&tb, NULL, cancel_range, &b), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  cr_assert_eq(a.other + b.other, 0, "only 0 or IP_EALREADY");
  cr_assert_eq(a.zero + a.already, N);
  cr_assert_eq(b.zero + b.already, N);
  cr_assert_geq(a.zero + b.zero, N, "each future was canceled by at least one of them");
  for (int i = 0; i < N; i++) {
    cr_assert_eq(ip_future_status(fs[i]), IP_ECANCELED);
    ip_future_free(fs[i]);
  }
  ip_task_free(t);
  gate_close(&g);
  cr_assert(no_children());
}
