/* Resource exhaustion: with RLIMIT_NOFILE or the number of processes lowered so that
 * socketpair/fork fail in the middle of a storm, the affected calls come back as futures that
 * already failed (IP_EMFILE / IP_EAGAIN), the others succeed, and once the limit is lifted new
 * calls succeed again. No descriptor, child or zombie is left.
 *
 * Making fork fail needs care when the suite runs as root, for whom the kernel does not
 * enforce RLIMIT_NPROC at all: the scenario then runs in a subject process that gives up
 * root (setresuid to nobody) before lowering the limit. It also enters a new user namespace,
 * where the kernel counts only the processes created inside it, so other processes of the
 * same user elsewhere on the machine cannot move the limit. Where a pids cgroup can be made
 * (root, cgroup v1 or v2), the same storm also runs under pids.max. */
#define _GNU_SOURCE
#include "helpers.h"
#include <grp.h>
#include <sched.h>
#include <sys/stat.h>

/* A guard against hangs only. */
TestSuite(exhaustion, .timeout = 300);

static void *return_hello(void *arg) { return bytes_of("hello"); }

/* One call this thread really waited for (its child held at the gate until the wait began):
 * from then on the supervisor runs and this thread has its waiter, so the descriptor count is
 * a baseline. Returns 0 when the call worked. */
static int warm_up(ip_task *blocked, struct gate *g) {
  ip_future *f = ip_call(blocked, g);
  if (!f || ip_future_wait(f, 0) != IP_ETIMEDOUT) return -1;
  if (gate_try_release(g, 1) != 0 || ip_future_wait(f, -1) != 0) return -1;
  const char *v = str_of(f);
  int rc = v && strcmp(v, "released") == 0 ? 0 : -1;
  ip_future_free(f);
  return rc;
}

/* Classifies the futures of a storm: started (a child runs) or failed at once with `code`. */
struct storm {
  int n, started, failed, other;
  ip_future *fs[64];
};

static void storm_classify(struct storm *s, int code) {
  s->started = s->failed = s->other = 0;
  for (int i = 0; i < s->n; i++) {
    ip_future *f = s->fs[i];
    if (!ip_future_done(f) && ip_future_pid(f) > 0) s->started++;
    else if (ip_future_status(f) == code) s->failed++;
    else s->other++;
  }
}

/* ---- RLIMIT_NOFILE --------------------------------------------------------------------------- */

/* Fills every hole below the highest descriptor with /dev/null so that the numbers in use are
 * exactly 0..max; returns how many it opened (in fds[]). */
static int fill_holes(int *fds, int cap) {
  int n = 0, max = max_fd();
  for (;;) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    if (fd > max) {
      close(fd);
      return n;
    }
    cr_assert_lt(n, cap);
    fds[n++] = fd;
  }
}

/* Waits for every future of l, hands each to check(), frees it. Returns how many came. */
static int drain(ip_list *l, void (*check)(ip_future *, void *), void *ud) {
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  int rc, n = 0;
  while ((rc = ip_waitfor_next(&w, l, 0, guard_ms(60000), &f)) != 0) {
    if (rc == IP_EINTR) continue;
    cr_assert_eq(rc, 1, "waitfor: %s", ip_err_name(rc));
    check(f, ud);
    ip_future_free(f);
    n++;
  }
  return n;
}

struct expect {
  int ok, fail_code, fails;
  const char *value;
};

static void check_ok_or_code(ip_future *f, void *ud) {
  struct expect *x = ud;
  int st = ip_future_status(f);
  if (st == 0) {
    cr_assert_str_eq(str_of(f), x->value);
    x->ok++;
    return;
  }
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(st, x->fail_code, "a call failed with %s (%s), not %s", ip_err_name(st),
               e->message, ip_err_name(x->fail_code));
  cr_assert_eq(e->code, st);
  cr_assert_str_eq(e->kind, ip_err_name(st));
  cr_assert(e->pid == 0 || pid_gone(e->pid), "the child %d of a failed call is left",
            (int)e->pid);
  x->fails++;
}

