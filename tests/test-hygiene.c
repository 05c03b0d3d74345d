/* Descriptor, thread and zombie hygiene: nothing of a call outlives it, a child sees nothing
 * of the library's other calls, every library descriptor is close-on-exec, and the host's own
 * children and SIGCHLD handler are left alone. */
#define _GNU_SOURCE
#include "helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>

extern char **environ;

#define MAX_FDS 256

/* ---- descriptor inventory ------------------------------------------------------------------ */

struct fdinfo {
  int fd;
  int cloexec;
  int accmode;
  mode_t type; /* S_IFMT bits */
  dev_t dev;
  ino_t ino;
};

struct inventory_ {
  struct fdinfo *out;
  int max, n;
};
/* What inventory records of descriptor `fd`, read through /proc instead of through the
 * descriptor itself: the library's threads close their own descriptors whenever they are done
 * with them (a reaper thread, in the tests without pidfd), and an fcntl or fstat of one that
 * another thread closes is a race; ThreadSanitizer reports it. 0, or -1 when fd is gone. */
static int describe_fd(int fd, struct fdinfo *out) {
  char path[64], line[128];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  FILE *info = fopen(path, "re");
  if (!info) return -1;
  long flags = -1;
  while (flags < 0 && fgets(line, sizeof line, info))
    if (sscanf(line, "flags: %lo", &flags) != 1) flags = -1;
  fclose(info);
  struct stat st;
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  if (flags < 0 || stat(path, &st) < 0) return -1;
  *out = (struct fdinfo){fd, (flags & O_CLOEXEC) != 0, (int)(flags & O_ACCMODE),
                         st.st_mode & S_IFMT, st.st_dev, st.st_ino};
  return 0;
}

static int inventory_one_(int fd, void *ud) {
  struct inventory_ *x = ud;
  if (x->n < x->max && describe_fd(fd, &x->out[x->n]) == 0) x->n++;
  return 0;
}

/* The descriptors of this process (without the DIR's own and valgrind's), sorted. */
static int inventory(struct fdinfo *out, int max) {
  struct inventory_ x = {out, max, 0};
  if (each_fd(inventory_one_, &x) < 0) return -1;
  int n = x.n;
  for (int i = 1; i < n; i++) /* insertion sort: n is small */
    for (int j = i; j > 0 && out[j - 1].fd > out[j].fd; j--) {
      struct fdinfo tmp = out[j];
      out[j] = out[j - 1];
      out[j - 1] = tmp;
    }
  return n;
}

static const char *kind_of(mode_t type) {
  switch (type) {
  case S_IFSOCK: return "socket";
  case S_IFIFO: return "pipe";
  case S_IFREG: return "file";
  case 0: return "anon inode: pidfd, eventfd, epoll";
  default: return "other";
  }
}

static int has_fd(const struct fdinfo *v, int n, int fd) {
  for (int i = 0; i < n; i++)
    if (v[i].fd == fd) return 1;
  return 0;
}

/* 1 when an exec'ed program should have `fd`: stdio, or a descriptor of the baseline that
 * is not close-on-exec. */
static int inheritable(const struct fdinfo *v, int n, int fd) {
  if (fd <= 2) return 1;
  for (int i = 0; i < n; i++)
    if (v[i].fd == fd) return !v[i].cloexec;
  return 0;
}

/* The snapshot taken before the library did anything in this process. */
static struct fdinfo base[MAX_FDS];
static int n_base;

static void take_baseline(void) {
  n_base = inventory(base, MAX_FDS);
  cr_assert_gt(n_base, 0);
}

/* Runs `ls -l /proc/self/fd` through posix_spawn (no fork handlers run, so only close-on-exec
 * keeps descriptors out) and returns the descriptor numbers it printed (valgrind's left out). */
static int exec_listing(int *out, int max) {
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) < 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
  char *argv[] = {"ls", "-l", "/proc/self/fd", NULL};
  pid_t pid;
  int rc = posix_spawnp(&pid, "ls", &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pfd[1]);
  if (rc != 0) {
    close(pfd[0]);
    return -1;
  }
  static char buf[1 << 16];
  size_t len = 0;
  ssize_t r;
  while (len < sizeof buf - 1 && (r = read(pfd[0], buf + len, sizeof buf - 1 - len)) != 0) {
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    len += (size_t)r;
  }
  buf[len] = '\0';
  close(pfd[0]);
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  /* Lines look like "lrwx------ 1 root root 64 Nov 27 13:09 3 -> /dev/null". */
  int n = 0;
  for (char *line = strtok(buf, "\n"); line && n < max; line = strtok(NULL, "\n")) {
    char *arrow = strstr(line, " -> ");
    if (!arrow) continue;
    char *num = arrow;
    while (num > line && num[-1] != ' ') num--;
    int fd = atoi(num);
    if (!valgrinds(fd, arrow + 4)) out[n++] = fd;
  }
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? n : -1;
}

/* What changed between two inventories, for failure messages ("+fd 7 anon_inode:[eventfd]"). */
static const char *fd_changes(const struct fdinfo *a, int na, const struct fdinfo *b, int nb) {
  static char out[1024];
  out[0] = '\0';
  for (int pass = 0; pass < 2; pass++) {
    const struct fdinfo *x = pass ? b : a, *y = pass ? a : b;
    int nx = pass ? nb : na, ny = pass ? na : nb;
    for (int i = 0; i < nx; i++) {
      int same = 0;
      for (int j = 0; j < ny; j++)
        if (y[j].fd == x[i].fd && y[j].ino == x[i].ino && y[j].dev == x[i].dev) same = 1;
      if (same) continue;
      char path[64], target[128] = "?";
      snprintf(path, sizeof path, "/proc/self/fd/%d", x[i].fd);
      ssize_t r = readlink(path, target, sizeof target - 1);
      if (r >= 0) target[r] = '\0';
      if (pass == 0) snprintf(target, sizeof target, "(closed)");
      size_t len = strlen(out);
      snprintf(out + len, sizeof out - len, " %cfd %d %s", pass ? '+' : '-', x[i].fd, target);
    }
  }
  return out;
}

