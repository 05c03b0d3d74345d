/* Signals: SIGINT and SIGTERM reaching a host that waits in ip_waitfor_next end the wait with
 * IP_EINTR after the host's handler ran, and freeing the calls still running then leaves
 * nothing behind. A host's own SIGCHLD handler and its own children are never disturbed. */
#define _GNU_SOURCE
#include "helpers.h"
#include <pthread.h>
#include <stdatomic.h>
#include <sys/prctl.h>

/* A guard against hangs only (a wait a signal fails to end would block forever). */
TestSuite(signals, .timeout = 120);

enum { NCALLS = 4 };

static void *return_hello(void *arg) { return bytes_of("hello"); }

static volatile sig_atomic_t handled[NSIG];
static void host_handler(int sig) { handled[sig]++; }

/* Installs the host's handler the way an application would: no SA_RESTART. */
static struct sigaction install(int sig, int flags) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = host_handler;
  sa.sa_flags = flags;
  sigemptyset(&sa.sa_mask);
  cr_assert_eq(sigaction(sig, &sa, &old), 0);
  handled[sig] = 0;
  return old;
}

/* ---- the sender ------------------------------------------------------------------------------
 * The signal must arrive while the waiting thread sleeps inside the library: one that comes
 * just before would run the handler and leave the wait asleep, which no library can report.
 * So the sender waits for the go byte the waiter writes right before it calls
 * ip_waitfor_next, then watches /proc until that thread is blocked in one of the calls the
 * library sleeps in (epoll_wait when it drives the supervisor loop itself, ppoll behind
 * another thread or a supervisor thread), and only then signals the process. */

struct sender {
  int go[2];
  pid_t pid, tid; /* the waiting process and thread */
  int sig;               /* the signal to send, or 0 to release `release` instead */
  struct gate *release; /* with sig 0: a gate whose release ends the host's own child */
  int sent;       /* 1 once the signal went out */
  int asleep;     /* 1 when the waiter was seen blocked in epoll_wait or ppoll */
};

/* 1 when thread tid of pid is blocked in epoll_wait or ppoll, per
 * /proc/<pid>/task/<tid>/syscall. */
static int blocked_asleep(pid_t pid, pid_t tid) {
  long nr = blocked_syscall(pid, tid);
  return nr == SYS_ppoll || nr == SYS_epoll_wait;
}

static void send_when_asleep(struct sender *s) {
  char c;
  if (read(s->go[0], &c, 1) != 1) return;
  int64_t deadline = now_ms() + guard_ms(20000);
  while (!(s->asleep = blocked_asleep(s->pid, s->tid)) && left_ms(deadline) > 0)
    poll(NULL, 0, 1); /* re-check /proc every ms; this only paces the watching */
  /* Process-directed, as from a terminal or `kill`: the kernel picks the thread, and the
   * waiter (the main thread, the only one not blocking it) is the one it picks. */
  if (!s->sig) s->sent = gate_try_release(s->release, 1) == 0;
  else if (s->tid == s->pid) s->sent = kill(s->pid, s->sig) == 0;
  else s->sent = syscall(SYS_tgkill, s->pid, s->tid, s->sig) == 0;
}

static void *sender_thread(void *p) {
  struct sender *s = p;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &set, NULL); /* never the one the kernel picks */
  send_when_asleep(s);
  return NULL;
}

/* ip_future_wait(f, -1) in this thread while a sender thread, once this thread sleeps in the
 * library, does what s says (its signal, or releasing its gate). Returns what the wait
 * returned. */
static int wait_while_sending(ip_future *f, struct sender *s) {
  s->pid = getpid();
  s->tid = (pid_t)syscall(SYS_gettid);
  cr_assert_eq(pipe2(s->go, O_CLOEXEC), 0);
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, sender_thread, s), 0);
  cr_assert_eq(write(s->go[1], "g", 1), 1);
  int rc = ip_future_wait(f, -1);
  pthread_join(th, NULL);
  cr_assert(s->asleep, "the waiter was never seen asleep in epoll_wait or ppoll");
  cr_assert(s->sent, "the signal could not be sent");
  close(s->go[0]);
  close(s->go[1]);
  return rc;
}

