/* InParallel::Future: owns one ip_future. Freeing it (GC) cancels and reaps a child that
 * still runs. Waits release the GVL; the value's bytes become a Ruby object in
 * lib/inparallel/future.rb, in the caller's thread. */
#include "ruby_inparallel.h"
#include <string.h>
#include <time.h>

VALUE rbip_cFuture;

static void future_mark(void *p) {
  rbip_future *f = p;
  rb_gc_mark(f->task);
  rb_gc_mark(f->args);
}

static void future_free(void *p) {
  rbip_future *f = p;
  ip_future_free(f->future); /* SIGKILLs and reaps a child still running */
  if (f->value_bytes) rb_gc_adjust_memory_usage(-(ssize_t)f->value_bytes);
  xfree(f);
}

/* The result's bytes count as the Future's: the core keeps them (in the heap, or the memfd's
 * mapping) until the Future is freed, so ObjectSpace.memsize_of sees them and the GC's
 * malloc accounting (rb_gc_adjust_memory_usage in future_payload) weighs a Future holding a
 * 100 MiB result like a 100 MiB String. */
static size_t future_size(const void *p) {
  const rbip_future *f = p;
  return sizeof(rbip_future) + f->value_bytes;
}

static const rb_data_type_t future_type = {
    "InParallel::Future",
    {future_mark, future_free, future_size},
    NULL, NULL, RUBY_TYPED_FREE_IMMEDIATELY};

rbip_future *rbip_future_get(VALUE obj) {
  if (!rb_typeddata_is_kind_of(obj, &future_type))
    rb_raise(rb_eTypeError, "expected an InParallel::Future, got %" PRIsVALUE,
             rb_obj_class(obj));
  rbip_future *f = RTYPEDDATA_DATA(obj);
  if (!f->future) rb_raise(rb_eTypeError, "uninitialized InParallel::Future");
  return f;
}

VALUE rbip_future_new(ip_future *future, VALUE task, VALUE args) {
  rbip_future *f;
  VALUE obj = TypedData_Make_Struct(rbip_cFuture, rbip_future, &future_type, f);
  f->future = future;
  f->task = task;
  f->args = args;
  return obj;
}

/* ---- waiting ---------------------------------------------------------------------------- */

struct wait_arg {
  ip_future *f;
  int ms;
  int rc;
};

static void *wait_nogvl(void *p) {
  struct wait_arg *a = p;
  a->rc = ip_future_wait(a->f, a->ms);
  return NULL;
}

long long rbip_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

long long rbip_ms_until(long long deadline_us) {
  long long left = deadline_us - rbip_now_us();
  return left > 0 ? (left + 999) / 1000 : 0;
}

int rbip_wait(ip_future *f, long timeout_ms) {
  if (ip_future_done(f)) return 0;
  if (timeout_ms == 0) return IP_ETIMEDOUT;
  if (timeout_ms > (1L << 53)) timeout_ms = -1; /* beyond any deadline: forever */
  long long deadline = timeout_ms > 0 ? rbip_now_us() + (long long)timeout_ms * 1000 : 0;
  for (;;) {
    long long left = timeout_ms > 0 ? rbip_ms_until(deadline) : -1;
    if (left == 0) return ip_future_done(f) ? 0 : IP_ETIMEDOUT;
    /* IP_EINTR stays when the VM had an interrupt pending and did not call wait_nogvl. */
    struct wait_arg a = {f, left > INT32_MAX ? INT32_MAX : (int)left, IP_EINTR};
    /* RUBY_UBF_IO signals this thread, which interrupts the core's ppoll (IP_EINTR); the
     * VM then runs its interrupts (Ctrl-C, Thread#raise) on the way out, raising from here
     * with nothing of ours held. */
    rb_thread_call_without_gvl(wait_nogvl, &a, RUBY_UBF_IO, NULL);
    if (a.rc == 0) return 0;
    if (a.rc != IP_EINTR && a.rc != IP_ETIMEDOUT) return a.rc;
  }
}

/* Future#__wait(timeout_ms or nil): true when done, false on timeout. */
static VALUE future_wait(VALUE self, VALUE timeout_ms) {
  rbip_future *f = rbip_future_get(self);
  long ms = NIL_P(timeout_ms) ? -1 : NUM2LONG(timeout_ms);
  return rbip_wait(f->future, ms) == 0 ? Qtrue : Qfalse;
}

static VALUE future_done_p(VALUE self) {
  return ip_future_done(rbip_future_get(self)->future) ? Qtrue : Qfalse;
}

static VALUE future_pid(VALUE self) {
  pid_t pid = ip_future_pid(rbip_future_get(self)->future);
  return pid ? PIDT2NUM(pid) : Qnil;
}

static VALUE future_args(VALUE self) { return rbip_future_get(self)->args; }
static VALUE future_task(VALUE self) { return rbip_future_get(self)->task; }