/* Takes a snapshot of this process's descriptors into `snap` (MAX_FDS entries). */
#define SNAPSHOT(snap, n) \
  struct fdinfo snap[MAX_FDS]; \
  int n = inventory(snap, MAX_FDS)
/* Expects as many descriptors as in the snapshot, saying which changed if not. */
#define EXPECT_SAME_FDS(snap, n)                                                              \
  do {                                                                                        \
    struct fdinfo now_[MAX_FDS];                                                              \
    int nn_ = inventory(now_, MAX_FDS);                                                       \
    cr_expect_eq(nn_, n, "%d descriptors, %d before:%s", nn_, n,                             \
                 fd_changes(snap, n, now_, nn_));                                             \
  } while (0)

/* ---- task functions -------------------------------------------------------------------------- */

static void *fn_hello(void *arg) { return bytes_of("hello"); }

static void *fn_inventory(void *arg) {
  static struct fdinfo v[MAX_FDS];
  int n = inventory(v, MAX_FDS);
  if (n < 0) ip_raise(errno, "cannot list /proc/self/fd");
  return ip_bytes_copy(v, (size_t)n * sizeof *v);
}

static void *fn_exec_listing(void *arg) {
  static int v[MAX_FDS];
  int n = exec_listing(v, MAX_FDS);
  if (n < 0) ip_raise(EIO, "could not run ls");
  return ip_bytes_copy(v, (size_t)n * sizeof *v);
}

static void *fn_raise(void *arg) { ip_raise(EPERM, "raised on purpose"); }
static void *fn_exit3(void *arg) { _exit(3); }
static void *fn_abort(void *arg) { abort(); }
static void *fn_big_inplace(void *arg) {
  ip_bytes *b = ip_bytes_alloc((size_t)4 << 20);
  memset(b->data, 1, b->len);
  return b;
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* Without pidfd_open (valgrind does not know it) the library reaps each child from a thread
 * of its own, which ends just after the call completes. Only there is the count given time
 * to settle (10 s, a hang guard); with pidfds it must be exact at once. */
static int threads_now(int want) {
  return have_pidfd() ? count_threads() : threads_settled(want, 10000, NULL);
}

/* One complete call of fn_hello, waited on by this thread. */
static void one_call(ip_task *t) {
  ip_future *f = ip_call(t, NULL);
  cr_assert_not_null(f);
  cr_assert_str_eq(str_of(f), "hello", "%s", why(f));
  ip_future_free(f);
}

/* Waits for a future that must complete on its own while other calls still run; 60 s is a
 * hang guard (a future held up by an unrelated child would otherwise deadlock the test). */
#define ASSERT_COMPLETES(f)                                                                   \
  do {                                                                                        \
    int rc_;                                                                                  \
    while ((rc_ = ip_future_wait((f), 60000)) == IP_EINTR) {                                  \
    }                                                                                         \
    cr_assert_eq(rc_, 0, "%s (child %d) did not complete", #f, (int)ip_future_pid(f));        \
  } while (0)

/* ---- without pidfd_open ------------------------------------------------------------------
 * Where the kernel lacks pidfd_open (before 5.3, or under valgrind) the library watches each
 * child with a reaper thread and an exit pipe instead. A seccomp filter that makes
 * pidfd_open fail with ENOSYS in this test's process (and its children) takes that path on
 * any kernel, so the same hygiene checks run over it. */
static void deny_pidfd_open(void) {
#if defined(__x86_64__)
  const unsigned arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  const unsigned arch = AUDIT_ARCH_AARCH64;
#else
  const unsigned arch = 0;
  cr_skip_test("no seccomp arch constant for this machine");
#endif
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof filter / sizeof *filter, filter};
  cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
  cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0, "seccomp: %s",
               strerror(errno));
  errno = 0;
  cr_assert_eq(open_pidfd(getpid()), -1);
  cr_assert_eq(errno, ENOSYS);
}

/* ---- counts come back to the baseline -------------------------------------------------------- */

/* Calls that are waited for need no thread (the waiting thread drives the supervisor); the
 * first timed call starts the one supervisor thread, and nothing starts a second. */
Test(hygiene, only_a_timed_call_or_the_ready_fd_adds_a_thread_and_only_one) {
  int threads0 = count_threads();
  ip_task *t = ip_task_new(fn_hello, NULL), *timed = ip_task_new(fn_hello, NULL);
  cr_assert(t && timed);
  cr_assert_eq(ip_task_set_timeout(timed, 600000), 0);
  cr_expect_eq(threads_now(threads0), threads0, "ip_task_new started a thread");
  for (int i = 0; i < 20; i++) one_call(t);
  cr_expect_eq(threads_now(threads0), threads0, "untimed calls started a thread");
  one_call(timed);
  cr_expect_eq(threads_now(threads0 + 1), threads0 + 1);
  for (int i = 0; i < 10; i++) one_call(i % 2 ? t : timed);
  cr_assert_geq(ip_ready_fd(), 0);
  cr_expect_eq(threads_now(threads0 + 1), threads0 + 1);
  ip_task_free(t);
  ip_task_free(timed);
}

