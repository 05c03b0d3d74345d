/* Bad input: NULL handles, invalid options and malformed serializers give the documented
 * error (IP_EINVAL, NULL or 0, per include/inparallel.h) and never crash. */
#include "helpers.h"

#include <signal.h>
#include <sys/resource.h>

static void *fn_hello(void *arg) { return bytes_of("hello"); }

static int enc_nop(const ip_serializer *s, const void *v, ip_write_fn w, void *ctx) {
  return 0;
}
static int dec_nop(const ip_serializer *s, const void *buf, size_t len, void **v) {
  *v = NULL;
  return 0;
}

static ip_serializer make_ser(const char *name) {
  ip_serializer s = {.abi = IP_SERIALIZER_ABI, .name = name, .encode = enc_nop,
                     .decode = dec_nop};
  return s;
}

/* ---- futures ---------------------------------------------------------------------------- */

Test(badinput, future_functions_with_null_return_documented_values) {
  struct rusage ru;
  cr_expect_eq(ip_future_wait(NULL, 0), IP_EINVAL);
  cr_expect_eq(ip_future_wait(NULL, -1), IP_EINVAL);
  cr_expect_eq(ip_future_done(NULL), 0);
  cr_expect_eq(ip_future_status(NULL), IP_EINVAL);
  cr_expect_null(ip_future_value(NULL));
  cr_expect_null(ip_future_error(NULL));
  cr_expect_eq(ip_future_cancel(NULL), IP_EINVAL);
  cr_expect_eq(ip_future_pid(NULL), 0);
  cr_expect_null(ip_future_arg(NULL));
  cr_expect_eq(ip_future_rusage(NULL, &ru), IP_EINVAL);
  ip_future_free(NULL); /* ignored */
}

Test(badinput, future_rusage_with_null_out_is_einval) {
  ip_future *f = ip_call(NULL, NULL); /* an already failed future: no child to wait for */
  cr_assert_not_null(f);
  cr_expect_eq(ip_future_rusage(f, NULL), IP_EINVAL);
  ip_future_free(f);
}

Test(badinput, call_with_null_task_is_a_failed_future_without_child) {
  int marker;
  ip_future *f = ip_call(NULL, &marker);
  cr_assert_not_null(f);
  cr_expect_eq(ip_future_done(f), 1);
  cr_expect_eq(ip_future_wait(f, 0), 0);
  cr_expect_eq(ip_future_status(f), IP_EINVAL);
  cr_expect_null(ip_future_value(f));
  const ip_error *e = ip_future_error(f);
  cr_assert_not_null(e);
  cr_expect_eq(e->code, IP_EINVAL);
  cr_expect_not_null(e->kind);
  cr_expect_not_null(e->message);
  cr_expect_eq(e->pid, 0);
  cr_expect_eq(ip_future_pid(f), 0);
  cr_expect_eq(ip_future_arg(f), &marker);
  cr_expect_eq(ip_future_cancel(f), IP_EALREADY);
  cr_expect(no_children());
  ip_future_free(f);
}

/* ---- lists and waitfor ------------------------------------------------------------------ */

Test(badinput, list_functions_with_null_return_documented_values) {
  ip_future *f = ip_call(NULL, NULL);
  cr_expect_eq(ip_list_push(NULL, f), IP_EINVAL);
  cr_expect_eq(ip_list_len(NULL), 0);
  cr_expect_null(ip_list_at(NULL, 0));
  cr_expect_null(ip_list_remove(NULL, 0));
  ip_list_free(NULL); /* ignored */
  ip_list *l = ip_list_new();
  cr_assert_not_null(l);
  cr_expect_eq(ip_list_push(l, NULL), IP_EINVAL);
  cr_expect_eq(ip_list_len(l), 0);
  cr_expect_null(ip_list_at(l, 0));
  cr_expect_null(ip_list_remove(l, 0));
  cr_expect_eq(ip_list_push(l, f), 0);
  cr_expect_null(ip_list_at(l, 1));
  cr_expect_null(ip_list_at(l, (size_t)-1));
  cr_expect_null(ip_list_remove(l, 1));
  cr_expect_eq(ip_list_len(l), 1);
  ip_list_free(l);
  ip_future_free(f);
}

