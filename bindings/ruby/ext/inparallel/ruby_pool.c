/* InParallel::Pool: an ip_pool whose template and workers are forked through Process.fork, so
 * that the VM's at-fork work and the application's _fork hooks run in each of them.
 *
 * A worker is a copy of this process as it was inside Pool.new: its Ruby thread stays in
 * Pool#__start, and the core's worker loop runs each call there, with the GVL the thread has
 * held since. A call finds its Task through the task's argument serializer (ruby_task.c), so
 * every Task a worker may run must be alive in the worker's copy of the heap, and where it
 * was: the Pool pins the Tasks that were alive when it was made (lib/inparallel/pool.rb hands
 * them over). Only the thread that made the pool keeps its frames in the copy; a Task held
 * only by another thread's locals would otherwise be garbage there. */
#include "ruby_inparallel.h"
#include <sys/mman.h>

VALUE rbip_cPool;

typedef struct rbip_pool {
  ip_pool *pool;
  VALUE pinned; /* Array of the Tasks alive at Pool.new */
  int64_t *progress; /* RBIP_SLOTS slots, MAP_SHARED with the workers; NULL for a backend's */
  /* A backend's pool (rbip_pool_adopt) is on the list of backends' pools while it has one,
   * so that rbip_pool_close_backends finds every one (MPI must not end under an open pool). */
  struct rbip_pool *next_backend, **prev_backend;
} rbip_pool;

static rbip_pool *backends;

/* In a worker: its pool's progress slots (the value of the moment the template was forked). */
static __thread int64_t *home_progress;

static void pool_mark(void *p) {
  rbip_pool *rp = p;
  rb_gc_mark(rp->pinned);
  /* rb_gc_mark, not the Array's own movable marking: a worker finds each Task at the address
   * it had when the template was forked. */
  if (RB_TYPE_P(rp->pinned, T_ARRAY))
    for (long i = 0; i < RARRAY_LEN(rp->pinned); i++) rb_gc_mark(RARRAY_AREF(rp->pinned, i));
}

static void release(rbip_pool *rp) {
  ip_pool *p = rp->pool;
  rp->pool = NULL;
  if (rp->prev_backend) {
    *rp->prev_backend = rp->next_backend;
    if (rp->next_backend) rp->next_backend->prev_backend = rp->prev_backend;
    rp->prev_backend = NULL;
    rp->next_backend = NULL;
  }
  ip_pool_free(p); /* kills and reaps the template and the workers */
  if (rp->progress) munmap(rp->progress, RBIP_SLOTS * sizeof *rp->progress);
  rp->progress = NULL;
}

static void pool_free(void *p) {
  release(p);
  xfree(p);
}

static size_t pool_size(const void *p) { return sizeof(rbip_pool); }

static const rb_data_type_t pool_type = {
    "InParallel::Pool",
    {pool_mark, pool_free, pool_size},
    NULL, NULL, RUBY_TYPED_FREE_IMMEDIATELY};

static VALUE pool_alloc(VALUE klass) {
  rbip_pool *rp;
  VALUE obj = TypedData_Make_Struct(klass, rbip_pool, &pool_type, rp);
  rp->pool = NULL;
  rp->pinned = Qnil;
  rp->progress = NULL;
  rp->next_backend = NULL;
  rp->prev_backend = NULL;
  return obj;
}

static rbip_pool *pool_get(VALUE obj) { return rb_check_typeddata(obj, &pool_type); }

static ip_pool *live_pool(VALUE obj) {
  rbip_pool *rp = pool_get(obj);
  if (!rp->pool) rb_raise(rb_eIOError, "the InParallel::Pool is closed");
  return rp->pool;
}

/* Pool#__start(workers, max_calls, max_rss, pinned): forks the template and the workers. The
 * GVL stays held: the forks run Ruby (Process.fork), in this process and in the template. */
static VALUE pool_start(VALUE self, VALUE workers, VALUE max_calls, VALUE max_rss, VALUE pinned) {
  rbip_pool *rp = pool_get(self);
  if (rp->pool) rb_raise(rb_eRuntimeError, "InParallel::Pool is already started");
  Check_Type(pinned, T_ARRAY);
  int n = NUM2INT(workers);
  unsigned calls = NUM2UINT(max_calls);
  size_t rss = NUM2SIZET(max_rss);
  rp->pinned = pinned;
  void *m = mmap(NULL, RBIP_SLOTS * sizeof *rp->progress, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) rb_sys_fail("InParallel::Pool.new: mmap of the progress slots");
  rp->progress = home_progress = m;
  ip_pool *p = ip_pool_new_fork(n, rbip_fork, NULL); /* a worker never returns from here */
  int err = errno;
  if (!p) {
    release(rp);
    rbip_fork_rethrow(); /* an Interrupt during Process.fork, say, is raised as itself */
    rb_syserr_fail(err, "InParallel::Pool.new: the pool could not start its workers");
  }
  rp->pool = p;
  rbip_fork_rethrow(); /* nothing was kept unless a fork failed */
  ip_pool_set_max_calls(p, calls);
  ip_pool_set_max_rss(p, rss);
  return self;
}