/* A thread that runs the supervisor in its wait hands it over to the thread that a timed call
 * starts, and every call still completes. The waiter is seen asleep in epoll_wait (driving)
 * before the timed call is made. */
struct driver {
  ip_task *t;
  struct gate *g;
  _Atomic pid_t tid;
  int ok;
};

static void *drive_and_wait(void *p) {
  struct driver *d = p;
  d->tid = (pid_t)syscall(SYS_gettid);
  ip_future *f = ip_call(d->t, d->g);
  const char *s = str_of(f);
  d->ok = s && strcmp(s, "released") == 0;
  ip_future_free(f);
  return NULL;
}

static void driving_waiter_hands_over(bool by_ready_fd) {
  int threads0 = count_threads();
  struct gate g;
  gate_open(&g);
  ip_task *gated = ip_task_new(wait_on_gate, NULL), *timed = ip_task_new(wait_on_gate, NULL);
  cr_assert(gated && timed);
  cr_assert_eq(ip_task_set_timeout(timed, 600000), 0);
  struct driver d = {.t = gated, .g = &g};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, drive_and_wait, &d), 0);
  int64_t deadline = now_ms() + 20000;
  while (!d.tid || blocked_syscall(getpid(), d.tid) != SYS_epoll_wait) {
    cr_assert_gt(left_ms(deadline), 0, "the waiting thread never slept in epoll_wait");
    poll(NULL, 0, 1); /* paces the watching of /proc only */
  }
  if (by_ready_fd) cr_assert_geq(ip_ready_fd(), 0);
  ip_future *f = ip_call(by_ready_fd ? gated : timed, &g); /* an untimed call kicks nobody */
  /* Without pidfds (valgrind) each call in flight has a reaper thread too: no exact count. */
  bool exact = have_pidfd();
  if (exact) cr_expect_eq(count_threads(), threads0 + 2, "the waiter and the supervisor");
  /* Handed over: the waiter now sleeps on its eventfd (ppoll) while the thread drives. */
  deadline = now_ms() + 20000;
  while (blocked_syscall(getpid(), d.tid) != SYS_ppoll) {
    cr_assert_gt(left_ms(deadline), 0, "the waiter kept driving after the thread started");
    poll(NULL, 0, 1);
  }
  gate_release(&g, 2);
  cr_expect_str_eq(str_of(f), "released", "%s", why(f));
  cr_assert_eq(pthread_join(th, NULL), 0);
  cr_expect(d.ok, "the driving waiter's call did not come back right");
  if (exact) cr_expect_eq(count_threads(), threads0 + 1, "the supervisor stays");
  ip_future_free(f);
  ip_task_free(gated);
  ip_task_free(timed);
  gate_close(&g);
}

Test(hygiene, a_driving_waiter_hands_over_to_the_thread_a_timed_call_starts) {
  driving_waiter_hands_over(false);
}
Test(hygiene, a_driving_waiter_hands_over_to_the_thread_the_ready_fd_starts) {
  driving_waiter_hands_over(true);
}

Test(hygiene, use_supervisor_thread_starts_it_at_the_next_call) {
  int threads0 = count_threads();
  cr_assert_eq(ip_use_supervisor_thread(), 0);
  cr_expect_eq(threads_now(threads0), threads0, "no call yet, so no thread yet");
  ip_task *t = ip_task_new(fn_hello, NULL);
  cr_assert_not_null(t);
  one_call(t);
  cr_expect_eq(threads_now(threads0 + 1), threads0 + 1);
  cr_assert_eq(ip_use_supervisor_thread(), 0);
  one_call(t);
  cr_expect_eq(threads_now(threads0 + 1), threads0 + 1);
  ip_task_free(t);
}

Test(hygiene, the_ready_fd_starts_the_supervisor_thread) {
  int threads0 = count_threads();
  ip_task *t = ip_task_new(fn_hello, NULL);
  cr_assert_not_null(t);
  one_call(t);
  cr_expect_eq(threads_now(threads0), threads0);
  int fd = ip_ready_fd();
  cr_assert_geq(fd, 0);
  cr_expect_eq(threads_now(threads0 + 1), threads0 + 1);
  /* Nobody waits in the library now, yet the call completes and the descriptor says so. */
  ip_future *f = ip_call(t, NULL);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  cr_assert_eq(poll(&p, 1, 20000), 1, "no completion reached the ready fd"); /* hang guard */
  cr_expect(ip_future_done(f));
  ip_future_free(f);
  ip_task_free(t);
}

static void many_calls_leave_no_descriptor_thread_or_child(void) {
  ip_task *t = ip_task_new(fn_hello, NULL);
  cr_assert_not_null(t);
  int threads_pre = count_threads();
  int fds0 = warm_baseline(), threads0 = threads_now(threads_pre);
  SNAPSHOT(snap0, nsnap0);
  enum { ROUNDS = 10, BATCH = 10 };
  for (int r = 0; r < ROUNDS; r++) {
    ip_future *f[BATCH];
    for (int i = 0; i < BATCH; i++) f[i] = ip_call(t, NULL);
    for (int i = 0; i < BATCH; i++) {
      cr_assert_str_eq(str_of(f[i]), "hello", "%s", why(f[i]));
      ip_future_free(f[i]);
    }
  }
  cr_expect_eq(count_fds(), fds0);
  EXPECT_SAME_FDS(snap0, nsnap0);
  cr_expect_eq(threads_now(threads0), threads0, "%d threads, %d before", count_threads(), threads0);
  cr_expect(no_children());
  ip_task_free(t);
}

Test(hygiene, many_calls_leave_no_descriptor_thread_or_child) {
  many_calls_leave_no_descriptor_thread_or_child();
}
Test(hygiene, many_calls_leave_no_descriptor_thread_or_child_without_pidfd) {
  deny_pidfd_open();
  many_calls_leave_no_descriptor_thread_or_child();
}