Test(badinput, waitfor_with_null_arguments_is_einval) {
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_list *l = ip_list_new();
  ip_future *out = (ip_future *)&w; /* must not be read */
  cr_assert_not_null(l);
  cr_expect_eq(ip_waitfor_next(NULL, l, 0, 0, &out), IP_EINVAL);
  cr_expect_eq(ip_waitfor_next(&w, NULL, 0, 0, &out), IP_EINVAL);
  cr_expect_eq(ip_waitfor_next(&w, l, 0, 0, NULL), IP_EINVAL);
  ip_list_free(l);
}

Test(badinput, waitfor_negative_concurrency_factor_is_einval) {
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_list *l = ip_list_new();
  ip_future *out = NULL;
  cr_assert_not_null(l);
  cr_expect_eq(ip_waitfor_next(&w, l, -1, 0, &out), IP_EINVAL);
  cr_expect_eq(ip_waitfor_next(&w, l, -1000, -1, &out), IP_EINVAL);
  ip_list_free(l);
}

/* ---- tasks ------------------------------------------------------------------------------ */

Test(badinput, task_new_with_null_fn_is_null_einval) {
  errno = 0;
  cr_expect_null(ip_task_new(NULL, NULL));
  cr_expect_eq(errno, EINVAL);
  errno = 0;
  cr_expect_null(ip_task_new(NULL, ip_serializer_raw()));
  cr_expect_eq(errno, EINVAL);
}

Test(badinput, task_setters_with_null_task_are_einval) {
  cr_expect_eq(ip_task_set_timeout(NULL, 10), IP_EINVAL);
  cr_expect_eq(ip_task_set_pdeathsig(NULL, 1), IP_EINVAL);
  cr_expect_eq(ip_task_set_stdio(NULL, IP_STDIO_FLUSH_STD), IP_EINVAL);
  cr_expect_eq(ip_task_set_rlimit(NULL, RLIMIT_CPU, 1, 1), IP_EINVAL);
  cr_expect_eq(ip_task_set_max_result(NULL, 100), IP_EINVAL);
  cr_expect_eq(ip_task_set_crash_report(NULL, 1), IP_EINVAL);
  cr_expect_eq(ip_task_set_fork(NULL, NULL, NULL), IP_EINVAL);
  ip_task_free(NULL); /* ignored */
}

Test(badinput, rlimit_negative_or_unknown_resource_is_einval) {
  ip_task *t = ip_task_new(fn_hello, NULL);
  cr_assert_not_null(t);
  cr_expect_eq(ip_task_set_rlimit(t, -1, 1, 1), IP_EINVAL);
  cr_expect_eq(ip_task_set_rlimit(t, RLIM_NLIMITS, 1, 1), IP_EINVAL);
  cr_expect_eq(ip_task_set_rlimit(t, 1 << 20, 1, 1), IP_EINVAL);
  ip_task_free(t);
}

Test(badinput, rlimit_soft_above_hard_is_einval) {
  ip_task *t = ip_task_new(fn_hello, NULL);
  cr_assert_not_null(t);
  cr_expect_eq(ip_task_set_rlimit(t, RLIMIT_NOFILE, 200, 100), IP_EINVAL);
  cr_expect_eq(ip_task_set_rlimit(t, RLIMIT_CPU, RLIM_INFINITY, 5), IP_EINVAL);
  cr_expect_eq(ip_task_set_rlimit(t, RLIMIT_NOFILE, 100, 100), 0);
  cr_expect_eq(ip_task_set_rlimit(t, RLIMIT_CPU, 5, RLIM_INFINITY), 0);
  ip_task_free(t);
}