Test(exhaustion, nofile_limit_fails_calls_with_emfile_and_recovers) {
  enum { K = 6, N = 24 };
  /* Warm: the supervisor, its descriptors and this thread's waiter exist from here on. */
  ip_task *quick = ip_task_new(return_hello, NULL);
  ip_task *blocked = ip_task_new(wait_on_gate, NULL);
  struct gate g;
  gate_open(&g);
  cr_assert_eq(warm_up(blocked, &g), 0);
  ip_list *l = ip_list_new();
  int base = count_fds(), base_sockets = count_fds_like("socket:");

  int holes[256];
  int nholes = fill_holes(holes, 256);
  struct rlimit old, low;
  cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  int top = max_fd();
  /* Room for K calls (a channel and a pidfd each: 2 descriptors) and no more. */
  low.rlim_cur = (rlim_t)(top + 1 + 2 * K);
  low.rlim_max = old.rlim_max;
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0, "%s", strerror(errno));

  /* The storm: all calls at once, each child held at the gate. Nothing here may need a new
   * descriptor but the library (no count_fds, no Criterion message until it is lifted). */
  struct storm s = {.n = N};
  for (int i = 0; i < N; i++) {
    s.fs[i] = ip_call(blocked, &g);
    if (!s.fs[i]) break;
  }
  int all_made = 1;
  for (int i = 0; i < N; i++) all_made &= s.fs[i] != NULL;
  storm_classify(&s, IP_EMFILE);

  /* Still under the limit: what started completes, and what failed left nothing held, so
   * calls keep working one at a time. */
  int released = gate_try_release(&g, s.started);
  for (int i = 0; i < N && all_made; i++) ip_list_push(l, s.fs[i]);
  struct expect x = {.fail_code = IP_EMFILE, .value = "released"};
  int drained = all_made ? drain(l, check_ok_or_code, &x) : 0;
  struct expect y = {.fail_code = IP_EMFILE, .value = "hello"};
  for (int i = 0; i < 2 * N; i++) {
    ip_future *f = ip_call(quick, NULL);
    cr_assert_not_null(f);
    cr_assert_eq(ip_future_wait(f, guard_ms(60000)), 0);
    check_ok_or_code(f, &y);
    ip_future_free(f);
  }

  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
  for (int i = 0; i < nholes; i++) close(holes[i]);
  cr_assert(all_made, "ip_call returned NULL under RLIMIT_NOFILE");
  cr_assert_eq(released, 0);
  cr_log_info("RLIMIT_NOFILE %d: %d of %d calls started, %d failed with EMFILE",
              (int)low.rlim_cur, s.started, N, s.failed);
  cr_assert_eq(s.other, 0, "a call neither started nor failed with IP_EMFILE");
  cr_assert_geq(s.started, 1, "no call could start: the limit left no room at all");
  cr_assert_leq(s.started, K);
  cr_assert_geq(s.failed, 1, "the limit never bit");
  cr_assert_eq(drained, N);
  cr_assert_eq(x.ok, s.started);
  cr_assert_eq(x.fails, s.failed);
  cr_assert_eq(y.ok, 2 * N, "%d calls failed one at a time under the limit: descriptors of "
               "failed calls were not given back", y.fails);

  /* Lifted: the whole storm starts. */
  for (int i = 0; i < N; i++) {
    ip_future *f = ip_call(blocked, &g);
    cr_assert_gt(ip_future_pid(f), 0, "after lifting the limit: %s",
                 ip_future_error(f) ? ip_future_error(f)->message : "?");
    cr_assert_eq(ip_list_push(l, f), 0);
  }
  gate_release(&g, N);
  struct expect z = {.fail_code = 0, .value = "released"};
  cr_assert_eq(drain(l, check_ok_or_code, &z), N);
  cr_assert_eq(z.ok, N);

  ip_list_free(l);
  ip_task_free(quick);
  ip_task_free(blocked);
  cr_assert(no_children(), "a child or zombie is left");
  cr_assert_eq(count_fds_like("socket:"), base_sockets, "a channel is left open");
  cr_assert_eq(count_fds(), base, "descriptors leaked");
  gate_close(&g);
}

/* ---- the process limit ------------------------------------------------------------------------ */

/* How the subject is held to K more processes. */
enum nproc_mode { BY_RLIMIT, BY_CGROUP };

struct nproc_case {
  enum nproc_mode mode;
  int k, n;
  char cg[256]; /* the pids cgroup directory, BY_CGROUP */
};

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t w = write(fd, text, strlen(text));
  int e = errno;
  close(fd);
  errno = e;
  return w == (ssize_t)strlen(text) ? 0 : -1;
}

static long read_long(const char *path) {
  char buf[64];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t r = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (r <= 0) return -1;
  buf[r] = '\0';
  return atol(buf);
}

/* Gives up root for good (nobody), so RLIMIT_NPROC applies, and enters a user namespace of
 * its own so that only this subject's processes count. */
static void become_limited_user(void) {
  if (getuid() == 0) {
    SUBJECT_CHECK(setgroups(0, NULL) == 0, "setgroups: %s", strerror(errno));
    SUBJECT_CHECK(setresgid(65534, 65534, 65534) == 0, "setresgid: %s", strerror(errno));
    SUBJECT_CHECK(setresuid(65534, 65534, 65534) == 0, "setresuid: %s", strerror(errno));
  }
  SUBJECT_CHECK(unshare(CLONE_NEWUSER) == 0, "unshare(CLONE_NEWUSER): %s", strerror(errno));
}

