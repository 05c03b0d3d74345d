/* InParallel::Waiter: one waitfor loop. The core's ip_waitfor_next makes every decision over
 * an ip_list that mirrors the caller's Array; the future it hands back is then deleted from
 * the Array, the Array's last element moving into its slot.
 *
 * A step costs O(1), however long the Array: the mirror is kept from step to step, and only
 * what was appended since is pushed into it. Anything else done to the Array (a future taken
 * out, another put in its place, by this thread or another while the step waited) is noticed
 * from its length, its last element, or a mirror that disagrees with it, and the mirror is
 * then rebuilt: O(n) once. Keeping the Array's order would cost a shift of the whole Array
 * per step; a waitfor list is a set of calls in flight, so its order is not kept. */
#include "ruby_inparallel.h"

VALUE rbip_cWaiter;

typedef struct waiter {
  ip_waitfor w;
  ip_list *list;
  long synced; /* list[0...synced] are in the mirror; -1: rebuild at the next step */
  VALUE where; /* Hash: address of an ip_future -> its Future, so every mirrored one lives */
} waiter;

static void waiter_mark(void *p) { rb_gc_mark(((waiter *)p)->where); }

static void waiter_free(void *p) {
  waiter *w = p;
  ip_list_free(w->list);
  xfree(w);
}

static size_t waiter_size(const void *p) { return sizeof(waiter); }

static const rb_data_type_t waiter_type = {
    "InParallel::Waiter",
    {waiter_mark, waiter_free, waiter_size},
    NULL, NULL, RUBY_TYPED_FREE_IMMEDIATELY};

static VALUE waiter_alloc(VALUE klass) {
  waiter *w;
  VALUE obj = TypedData_Make_Struct(klass, waiter, &waiter_type, w);
  ip_waitfor init = IP_WAITFOR_INIT;
  w->w = init;
  w->where = rb_hash_new();
  w->list = ip_list_new();
  if (!w->list) rb_raise(rb_eNoMemError, "ip_list_new");
  return obj;
}

static VALUE key(ip_future *f) { return ULL2NUM((unsigned long long)(uintptr_t)f); }

/* The Future at list[i], checked. */
static rbip_future *element(VALUE list, long i, VALUE *el) {
  *el = RARRAY_AREF(list, i);
  if (!rb_obj_is_kind_of(*el, rbip_cFuture))
    rb_raise(rb_eTypeError,
             "InParallel.waitfor: element %ld of the list is %" PRIsVALUE
             ", not an InParallel::Future",
             i, rb_obj_class(*el));
  return rbip_future_get(*el);
}

/* Mirrors list[from...n]. */
static void push_range(waiter *w, VALUE list, long from, long n) {
  for (long i = from; i < n; i++) {
    VALUE el;
    rbip_future *rf = element(list, i, &el);
    int rc = ip_list_push(w->list, rf->future);
    if (rc == IP_EALREADY)
      rb_raise(rb_eArgError, "InParallel.waitfor: element %ld is a future the list already holds",
               i);
    if (rc < 0) rb_raise(rb_eNoMemError, "ip_list_push");
    rf->wf_index = i + 1;
    rb_hash_aset(w->where, key(rf->future), el);
  }
  w->synced = n;
}

static void rebuild(waiter *w, VALUE list) {
  while (ip_list_len(w->list)) ip_list_remove(w->list, ip_list_len(w->list) - 1);
  rb_hash_clear(w->where);
  push_range(w, list, 0, RARRAY_LEN(list));
}

/* Brings the mirror up to date with the caller's Array. */
static void sync_mirror(waiter *w, VALUE list) {
  long n = RARRAY_LEN(list);
  bool same = w->synced >= 0 && n >= w->synced;
  if (same && w->synced > 0) { /* the last mirrored element is where it was */
    VALUE el = RARRAY_AREF(list, w->synced - 1);
    same = rb_obj_is_kind_of(el, rbip_cFuture) && rbip_future_get(el)->wf_index == w->synced;
  }
  if (same) push_range(w, list, w->synced, n);
  if (!same || ip_list_len(w->list) != (size_t)n) rebuild(w, list);
}

/* Deletes f's Future from the caller's Array and returns it; Qundef when the Array no longer
 * holds it (the caller took it out behind the mirror's back). */
