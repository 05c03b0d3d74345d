/* A call's whole process tree ends with it. Whatever a task's child starts (its own children,
 * theirs, a shell and the command it runs) is in the child's process group, and a timeout, a
 * cancel, freeing the future while it runs, and the death of the calling process each end
 * all of it. Descendants are reparented away from the test, so each is watched through a
 * pidfd (opened while it surely still runs) until it has exited. */
#define _GNU_SOURCE
#include "helpers.h"
#include <sys/prctl.h>

TestSuite(tree, .timeout = 120);

/* What a task's child is told: where to report the pids of the processes it started. */
struct tree {
  int report; /* write end of a pipe: one "pid\n" line per descendant */
};

/* The child starts a chain two deep (a child and a grandchild of its own); each reports its
 * pid, and all three sleep until killed. */
static void *fork_chain(void *arg) {
  struct tree *t = arg;
  for (int depth = 0; depth < 2; depth++) {
    pid_t p = fork();
    if (p < 0) ip_raise(errno, "fork: %s", strerror(errno));
    if (p > 0) break;
    dprintf(t->report, "%d\n", (int)getpid());
  }
  for (;;) pause();
}

/* The child runs a shell, as os.execute or backticks do, which runs a sleep of its own; the
 * shell reports both pids. */
static void *run_shell(void *arg) {
  struct tree *t = arg;
  /* A free number for the shell to write to (one the library holds must stay open). */
  int fd = fcntl(t->report, F_DUPFD, 100);
  if (fd < 0) ip_raise(errno, "F_DUPFD");
  char cmd[96];
  snprintf(cmd, sizeof cmd, "sleep 30 & echo $! >/dev/fd/%d; echo $$ >/dev/fd/%d; wait", fd,
           fd); /* dash redirects single-digit descriptors only */
  int rc = system(cmd);
  return ip_bytes_copy(&rc, sizeof rc); /* only if nothing killed it */
}

enum { NDESC = 2 };

/* Reads NDESC pids from the report pipe (guarded against a hang) and opens a pidfd for each;
 * -1 for one that has already gone. */
static void read_descendants(int rfd, pid_t pids[NDESC], int pidfds[NDESC]) {
  char buf[128];
  size_t have = 0;
  int n = 0;
  int64_t deadline = now_ms() + guard_ms(20000);
  while (n < NDESC) {
    struct pollfd p = {rfd, POLLIN, 0};
    cr_assert_gt(poll(&p, 1, left_ms(deadline)), 0, "the task's descendants never reported");
    ssize_t r = read(rfd, buf + have, sizeof buf - 1 - have);
    cr_assert_gt(r, 0);
    have += (size_t)r;
    buf[have] = '\0';
    char *nl;
    while (n < NDESC && (nl = strchr(buf, '\n'))) {
      pids[n] = (pid_t)atoi(buf);
      cr_assert_gt(pids[n], 0, "report: %s", buf);
      pidfds[n] = open_pidfd(pids[n]);
      cr_assert(pidfds[n] >= 0 || errno == ESRCH, "pidfd_open(%d): %s", (int)pids[n],
                strerror(errno));
      n++;
      have -= (size_t)(nl + 1 - buf);
      memmove(buf, nl + 1, have + 1);
    }
  }
}

/* Each descendant must exit; the guard only stops a test that would otherwise hang. */
static void expect_gone(const pid_t pids[NDESC], int pidfds[NDESC], const char *ending) {
  for (int i = 0; i < NDESC; i++) {
    if (pidfds[i] < 0) continue;
    struct pollfd p = {pidfds[i], POLLIN, 0};
    int r;
    while ((r = poll(&p, 1, guard_ms(20000))) < 0 && errno == EINTR) {
    }
    if (r != 1) /* a failing run must not leave them behind either */
      for (int j = i; j < NDESC; j++) syscall(SYS_pidfd_send_signal, pidfds[j], SIGKILL, NULL, 0);
    cr_assert_eq(r, 1, "after %s, process %d that the call started still runs", ending,
                 (int)pids[i]);
    close(pidfds[i]);
  }
}

enum ending { TIMEOUT, CANCEL, FREE };
static const char *const ending_name[] = {"a timeout", "a cancel", "freeing the future"};

static void ends_with_the_call(ip_fn fn, enum ending how) {
  int rep[2];
  cr_assert_eq(pipe2(rep, O_CLOEXEC), 0);
  struct tree t = {rep[1]};
  ip_task *task = ip_task_new(fn, NULL);
  if (how == TIMEOUT) cr_assert_eq(ip_task_set_timeout(task, 300), 0);
  ip_future *f = ip_call(task, &t);
  pid_t child = ip_future_pid(f);
  cr_assert_gt(child, 0);
  pid_t pids[NDESC];
  int pidfds[NDESC];
  read_descendants(rep[0], pids, pidfds);
  switch (how) {
  case TIMEOUT:
    cr_assert_eq(ip_future_wait(f, -1), 0);
    cr_assert_eq(ip_future_status(f), IP_ETIMEDOUT);
    ip_future_free(f);
    break;
  case CANCEL:
    cr_assert_eq(ip_future_cancel(f), 0);
    cr_assert_eq(ip_future_status(f), IP_ECANCELED);
    ip_future_free(f);
    break;
  case FREE:
    ip_future_free(f);
    break;
  }
  expect_gone(pids, pidfds, ending_name[how]);
  cr_assert(pid_gone(child));
  cr_assert(no_children());
  ip_task_free(task);
  close(rep[0]);
  close(rep[1]);
}