static void set_nproc_limit(struct nproc_case *c, int lifted) {
  if (c->mode == BY_RLIMIT) {
    struct rlimit rl;
    SUBJECT_CHECK(getrlimit(RLIMIT_NPROC, &rl) == 0, "getrlimit");
    /* In our namespace the kernel counts exactly this process's threads and children. */
    rl.rlim_cur = lifted ? rl.rlim_max : (rlim_t)(count_threads() + c->k);
    SUBJECT_CHECK(setrlimit(RLIMIT_NPROC, &rl) == 0, "setrlimit(RLIMIT_NPROC): %s",
                  strerror(errno));
  } else {
    char path[300], num[32];
    snprintf(path, sizeof path, "%s/pids.current", c->cg);
    long cur = read_long(path);
    SUBJECT_CHECK(cur > 0, "read %s", path);
    snprintf(num, sizeof num, "%ld", cur + c->k);
    snprintf(path, sizeof path, "%s/pids.max", c->cg);
    SUBJECT_CHECK(write_file(path, lifted ? "max" : num) == 0, "write %s: %s", path,
                  strerror(errno));
  }
}

/* Collects every future of l in the subject: value `want`, or IP_EAGAIN when allowed. */
static void subject_drain(ip_list *l, const char *want, int allow_eagain, int *ok, int *eagain) {
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  int rc;
  while ((rc = ip_waitfor_next(&w, l, 0, guard_ms(60000), &f)) != 0) {
    if (rc == IP_EINTR) continue;
    SUBJECT_CHECK(rc == 1, "waitfor returned %s", ip_err_name(rc));
    int st = ip_future_status(f);
    const ip_error *e = ip_future_error(f);
    if (st == 0) {
      const char *v = str_of(f);
      SUBJECT_CHECK(v && strcmp(v, want) == 0, "value %.60s, want %s", v ? v : "(null)", want);
      (*ok)++;
    } else {
      SUBJECT_CHECK(allow_eagain && st == IP_EAGAIN, "a call failed with %s: %s", ip_err_name(st),
                    e ? e->message : "?");
      SUBJECT_CHECK(e && e->code == IP_EAGAIN && strcmp(e->kind, "EAGAIN") == 0, "error record");
      SUBJECT_CHECK(e->pid == 0 || pid_gone(e->pid), "the child %d of a failed call is left",
                    (int)e->pid);
      (*eagain)++;
    }
    ip_future_free(f);
  }
}

static void nproc_storm(void *arg) {
  struct nproc_case *c = arg;
  if (c->mode == BY_RLIMIT) become_limited_user(); /* before any thread exists */
  ip_task *quick = ip_task_new(return_hello, NULL);
  ip_task *blocked = ip_task_new(wait_on_gate, NULL);
  SUBJECT_CHECK(quick && blocked, "ip_task_new");
  struct gate g;
  SUBJECT_CHECK(gate_try_open(&g) == 0, "pipe");
  SUBJECT_CHECK(warm_up(blocked, &g) == 0, "warm-up call failed");
  int base = count_fds();
  int pidfds = have_pidfd();

  set_nproc_limit(c, 0);
  ip_list *l = ip_list_new();
  int started = 0, failed = 0;
  for (int i = 0; i < c->n; i++) {
    ip_future *f = ip_call(blocked, &g);
    SUBJECT_CHECK(f != NULL, "ip_call returned NULL");
    if (!ip_future_done(f)) started++;
    else if (ip_future_status(f) == IP_EAGAIN) failed++;
    else
      SUBJECT_CHECK(0, "call %d failed with %s: %s", i, ip_err_name(ip_future_status(f)),
                    ip_future_error(f)->message);
    SUBJECT_CHECK(ip_list_push(l, f) == 0, "push");
  }
  SUBJECT_INFO("%s limit of %d more tasks: %d of %d calls started, %d failed with EAGAIN",
               c->mode == BY_RLIMIT ? "RLIMIT_NPROC" : "pids.max", c->k, started, c->n, failed);
  SUBJECT_CHECK(started >= 1, "no call could start: the limit left no room at all");
  SUBJECT_CHECK(started <= c->k, "%d calls started with room for %d processes", started, c->k);
  SUBJECT_CHECK(failed >= 1, "the limit never bit");
  SUBJECT_CHECK(gate_try_release(&g, started) == 0, "release");
  int ok = 0, eagain = 0;
  subject_drain(l, "released", 1, &ok, &eagain);
  SUBJECT_CHECK(ok == started && eagain == failed, "ok %d eagain %d (started %d failed %d)", ok,
                eagain, started, failed);

  /* Still under the limit: a failed fork held nothing, so calls keep working one at a time.
   * (Without pidfds a reaper thread per call is also a task, and one that just ended may not
   * be gone yet; only with pidfds is this exact.) */
  if (pidfds) {
    for (int i = 0; i < 2 * c->n; i++)
      SUBJECT_CHECK(ip_list_push(l, ip_call(quick, NULL)) == 0, "push");
    ok = eagain = 0;
    subject_drain(l, "hello", 1, &ok, &eagain);
    SUBJECT_CHECK(ok >= 1, "no call succeeded under the limit");
  }

  /* Lifted: the whole storm starts. */
  set_nproc_limit(c, 1);
  for (int i = 0; i < c->n; i++) {
    ip_future *f = ip_call(blocked, &g);
    SUBJECT_CHECK(f && !ip_future_done(f), "after lifting the limit a call failed: %s",
                  f && ip_future_error(f) ? ip_future_error(f)->message : "?");
    SUBJECT_CHECK(ip_list_push(l, f) == 0, "push");
  }
  SUBJECT_CHECK(gate_try_release(&g, c->n) == 0, "release");
  ok = eagain = 0;
  subject_drain(l, "released", 0, &ok, &eagain);
  SUBJECT_CHECK(ok == c->n, "%d of %d", ok, c->n);

  ip_list_free(l);
  ip_task_free(quick);
  ip_task_free(blocked);
  SUBJECT_CHECK(no_children(), "a child or zombie is left");
  SUBJECT_CHECK(count_fds() == base, "descriptors: %d, baseline %d", count_fds(), base);
  gate_close(&g);
}