Test(hygiene, a_completed_futures_child_is_already_reaped) {
  ip_task *t = ip_task_new(fn_hello, NULL);
  cr_assert_not_null(t);
  for (int i = 0; i < 10; i++) {
    ip_future *f = ip_call(t, NULL);
    cr_assert_eq(ip_future_wait(f, -1), 0);
    pid_t pid = ip_future_pid(f);
    cr_assert_gt(pid, 0);
    cr_expect(pid_gone(pid), "child %d of a completed future still exists", (int)pid);
    ip_future_free(f);
  }
  cr_expect(no_children());
  ip_task_free(t);
}

static void failed_canceled_and_unread_calls_leave_nothing_behind(void) {
  ip_task *hello = ip_task_new(fn_hello, NULL);
  ip_task *raise_ = ip_task_new(fn_raise, NULL), *exit3 = ip_task_new(fn_exit3, NULL);
  ip_task *abort_ = ip_task_new(fn_abort, NULL), *gate = ip_task_new(wait_on_gate, NULL);
  ip_task *timed = ip_task_new(wait_on_gate, NULL), *big = ip_task_new(fn_big_inplace, NULL);
  cr_assert(hello && raise_ && exit3 && abort_ && gate && timed && big);
  cr_assert_eq(ip_task_set_timeout(timed, 50), 0);
  struct gate g;
  gate_open(&g);
  /* The timed call starts the supervisor thread, which stays: start it before counting (and
   * count before it, since without pidfds its reaper thread may not have ended yet). */
  int threads_pre = count_threads();
  ip_future *warm = ip_call(timed, &g);
  ip_future_free(warm);
  int fds0 = warm_baseline(), threads0 = threads_now(threads_pre + 1);
  SNAPSHOT(snap0, nsnap0);

  for (int round = 0; round < 3; round++) {
    ip_future *f[8];
    f[0] = ip_call(raise_, NULL);
    f[1] = ip_call(exit3, NULL);
    f[2] = ip_call(abort_, NULL);
    f[3] = ip_call(gate, &g); /* canceled */
    f[4] = ip_call(gate, &g); /* freed while running */
    f[5] = ip_call(timed, &g); /* times out */
    f[6] = ip_call(big, NULL);        /* in-place result never read */
    f[7] = ip_call(big, NULL);        /* in-place result read */
    ASSERT_COMPLETES(f[0]);
    cr_expect_eq(ip_future_status(f[0]), IP_ERAISED);
    ASSERT_COMPLETES(f[1]);
    cr_expect_eq(ip_future_status(f[1]), IP_EEXITED);
    ASSERT_COMPLETES(f[2]);
    cr_expect_eq(ip_future_status(f[2]), IP_ESIGNALED);
    cr_expect_eq(ip_future_cancel(f[3]), 0);
    cr_expect_eq(ip_future_status(f[3]), IP_ECANCELED);
    ip_future_free(f[4]);
    f[4] = NULL;
    ASSERT_COMPLETES(f[5]);
    cr_expect_eq(ip_future_status(f[5]), IP_ETIMEDOUT);
    ASSERT_COMPLETES(f[6]);
    cr_expect_not_null(ip_future_value(f[7]), "%s", why(f[7]));
    for (int i = 0; i < 8; i++) ip_future_free(f[i]);
    cr_expect(no_children(), "round %d left a child", round);
  }
  cr_expect_eq(count_fds(), fds0);
  EXPECT_SAME_FDS(snap0, nsnap0);
  cr_expect_eq(threads_now(threads0), threads0, "%d threads, %d before", count_threads(), threads0);
  gate_close(&g);
  ip_task_free(hello), ip_task_free(raise_), ip_task_free(exit3), ip_task_free(abort_);
  ip_task_free(gate), ip_task_free(timed), ip_task_free(big);
}

Test(hygiene, failed_canceled_and_unread_calls_leave_nothing_behind) {
  failed_canceled_and_unread_calls_leave_nothing_behind();
}
Test(hygiene, failed_canceled_and_unread_calls_leave_nothing_behind_without_pidfd) {
  deny_pidfd_open();
  failed_canceled_and_unread_calls_leave_nothing_behind();
}

/* Each thread really blocks in a wait (so it gets a waiter eventfd), then exits. */
static void *wait_in_thread(void *t) {
  struct gate g; /* no gate_open: this thread reports a failure by its result, not an assert */
  if (pipe2(g.fd, O_CLOEXEC) < 0) return NULL;
  ip_future *f = ip_call(t, &g);
  int ok = ip_future_wait(f, 0) == IP_ETIMEDOUT;
  ok &= write(g.fd[1], "x", 1) == 1;
  const char *s = str_of(f);
  ok &= s && strcmp(s, "released") == 0;
  ip_future_free(f);
  gate_close(&g);
  return (void *)(intptr_t)ok;
}

Test(hygiene, threads_that_waited_leave_no_descriptor_behind) {
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  cr_assert_not_null(t);
  int threads_pre = count_threads();
  int fds0 = warm_baseline(), threads0 = threads_now(threads_pre);
  SNAPSHOT(snap0, nsnap0);
  for (int i = 0; i < 8; i++) {
    pthread_t th[4];
    void *ok;
    for (int k = 0; k < 4; k++) cr_assert_eq(pthread_create(&th[k], NULL, wait_in_thread, t), 0);
    for (int k = 0; k < 4; k++) {
      cr_assert_eq(pthread_join(th[k], &ok), 0);
      cr_expect(ok);
    }
  }
  cr_expect_eq(count_fds(), fds0);
  EXPECT_SAME_FDS(snap0, nsnap0);
  cr_expect_eq(threads_now(threads0), threads0, "%d threads, %d before", count_threads(), threads0);
  cr_expect(no_children());
  ip_task_free(t);
}