Test(badinput, rlimit_ninth_resource_is_enomem_but_replacing_is_fine) {
  static const int res[] = {RLIMIT_CPU,    RLIMIT_FSIZE,   RLIMIT_DATA,  RLIMIT_STACK,
                            RLIMIT_CORE,   RLIMIT_NOFILE,  RLIMIT_AS,    RLIMIT_MEMLOCK,
                            RLIMIT_NPROC};
  ip_task *t = ip_task_new(fn_hello, NULL);
  cr_assert_not_null(t);
  for (int i = 0; i < 8; i++)
    cr_expect_eq(ip_task_set_rlimit(t, res[i], RLIM_INFINITY, RLIM_INFINITY), 0, "resource %d",
                 res[i]);
  cr_expect_eq(ip_task_set_rlimit(t, res[8], RLIM_INFINITY, RLIM_INFINITY), IP_ENOMEM);
  cr_expect_eq(ip_task_set_rlimit(t, res[0], RLIM_INFINITY, RLIM_INFINITY), 0);
  ip_task_free(t);
}

Test(badinput, stdio_unknown_flags_are_einval) {
  ip_task *t = ip_task_new(fn_hello, NULL);
  cr_assert_not_null(t);
  cr_expect_eq(ip_task_set_stdio(t, 8), IP_EINVAL);
  cr_expect_eq(ip_task_set_stdio(t, -1), IP_EINVAL);
  cr_expect_eq(ip_task_set_stdio(t, IP_STDIO_FLUSH_ALL | 16), IP_EINVAL);
  cr_expect_eq(ip_task_set_stdio(t, 0), 0);
  cr_expect_eq(ip_task_set_stdio(t, IP_STDIO_PURGE_INHERITED | IP_STDIO_FLUSH_STD |
                                        IP_STDIO_FLUSH_ALL),
               0);
  ip_task_free(t);
}

Test(badinput, max_result_zero_is_einval) {
  ip_task *t = ip_task_new(fn_hello, NULL);
  cr_assert_not_null(t);
  cr_expect_eq(ip_task_set_max_result(t, 0), IP_EINVAL);
  cr_expect_eq(ip_task_set_max_result(t, 1), 0);
  ip_task_free(t);
}

Test(badinput, rejected_options_leave_the_task_usable) {
  ip_task *t = ip_task_new(fn_hello, NULL);
  cr_assert_not_null(t);
  cr_expect_eq(ip_task_set_max_result(t, 0), IP_EINVAL); /* must not become "0 bytes max" */
  cr_expect_eq(ip_task_set_stdio(t, 8), IP_EINVAL);
  cr_expect_eq(ip_task_set_rlimit(t, RLIMIT_NOFILE, 200, 100), IP_EINVAL);
  ip_future *f = ip_call(t, NULL);
  cr_expect_str_eq(str_of(f), "hello");
  ip_future_free(f);
  ip_task_free(t);
}

/* ---- serializers ------------------------------------------------------------------------- */

Test(badinput, serializer_with_wrong_abi_is_refused) {
  ip_serializer s = make_ser("x-wrong-abi");
  s.abi = IP_SERIALIZER_ABI + 1;
  errno = 0;
  cr_expect_null(ip_task_new(fn_hello, &s));
  cr_expect_eq(errno, EINVAL);
  cr_expect_eq(ip_serializer_register(&s), IP_EINVAL);
  s.abi = 0;
  errno = 0;
  cr_expect_null(ip_task_new(fn_hello, &s));
  cr_expect_eq(errno, EINVAL);
  cr_expect_eq(ip_serializer_register(&s), IP_EINVAL);
  cr_expect_null(ip_serializer_lookup("x-wrong-abi"));
}

Test(badinput, serializer_without_encode_or_decode_is_refused) {
  ip_serializer s = make_ser("x-no-encode");
  s.encode = NULL;
  errno = 0;
  cr_expect_null(ip_task_new(fn_hello, &s));
  cr_expect_eq(errno, EINVAL);
  cr_expect_eq(ip_serializer_register(&s), IP_EINVAL);

  ip_serializer d = make_ser("x-no-decode");
  d.decode = NULL;
  errno = 0;
  cr_expect_null(ip_task_new(fn_hello, &d));
  cr_expect_eq(errno, EINVAL);
  cr_expect_eq(ip_serializer_register(&d), IP_EINVAL);
  cr_expect_null(ip_serializer_lookup("x-no-encode"));
  cr_expect_null(ip_serializer_lookup("x-no-decode"));
}