Test(exhaustion, nproc_rlimit_fails_forks_with_eagain_and_recovers) {
  struct nproc_case c = {.mode = BY_RLIMIT, .k = 6, .n = 20};
  struct subject_outcome o = subject_run(nproc_storm, &c, guard_ms(120000), NULL, NULL);
  if (strstr(o.fail, "unshare(CLONE_NEWUSER)"))
    cr_skip_test("no user namespaces here (%s): RLIMIT_NPROC cannot be isolated", o.fail);
  /* Under valgrind every process the subject forks as nobody opens a log file of its own
   * (and, unless --vgdb=no, gdbserver files in /tmp named by its pid). */
  if (under_valgrind() && getuid() == 0 && (o.hung || o.fail[0] || !o.done))
    cr_log_warn("under valgrind, as root: valgrind's --log-file must be in a directory that "
                "the user nobody can write to, and its gdbserver off (--vgdb=no: root's "
                "files in /tmp, named by pid, stop nobody's processes); tests/valgrind.sh "
                "does both");
  ASSERT_SUBJECT_OK(o, "RLIMIT_NPROC storm");
}

/* The pids cgroup: made under the first pids hierarchy found, the subject moved into it. */
static int find_pids_root(char *out, size_t n) {
  static const char *const roots[] = {"/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified",
                                      "/sys/fs/cgroup"};
  for (size_t i = 0; i < sizeof roots / sizeof *roots; i++) {
    char probe[300];
    snprintf(probe, sizeof probe, "%s/cgroup.procs", roots[i]);
    if (access(probe, W_OK) != 0) continue;
    snprintf(out, n, "%s/ip-exhaustion-%d", roots[i], (int)getpid());
    if (mkdir(out, 0755) != 0) continue;
    snprintf(probe, sizeof probe, "%s/pids.max", out);
    if (access(probe, W_OK) == 0) return 0;
    rmdir(out);
  }
  return -1;
}

static int join_cgroup(pid_t pid, void *ud) {
  struct nproc_case *c = ud;
  char path[300], num[32];
  snprintf(path, sizeof path, "%s/cgroup.procs", c->cg);
  snprintf(num, sizeof num, "%d", (int)pid);
  return write_file(path, num);
}

Test(exhaustion, pids_cgroup_fails_forks_with_eagain_and_recovers) {
  struct nproc_case c = {.mode = BY_CGROUP, .k = 6, .n = 20};
  if (find_pids_root(c.cg, sizeof c.cg) != 0) cr_skip_test("no pids cgroup can be made here");
  struct subject_outcome o = subject_run(nproc_storm, &c, guard_ms(120000), join_cgroup, &c);
  int removed = rmdir(c.cg);
  int e = errno;
  ASSERT_SUBJECT_OK(o, "pids.max storm");
  cr_assert_eq(removed, 0, "rmdir %s: %s (a task is left in it)", c.cg, strerror(e));
}