/* ---- what a child sees ------------------------------------------------------------------------ */

/* Starts 10 calls that block, then runs `inv` (pdeathsig as given) and returns the child's
 * descriptors that the parent did not have before the library started. */
static int child_extras(int pdeathsig, struct fdinfo *extra, int max) {
  struct gate g;
  gate_open(&g); /* the gate is the test's, not the library's */
  take_baseline();
  ip_task *blocked = ip_task_new(wait_on_gate, NULL), *inv = ip_task_new(fn_inventory, NULL);
  cr_assert(blocked && inv);
  cr_assert_eq(ip_task_set_pdeathsig(inv, pdeathsig), 0);
  ip_future *others[10];
  for (int i = 0; i < 10; i++) others[i] = ip_call(blocked, &g);
  ip_future *f = ip_call(inv, NULL);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s", why(f));
  const struct fdinfo *v = b->data;
  int n = (int)(b->len / sizeof *v), k = 0;
  for (int i = 0; i < n; i++) {
    if (has_fd(base, n_base, v[i].fd)) continue;
    cr_assert_lt(k, max);
    extra[k++] = v[i];
  }
  /* The parent's own descriptors are all still there in the child. */
  for (int i = 0; i < n_base; i++) {
    int found = 0;
    for (int j = 0; j < n; j++)
      if (v[j].fd == base[i].fd && v[j].ino == base[i].ino && v[j].dev == base[i].dev) found = 1;
    cr_expect(found, "the parent's fd %d is missing in the child", base[i].fd);
  }
  ip_future_free(f);
  gate_release(&g, 10);
  for (int i = 0; i < 10; i++) {
    cr_expect_str_eq(str_of(others[i]), "released", "%s", why(others[i]));
    ip_future_free(others[i]);
  }
  gate_close(&g);
  ip_task_free(blocked);
  ip_task_free(inv);
  return k;
}

Test(hygiene, child_has_only_its_own_channel_beyond_the_parents_descriptors) {
  struct fdinfo extra[MAX_FDS];
  int k = child_extras(0, extra, MAX_FDS);
  cr_expect_eq(k, 1, "the child has %d descriptors the parent did not have before any call", k);
  for (int i = 0; i < k; i++)
    cr_expect_eq(extra[i].type, S_IFSOCK, "extra fd %d is not a socket (mode 0%o)", extra[i].fd,
                 (unsigned)extra[i].type);
}

/* With parent-death protection on (the default) the child also holds its lifeline: one
 * read-only pipe end. Nothing else. */
Test(hygiene, child_has_only_its_channel_and_lifeline_with_pdeathsig) {
  struct fdinfo extra[MAX_FDS];
  int k = child_extras(1, extra, MAX_FDS);
  int socks = 0, fifos = 0;
  for (int i = 0; i < k; i++) {
    if (extra[i].type == S_IFSOCK) socks++;
    else if (extra[i].type == S_IFIFO && extra[i].accmode == O_RDONLY) fifos++;
    else cr_expect_fail("extra fd %d of mode 0%o", extra[i].fd, (unsigned)extra[i].type);
  }
  cr_expect_eq(socks, 1, "%d sockets beyond the parent's", socks);
  cr_expect_leq(fifos, 1, "%d pipes beyond the parent's", fifos);
}

/* The same with calls started at once from several threads: a call's fork must not copy the
 * channel or pidfd of another call that a second thread is starting at that moment. */
static ip_task *inv_task;

struct leak_report {
  int calls, leaky, failed;
  struct fdinfo first[4]; /* the first leaky call's extra descriptors */
  int n_first;
};

static int calls_per_thread;

static void *inventory_from_thread(void *arg) {
  struct leak_report *r = arg;
  for (int i = 0; i < calls_per_thread; i++) {
    ip_future *f = ip_call(inv_task, NULL);
    const ip_bytes *b = ip_future_value(f);
    r->calls++;
    if (!b) {
      r->failed++;
      ip_future_free(f);
      continue;
    }
    const struct fdinfo *v = b->data;
    int n = (int)(b->len / sizeof *v), socks = 0, fifos = 0, other = 0;
    struct fdinfo extra[4];
    int k = 0;
    for (int j = 0; j < n; j++) {
      if (has_fd(base, n_base, v[j].fd)) continue;
      if (k < 4) extra[k++] = v[j];
      if (v[j].type == S_IFSOCK) socks++;
      else if (v[j].type == S_IFIFO && v[j].accmode == O_RDONLY) fifos++;
      else other++;
    }
    if (socks > 1 || fifos > 1 || other > 0) {
      if (r->leaky++ == 0) {
        memcpy(r->first, extra, sizeof extra);
        r->n_first = k;
      }
    }
    ip_future_free(f);
  }
  return NULL;
}