Test(tree, grandchildren_end_with_a_timeout) { ends_with_the_call(fork_chain, TIMEOUT); }
Test(tree, grandchildren_end_with_a_cancel) { ends_with_the_call(fork_chain, CANCEL); }
Test(tree, grandchildren_end_when_the_running_future_is_freed) {
  ends_with_the_call(fork_chain, FREE);
}
Test(tree, a_shell_and_its_command_end_with_a_timeout) { ends_with_the_call(run_shell, TIMEOUT); }
Test(tree, a_shell_and_its_command_end_with_a_cancel) { ends_with_the_call(run_shell, CANCEL); }
Test(tree, a_shell_and_its_command_end_when_the_running_future_is_freed) {
  ends_with_the_call(run_shell, FREE);
}

/* The calling process dies (SIGKILL: nothing of it runs after) with the call in flight. */
static void ends_with_the_caller(ip_fn fn) {
  int rep[2], fwd[2];
  cr_assert_eq(pipe2(rep, O_CLOEXEC), 0);
  cr_assert_eq(pipe2(fwd, O_CLOEXEC), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t caller = fork();
  cr_assert_geq(caller, 0);
  if (caller == 0) {
    close(rep[0]);
    close(fwd[0]);
    struct tree t = {rep[1]};
    ip_task *task = ip_task_new(fn, NULL);
    ip_future *f = ip_call(task, &t);
    dprintf(fwd[1], "%d\n", (int)ip_future_pid(f)); /* the call's child, then its report */
    for (;;) pause();
  }
  close(rep[1]);
  close(fwd[1]);
  pid_t child_pid[1];
  int child_fd[1];
  char buf[32];
  struct pollfd p = {fwd[0], POLLIN, 0};
  cr_assert_gt(poll(&p, 1, guard_ms(20000)), 0);
  ssize_t r = read(fwd[0], buf, sizeof buf - 1);
  cr_assert_gt(r, 0);
  buf[r] = '\0';
  child_pid[0] = (pid_t)atoi(buf);
  cr_assert_gt(child_pid[0], 0);
  child_fd[0] = open_pidfd(child_pid[0]);
  cr_assert_geq(child_fd[0], 0);
  pid_t pids[NDESC];
  int pidfds[NDESC];
  read_descendants(rep[0], pids, pidfds);
  cr_assert_eq(kill(caller, SIGKILL), 0);
  int st;
  cr_assert_eq(waitpid(caller, &st, 0), caller);
  expect_gone(pids, pidfds, "the caller's death");
  p = (struct pollfd){child_fd[0], POLLIN, 0};
  cr_assert_eq(poll(&p, 1, guard_ms(20000)), 1, "the call's child outlived its caller");
  close(child_fd[0]);
  close(rep[0]);
  close(fwd[0]);
}

Test(tree, grandchildren_end_with_the_caller) { ends_with_the_caller(fork_chain); }
Test(tree, a_shell_and_its_command_end_with_the_caller) { ends_with_the_caller(run_shell); }

/* A call that ends on its own takes what it left running with it too. */
static void *leave_a_grandchild(void *arg) {
  struct tree *t = arg;
  pid_t p = fork();
  if (p < 0) ip_raise(errno, "fork");
  if (p == 0) {
    dprintf(t->report, "%d\n", (int)getpid());
    for (;;) pause();
  }
  dprintf(t->report, "%d\n", (int)getpid());
  return ip_bytes_copy("done", 4);
}

Test(tree, what_a_finished_call_left_running_ends_with_it) {
  int rep[2];
  cr_assert_eq(pipe2(rep, O_CLOEXEC), 0);
  struct tree t = {rep[1]};
  ip_task *task = ip_task_new(leave_a_grandchild, NULL);
  ip_future *f = ip_call(task, &t);
  pid_t pids[NDESC];
  int pidfds[NDESC];
  read_descendants(rep[0], pids, pidfds);
  const ip_bytes *b = ip_future_value(f);
  cr_assert_not_null(b);
  cr_assert_eq(b->len, 4);
  cr_assert_eq(memcmp(b->data, "done", 4), 0);
  expect_gone(pids, pidfds, "the call's end");
  ip_future_free(f);
  ip_task_free(task);
  cr_assert(no_children());
  close(rep[0]);
  close(rep[1]);
}