static VALUE take_out(waiter *w, VALUE list, ip_future *f) {
  VALUE el = rb_hash_delete(w->where, key(f));
  long n = RARRAY_LEN(list), i = NIL_P(el) ? -1 : rbip_future_get(el)->wf_index - 1;
  if (i < 0 || i >= n || RARRAY_AREF(list, i) != el) /* moved: look for it */
    for (i = 0; i < n && RARRAY_AREF(list, i) != el; i++) {
    }
  if (NIL_P(el) || i >= n) {
    w->synced = -1;
    return Qundef;
  }
  VALUE last = rb_ary_pop(list);
  if (i < n - 1) {
    rb_ary_store(list, i, last);
    if (rb_obj_is_kind_of(last, rbip_cFuture)) rbip_future_get(last)->wf_index = i + 1;
  }
  rbip_future_get(el)->wf_index = 0;
  if (w->synced >= 0) w->synced = n - 1;
  return el;
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

/* Waiter#step(list, cf, timeout_ms = -1): a Future (deleted from list), nil ("start
 * another"), or false (the end). cf is 0 for none; timeout_ms bounds the wait for the next
 * completion (negative: forever, 0: do not wait), and InParallel::TimeoutError is raised when
 * it passes. lib/inparallel.rb checks the arguments. */
static VALUE waiter_step(int argc, VALUE *argv, VALUE self) {
  waiter *w = rb_check_typeddata(self, &waiter_type);
  VALUE list, cf_v, timeout_v;
  rb_scan_args(argc, argv, "21", &list, &cf_v, &timeout_v);
  int cf = NUM2INT(cf_v);
  long long timeout_ms = NIL_P(timeout_v) ? -1 : NUM2LL(timeout_v);
  if (timeout_ms > (1LL << 53)) timeout_ms = -1; /* beyond any deadline: forever */
  Check_Type(list, T_ARRAY);
  long long deadline = timeout_ms > 0 ? rbip_now_us() + timeout_ms * 1000 : 0;
  for (;;) {
    if (w->synced < 0) rebuild(w, list);
    else sync_mirror(w, list);
    struct step_arg a = {w, cf, 0, NULL, IP_EINTR};
    step_nogvl(&a); /* with the GVL: most steps need no wait */
    if (a.rc == IP_ETIMEDOUT) {
      long long left = timeout_ms > 0 ? rbip_ms_until(deadline) : timeout_ms;
      if (left != 0) { /* else: the time is up */
        a.timeout_ms = left < 0 ? -1 : left > INT32_MAX ? INT32_MAX : (int)left;
        a.rc = IP_EINTR;
        /* Not rb_thread_call_without_gvl: that may raise after the step returned a future,
         * which would then be lost. Interrupts are checked below, after the answer is applied
         * or when nothing was answered. Every mirrored Future stays alive meanwhile (`where`),
         * whatever other threads do to the Array. */
        rb_thread_call_without_gvl2(step_nogvl, &a, RUBY_UBF_IO, NULL);
      }
    }
    if (a.rc == 1 && a.out) {
      VALUE el = take_out(w, list, a.out);
      if (el != Qundef) return el;
      continue; /* no longer the caller's: not its to hand back */
    }
    if (a.rc == 1) return Qnil;
    if (a.rc == 0) return Qfalse;
    if (a.rc == IP_EINTR || a.rc == IP_ETIMEDOUT) {
      rb_thread_check_ints(); /* Ctrl-C, Thread#raise: raise here; else resume */
      if (timeout_ms == 0 || (timeout_ms > 0 && rbip_ms_until(deadline) == 0))
        rb_raise(rb_path2class("InParallel::TimeoutError"),
                 "InParallel.waitfor: no call completed within %g s",
                 (double)timeout_ms / 1000.0);
      continue;
    }
    rb_raise(rb_eRuntimeError, "ip_waitfor_next: %s", ip_strerror(a.rc));
  }
}

void rbip_init_waitfor(void) {
  rbip_cWaiter = rb_define_class_under(rbip_mInParallel, "Waiter", rb_cObject);
  rb_define_alloc_func(rbip_cWaiter, waiter_alloc);
  rb_define_method(rbip_cWaiter, "step", waiter_step, -1);
}
