/* Parent death: a process with 100 calls in flight is SIGKILLed; within 5 s none of its
 * children is alive. Checked from the grandparent (this test process), which makes itself a
 * child subreaper so the orphans come to it and it can watch them with pidfds and reap them. */
#define _GNU_SOURCE
#include "helpers.h"
#include <pthread.h>
#include <sys/prctl.h>

/* A guard against hangs only; the 5 s promise is checked with its own deadline. */
TestSuite(parentdeath, .timeout = 300);

enum { N = 100, DEATH_MS = 5000 };

/* ---- the intermediate parent ----------------------------------------------------------------- */

/* Pipes shared by the test, the intermediate parent and its children. */
static struct {
  int ready[2]; /* each child writes one byte once fn runs (its lifeline is armed by then) */
  int ping[2];  /* the test writes N bytes; each child takes one ... */
  int pong[2];  /* ... and answers with one, proving it is alive */
  int never[2]; /* nobody ever writes: children block on it for good */
  int info[2];  /* the intermediate parent reports its children's pids */
} P;

struct report {
  int n;   /* pids sent, or -1 when a call failed */
  int err; /* the failed call's status */
  pid_t pids[N];
};

static void *child_fn(void *arg) {
  char c = 'r';
  if (write(P.ready[1], &c, 1) != 1) return bytes_of("ready failed");
  if (read(P.ping[0], &c, 1) != 1) return bytes_of("ping failed");
  if (write(P.pong[1], &c, 1) != 1) return bytes_of("pong failed");
  for (;;)
    if (read(P.never[0], &c, 1) <= 0 && errno != EINTR) break;
  return bytes_of("unblocked?");
}

static void make_calls(struct report *r) {
  ip_task *t = ip_task_new(child_fn, NULL);
  if (!t) {
    r->n = -1;
    r->err = -errno;
    return;
  }
  r->n = 0;
  for (int i = 0; i < N; i++) {
    ip_future *f = ip_call(t, NULL); /* kept running: the process is killed with them */
    if (!f || ip_future_pid(f) <= 0) {
      r->n = -1;
      r->err = f ? ip_future_status(f) : IP_ENOMEM;
      return;
    }
    r->pids[r->n++] = ip_future_pid(f);
  }
}

static void *calling_thread(void *p) {
  make_calls(p);
  return NULL;
}

/* The intermediate parent: makes the calls (from this thread, or from a thread that then
 * exits), reports the pids and blocks until it is killed. Never returns. */
static _Noreturn void intermediate(int from_thread) {
  struct report r;
  memset(&r, 0, sizeof r);
  if (pipe2(P.never, O_CLOEXEC) < 0) _exit(2);
  if (!from_thread) {
    make_calls(&r);
  } else {
    pthread_t th;
    if (pthread_create(&th, NULL, calling_thread, &r) != 0) _exit(2);
    pthread_join(th, NULL);
    /* pthread_join returns once the thread cleared its tid, which is before the kernel has
     * finished its exit (where a PR_SET_PDEATHSIG tied to the thread would fire). Its task
     * entry goes away only after that, so wait for /proc/self/task to list one thread. */
    int64_t deadline = now_ms() + 10000;
    while (count_threads() > 2 && left_ms(deadline) > 0) /* us and the supervisor */
      sched_yield();
  }
  if (write(P.info[1], &r, sizeof r) != (ssize_t)sizeof r) _exit(2);
  for (;;) pause();
}

/* ---- the test side ----------------------------------------------------------------------------- */

/* Reads exactly n bytes from fd within limit_ms; returns how many came. */
static int read_n(int fd, int n, int limit_ms) {
  int64_t deadline = now_ms() + limit_ms;
  int got = 0;
  char buf[N];
  while (got < n) {
    struct pollfd p = {fd, POLLIN, 0};
    int pr = poll(&p, 1, left_ms(deadline));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) break;
    ssize_t r = read(fd, buf, (size_t)(n - got) < sizeof buf ? (size_t)(n - got) : sizeof buf);
    if (r <= 0) break;
    got += (int)r;
  }
  return got;
}

static void open_pipes(void) {
  cr_assert_eq(pipe2(P.ready, O_CLOEXEC), 0);
  cr_assert_eq(pipe2(P.ping, O_CLOEXEC), 0);
  cr_assert_eq(pipe2(P.pong, O_CLOEXEC), 0);
  cr_assert_eq(pipe2(P.info, O_CLOEXEC), 0);
}

/* Without pidfd_open (valgrind does not know it): wait for the orphans with waitpid(-1), the
 * deadline enforced by an interval timer whose handler interrupts the wait. */
static volatile sig_atomic_t alarmed;
static void on_alarm(int sig) { alarmed = 1; }

static int reap_orphans_by_waitpid(const pid_t *pids, int *status, int64_t deadline) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm; /* no SA_RESTART: waitpid returns EINTR at the deadline */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, &old);
  alarmed = 0;
  int left = left_ms(deadline);
  struct itimerval it = {{0, 0}, {left / 1000, (left % 1000) * 1000 + 1}};
  setitimer(ITIMER_REAL, &it, NULL);
  int reaped = 0;
  while (reaped < N && !alarmed) {
    int st;
    pid_t x = waitpid(-1, &st, 0);
    if (x < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < N; i++)
      if (pids[i] == x) {
        status[i] = st;
        reaped++;
      }
  }
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  sigaction(SIGALRM, &old, NULL);
  return reaped;
}