/* ---- SIGINT / SIGTERM while waiting in waitfor ------------------------------------------------ */

static void interrupted_waitfor(int sig, int from_process, int concurrency, int timeout_ms) {
  int base = warm_baseline();
  struct sigaction old = install(sig, 0);
  struct gate g;
  cr_assert_eq(gate_try_open(&g), 0);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_list *l = ip_list_new();
  pid_t pids[NCALLS];
  for (int i = 0; i < NCALLS; i++) {
    ip_future *f = ip_call(t, &g); /* never released */
    pids[i] = ip_future_pid(f);
    cr_assert_gt(pids[i], 0);
    cr_assert_eq(ip_list_push(l, f), 0);
  }
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *out = NULL;
  if (concurrency) { /* it asks first; decline, so the next step sleeps */
    cr_assert_eq(ip_waitfor_next(&w, l, concurrency, timeout_ms, &out), 1);
    cr_assert_null(out);
  }

  struct sender s = {.pid = getpid(), .tid = (pid_t)syscall(SYS_gettid), .sig = sig};
  cr_assert_eq(pipe2(s.go, O_CLOEXEC), 0);
  pthread_t th;
  pid_t helper = -1;
  int res[2];
  cr_assert_eq(pipe2(res, O_CLOEXEC), 0);
  if (from_process) {
    /* Under Yama ptrace_scope 1 a child may not read its parent's /proc/<pid>/syscall unless
     * the parent names it a tracer; without Yama this fails harmlessly. */
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    fflush(stdout);
    fflush(stderr);
    helper = fork();
    cr_assert_geq(helper, 0);
    if (helper == 0) {
      send_when_asleep(&s);
      char r[2] = {(char)s.sent, (char)s.asleep};
      _exit(write(res[1], r, 2) == 2 ? 0 : 1);
    }
  } else {
    cr_assert_eq(pthread_create(&th, NULL, sender_thread, &s), 0);
  }

  cr_assert_eq(write(s.go[1], "g", 1), 1);
  int rc = ip_waitfor_next(&w, l, concurrency, timeout_ms, &out);

  if (from_process) {
    int st;
    cr_assert_eq(waitpid(helper, &st, 0), helper);
    prctl(PR_SET_PTRACER, 0, 0, 0, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char r[2];
    cr_assert_eq(read(res[0], r, 2), 2);
    s.sent = r[0];
    s.asleep = r[1];
  } else {
    pthread_join(th, NULL);
  }
  cr_assert(s.asleep, "the waiter was never seen asleep in epoll_wait or ppoll");
  cr_assert(s.sent, "the signal could not be sent");
  cr_assert_eq(rc, IP_EINTR, "ip_waitfor_next returned %d (%s), not IP_EINTR", rc,
               ip_err_name(rc));
  cr_assert_null(out);
  cr_assert_eq(handled[sig], 1, "the host's handler ran %d times", (int)handled[sig]);
  cr_assert_eq(ip_list_len(l), NCALLS, "an interrupted step takes nothing out");

  /* The loop resumes where it was: still nothing done. */
  cr_assert_eq(ip_waitfor_next(&w, l, concurrency, 0, &out), IP_ETIMEDOUT);
  cr_assert_eq(ip_list_len(l), NCALLS);

  /* Giving up: free the rest while they run. */
  while (ip_list_len(l)) ip_future_free(ip_list_remove(l, 0));
  for (int i = 0; i < NCALLS; i++)
    cr_assert(pid_gone(pids[i]), "child %d outlived its future", (int)pids[i]);
  cr_assert(no_children(), "a child or zombie is left");
  ip_list_free(l);
  ip_task_free(t);
  gate_close(&g);
  close(s.go[0]);
  close(s.go[1]);
  close(res[0]);
  close(res[1]);
  sigaction(sig, &old, NULL);
  cr_assert_eq(count_fds(), base, "descriptors leaked");
}

Test(signals, sigint_from_a_thread_interrupts_waitfor) {
  interrupted_waitfor(SIGINT, 0, 0, -1);
}
Test(signals, sigterm_from_a_thread_interrupts_waitfor) {
  interrupted_waitfor(SIGTERM, 0, 0, -1);
}
Test(signals, sigint_from_another_process_interrupts_waitfor_with_a_timeout) {
  interrupted_waitfor(SIGINT, 1, 0, 600000);
}
Test(signals, sigterm_from_another_process_interrupts_waitfor_with_a_factor) {
  interrupted_waitfor(SIGTERM, 1, 8, -1);
}

/* The same through ip_future_wait, which shares the waiting; with SA_RESTART too, as glibc's
 * signal() installs handlers: a Ctrl-C handler must be able to stop a wait either way. */
static void interrupted_future_wait(int flags) {
  int base = warm_baseline();
  struct sigaction old = install(SIGINT, flags);
  struct gate g;
  cr_assert_eq(gate_try_open(&g), 0);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *f = ip_call(t, &g);
  pid_t pid = ip_future_pid(f);
  struct sender s = {.sig = SIGINT};
  int rc = wait_while_sending(f, &s);
  cr_assert_eq(rc, IP_EINTR, "ip_future_wait returned %s", ip_err_name(rc));
  cr_assert_eq(handled[SIGINT], 1);
  cr_assert_eq(ip_future_done(f), 0);
  ip_future_free(f);
  cr_assert(pid_gone(pid));
  cr_assert(no_children());
  ip_task_free(t);
  gate_close(&g);
  sigaction(SIGINT, &old, NULL);
  cr_assert_eq(count_fds(), base);
}

Test(signals, sigint_interrupts_future_wait) { interrupted_future_wait(0); }
Test(signals, sigint_with_sa_restart_interrupts_future_wait) {
  interrupted_future_wait(SA_RESTART);
}

/* ---- the host's SIGCHLD handler and its own children ------------------------------------------ */

/* Waits for the host's own child without reaping it (so the status stays for waitpid). */
static void wait_exited_nowait(pid_t pid) {
  siginfo_t si;
  int r;
  while ((r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT)) < 0 && errno == EINTR) {
  }
  cr_assert_eq(r, 0, "waitid(%d): %s", (int)pid, strerror(errno));
}