/* Future#cancel: true when this call killed the child, false when it had already completed. */
static VALUE future_cancel(VALUE self) {
  return ip_future_cancel(rbip_future_get(self)->future) == 0 ? Qtrue : Qfalse;
}

/* Future#__status: nil while running, 0 on success, else the core's failure code. */
static VALUE future_status(VALUE self) {
  rbip_future *f = rbip_future_get(self);
  if (!ip_future_done(f->future)) return Qnil;
  return INT2NUM(ip_future_status(f->future));
}

/* Future#__payload(borrow): after completion, the value's bytes as a binary String, for the
 * task's serializer to decode; nil when the call failed (then see __error_info). borrow: the
 * String is a view of the bytes the future holds (a 100 MiB result is not copied once more),
 * for a decoder that copies what it keeps (Marshal.load); Future#__unborrow empties it once
 * decoded, so that it never outlives the future. */
static VALUE future_payload(VALUE self, VALUE borrow) {
  rbip_future *f = rbip_future_get(self);
  if (rbip_wait(f->future, -1) != 0) return Qnil;
  const void *v = ip_future_value(f->future); /* done: decodes without waiting */
  if (!v) return Qnil;
  const ip_bytes *b = v;
  if (!f->value_bytes && b->len) {
    f->value_bytes = b->len;
    rb_gc_adjust_memory_usage((ssize_t)b->len);
  }
  if (RTEST(borrow) && b->len) return rb_str_new_static(b->data, (long)b->len);
  return rb_str_new(b->data, (long)b->len);
}

/* Future#__unborrow(view): the view empty, pointing at nothing of the future's any more (a
 * String whose bytes are not its own is never freed or written in place by Ruby). */
static VALUE future_unborrow(VALUE self, VALUE view) {
  (void)self;
  if (RB_TYPE_P(view, T_STRING) && !OBJ_FROZEN(view)) rb_str_resize(view, 0);
  return Qnil;
}

static VALUE cstr_or_nil(const char *s) { return s ? rb_utf8_str_new_cstr(s) : Qnil; }

/* Future#__error_info: nil, or a Hash of the core's ip_error fields. */
static VALUE future_error_info(VALUE self) {
  rbip_future *f = rbip_future_get(self);
  const ip_error *e = ip_future_error(f->future);
  if (!e) return Qnil;
  VALUE h = rb_hash_new();
  rb_hash_aset(h, ID2SYM(rb_intern("code")), INT2NUM(e->code));
  rb_hash_aset(h, ID2SYM(rb_intern("code_name")), rb_str_new_cstr(ip_err_name(e->code)));
  rb_hash_aset(h, ID2SYM(rb_intern("kind")), cstr_or_nil(e->kind));
  rb_hash_aset(h, ID2SYM(rb_intern("message")), cstr_or_nil(e->message));
  rb_hash_aset(h, ID2SYM(rb_intern("backtrace")), cstr_or_nil(e->backtrace));
  rb_hash_aset(h, ID2SYM(rb_intern("raised_code")), INT2NUM(e->raised_code));
  rb_hash_aset(h, ID2SYM(rb_intern("exit_status")),
               e->exit_status >= 0 ? INT2NUM(e->exit_status) : Qnil);
  rb_hash_aset(h, ID2SYM(rb_intern("signal")), e->signal ? INT2NUM(e->signal) : Qnil);
  rb_hash_aset(h, ID2SYM(rb_intern("core_dumped")), e->core_dumped ? Qtrue : Qfalse);
  rb_hash_aset(h, ID2SYM(rb_intern("pid")), e->pid ? PIDT2NUM(e->pid) : Qnil);
  rb_hash_aset(h, ID2SYM(rb_intern("max_rss_kb")), LONG2NUM(e->rusage.ru_maxrss));
  return h;
}

void rbip_init_future(void) {
  rbip_cFuture = rb_define_class_under(rbip_mInParallel, "Future", rb_cObject);
  rb_undef_alloc_func(rbip_cFuture);
  rb_undef_method(CLASS_OF(rbip_cFuture), "new");
  rb_define_method(rbip_cFuture, "done?", future_done_p, 0);
  rb_define_method(rbip_cFuture, "pid", future_pid, 0);
  rb_define_method(rbip_cFuture, "args", future_args, 0);
  rb_define_method(rbip_cFuture, "cancel", future_cancel, 0);
  rb_define_private_method(rbip_cFuture, "__task", future_task, 0);
  rb_define_private_method(rbip_cFuture, "__wait", future_wait, 1);
  rb_define_private_method(rbip_cFuture, "__status", future_status, 0);
  rb_define_private_method(rbip_cFuture, "__payload", future_payload, 1);
  rb_define_private_method(rbip_cFuture, "__unborrow", future_unborrow, 1);
  rb_define_private_method(rbip_cFuture, "__error_info", future_error_info, 0);
}