static void child_sees_no_descriptor_of_calls_other_threads_are_starting(void) {
  take_baseline();
  if (!calls_per_thread) calls_per_thread = 50;
  inv_task = ip_task_new(fn_inventory, NULL);
  cr_assert_not_null(inv_task);
  enum { THREADS = 4 };
  pthread_t th[THREADS];
  struct leak_report r[THREADS];
  memset(r, 0, sizeof r);
  for (int i = 0; i < THREADS; i++)
    cr_assert_eq(pthread_create(&th[i], NULL, inventory_from_thread, &r[i]), 0);
  for (int i = 0; i < THREADS; i++) cr_assert_eq(pthread_join(th[i], NULL), 0);
  int calls = 0, leaky = 0, failed = 0;
  char desc[256] = "";
  for (int i = 0; i < THREADS; i++) {
    calls += r[i].calls, leaky += r[i].leaky, failed += r[i].failed;
    if (r[i].leaky && !desc[0])
      for (int j = 0; j < r[i].n_first; j++)
        snprintf(desc + strlen(desc), sizeof desc - strlen(desc), " fd %d (%s%s)",
                 r[i].first[j].fd, kind_of(r[i].first[j].type),
                 r[i].first[j].accmode == O_WRONLY ? ", write end" : "");
  }
  cr_expect_eq(failed, 0);
  cr_expect_eq(leaky, 0,
               "%d of %d children held descriptors of other calls; the first had, beyond the "
               "parent's own:%s",
               leaky, calls, desc);
  cr_expect(no_children());
  ip_task_free(inv_task);
}

Test(hygiene, child_sees_no_descriptor_of_calls_other_threads_are_starting) {
  child_sees_no_descriptor_of_calls_other_threads_are_starting();
}
Test(hygiene, child_sees_no_descriptor_of_calls_other_threads_are_starting_without_pidfd) {
  deny_pidfd_open();
  calls_per_thread = 150; /* the window here is narrow: more tries */
  child_sees_no_descriptor_of_calls_other_threads_are_starting();
}

/* What such a leak costs: a call must complete when its own child ends, never later because
 * an unrelated child (here: ones that block until the end of the test) holds one of its
 * descriptors. Thread B keeps starting blocking calls while this thread runs quick ones. */
enum { MAX_BLOCKERS = 300 };

struct blockers {
  ip_task *t;
  struct gate *g;
  atomic_int stop;
  int n;
  ip_future *f[MAX_BLOCKERS];
};

/* Starts blocking calls for as long as the quick ones run. */
static void *start_blockers(void *arg) {
  struct blockers *b = arg;
  while (!atomic_load(&b->stop) && b->n < MAX_BLOCKERS) b->f[b->n++] = ip_call(b->t, b->g);
  return NULL;
}

struct quick {
  ip_task *t;
  ip_future *stuck;
  int done;
};

static void *quick_calls(void *arg) {
  struct quick *q = arg;
  for (int i = 0; i < 300 && !q->stuck; i++) {
    ip_future *f = ip_call(q->t, NULL);
    int rc;
    /* 10 s is a hang guard: the child ends at once, its future must follow. */
    while ((rc = ip_future_wait(f, 10000)) == IP_EINTR) {
    }
    if (rc != 0) q->stuck = f;
    else {
      q->done++;
      ip_future_free(f);
    }
  }
  return NULL;
}

static void completion_never_waits_for_an_unrelated_child(void) {
  enum { QUICK = 3 };
  struct gate g;
  gate_open(&g);
  ip_task *hello = ip_task_new(fn_hello, NULL);
  static struct blockers b;
  b.t = ip_task_new(wait_on_gate, NULL);
  b.g = &g;
  cr_assert(hello && b.t);
  pthread_t tb, tq[QUICK];
  struct quick q[QUICK];
  cr_assert_eq(pthread_create(&tb, NULL, start_blockers, &b), 0);
  for (int i = 0; i < QUICK; i++) {
    q[i] = (struct quick){hello, NULL, 0};
    cr_assert_eq(pthread_create(&tq[i], NULL, quick_calls, &q[i]), 0);
  }
  for (int i = 0; i < QUICK; i++) cr_assert_eq(pthread_join(tq[i], NULL), 0);
  atomic_store(&b.stop, 1);
  cr_assert_eq(pthread_join(tb, NULL), 0);
  int stuck = 0, done = 0;
  pid_t stuck_pid = 0, stuck_gone = 0;
  for (int i = 0; i < QUICK; i++) {
    done += q[i].done;
    if (q[i].stuck && !stuck++) {
      stuck_pid = ip_future_pid(q[i].stuck);
      stuck_gone = pid_gone(stuck_pid);
    }
  }
  gate_release(&g, b.n); /* the blockers end; a stuck future completes now */
  for (int i = 0; i < b.n; i++) ip_future_free(b.f[i]);
  for (int i = 0; i < QUICK; i++) ip_future_free(q[i].stuck);
  cr_expect_eq(stuck, 0,
               "after %d calls (and %d blocking ones), %d did not complete until unrelated "
               "children ended; child %d of the first had %s",
               done, b.n, stuck, (int)stuck_pid, stuck_gone ? "exited and been reaped" : "ended");
  cr_expect(no_children());
  gate_close(&g);
  ip_task_free(hello);
  ip_task_free(b.t);
}

Test(hygiene, completion_never_waits_for_an_unrelated_child) {
  completion_never_waits_for_an_unrelated_child();
}
Test(hygiene, completion_never_waits_for_an_unrelated_child_without_pidfd) {
  deny_pidfd_open();
  completion_never_waits_for_an_unrelated_child();
}

/* ---- close-on-exec ------------------------------------------------------------------------- */