/* Host child: blocks on its own gate, then exits with `status`. */
static pid_t host_child(struct gate *g, int status) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    char c;
    _exit(read(g->fd[0], &c, 1) == 1 ? status : 99);
  }
  return pid;
}

/* Collects every future of l, which must all succeed with `want`. */
static void collect_all(ip_list *l, const char *want) {
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  int rc;
  while ((rc = ip_waitfor_next(&w, l, 0, guard_ms(60000), &f)) != 0) {
    cr_assert_eq(rc, 1, "waitfor: %s", ip_err_name(rc)); /* never IP_EINTR: no host child
                                                            ends meanwhile */
    const ip_error *e = ip_future_error(f);
    cr_assert_str_eq(str_of(f), want, "%s", e ? e->message : "(no error)");
    ip_future_free(f);
  }
}

/* ---- whose SIGCHLD ends a wait --------------------------------------------------------------
 * A host's SIGCHLD handler runs whenever a child of the process changes state, the library's
 * included. Only the host's own children are the host's business: a wait ends with IP_EINTR
 * for them, never for a call's child, and never for a call that completed. */

/* Each call completes during the wait for it; the handler runs, the wait returns 0. */
static void own_children_never_interrupt(bool thread) {
  struct sigaction old = install(SIGCHLD, SA_RESTART);
  ip_task *t = ip_task_new(return_hello, NULL);
  if (thread) ip_task_set_timeout(t, 600000); /* a timed call runs the supervisor thread */
  for (int i = 0; i < 20; i++) {
    ip_future *f = ip_call(t, NULL);
    int rc = ip_future_wait(f, -1);
    cr_assert_eq(rc, 0, "call %d: ip_future_wait returned %s", i, ip_err_name(rc));
    cr_assert_str_eq(str_of(f), "hello");
    ip_future_free(f);
  }
  /* And through waitfor, many at a time. */
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *out;
  int started = 0, done = 0, rc;
  while ((rc = ip_waitfor_next(&w, l, 16, -1, &out)) == 1) {
    if (!out) {
      if (started < 200) {
        cr_assert_eq(ip_list_push(l, ip_call(t, NULL)), 0);
        started++;
      }
      continue;
    }
    cr_assert_str_eq(str_of(out), "hello");
    ip_future_free(out);
    done++;
  }
  cr_assert_eq(rc, 0, "waitfor returned %s after %d of 200", ip_err_name(rc), done);
  cr_assert_eq(done, 200);
  cr_assert_gt(handled[SIGCHLD], 0, "the host's handler never ran");
  cr_assert(no_children());
  ip_list_free(l);
  ip_task_free(t);
  sigaction(SIGCHLD, &old, NULL);
}