static void parent_death(int from_thread) {
  cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0, "%s", strerror(errno));
  open_pipes();
  fflush(stdout);
  fflush(stderr);
  pid_t mid = fork();
  cr_assert_geq(mid, 0);
  if (mid == 0) intermediate(from_thread);

  int guard = guard_ms(60000);
  struct report r;
  struct pollfd ip = {P.info[0], POLLIN, 0};
  cr_assert_eq(poll(&ip, 1, guard), 1, "the intermediate parent never reported");
  cr_assert_eq(read(P.info[0], &r, sizeof r), (ssize_t)sizeof r);
  cr_assert_eq(r.n, N, "a call failed in the intermediate parent: %s", ip_err_name(r.err));

  /* Every child runs fn: its lifeline was armed before fn started. */
  cr_assert_eq(read_n(P.ready[0], N, guard), N, "not every child started");
  /* Watch them from here: a pidfd pins the pid, so none can be recycled under the test. */
  int pfd[N];
  int pidfds = 1;
  for (int i = 0; i < N; i++) {
    pfd[i] = open_pidfd(r.pids[i]);
    if (pfd[i] < 0) {
      cr_assert_eq(errno, ENOSYS, "pidfd_open(%d): %s", (int)r.pids[i], strerror(errno));
      pidfds = 0;
    }
  }
  /* Alive and answering, also after the calling thread exited (a PR_SET_PDEATHSIG tied to
   * that thread would have killed them by now). */
  char pings[N];
  memset(pings, 'p', sizeof pings);
  cr_assert_eq(write(P.ping[1], pings, N), N);
  cr_assert_eq(read_n(P.pong[0], N, guard), N, "a child died before its parent did");

  cr_assert_eq(kill(mid, SIGKILL), 0);
  int st;
  cr_assert_eq(waitpid(mid, &st, 0), mid);
  int64_t killed_at = now_ms(), deadline = killed_at + DEATH_MS;
  cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

  int status[N];
  for (int i = 0; i < N; i++) status[i] = -1;
  int gone = 0;
  if (pidfds) {
    int ended[N] = {0};
    while (gone < N) {
      struct pollfd p[N];
      int idx[N], k = 0;
      for (int i = 0; i < N; i++)
        if (!ended[i]) {
          p[k] = (struct pollfd){pfd[i], POLLIN, 0};
          idx[k++] = i;
        }
      int pr = poll(p, (nfds_t)k, left_ms(deadline));
      if (pr < 0 && errno == EINTR) continue;
      if (pr <= 0) break; /* the deadline passed */
      for (int j = 0; j < k; j++)
        if (p[j].revents) {
          ended[idx[j]] = 1;
          gone++;
        }
    }
    int64_t took = now_ms() - killed_at;
    for (int i = 0; i < N; i++) {
      cr_expect(ended[i], "child %d was still alive %d ms after its parent died",
                (int)r.pids[i], DEATH_MS);
      /* A survivor would hold Criterion's pipes open for good: end it before failing. */
      if (!ended[i]) syscall(SYS_pidfd_send_signal, pfd[i], SIGKILL, NULL, 0);
    }
    if (gone < N)
      for (int i = 0; i < N; i++) waitpid(r.pids[i], NULL, 0);
    cr_assert_eq(gone, N, "%d of %d children outlived their parent by %d ms", N - gone, N,
                 DEATH_MS);
    cr_log_info("all %d children ended %lld ms after their parent was killed", N,
                (long long)took);
    /* They are ours now (subreaper): reap them and see how they ended. */
    for (int i = 0; i < N; i++) {
      cr_assert_eq(waitpid(r.pids[i], &status[i], 0), r.pids[i], "orphan %d was not reparented "
                   "to the subreaper: %s", (int)r.pids[i], strerror(errno));
      close(pfd[i]);
    }
  } else {
    gone = reap_orphans_by_waitpid(r.pids, status, deadline);
    if (gone < N) { /* survivors would hold Criterion's pipes open for good */
      for (int i = 0; i < N; i++) /* unreaped: still our child, so the pid is still its */
        if (status[i] == -1) kill(r.pids[i], SIGKILL);
      while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
      }
    }
    cr_assert_eq(gone, N, "%d of %d children outlived their parent by %d ms", N - gone, N,
                 DEATH_MS);
  }
  for (int i = 0; i < N; i++) {
    cr_assert(WIFSIGNALED(status[i]) && WTERMSIG(status[i]) == SIGKILL,
              "child %d ended with %s %d, not by the lifeline's SIGKILL", (int)r.pids[i],
              WIFSIGNALED(status[i]) ? "signal" : "status",
              WIFSIGNALED(status[i]) ? WTERMSIG(status[i]) : WEXITSTATUS(status[i]));
    cr_assert(pid_gone(r.pids[i]));
  }
  cr_assert(no_children(), "something is left for the subreaper to reap");
}

Test(parentdeath, children_of_a_killed_parent_die_within_5s) { parent_death(0); }

Test(parentdeath, children_die_with_the_parent_even_after_the_calling_thread_exited) {
  TSAN_SKIP_THREADS_IN_CHILDREN(); /* the intermediate parent calls from a thread it starts */
  parent_death(1);
}
