/* Every failure is a value: raised errors, crashes, kills, exits, serializer failures, and
 * what the ip_error of each carries. Task functions whose names a backtrace must show are not
 * static (the suite is linked with -rdynamic), so they get prototypes here. */
#define _GNU_SOURCE
#include "helpers.h"
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

/* A guard against hangs only (a wake-up the library forgets would block a test forever);
 * no test depends on how long anything takes. */
TestSuite(errors, .timeout = 120);

/* ---- helpers --------------------------------------------------------------------------------- */


/* Runs fn(arg) in one call and returns the completed future (the caller frees it). */
static ip_future *run(ip_fn fn, void *arg, ip_task **tp) {
  ip_task *t = ip_task_new(fn, NULL);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, arg);
  cr_assert_not_null(f);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  *tp = t;
  return f;
}

static void finish(ip_future *f, ip_task *t) {
  ip_future_free(f);
  ip_task_free(t);
  cr_assert(no_children());
}

/* The checks every failed future must pass. */
static const ip_error *failed_with(ip_future *f, int code) {
  cr_assert_eq(ip_future_done(f), 1);
  cr_assert_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e, "the future succeeded");
  cr_assert_eq(ip_future_status(f), code, "status %s, expected %s: %s",
               ip_err_name(ip_future_status(f)), ip_err_name(code), e->message);
  cr_assert_eq(e->code, code);
  cr_assert_not_null(e->kind);
  cr_assert_not_null(e->message);
  cr_assert_eq(e->pid, ip_future_pid(f));
  cr_assert_gt(e->pid, 0);
  cr_assert_gt(e->rusage.ru_maxrss, 0, "rusage is filled on failures too");
  return e;
}

/* ---- ip_raise -------------------------------------------------------------------------------- */

void *raise_econnrefused(void *arg);
void *raise_econnrefused(void *arg) {
  ip_raise(ECONNREFUSED, "connect to %s:%d refused", "db.local", 5432);
}

Test(errors, raise_with_an_errno_code) {
  ip_task *t;
  ip_future *f = run(raise_econnrefused, NULL, &t);
  const ip_error *e = failed_with(f, IP_ERAISED);
  cr_assert_eq(e->raised_code, ECONNREFUSED);
  cr_assert_str_eq(e->kind, "ECONNREFUSED");
  cr_assert_str_eq(e->message, "connect to db.local:5432 refused");
  cr_assert_not_null(e->backtrace);
  cr_assert_not_null(strstr(e->backtrace, "raise_econnrefused"), "backtrace:\n%s", e->backtrace);
  cr_assert_eq(e->signal, 0);
  finish(f, t);
}

Test(errors, raise_backtrace_starts_at_the_raising_function) {
  ip_task *t;
  ip_future *f = run(raise_econnrefused, NULL, &t);
  const ip_error *e = failed_with(f, IP_ERAISED);
  cr_assert_not_null(e->backtrace);
  const char *nl = strchr(e->backtrace, '\n');
  cr_assert_not_null(nl, "one frame per line:\n%s", e->backtrace);
  char first[512];
  size_t n = (size_t)(nl - e->backtrace) < sizeof first - 1 ? (size_t)(nl - e->backtrace)
                                                             : sizeof first - 1;
  memcpy(first, e->backtrace, n);
  first[n] = '\0';
  cr_assert_not_null(strstr(first, "raise_econnrefused"),
                     "the library's own frames come first:\n%s", e->backtrace);
  finish(f, t);
}

void *raise_custom_code(void *arg);
void *raise_custom_code(void *arg) { ip_raise(4242, "custom failure #%d", 7); }

Test(errors, raise_with_a_custom_code) {
  ip_task *t;
  ip_future *f = run(raise_custom_code, NULL, &t);
  const ip_error *e = failed_with(f, IP_ERAISED);
  cr_assert_eq(e->raised_code, 4242);
  cr_assert_str_eq(e->kind, "ERAISED", "no errno name for 4242: kind is ip_err_name(code)");
  cr_assert_str_eq(e->message, "custom failure #7");
  cr_assert_not_null(e->backtrace);
  cr_assert_not_null(strstr(e->backtrace, "raise_custom_code"), "backtrace:\n%s", e->backtrace);
  finish(f, t);
}