Test(signals, the_librarys_own_sigchld_never_interrupts_a_wait) {
  own_children_never_interrupt(false);
}
Test(signals, the_librarys_own_sigchld_never_interrupts_a_wait_with_the_supervisor_thread) {
  own_children_never_interrupt(true);
}

/* The host's own child ends while a call runs: the wait ends with IP_EINTR after the host's
 * handler ran, and the host's child is still there for the host to reap. */
static void host_child_interrupts(bool thread) {
  struct sigaction old = install(SIGCHLD, SA_RESTART);
  struct gate lib_gate, host_gate;
  cr_assert_eq(gate_try_open(&lib_gate), 0);
  cr_assert_eq(gate_try_open(&host_gate), 0);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  if (thread) ip_task_set_timeout(t, 600000);
  ip_future *f = ip_call(t, &lib_gate);
  pid_t h = host_child(&host_gate, 7);
  struct sender s = {.sig = 0, .release = &host_gate};
  int rc = wait_while_sending(f, &s);
  cr_assert_eq(rc, IP_EINTR, "ip_future_wait returned %s", ip_err_name(rc));
  cr_assert_gt(handled[SIGCHLD], 0, "the host's handler did not run");
  cr_assert_eq(ip_future_done(f), 0);
  int st;
  cr_assert_eq(waitpid(h, &st, WNOHANG), h, "the host's child was taken from it");
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 7);
  cr_assert_eq(gate_try_release(&lib_gate, 1), 0);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  cr_assert_str_eq(str_of(f), "released");
  ip_future_free(f);
  cr_assert(no_children());
  ip_task_free(t);
  gate_close(&lib_gate);
  gate_close(&host_gate);
  sigaction(SIGCHLD, &old, NULL);
}

Test(signals, the_hosts_own_child_interrupts_a_wait) { host_child_interrupts(false); }
Test(signals, the_hosts_own_child_interrupts_a_wait_with_the_supervisor_thread) {
  host_child_interrupts(true);
}

