/* InParallel::Waiter: one waitfor loop. Each step mirrors the caller's Array into an ip_list,
 * lets ip_waitfor_next decide (the rules live in the core only), and
 * applies its answer to the Array: a completed future is deleted from it and handed back. */
#include "ruby_inparallel.h"

VALUE rbip_cWaiter;

typedef struct waiter {
  ip_waitfor w;
  ip_list *list;
} waiter;

static void waiter_free(void *p) {
  waiter *w = p;
  ip_list_free(w->list);
  xfree(w);
}

static size_t waiter_size(const void *p) { return sizeof(waiter); }

static const rb_data_type_t waiter_type = {
    "InParallel::Waiter",
    {NULL, waiter_free, waiter_size},
    NULL, NULL, RUBY_TYPED_FREE_IMMEDIATELY};

static VALUE waiter_alloc(VALUE klass) {
  waiter *w;
  VALUE obj = TypedData_Make_Struct(klass, waiter, &waiter_type, w);
  ip_waitfor init = IP_WAITFOR_INIT;
  w->w = init;
  w->list = ip_list_new();
  if (!w->list) rb_raise(rb_eNoMemError, "ip_list_new");
  return obj;
}

struct step_arg {
  waiter *w;
  int cf;
  int timeout_ms;
  ip_future *out;
  int rc;
};

static void *step_nogvl(void *p) {
  struct step_arg *a = p;
  a->rc = ip_waitfor_next(&a->w->w, a->w->list, a->cf, a->timeout_ms, &a->out);
  return NULL;
}

/* Waiter#step(list, cf): a Future (deleted from list), nil ("start another"), or false (the
 * end). cf is 0 for none; lib/inparallel.rb checks both arguments. */
static VALUE waiter_step(VALUE self, VALUE list, VALUE cf_v) {
  waiter *w = rb_check_typeddata(self, &waiter_type);
  int cf = NUM2INT(cf_v);
  Check_Type(list, T_ARRAY);
  for (;;) {
    /* A copy keeps every mirrored future alive while the GVL is released, whatever other
     * threads do to the caller's Array meanwhile. */
    VALUE snapshot = rb_ary_dup(list);
    long n = RARRAY_LEN(snapshot);
    while (ip_list_len(w->list)) ip_list_remove(w->list, ip_list_len(w->list) - 1);
    for (long i = 0; i < n; i++) {
      VALUE el = RARRAY_AREF(snapshot, i);
      if (!rb_obj_is_kind_of(el, rbip_cFuture))
        rb_raise(rb_eTypeError,
                 "InParallel.waitfor: element %ld of the list is %" PRIsVALUE
                 ", not an InParallel::Future",
                 i, rb_obj_class(el));
      if (ip_list_push(w->list, rbip_future_get(el)->future) < 0)
        rb_raise(rb_eNoMemError, "ip_list_push");
    }
    struct step_arg a = {w, cf, 0, NULL, IP_EINTR};
    step_nogvl(&a); /* with the GVL: most steps need no wait */
    if (a.rc == IP_ETIMEDOUT) {
      a.timeout_ms = -1;
      a.rc = IP_EINTR;
      /* Not rb_thread_call_without_gvl: that may raise after the step returned a future,
       * which would then be lost. Interrupts are checked below, after the answer is applied
       * or when nothing was answered. */
      rb_thread_call_without_gvl2(step_nogvl, &a, RUBY_UBF_IO, NULL);
    }
    if (a.rc == 1 && a.out) {
      for (long i = 0; i < n; i++) {
        VALUE el = RARRAY_AREF(snapshot, i);
        if (rbip_future_get(el)->future == a.out) {
          /* Delete that element from the caller's Array (the same object, not an index:
           * another thread may have changed the Array while we waited). */
          long len = RARRAY_LEN(list);
          for (long j = 0; j < len; j++) {
            if (RARRAY_AREF(list, j) == el) {
              rb_ary_delete_at(list, j);
              break;
            }
          }
          RB_GC_GUARD(snapshot);
          return el;
        }
      }
      rb_raise(rb_eRuntimeError, "InParallel.waitfor: a completed future was not in the list");
    }
    if (a.rc == 1) return Qnil;
    if (a.rc == 0) return Qfalse;
    RB_GC_GUARD(snapshot);
    if (a.rc == IP_EINTR || a.rc == IP_ETIMEDOUT) {
      rb_thread_check_ints(); /* Ctrl-C, Thread#raise: raise here; else resume */
      continue;
    }
    rb_raise(rb_eRuntimeError, "ip_waitfor_next: %s", ip_strerror(a.rc));
  }
}

void rbip_init_waitfor(void) {
  rbip_cWaiter = rb_define_class_under(rbip_mInParallel, "Waiter", rb_cObject);
  rb_define_alloc_func(rbip_cWaiter, waiter_alloc);
  rb_define_method(rbip_cWaiter, "step", waiter_step, 2);
}