/* Pool#__call(task, bytes, args, timeout_ms or nil, slot or nil): the call's Future. `bytes`
 * are the encoded arguments; `args` what Future#args shows; `slot` a batch's progress slot. A
 * timeout given here replaces the task's own for this call only (the core reads it during
 * ip_pool_call, and the GVL keeps every other Ruby thread from reading it meanwhile). */
static VALUE pool_call(VALUE self, VALUE task, VALUE bytes, VALUE args, VALUE timeout_ms,
                       VALUE slot) {
  ip_pool *p = live_pool(self);
  rbip_task *t = rbip_task_get(task);
  StringValue(bytes);
  rbip_args a = {{RSTRING_PTR(bytes), (size_t)RSTRING_LEN(bytes)}, NIL_P(slot) ? -1 : NUM2INT(slot)};
  int64_t *progress = pool_get(self)->progress;
  if (a.slot < -1 || a.slot >= RBIP_SLOTS || (a.slot >= 0 && !progress))
    rb_raise(rb_eArgError, "progress slot out of range");
  if (a.slot >= 0) progress[a.slot] = -1;
  int ms = NIL_P(timeout_ms) ? -1 : NUM2INT(timeout_ms);
  if (ms >= 0) ip_task_set_timeout(t->task, ms);
  ip_future *f = ip_pool_call(p, t->task, &a); /* copies the bytes */
  if (ms >= 0) ip_task_set_timeout(t->task, t->timeout_ms);
  RB_GC_GUARD(bytes);
  if (!f) rb_raise(rb_eNoMemError, "ip_pool_call: no memory for a future");
  return rbip_future_new(f, task, args);
}

static VALUE pool_workers(VALUE self) { return INT2NUM(ip_pool_workers(live_pool(self))); }

static VALUE pool_closed_p(VALUE self) { return pool_get(self)->pool ? Qfalse : Qtrue; }

/* Pool#close: fails what is queued or running with ECANCELED, ends every process of the pool.
 * With the GVL held: it only kills and reaps, and a pending interrupt must not come between
 * taking the pool out of reach and freeing it. */
static VALUE pool_close(VALUE self) {
  release(pool_get(self));
  return Qnil;
}

void rbip_pool_adopt(VALUE obj, ip_pool *p, VALUE pinned) {
  rbip_pool *rp = pool_get(obj);
  if (rp->pool) rb_raise(rb_eRuntimeError, "InParallel::Pool is already started");
  if (!NIL_P(pinned)) Check_Type(pinned, T_ARRAY);
  RB_OBJ_WRITE(obj, &rp->pinned, pinned);
  rp->pool = p;
  if (!p) return;
  rp->next_backend = backends;
  if (backends) backends->prev_backend = &rp->next_backend;
  rp->prev_backend = &backends;
  backends = rp;
}

void rbip_pool_close_backends(void) {
  while (backends) release(backends);
}

/* Pool#__progress(slot): the item a batch's worker marked last (-1: none yet). Read once the
 * batch's future failed, when its worker no longer writes. */
static VALUE pool_progress(VALUE self, VALUE slot) {
  rbip_pool *rp = pool_get(self);
  int i = NUM2INT(slot);
  if (!rp->progress || i < 0 || i >= RBIP_SLOTS) return Qnil;
  return LL2NUM(__atomic_load_n(&rp->progress[i], __ATOMIC_RELAXED));
}

/* InParallel.__mark(slot, i), in a worker: it is at item i of the batch in `slot`. */
static VALUE m_mark(VALUE mod, VALUE slot, VALUE i) {
  int s = NUM2INT(slot);
  if (home_progress && s >= 0 && s < RBIP_SLOTS)
    __atomic_store_n(&home_progress[s], (int64_t)NUM2LL(i), __ATOMIC_RELAXED);
  return Qnil;
}

void rbip_init_pool(void) {
  rbip_cPool = rb_define_class_under(rbip_mInParallel, "Pool", rb_cObject);
  rb_define_alloc_func(rbip_cPool, pool_alloc);
  rb_define_method(rbip_cPool, "close", pool_close, 0);
  rb_define_method(rbip_cPool, "closed?", pool_closed_p, 0);
  rb_define_private_method(rbip_cPool, "__start", pool_start, 4);
  rb_define_private_method(rbip_cPool, "__call", pool_call, 5);
  rb_define_private_method(rbip_cPool, "__progress", pool_progress, 1);
  rb_define_module_function(rbip_mInParallel, "__mark", m_mark, 2);
  rb_define_const(rbip_cPool, "SLOTS", INT2NUM(RBIP_SLOTS));
  rb_define_private_method(rbip_cPool, "__workers", pool_workers, 0);
}