/* A static function is in no dynamic symbol table, whatever the link flags: naming it takes the
 * program's own .symtab (libdw; glibc's backtrace_symbols shows it as "prog(+0x187b)"). Not
 * inlined, so it has a frame of its own; it calls through another static function so that the
 * raising frame is not the task function itself. */
static __attribute__((noinline)) void static_raise_helper(int code) {
  ip_raise(code, "raised from a static function");
}
static void *static_raiser(void *arg) {
  static_raise_helper(EDOM);
  return bytes_of("survived");
}

/* The line of the backtrace that starts with `fn`, or NULL. (The compiler may name a copy of a
 * static function "fn.constprop.0".) */
static const char *frame_of(const char *bt, const char *fn) {
  const char *p = bt ? strstr(bt, fn) : NULL;
  while (p && p != bt && p[-1] != '\n') p = strstr(p + 1, fn);
  return p;
}

Test(errors, raise_backtrace_names_static_functions) {
#ifndef IP_HAVE_LIBDW
  cr_skip("built without libdw (configure --with-libdw): backtraces name exported functions only");
#endif
  ip_task *t;
  ip_future *f = run(static_raiser, NULL, &t);
  const ip_error *e = failed_with(f, IP_ERAISED);
  cr_assert_eq(e->raised_code, EDOM);
  cr_assert_not_null(e->backtrace);
  const char *helper = frame_of(e->backtrace, "static_raise_helper");
  const char *caller = frame_of(e->backtrace, "static_raiser+");
  cr_assert_not_null(helper, "backtrace:\n%s", e->backtrace);
  cr_assert_not_null(caller, "backtrace:\n%s", e->backtrace);
  cr_assert_eq(helper, e->backtrace, "the raising function comes first:\n%s", e->backtrace);
  cr_assert_lt(helper, caller, "then its caller:\n%s", e->backtrace);
  /* The suite is built with -g: file and line, and the module, in the frame's line. */
  const char *eol = strchr(helper, '\n');
  cr_assert_not_null(eol);
  const char *src = strstr(helper, "test-errors.c:");
  cr_assert(src && src < eol, "no file:line in the frame:\n%s", e->backtrace);
  const char *mod = strstr(helper, "test-errors]");
  cr_assert(mod && mod < eol, "no module in the frame:\n%s", e->backtrace);
  finish(f, t);
}

static char long_text[10001];
static void *raise_long_message(void *arg) { ip_raise(EIO, "%s", long_text); }

Test(errors, raise_with_a_long_message_arrives_whole) {
  memset(long_text, 'm', sizeof long_text - 1);
  ip_task *t;
  ip_future *f = run(raise_long_message, NULL, &t);
  const ip_error *e = failed_with(f, IP_ERAISED);
  cr_assert_str_eq(e->kind, "EIO");
  cr_assert_eq(strlen(e->message), sizeof long_text - 1);
  cr_assert_str_eq(e->message, long_text);
  finish(f, t);
}

static void *vraise_helper(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ip_vraise(code, fmt, ap);
}
static void *vraise_fn(void *arg) { return vraise_helper(ENOENT, "no %s here", "file"); }

Test(errors, vraise_formats_like_raise) {
  ip_task *t;
  ip_future *f = run(vraise_fn, NULL, &t);
  const ip_error *e = failed_with(f, IP_ERAISED);
  cr_assert_eq(e->raised_code, ENOENT);
  cr_assert_str_eq(e->kind, "ENOENT");
  cr_assert_str_eq(e->message, "no file here");
  finish(f, t);
}

static void *raise_error_explicit(void *arg) {
  ip_raise_error(IP_ERAISED, 77, "ValueError", "bad value: 3", "frame one\nframe two\n");
}