Test(signals, host_sigchld_handler_and_own_children_are_untouched) {
  int base = warm_baseline();
  struct sigaction old = install(SIGCHLD, SA_RESTART);
  struct gate lib_gate, host_gate;
  cr_assert_eq(gate_try_open(&lib_gate), 0);
  cr_assert_eq(gate_try_open(&host_gate), 0);
  ip_task *blocked = ip_task_new(wait_on_gate, NULL);
  ip_task *quick = ip_task_new(return_hello, NULL);
  ip_list *slow = ip_list_new(), *fast = ip_list_new();

  /* Library calls in flight on both sides of the host's fork. */
  for (int i = 0; i < NCALLS; i++) cr_assert_eq(ip_list_push(slow, ip_call(blocked, &lib_gate)), 0);
  pid_t h1 = host_child(&host_gate, 42);
  pid_t h2 = host_child(&host_gate, 43);
  for (int i = 0; i < NCALLS; i++) cr_assert_eq(ip_list_push(fast, ip_call(quick, NULL)), 0);
  collect_all(fast, "hello"); /* library children end and are reaped while the host's run */

  /* The host's first child ends while library calls are still in flight; the supervisor
   * reaps only its own children, so the zombie waits for the host. */
  cr_assert_eq(gate_try_release(&host_gate, 1), 0);
  pid_t first = -1;
  /* Whichever of h1/h2 took the byte. */
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int r;
  while ((r = waitid(P_ALL, 0, &si, WEXITED | WNOWAIT)) < 0 && errno == EINTR) {
  }
  cr_assert_eq(r, 0);
  first = si.si_pid;
  cr_assert(first == h1 || first == h2, "waitid found %d, not a host child (the library's "
            "children were all reaped by the library)", (int)first);
  cr_assert_gt(handled[SIGCHLD], 0, "the host's SIGCHLD handler never ran");

  /* Now the library calls complete, then the host reaps its child: status intact. */
  cr_assert_eq(gate_try_release(&lib_gate, NCALLS), 0);
  collect_all(slow, "released");
  int st;
  cr_assert_eq(waitpid(first, &st, WNOHANG), first, "the host's child %d was taken from it",
               (int)first);
  cr_assert(WIFEXITED(st));
  cr_assert_eq(WEXITSTATUS(st), first == h1 ? 42 : 43);

  /* The other host child, reaped by a blocking waitpid while more library calls run. */
  for (int i = 0; i < NCALLS; i++) cr_assert_eq(ip_list_push(fast, ip_call(quick, NULL)), 0);
  int before = handled[SIGCHLD];
  cr_assert_eq(gate_try_release(&host_gate, 1), 0);
  pid_t second = first == h1 ? h2 : h1;
  pid_t x;
  while ((x = waitpid(second, &st, 0)) < 0 && errno == EINTR) {
  }
  cr_assert_eq(x, second, "waitpid(%d): %s", (int)second, strerror(errno));
  cr_assert(WIFEXITED(st));
  cr_assert_eq(WEXITSTATUS(st), second == h1 ? 42 : 43);
  cr_assert_gt(handled[SIGCHLD], before, "the host's handler did not run for its child");
  collect_all(fast, "hello");

  /* The host's handler is still the one installed. */
  struct sigaction now;
  cr_assert_eq(sigaction(SIGCHLD, NULL, &now), 0);
  cr_assert_eq((void *)now.sa_handler, (void *)host_handler);

  /* And a host child made after all that is the host's alone too. */
  pid_t h3 = host_child(&host_gate, 44);
  cr_assert_eq(gate_try_release(&host_gate, 1), 0);
  wait_exited_nowait(h3);
  cr_assert_eq(waitpid(h3, &st, 0), h3);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 44);

  cr_assert(no_children());
  ip_list_free(slow);
  ip_list_free(fast);
  ip_task_free(blocked);
  ip_task_free(quick);
  gate_close(&lib_gate);
  gate_close(&host_gate);
  sigaction(SIGCHLD, &old, NULL);
  cr_assert_eq(count_fds(), base);
}

/* ---- the crash report's helper ---------------------------------------------------------------
 * With libdw the thread that completes a crashed call forks a helper process to symbolize
 * the report (lib/symbolize.c). That helper's SIGCHLD is the library's as much as a call's
 * child's, also when the helper ends before its fork() has returned: a thread that waits
 * meanwhile reads the SIGCHLD at once. At-fork handlers of the test's, which run inside the
 * helper's fork() after the library's own, hold both sides there: the helper (child
 * handler) until the parent handler lets it go, and the forking thread (parent handler)
 * until the helper has exited and the other waiting thread has judged its SIGCHLD (the
 * host's handler ran for it, or the wait returned) or is blocked on a lock (in futex), which
 * can only be the library's. Before letting the helper go, the parent handler waits until
 * the SIGCHLD of the crashed call's child has been handled and the waiter sleeps again, so
 * that the two SIGCHLDs cannot merge into one. */

enum { SIGCHLD_BIT = 1 << (SIGCHLD - 1) };