static void library_descriptors_in_the_parent_are_close_on_exec(void) {
  struct gate g;
  gate_open(&g);
  take_baseline();
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  cr_assert_not_null(t);
  cr_assert_geq(ip_ready_fd(), 0);
  ip_future *f[10];
  for (int i = 0; i < 10; i++) f[i] = ip_call(t, &g);
  cr_expect_eq(ip_future_wait(f[0], 0), IP_ETIMEDOUT); /* makes this thread's waiter */
  struct fdinfo now[MAX_FDS];
  int n = inventory(now, MAX_FDS), lib = 0;
  for (int i = 0; i < n; i++) {
    if (has_fd(base, n_base, now[i].fd)) continue;
    lib++;
    cr_expect(now[i].cloexec, "library fd %d (mode 0%o) is not close-on-exec", now[i].fd,
              (unsigned)now[i].type);
  }
  cr_expect_geq(lib, 20, "only %d library descriptors with 10 calls in flight", lib);
  /* And for real: a program exec'ed now sees none of them (ls adds its own directory fd). */
  int listed[MAX_FDS];
  int m = exec_listing(listed, MAX_FDS), unknown = 0;
  cr_assert_geq(m, 0, "could not run ls");
  for (int i = 0; i < m; i++)
    if (!inheritable(base, n_base, listed[i])) unknown++;
  /* One of them is the directory ls reads. */
  cr_expect_eq(unknown, 1, "an exec'ed program had %d unexpected descriptors", unknown - 1);
  gate_release(&g, 10);
  for (int i = 0; i < 10; i++) ip_future_free(f[i]);
  gate_close(&g);
  ip_task_free(t);
}

Test(hygiene, library_descriptors_in_the_parent_are_close_on_exec) {
  library_descriptors_in_the_parent_are_close_on_exec();
}
Test(hygiene, library_descriptors_in_the_parent_are_close_on_exec_without_pidfd) {
  deny_pidfd_open();
  library_descriptors_in_the_parent_are_close_on_exec();
}

Test(hygiene, library_descriptors_in_the_child_are_close_on_exec) {
  struct gate g;
  gate_open(&g);
  take_baseline();
  ip_task *blocked = ip_task_new(wait_on_gate, NULL), *inv = ip_task_new(fn_inventory, NULL);
  cr_assert(blocked && inv);
  ip_future *others[5];
  for (int i = 0; i < 5; i++) others[i] = ip_call(blocked, &g);
  ip_future *f = ip_call(inv, NULL);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s", why(f));
  const struct fdinfo *v = b->data;
  int n = (int)(b->len / sizeof *v);
  for (int i = 0; i < n; i++)
    if (!has_fd(base, n_base, v[i].fd))
      cr_expect(v[i].cloexec, "fd %d (mode 0%o) in the child is not close-on-exec", v[i].fd,
                (unsigned)v[i].type);
  ip_future_free(f);
  gate_release(&g, 5);
  for (int i = 0; i < 5; i++) ip_future_free(others[i]);
  gate_close(&g);
  ip_task_free(blocked);
  ip_task_free(inv);
}

Test(hygiene, program_exec_ed_by_a_child_inherits_no_library_descriptor) {
  struct gate g;
  gate_open(&g);
  take_baseline();
  ip_task *blocked = ip_task_new(wait_on_gate, NULL), *ls = ip_task_new(fn_exec_listing, NULL);
  cr_assert(blocked && ls);
  ip_future *others[5];
  for (int i = 0; i < 5; i++) others[i] = ip_call(blocked, &g);
  ip_future *f = ip_call(ls, NULL);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b, "%s", why(f));
  const int *v = b->data;
  int n = (int)(b->len / sizeof *v), unknown = 0;
  cr_assert_gt(n, 0);
  for (int i = 0; i < n; i++)
    if (!inheritable(base, n_base, v[i])) unknown++;
  /* One of them is the directory ls reads. */
  cr_expect_eq(unknown, 1, "ls run by a child had %d unexpected descriptors", unknown - 1);
  ip_future_free(f);
  gate_release(&g, 5);
  for (int i = 0; i < 5; i++) ip_future_free(others[i]);
  gate_close(&g);
  ip_task_free(blocked);
  ip_task_free(ls);
}

/* ---- the host's own descriptors ------------------------------------------------------------- */

static int file_fds[2];

static void *fn_read_files(void *arg) {
  static char buf[2][64];
  static ip_bytes b;
  for (int i = 0; i < 2; i++) {
    ssize_t r = pread(file_fds[i], buf[i], sizeof buf[i] - 1, 0);
    if (r < 0) ip_raise(errno, "pread of fd %d failed", file_fds[i]);
    buf[i][r] = '\0';
  }
  static char out[160];
  snprintf(out, sizeof out, "%s|%s", buf[0], buf[1]);
  b.data = out;
  b.len = strlen(out);
  return &b;
}

Test(hygiene, files_the_host_opened_stay_open_in_the_child) {
  char p0[] = "/tmp/ip-hygiene-XXXXXX", p1[] = "/tmp/ip-hygiene-XXXXXX";
  file_fds[0] = mkstemp(p0);                   /* inheritable */
  file_fds[1] = mkostemp(p1, O_CLOEXEC);       /* close-on-exec, but a fork keeps it */
  cr_assert(file_fds[0] >= 0 && file_fds[1] >= 0);
  unlink(p0);
  unlink(p1);
  cr_assert_eq(write(file_fds[0], "first file", 10), 10);
  cr_assert_eq(write(file_fds[1], "second file", 11), 11);
  ip_task *t = ip_task_new(fn_read_files, NULL);
  cr_assert_not_null(t);
  for (int i = 0; i < 3; i++) {
    ip_future *f = ip_call(t, NULL);
    cr_expect_str_eq(str_of(f), "first file|second file", "%s", why(f));
    ip_future_free(f);
  }
  /* Still open and intact in the parent. */
  char buf[16] = {0};
  cr_expect_eq(pread(file_fds[0], buf, 10, 0), 10);
  cr_expect_str_eq(buf, "first file");
  cr_expect_geq(fcntl(file_fds[1], F_GETFD), 0);
  close(file_fds[0]);
  close(file_fds[1]);
  ip_task_free(t);
}