Test(errors, raise_error_with_kind_message_and_backtrace) {
  ip_task *t;
  ip_future *f = run(raise_error_explicit, NULL, &t);
  const ip_error *e = failed_with(f, IP_ERAISED);
  cr_assert_eq(e->raised_code, 77);
  cr_assert_str_eq(e->kind, "ValueError");
  cr_assert_str_eq(e->message, "bad value: 3");
  cr_assert_not_null(e->backtrace);
  cr_assert_str_eq(e->backtrace, "frame one\nframe two\n");
  finish(f, t);
}

static void *raise_error_nulls(void *arg) { ip_raise_error(IP_ERAISED, 0, NULL, NULL, NULL); }

Test(errors, raise_error_with_null_strings) {
  ip_task *t;
  ip_future *f = run(raise_error_nulls, NULL, &t);
  const ip_error *e = failed_with(f, IP_ERAISED);
  cr_assert_eq(e->raised_code, 0);
  cr_assert_str_eq(e->kind, ip_err_name(IP_ERAISED));
  cr_assert_str_eq(e->message, "");
  cr_assert_null(e->backtrace);
  finish(f, t);
}

static void *raise_error_encode(void *arg) {
  ip_raise_error(IP_EENCODE, 5, "EncodingError", "cannot marshal a Proc", NULL);
}

Test(errors, raise_error_can_report_eencode) {
  ip_task *t;
  ip_future *f = run(raise_error_encode, NULL, &t);
  const ip_error *e = failed_with(f, IP_EENCODE);
  cr_assert_str_eq(e->kind, "EncodingError");
  cr_assert_str_eq(e->message, "cannot marshal a Proc");
  cr_assert_eq(e->raised_code, 5);
  finish(f, t);
}

static void *raise_thread_main(void *arg) { ip_raise(EPIPE, "from a thread of the child"); }
static void *raise_from_a_thread(void *arg) {
  pthread_t th;
  if (pthread_create(&th, NULL, raise_thread_main, NULL) != 0) return bytes_of("no thread");
  pthread_join(th, NULL); /* never returns: the raise ends the process */
  return bytes_of("raise returned");
}

Test(errors, raise_from_a_thread_the_child_started) {
  TSAN_SKIP_THREADS_IN_CHILDREN();
  ip_task *t;
  ip_future *f = run(raise_from_a_thread, NULL, &t);
  const ip_error *e = failed_with(f, IP_ERAISED);
  cr_assert_eq(e->raised_code, EPIPE);
  cr_assert_str_eq(e->message, "from a thread of the child");
  finish(f, t);
}