static struct {
  atomic_int armed;        /* the next fork() in this process is the helper's */
  int go[2];               /* the parent handler lets the helper go through this pipe */
  pid_t pid, waiter;       /* this process, and the thread whose wait must not end */
  pid_t crashed;           /* the crashed call's child */
  atomic_int returned;     /* the waiter's wait returned */
  pid_t helper;            /* the child that ended while the fork was held, or 0 */
  int judged;              /* the waiter judged the helper's SIGCHLD, or waited to */
} hold;

static atomic_int last_sigchld_pid; /* si_pid of the latest SIGCHLD the host's handler ran for */
static void on_sigchld_info(int sig, siginfo_t *si, void *uc) {
  (void)uc;
  handled[sig]++;
  atomic_store(&last_sigchld_pid, (int)si->si_pid);
}

/* The signal sets "SigPnd:" (this thread's) or "ShdPnd:" (the process's) of a status file. */
static unsigned long long pending_in(const char *path, const char *field) {
  char buf[4096];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ~0ull;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return ~0ull;
  buf[n] = '\0';
  const char *at = strstr(buf, field);
  return at ? strtoull(at + strlen(field), NULL, 16) : ~0ull;
}

/* 1 when no SIGCHLD is pending for the waiter or the process and the waiter sleeps in ppoll. */
static int waiter_settled(void) {
  char path[80];
  snprintf(path, sizeof path, "/proc/%d/task/%d/status", (int)hold.pid, (int)hold.waiter);
  return !(pending_in(path, "SigPnd:") & SIGCHLD_BIT) &&
         !(pending_in(path, "ShdPnd:") & SIGCHLD_BIT) &&
         blocked_syscall(hold.pid, hold.waiter) == SYS_ppoll;
}

static void hold_helper_child(void) {
  char c;
  if (!atomic_load(&hold.armed)) return;
  while (read(hold.go[0], &c, 1) < 0 && errno == EINTR) {
  }
}