/* ---- the host's own children ---------------------------------------------------------------- */

static void host_child_is_never_reaped_by_the_library(void) {
  ip_task *t = ip_task_new(fn_hello, NULL);
  cr_assert_not_null(t);
  one_call(t); /* the supervisor is running */
  struct gate g;
  gate_open(&g);
  /* One host child that is already a zombie during the calls, one that ends after them. */
  pid_t zombie = fork();
  cr_assert_geq(zombie, 0);
  if (zombie == 0) _exit(42);
  pid_t later = fork();
  cr_assert_geq(later, 0);
  if (later == 0) {
    char c;
    close(g.fd[1]);
    while (read(g.fd[0], &c, 1) < 0 && errno == EINTR) {
    }
    _exit(43);
  }
  siginfo_t si;
  memset(&si, 0, sizeof si);
  cr_assert_eq(waitid(P_PID, (id_t)zombie, &si, WEXITED | WNOWAIT), 0); /* it is a zombie */
  for (int i = 0; i < 50; i++) one_call(t);
  ip_future *f[10];
  for (int i = 0; i < 10; i++) f[i] = ip_call(t, NULL);
  gate_release(&g, 1); /* `later` exits while these run */
  for (int i = 0; i < 10; i++) {
    cr_expect_str_eq(str_of(f[i]), "hello", "%s", why(f[i]));
    ip_future_free(f[i]);
  }
  int st;
  cr_assert_eq(waitpid(zombie, &st, 0), zombie, "the library reaped the host's child");
  cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 42);
  cr_assert_eq(waitpid(later, &st, 0), later, "the library reaped the host's child");
  cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 43);
  cr_expect(no_children());
  gate_close(&g);
  ip_task_free(t);
}

Test(hygiene, host_child_is_never_reaped_by_the_library) {
  host_child_is_never_reaped_by_the_library();
}
Test(hygiene, host_child_is_never_reaped_by_the_library_without_pidfd) {
  deny_pidfd_open();
  host_child_is_never_reaped_by_the_library();
}

/* ---- the host's SIGCHLD handler ------------------------------------------------------------- */

static int sig_pipe[2];
static atomic_int sigchld_count;

static void on_sigchld(int sig, siginfo_t *si, void *uc) {
  int e = errno;
  atomic_fetch_add(&sigchld_count, 1);
  pid_t p = si->si_pid;
  ssize_t r = write(sig_pipe[1], &p, sizeof p);
  (void)r;
  errno = e;
}

static void on_sigchld_reaping(int sig) {
  int e = errno;
  atomic_fetch_add(&sigchld_count, 1);
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = e;
}

/* Reads pids from the signal pipe until `want` shows up; 0 when it did. 10 s is a hang
 * guard: the signal either came or never will. */
static int await_sigchld_for(pid_t want) {
  for (;;) {
    struct pollfd p = {sig_pipe[0], POLLIN, 0};
    int r = poll(&p, 1, 10000);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    pid_t got;
    while (read(sig_pipe[0], &got, sizeof got) == (ssize_t)sizeof got)
      if (got == want) return 0;
  }
}

Test(hygiene, host_sigchld_handler_keeps_working_and_futures_complete) {
  cr_assert_eq(pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK), 0);
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigchld;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  cr_assert_eq(sigaction(SIGCHLD, &sa, NULL), 0);

  ip_task *t = ip_task_new(fn_hello, NULL);
  cr_assert_not_null(t);
  ip_future *f[20];
  for (int i = 0; i < 20; i++) f[i] = ip_call(t, NULL);
  for (int i = 0; i < 20; i++) {
    cr_expect_eq(ip_future_wait(f[i], -1), 0, "only the host's own children interrupt a wait");
    cr_expect_str_eq(str_of(f[i]), "hello", "%s", why(f[i]));
    ip_future_free(f[i]);
  }
  cr_expect_gt(atomic_load(&sigchld_count), 0, "the handler never saw a child of ours end");
  cr_assert_eq(sigaction(SIGCHLD, NULL, &old), 0);
  cr_expect(old.sa_sigaction == on_sigchld, "the library replaced the host's SIGCHLD handler");

  /* The handler still sees the host's own child, which the library leaves for us to reap. */
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) _exit(7);
  cr_expect_eq(await_sigchld_for(pid), 0, "no SIGCHLD for the host's child");
  int st;
  cr_assert_eq(waitpid(pid, &st, 0), pid);
  cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 7);
  cr_expect(no_children());
  ip_task_free(t);
}

/* A host that reaps every child in its SIGCHLD handler (waitpid(-1)) takes the library's
 * children too; futures must still complete, with the value the child sent. */
Test(hygiene, futures_complete_under_a_reaping_sigchld_handler) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigchld_reaping;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  cr_assert_eq(sigaction(SIGCHLD, &sa, NULL), 0);
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  cr_assert_not_null(t);
  ip_future *f[20];
  /* The children wait at the gate, so each has a pidfd before it can end and be reaped. */
  for (int i = 0; i < 20; i++) f[i] = ip_call(t, &g);
  gate_release(&g, 20);
  for (int i = 0; i < 20; i++) {
    /* A future whose child someone else reaped is the likely hang: guard the wait (60 s, far
     * beyond need; not a timing threshold). */
    int rc;
    while ((rc = ip_future_wait(f[i], 60000)) == IP_EINTR) {
    }
    cr_assert_eq(rc, 0, "future %d never completed", i);
    cr_expect_str_eq(str_of(f[i]), "released", "%s", why(f[i]));
    ip_future_free(f[i]);
  }
  cr_expect(no_children());
  gate_close(&g);
  ip_task_free(t);
}