Test(badinput, serializer_with_null_or_empty_name_is_refused) {
  ip_serializer s = make_ser(NULL);
  errno = 0;
  cr_expect_null(ip_task_new(fn_hello, &s));
  cr_expect_eq(errno, EINVAL);
  cr_expect_eq(ip_serializer_register(&s), IP_EINVAL);
  s.name = "";
  errno = 0;
  cr_expect_null(ip_task_new(fn_hello, &s));
  cr_expect_eq(errno, EINVAL);
  cr_expect_eq(ip_serializer_register(&s), IP_EINVAL);
}

Test(badinput, serializer_name_of_64_chars_is_refused_63_accepted) {
  char n64[65], n63[64];
  memset(n64, 'a', 64);
  n64[64] = '\0';
  memset(n63, 'b', 63);
  n63[63] = '\0';
  ip_serializer s64 = make_ser(n64);
  errno = 0;
  cr_expect_null(ip_task_new(fn_hello, &s64));
  cr_expect_eq(errno, EINVAL);
  cr_expect_eq(ip_serializer_register(&s64), IP_EINVAL);
  cr_expect_null(ip_serializer_lookup(n64));

  static ip_serializer s63; /* registered: must outlive the process */
  s63 = make_ser(strdup(n63));
  ip_task *t = ip_task_new(fn_hello, &s63);
  cr_expect_not_null(t);
  ip_task_free(t);
  cr_expect_eq(ip_serializer_register(&s63), 0);
  cr_expect_eq(ip_serializer_lookup(n63), &s63);
}

Test(badinput, register_null_is_einval_and_lookup_null_is_null) {
  cr_expect_eq(ip_serializer_register(NULL), IP_EINVAL);
  cr_expect_null(ip_serializer_lookup(NULL));
  cr_expect_null(ip_serializer_lookup(""));
  cr_expect_null(ip_serializer_lookup("x-never-registered"));
  ip_serializer_free(NULL); /* ignored */
}

Test(badinput, lookup_raw_is_the_builtin_raw_serializer) {
  const ip_serializer *raw = ip_serializer_raw();
  cr_assert_not_null(raw);
  cr_expect_eq(ip_serializer_lookup("raw"), raw);
  cr_expect_str_eq(raw->name, "raw");
  cr_expect_eq(raw->abi, IP_SERIALIZER_ABI);
  cr_expect_eq(ip_serializer_register(raw), 0); /* the same pointer again */
}

Test(badinput, register_lookup_and_name_clash) {
  static ip_serializer a, b, fake_raw;
  a = make_ser("x-test");
  b = make_ser("x-test");
  fake_raw = make_ser("raw");
  cr_expect_null(ip_serializer_lookup("x-test"));
  cr_expect_eq(ip_serializer_register(&a), 0);
  cr_expect_eq(ip_serializer_lookup("x-test"), &a);
  cr_expect_eq(ip_serializer_register(&b), IP_EALREADY);
  cr_expect_eq(ip_serializer_lookup("x-test"), &a);
  cr_expect_eq(ip_serializer_register(&a), 0);
  cr_expect_eq(ip_serializer_register(&fake_raw), IP_EALREADY);
  cr_expect_eq(ip_serializer_lookup("raw"), ip_serializer_raw());
}

/* ---- ip_bytes and child-only functions ----------------------------------------------------- */

Test(badinput, bytes_copy_of_null_data_is_einval_bytes_free_null_ignored) {
  errno = 0;
  cr_expect_null(ip_bytes_copy(NULL, 5));
  cr_expect_eq(errno, EINVAL);
  ip_bytes *b = ip_bytes_copy(NULL, 0);
  cr_assert_not_null(b);
  cr_expect_eq(b->len, 0);
  ip_bytes_free(b);
  ip_bytes_free(NULL);
}

Test(badinput, in_child_is_zero_outside_a_task) { cr_expect_eq(ip_in_child(), 0); }

Test(badinput, raise_outside_a_child_aborts, .signal = SIGABRT) {
  ip_raise(1, "not in a child");
}

Test(badinput, raise_error_outside_a_child_aborts, .signal = SIGABRT) {
  ip_raise_error(IP_ERAISED, 1, "K", "not in a child", NULL);
}