/* ip_raise outside a task's child: an explanation on stderr, then abort(). */
static void expect_abort_outside_child(void (*body)(void), const char *fn_name) {
  int errp[2];
  cr_assert_eq(pipe(errp), 0);
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    dup2(errp[1], 2);
    close(errp[0]);
    close(errp[1]);
    body();
    _exit(99); /* not reached if the library aborts */
  }
  close(errp[1]);
  char buf[1024];
  size_t n = 0;
  ssize_t r;
  while (n < sizeof buf - 1 && (r = read(errp[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
  buf[n] = '\0';
  close(errp[0]);
  int st;
  cr_assert_eq(waitpid(pid, &st, 0), pid);
  cr_assert(WIFSIGNALED(st), "the child did not die of a signal (status %d)", st);
  cr_assert_eq(WTERMSIG(st), SIGABRT);
  cr_assert_not_null(strstr(buf, fn_name), "stderr: %s", buf);
  cr_assert_not_null(strstr(buf, "outside"), "stderr: %s", buf);
  cr_assert(no_children());
}

static void raise_in_plain_child(void) { ip_raise(EIO, "not in a task"); }
static void raise_error_in_plain_child(void) { ip_raise_error(IP_ERAISED, 1, "K", "m", NULL); }

Test(errors, raise_outside_a_task_child_aborts_with_a_message) {
  cr_assert_eq(ip_in_child(), 0);
  expect_abort_outside_child(raise_in_plain_child, "ip_raise");
}

Test(errors, raise_error_outside_a_task_child_aborts_with_a_message) {
  expect_abort_outside_child(raise_error_in_plain_child, "ip_raise_error");
}

static void raise_in_plain_child_after_calls(void) {
  /* A process forked from one that has made calls is still not a task's child. */
  ip_raise(EIO, "not in a task either");
}

Test(errors, raise_in_a_plain_fork_after_calls_still_aborts) {
  ip_task *t;
  ip_future *f = run(raise_econnrefused, NULL, &t); /* the library is up and running */
  ip_future_free(f);
  ip_task_free(t);
  expect_abort_outside_child(raise_in_plain_child_after_calls, "ip_raise");
}

/* ---- crashes and signals --------------------------------------------------------------------- */

void *segfault_here(void *arg);
/* The null store is the point: keep UBSan from turning the crash into its own report. */
__attribute__((no_sanitize("undefined"))) void *segfault_here(void *arg) {
  volatile int *p = NULL;
  *p = 1;
  return bytes_of("survived");
}

Test(errors, sigsegv_is_a_value_with_a_backtrace) {
  ip_task *t;
  ip_future *f = run(segfault_here, NULL, &t);
  const ip_error *e = failed_with(f, IP_ESIGNALED);
  cr_assert_eq(e->signal, SIGSEGV);
  cr_assert_str_eq(e->kind, "SIGSEGV");
  cr_assert_eq(e->exit_status, -1);
  cr_assert_eq(e->raised_code, 0);
  cr_assert_not_null(strstr(e->message, "SIGSEGV"), "message: %s", e->message);
  cr_assert_not_null(e->backtrace);
  cr_assert_not_null(strstr(e->backtrace, "segfault_here"), "backtrace:\n%s", e->backtrace);
  finish(f, t);
}

/* As segfault_here, but static: the parent names it from the program's .symtab. The null
 * pointer comes from the call's argument: one the compiler could see would let it drop the
 * store as undefined. The store is in the task function itself: under valgrind a fault in a
 * small leaf it calls is reported at the call, which the unwinder cannot get past. */
__attribute__((no_sanitize("undefined"))) static void *static_segfaulter(void *arg) {
  volatile int *p = arg;
  *p = 1;
  return bytes_of("survived");
}

Test(errors, sigsegv_backtrace_names_static_functions) {
#ifndef IP_HAVE_LIBDW
  cr_skip("built without libdw (configure --with-libdw): backtraces name exported functions only");
#endif
  ip_task *t;
  ip_future *f = run(static_segfaulter, NULL, &t);
  const ip_error *e = failed_with(f, IP_ESIGNALED);
  cr_assert_eq(e->signal, SIGSEGV);
  cr_assert_not_null(e->backtrace);
  const char *fn = frame_of(e->backtrace, "static_segfaulter+");
  cr_assert_not_null(fn, "backtrace:\n%s", e->backtrace);
  const char *eol = strchr(fn, '\n');
  const char *src = strstr(fn, "test-errors.c:");
  cr_assert(eol && src && src < eol, "no file:line in the frame:\n%s", e->backtrace);
  finish(f, t);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winfinite-recursion"
int recurse_forever(volatile char *prev);
int recurse_forever(volatile char *prev) {
  volatile char frame[256];
  frame[0] = prev ? prev[0] + 1 : 0;
  return recurse_forever(frame) + frame[1]; /* not a tail call */
}
#pragma GCC diagnostic pop
static void *overflow_the_stack(void *arg) { return bytes_of(recurse_forever(NULL) ? "" : ""); }

Test(errors, stack_overflow_is_sigsegv_with_a_backtrace) {
  ip_task *t;
  ip_future *f = run(overflow_the_stack, NULL, &t);
  const ip_error *e = failed_with(f, IP_ESIGNALED);
  cr_assert_eq(e->signal, SIGSEGV);
  cr_assert_str_eq(e->kind, "SIGSEGV");
  cr_assert_not_null(e->backtrace, "the handler runs on its own stack, so it can still report");
  cr_assert_not_null(strstr(e->backtrace, "recurse_forever"), "backtrace:\n%s", e->backtrace);
  finish(f, t);
}

Test(errors, sigsegv_without_crash_report_has_no_backtrace) {
  ip_task *t = ip_task_new(segfault_here, NULL);
  cr_assert_eq(ip_task_set_crash_report(t, 0), 0);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  const ip_error *e = failed_with(f, IP_ESIGNALED);
  cr_assert_eq(e->signal, SIGSEGV);
  cr_assert_str_eq(e->kind, "SIGSEGV");
  cr_assert_null(e->backtrace);
  finish(f, t);
}

void *abort_here(void *arg);
void *abort_here(void *arg) {
  abort();
}

Test(errors, abort_is_sigabrt_with_a_backtrace) {
  ip_task *t;
  ip_future *f = run(abort_here, NULL, &t);
  const ip_error *e = failed_with(f, IP_ESIGNALED);
  cr_assert_eq(e->signal, SIGABRT);
  cr_assert_str_eq(e->kind, "SIGABRT");
  cr_assert_not_null(e->backtrace);
  cr_assert_not_null(strstr(e->backtrace, "abort_here"), "backtrace:\n%s", e->backtrace);
  finish(f, t);
}

Test(errors, sigkill_from_outside_is_a_value) {
  struct gate g;
  gate_open(&g);
  ip_task *t = ip_task_new(wait_on_gate, NULL);
  ip_future *f = ip_call(t, &g);
  pid_t pid = ip_future_pid(f);
  cr_assert_gt(pid, 0);
  cr_assert_eq(kill(pid, SIGKILL), 0);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  const ip_error *e = failed_with(f, IP_ESIGNALED);
  cr_assert_eq(e->signal, SIGKILL);
  cr_assert_str_eq(e->kind, "SIGKILL");
  cr_assert_eq(e->exit_status, -1);
  cr_assert_eq(e->core_dumped, 0);
  cr_assert_null(e->backtrace, "nobody could send one");
  cr_assert(pid_gone(pid));
  finish(f, t);
  gate_close(&g);
}

/* ---- exits without a result ------------------------------------------------------------------ */

static void *exit_three(void *arg) { exit(3); }
static void *underscore_exit_zero(void *arg) { _exit(0); }

Test(errors, exit_without_a_result_is_eexited_with_its_status) {
  ip_task *t;
  ip_future *f = run(exit_three, NULL, &t);
  const ip_error *e = failed_with(f, IP_EEXITED);
  cr_assert_eq(e->exit_status, 3);
  cr_assert_eq(e->signal, 0);
  cr_assert_str_eq(e->kind, "EEXITED");
  cr_assert_null(e->backtrace);
  finish(f, t);
}

Test(errors, underscore_exit_zero_without_a_result_is_eexited) {
  ip_task *t;
  ip_future *f = run(underscore_exit_zero, NULL, &t);
  const ip_error *e = failed_with(f, IP_EEXITED);
  cr_assert_eq(e->exit_status, 0);
  cr_assert_eq(e->signal, 0);
  finish(f, t);
}

/* ---- serializer failures --------------------------------------------------------------------- */

static int enc_fail(const ip_serializer *s, const void *v, ip_write_fn w, void *ctx) { return -1; }
static int enc_text(const ip_serializer *s, const void *v, ip_write_fn w, void *ctx) {
  return w(ctx, v, strlen(v));
}
static int dec_ok(const ip_serializer *s, const void *buf, size_t len, void **value) {
  *value = (void *)buf;
  return 0;
}
static int n_dec_calls;
static int dec_fail(const ip_serializer *s, const void *buf, size_t len, void **value) {
  n_dec_calls++;
  return 1;
}

static const ip_serializer failing_encoder = {
    .abi = IP_SERIALIZER_ABI, .name = "test-enc-fail", .encode = enc_fail, .decode = dec_ok};
static const ip_serializer failing_decoder = {
    .abi = IP_SERIALIZER_ABI, .name = "test-dec-fail", .encode = enc_text, .decode = dec_fail};

static void *return_text(void *arg) { return "some text"; }

Test(errors, encode_failure_is_eencode) {
  ip_task *t = ip_task_new(return_text, &failing_encoder);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  const ip_error *e = failed_with(f, IP_EENCODE);
  cr_assert_str_eq(e->kind, "EENCODE");
  cr_assert_not_null(strstr(e->message, "test-enc-fail"), "message: %s", e->message);
  finish(f, t);
}

/* The first look decodes, so whichever accessor comes first, all three agree at once. */
Test(errors, decode_failure_is_edecode_from_the_first_look) {
  n_dec_calls = 0;
  ip_task *t = ip_task_new(return_text, &failing_decoder);
  cr_assert_not_null(t);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  cr_assert_eq(n_dec_calls, 0, "waiting decodes nothing");
  cr_assert_not_null(ip_future_error(f), "the error is there from the first look");
  cr_assert_eq(n_dec_calls, 1);
  cr_assert_null(ip_future_value(f));
  cr_assert_eq(n_dec_calls, 1);
  cr_assert_eq(ip_future_status(f), IP_EDECODE);
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, IP_EDECODE);
  cr_assert_str_eq(e->kind, "EDECODE");
  cr_assert_not_null(e->message);
  cr_assert_not_null(strstr(e->message, "test-dec-fail"), "message: %s", e->message);
  cr_assert_eq(e->pid, ip_future_pid(f));
  cr_assert_null(ip_future_value(f), "asking again still fails");
  cr_assert_eq(n_dec_calls, 1, "and does not decode again");
  finish(f, t);
}

/* A serializer that streams 100 KiB (enough to leave the child's buffer as frames already
 * sent) and then fails, by returning non-zero or by ip_raise_error as a binding would. */
static int enc_partial_then_fail(const ip_serializer *s, const void *v, ip_write_fn w, void *ctx) {
  static char chunk[100 << 10];
  int rc = w(ctx, chunk, sizeof chunk);
  if (rc) return rc;
  return -1;
}
static int enc_partial_then_raise(const ip_serializer *s, const void *v, ip_write_fn w, void *ctx) {
  static char chunk[100 << 10];
  int rc = w(ctx, chunk, sizeof chunk);
  if (rc) return rc;
  ip_raise_error(IP_EENCODE, 0, "TypeError", "cannot encode a lambda", NULL);
}
static const ip_serializer partial_failer = {.abi = IP_SERIALIZER_ABI,
                                             .name = "test-partial-fail",
                                             .encode = enc_partial_then_fail,
                                             .decode = dec_ok};
static const ip_serializer partial_raiser = {.abi = IP_SERIALIZER_ABI,
                                             .name = "test-partial-raise",
                                             .encode = enc_partial_then_raise,
                                             .decode = dec_ok};

/* "Return 0, or non-zero to fail the call with IP_EENCODE": whatever the number. -7 happens to
 * be -E2BIG, the value of IP_E2BIG. */
static int enc_minus_seven(const ip_serializer *s, const void *v, ip_write_fn w, void *ctx) {
  return -7;
}
static const ip_serializer minus_seven = {.abi = IP_SERIALIZER_ABI,
                                          .name = "test-minus-seven",
                                          .encode = enc_minus_seven,
                                          .decode = dec_ok};

Test(errors, any_nonzero_encode_return_is_eencode_even_minus_seven) {
  ip_task *t = ip_task_new(return_text, &minus_seven);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  failed_with(f, IP_EENCODE);
  finish(f, t);
}

Test(errors, encode_failing_after_partial_output_is_eencode) {
  ip_task *t = ip_task_new(return_text, &partial_failer);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  const ip_error *e = failed_with(f, IP_EENCODE);
  cr_assert_not_null(strstr(e->message, "test-partial-fail"), "message: %s", e->message);
  finish(f, t);
}

Test(errors, encode_raising_after_partial_output_reports_the_raised_error) {
  ip_task *t = ip_task_new(return_text, &partial_raiser);
  ip_future *f = ip_call(t, NULL);
  cr_assert_eq(ip_future_wait(f, -1), 0);
  const ip_error *e = failed_with(f, IP_EENCODE);
  cr_assert_str_eq(e->kind, "TypeError");
  cr_assert_str_eq(e->message, "cannot encode a lambda");
  finish(f, t);
}

/* ---- resources and isolation ----------------------------------------------------------------- */

Test(errors, rusage_is_filled_for_each_kind_of_failure) {
  ip_fn fns[] = {raise_econnrefused, segfault_here, exit_three};
  for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) {
    ip_task *t;
    ip_future *f = run(fns[i], NULL, &t);
    const ip_error *e = ip_future_error(f);
    cr_assert_not_null(e);
    cr_assert_gt(e->rusage.ru_maxrss, 0, "failure %zu", i);
    struct rusage ru;
    cr_assert_eq(ip_future_rusage(f, &ru), 0);
    cr_assert_eq(ru.ru_maxrss, e->rusage.ru_maxrss);
    finish(f, t);
  }
}

#define BIG_MIB 200
static void *allocate_then_raise(void *arg) {
  size_t n = (size_t)BIG_MIB << 20;
  char *p = malloc(n);
  if (!p) ip_raise(ENOMEM, "malloc");
  memset(p, 1, n); /* touch every page */
  __asm__ volatile("" : : "r"(p) : "memory"); /* keep the compiler from dropping the stores */
  ip_raise(EFBIG, "used %zu bytes", n);
}

Test(errors, a_child_that_touched_200_mib_reports_it_in_ru_maxrss) {
  ip_task *t;
  ip_future *f = run(allocate_then_raise, NULL, &t);
  const ip_error *e = failed_with(f, IP_ERAISED);
  cr_assert_eq(e->raised_code, EFBIG, "%s", e->message);
  cr_assert_gt(e->rusage.ru_maxrss, BIG_MIB * 1024L, "ru_maxrss %ld KiB", e->rusage.ru_maxrss);
  finish(f, t);
}

Test(errors, one_failure_does_not_affect_another_running_future) {
  struct gate g;
  gate_open(&g);
  ip_task *tb = ip_task_new(wait_on_gate, NULL);
  ip_task *tc = ip_task_new(segfault_here, NULL);
  ip_task *tr = ip_task_new(raise_econnrefused, NULL);
  ip_future *fb = ip_call(tb, &g);
  ip_future *fc = ip_call(tc, NULL);
  ip_future *fr = ip_call(tr, NULL);
  cr_assert_eq(ip_future_wait(fc, -1), 0);
  cr_assert_eq(ip_future_wait(fr, -1), 0);
  cr_assert_eq(ip_future_status(fc), IP_ESIGNALED);
  cr_assert_eq(ip_future_status(fr), IP_ERAISED);
  cr_assert_eq(ip_future_done(fb), 0, "the other call is still running");
  gate_release(&g, 1);
  cr_assert_str_eq(str_of(fb), "released");
  cr_assert_null(ip_future_error(fb));
  ip_future_free(fb);
  ip_future_free(fc);
  ip_future_free(fr);
  ip_task_free(tb);
  ip_task_free(tc);
  ip_task_free(tr);
  gate_close(&g);
  cr_assert(no_children());
}

Test(errors, error_strings_stay_valid_until_the_future_is_freed) {
  ip_task *t;
  ip_future *f = run(raise_econnrefused, NULL, &t);
  const ip_error *e1 = ip_future_error(f);
  const ip_error *e2 = ip_future_error(f);
  cr_assert_eq(e1, e2);
  ip_task *t2;
  ip_future *g = run(segfault_here, NULL, &t2); /* other futures don't disturb it */
  ip_future_free(g);
  ip_task_free(t2);
  cr_assert_str_eq(e1->message, "connect to db.local:5432 refused");
  cr_assert_str_eq(e1->kind, "ECONNREFUSED");
  finish(f, t);
}