static void hold_helper_fork(void) {
  if (!atomic_exchange(&hold.armed, 0)) return;
  int64_t deadline = now_ms() + guard_ms(10000);
  while (!(atomic_load(&last_sigchld_pid) == hold.crashed && waiter_settled()) &&
         !atomic_load(&hold.returned) && left_ms(deadline) > 0)
    poll(NULL, 0, 1); /* re-check /proc every ms; this only paces the watching */
  if (write(hold.go[1], "g", 1) != 1) return;
  /* The only child that can end now: the crashed call's child was reaped before its report
   * is symbolized, and the other call is held at its gate. */
  siginfo_t si;
  memset(&si, 0, sizeof si);
  while (waitid(P_ALL, 0, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR) {
  }
  hold.helper = si.si_pid;
  while (left_ms(deadline) > 0) {
    if (atomic_load(&last_sigchld_pid) == hold.helper || atomic_load(&hold.returned) ||
        blocked_syscall(hold.pid, hold.waiter) == SYS_futex) {
      hold.judged = 1;
      break;
    }
    poll(NULL, 0, 1);
  }
}

static void *abort_when_released(void *arg) {
  struct gate *g = arg;
  char c;
  if (read(g->fd[0], &c, 1) == 1) abort();
  return NULL;
}

struct driver {
  ip_future *f;
  atomic_int tid;
  int rc;
};

static void *drive(void *p) {
  struct driver *d = p;
  atomic_store(&d->tid, (int)syscall(SYS_gettid));
  d->rc = ip_future_wait(d->f, -1);
  return NULL;
}

Test(signals, the_crash_report_helpers_sigchld_never_interrupts_a_wait) {
#ifndef IP_HAVE_LIBDW
  cr_skip_test("built without libdw (configure --with-libdw): no helper process symbolizes");
#endif
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigchld_info;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  cr_assert_eq(sigaction(SIGCHLD, &sa, &old), 0);
  struct gate held, crash;
  cr_assert_eq(gate_try_open(&held), 0);
  cr_assert_eq(gate_try_open(&crash), 0);
  cr_assert_eq(pipe2(hold.go, O_CLOEXEC), 0);
  ip_task *blocked = ip_task_new(wait_on_gate, NULL);
  ip_task *aborts = ip_task_new(abort_when_released, NULL);
  cr_assert_eq(ip_task_set_crash_report(aborts, 1), 0);

  /* Thread B waits first, so it drives the supervisor loop: it reaps the crashed child and
   * forks the helper. Registered after the library's (its first call made it register its
   * own), the test's handlers run after the library's at the fork. */
  struct driver d = {.f = ip_call(blocked, &held)};
  cr_assert_gt(ip_future_pid(d.f), 0);
  cr_assert_eq(pthread_atfork(NULL, hold_helper_fork, hold_helper_child), 0);
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, drive, &d), 0);
  int64_t deadline = now_ms() + guard_ms(20000);
  while (!(atomic_load(&d.tid) &&
           blocked_syscall(getpid(), atomic_load(&d.tid)) == SYS_epoll_wait) &&
         left_ms(deadline) > 0)
    poll(NULL, 0, 1);
  cr_assert_eq(blocked_syscall(getpid(), atomic_load(&d.tid)), SYS_epoll_wait,
               "the other thread never drove the loop");

  /* This thread sleeps behind it (ppoll) when the call is let through to abort. */
  ip_future *f = ip_call(aborts, &crash);
  hold.crashed = ip_future_pid(f);
  cr_assert_gt(hold.crashed, 0);
  hold.pid = getpid();
  hold.waiter = (pid_t)syscall(SYS_gettid);
  atomic_store(&hold.armed, 1);
  struct sender s = {.sig = 0, .release = &crash};
  int rc = wait_while_sending(f, &s);
  atomic_store(&hold.returned, 1);
  /* The other call ends too, and with the thread joined the hold is over. */
  cr_assert_eq(gate_try_release(&held, 1), 0);
  pthread_join(th, NULL);
  cr_assert_eq(d.rc, 0, "the driving thread's wait returned %s", ip_err_name(d.rc));
  cr_assert_str_eq(str_of(d.f), "released");
  ip_future_free(d.f);

  cr_assert_gt(hold.helper, 0, "no helper process was forked for the crash report");
  cr_assert_eq(rc, 0, "ip_future_wait returned %s: the helper %d's SIGCHLD was taken for the "
               "host's", ip_err_name(rc), (int)hold.helper);
  cr_assert(hold.judged, "the waiting thread never judged the helper's SIGCHLD while the "
            "helper's fork was held");
  cr_assert_gt(handled[SIGCHLD], 0, "the host's handler did not run");
  const ip_error *e = ip_future_error(f);
  cr_assert_eq(ip_future_status(f), IP_ESIGNALED, "%s", why(f));
  cr_assert_eq(e->signal, SIGABRT);
  cr_assert_not_null(e->backtrace);
  cr_assert_not_null(strstr(e->backtrace, "abort_when_released"), "backtrace:\n%s",
                     e->backtrace);
  ip_future_free(f);
  cr_assert(no_children());
  ip_task_free(blocked);
  ip_task_free(aborts);
  gate_close(&held);
  gate_close(&crash);
  close(hold.go[0]);
  close(hold.go[1]);
  sigaction(SIGCHLD, &old, NULL);
}

/* A host that keeps SIGCHLD blocked in its threads (as some event loops do, to take it with
 * signalfd) still gets its calls completed: the library does not depend on the signal. */
Test(signals, calls_complete_with_sigchld_blocked_in_the_host) {
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  cr_assert_eq(pthread_sigmask(SIG_BLOCK, &set, &old), 0);
  ip_task *quick = ip_task_new(return_hello, NULL);
  ip_list *l = ip_list_new();
  for (int i = 0; i < NCALLS; i++) cr_assert_eq(ip_list_push(l, ip_call(quick, NULL)), 0);
  collect_all(l, "hello");
  cr_assert(no_children());
  ip_list_free(l);
  ip_task_free(quick);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}
