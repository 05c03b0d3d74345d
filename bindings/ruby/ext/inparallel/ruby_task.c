/* InParallel::Task: an ip_task whose fork goes through Process.fork and whose child runs a
 * Ruby block, or whose pool worker decodes the call's arguments and runs the task's callable.
 * The value is turned into bytes by Task#__child (Ruby, in the child or worker); this file
 * only carries those bytes, or the failure it reports, to the core. */
#include "ruby_inparallel.h"
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

VALUE rbip_cTask;
/* What Task#__child returns for a result made of several Strings, in order (a large String's
 * Marshal form as its header, the String itself and its trailer): gathered into the result's
 * buffer with one copy. */
static VALUE cPieces;
static ID id_fork, id_child, id_pool_child, id_errno;

static void task_free(void *p) {
  rbip_task *t = p;
  ip_task_free(t->task); /* futures already made stay valid */
  xfree(t);
}

static size_t task_size(const void *p) { return sizeof(rbip_task); }

/* GC.compact may move the Task; `self` follows it. (A pool pins the tasks it may run.) */
static void task_compact(void *p) {
  rbip_task *t = p;
  t->self = rb_gc_location(t->self);
}

static const rb_data_type_t task_type = {
    "InParallel::Task",
    {NULL, task_free, task_size, task_compact},
    NULL, NULL, RUBY_TYPED_FREE_IMMEDIATELY};

static VALUE task_alloc(VALUE klass) {
  rbip_task *t;
  VALUE obj = TypedData_Make_Struct(klass, rbip_task, &task_type, t);
  t->task = NULL;
  t->self = obj;
  return obj;
}

rbip_task *rbip_task_get(VALUE obj) {
  rbip_task *t = rb_check_typeddata(obj, &task_type);
  if (!t->task) rb_raise(rb_eRuntimeError, "InParallel::Task was not set up");
  return t;
}

/* ---- forking through the VM ------------------------------------------------------------- */

/* What went wrong in Process.fork, for the thread that called ip_call. A SystemCallError
 * (EAGAIN, ENOMEM) becomes the failed future the core makes; anything else (an Interrupt
 * that arrived during the fork, a throw from a Process._fork override) is re-raised once
 * ip_call has returned, never longjmp'd across the core's frames. */
static __thread int fork_state;

void (*rbip_fork_child_hook)(void);

void rbip_fork_rethrow(void) {
  int state = fork_state;
  fork_state = 0;
  if (state) rb_jump_tag(state);
}

static VALUE do_fork(VALUE unused) { return rb_funcall(rb_mProcess, id_fork, 0); }

/* Process.fork never fails with EAGAIN: it sleeps a second and tries again, forever, so a
 * process out of processes (RLIMIT_NPROC, a pids cgroup) would never get its call back. The
 * kernel is asked first, with a child that shares this memory and exits at once (CLONE_VM |
 * CLONE_VFORK: no page tables to copy, and no SIGCHLD for the host): if that fails, so would
 * the fork. It runs with the GVL held, so one probe at a time uses the stack. Returns 0 or an
 * errno. A slot taken by someone else between the probe and the fork still leaves Ruby
 * retrying until one frees; that race is the only way left. */
static int probe_child(void *unused) { _exit(0); }

static int can_fork(void) {
  static char stack[16384] __attribute__((aligned(16)));
  /* Blocked while the child lives: a handler of the host's must not run in it, on this
   * process's memory. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = clone(probe_child, stack + sizeof stack, CLONE_VM | CLONE_VFORK, NULL);
  int err = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) return err;
  int st;
  while (waitpid(pid, &st, __WCLONE) < 0 && errno == EINTR) {
  }
  return 0;
}

/* Has glibc merge its fastbins here, in the parent, rather than in every child. Freed small
 * chunks wait in fastbins until a large-bin sized malloc consolidates them, and that walk
 * writes to every heap page holding one. Ruby's GC frees many small chunks, and its at-fork
 * reseed mallocs a large block early in every child, so each child paid a copy-on-write fault
 * per such page: 43 more per call in the Ruby bench (164 against 121, 97 against 126 calls/s).
 * One large-bin malloc before the fork does that walk once, in memory the parent owns. A C
 * caller has no such pattern and paid for it instead (about 5% more CPU per call in
 * bench-core), so it lives here, not in the core. The pointer is volatile so the compiler
 * keeps the malloc/free pair. */
static void consolidate_heap(void) {
  void *volatile p = malloc(1100); /* a 1,120-byte chunk: past the tcache and small bins */
  free(p);
}

pid_t rbip_fork(void *unused) {
  consolidate_heap();
  int probe = can_fork();
  if (probe == EAGAIN || probe == ENOMEM) {
    errno = probe;
    return -1;
  }
  int state = 0;
  VALUE r = rb_protect(do_fork, Qnil, &state);
  if (state) {
    VALUE e = rb_errinfo();
    int err = EAGAIN;
    if (!NIL_P(e) && rb_obj_is_kind_of(e, rb_eSystemCallError)) {
      VALUE n = rb_funcall(e, id_errno, 0);
      if (FIXNUM_P(n) && FIX2INT(n) > 0) err = FIX2INT(n);
      rb_set_errinfo(Qnil);
    } else {
      fork_state = state;
    }
    errno = err;
    return -1;
  }
  /* Process.fork without a block: the pid in the parent, nil in the child. */
  if (NIL_P(r) && rbip_fork_child_hook) rbip_fork_child_hook();
  return NIL_P(r) ? 0 : NUM2PIDT(r);
}

/* ---- the child -------------------------------------------------------------------------- */

/* A call as the task's function gets it: a forked call's job, or a pool call's argument bytes
 * (pointing into the worker's copy of the call, which lasts until the function returns). */
struct call {
  VALUE task;
  VALUE job; /* a forked call's: the Proc to run in the child; Qundef for a pool call */
  const char *args;
  size_t args_len;
  int32_t slot; /* a pool call's: see rbip_args */
};

/* What Task#__child produced, copied out of Ruby so that nothing after it can raise. */
struct outcome {
  struct call *call;
  void *value;
  int failed;
  int code, raised_code;
  char *kind, *message, *backtrace;
};

static char *dup_field(VALUE ary, long i) {
  VALUE s = rb_ary_entry(ary, i);
  if (NIL_P(s)) return NULL;
  s = rb_obj_as_string(s);
  long n = RSTRING_LEN(s);
  char *c = malloc((size_t)n + 1);
  if (!c) return NULL;
  memcpy(c, RSTRING_PTR(s), (size_t)n);
  c[n] = '\0';
  for (long j = 0; j < n; j++)
    if (!c[j]) c[j] = ' '; /* the core's strings are C strings */
  return c;
}

static VALUE child_body(VALUE p) {
  struct outcome *o = (struct outcome *)p;
  struct call *c = o->call;
  VALUE r = c->job != Qundef
                ? rb_funcall(c->task, id_child, 1, c->job)
                : rb_funcall(c->task, id_pool_child, 2, rb_str_new(c->args, (long)c->args_len),
                             INT2NUM(c->slot));
  if (rb_obj_class(r) == cPieces) {
    size_t total = 0;
    for (long i = 0; i < RARRAY_LEN(r); i++) {
      VALUE part = RARRAY_AREF(r, i);
      Check_Type(part, T_STRING);
      total += (size_t)RSTRING_LEN(part);
    }
    ip_bytes *b = ip_bytes_alloc(total); /* 1 MiB or more: in place, in shared memory */
    if (!b) rb_raise(rb_eNoMemError, "no memory for a %zu-byte result", total);
    char *at = b->data;
    for (long i = 0; i < RARRAY_LEN(r); i++) {
      VALUE part = RARRAY_AREF(r, i);
      memcpy(at, RSTRING_PTR(part), (size_t)RSTRING_LEN(part));
      at += RSTRING_LEN(part);
    }
    o->value = b;
    RB_GC_GUARD(r);
    return Qnil;
  }
  if (RB_TYPE_P(r, T_STRING)) {
    if (RSTRING_LEN(r) < (1 << 20)) {
      /* Sent straight from the String: no Ruby code runs (and so no GC moves or frees it)
       * between here and the child's exit, and a copy would only fault in more pages. */
      static ip_bytes small;
      small.data = RSTRING_PTR(r);
      small.len = (size_t)RSTRING_LEN(r);
      o->value = &small;
    } else {
      o->value = ip_bytes_copy(RSTRING_PTR(r), (size_t)RSTRING_LEN(r)); /* memfd, no copy */
    }
    if (!o->value) rb_raise(rb_eNoMemError, "no memory for a %ld-byte result", RSTRING_LEN(r));
    RB_GC_GUARD(r);
    return Qnil;
  }
  Check_Type(r, T_ARRAY); /* [code, class name, message, backtrace text, raised code] */
  o->failed = 1;
  o->code = NUM2INT(rb_ary_entry(r, 0));
  o->raised_code = NUM2INT(rb_ary_entry(r, 4));
  o->kind = dup_field(r, 1);
  o->message = dup_field(r, 2);
  o->backtrace = dup_field(r, 3);
  return Qnil;
}

static void *child_fn(void *arg) {
  /* A pool worker runs call after call: the texts of the last failure, which the core sent
   * before it unwound to the worker's loop, are freed at the next. */
  static char *last[3];
  for (int i = 0; i < 3; i++) {
    free(last[i]);
    last[i] = NULL;
  }
  struct outcome o = {.call = arg};
  int state = 0;
  rb_protect(child_body, (VALUE)&o, &state);
  if (state) {
    /* Task#__child rescues every exception: this is a failure while reporting one, or a
     * non-local exit (break, throw, return) out of the task, whose errinfo is no exception. */
    VALUE e = rb_errinfo();
    char msg[300];
    if (!NIL_P(e) && RB_TYPE_P(e, T_OBJECT) && rb_obj_is_kind_of(e, rb_eException))
      snprintf(msg, sizeof msg, "the child failed and could not report why (%s)",
               rb_obj_classname(e));
    else
      snprintf(msg, sizeof msg, "the task left its child with break, throw or return");
    rb_set_errinfo(Qnil); /* a worker's VM runs on */
    ip_raise_error(IP_ERAISED, 0, "InParallel::RemoteError", msg, NULL);
  }
  if (o.failed) {
    last[0] = o.kind, last[1] = o.message, last[2] = o.backtrace;
    ip_raise_error(o.code, o.raised_code, o.kind, o.message, o.backtrace);
  }
  return o.value;
}

/* ---- a pool call's arguments ------------------------------------------------------------ */

/* In the caller: an rbip_args. */
static int args_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  (void)s;
  const rbip_args *a = value;
  if (!a) return IP_EENCODE;
  int rc = w(ctx, &a->slot, sizeof a->slot);
  return rc == 0 && a->bytes.len ? w(ctx, a->bytes.data, a->bytes.len) : rc;
}

/* In a worker: the task is the one whose copy of this serializer the worker was given; the
 * bytes become a Ruby String only in child_fn, under rb_protect. */
static int args_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  static struct call c;
  if (len < sizeof c.slot) return IP_EDECODE;
  const rbip_task *t = (const rbip_task *)(const void *)((const char *)s - offsetof(rbip_task, args));
  c.task = t->self;
  c.job = Qundef;
  memcpy(&c.slot, buf, sizeof c.slot);
  c.args = (const char *)buf + sizeof c.slot;
  c.args_len = len - sizeof c.slot;
  *value = &c;
  return 0;
}

/* ---- methods ---------------------------------------------------------------------------- */

/* Task#__setup(timeout_ms, max_result, stdio, rlimits, serializer name): max_result bytes
 * or nil for the core's default; stdio the IP_STDIO_* flags or nil for the default; rlimits an
 * Array of [resource, soft, hard]. lib/inparallel/task.rb checks
 * the values and gives the errors users see; these checks only keep the C side safe. */
static VALUE task_setup(VALUE self, VALUE timeout_ms, VALUE max_result, VALUE stdio,
                        VALUE rlimits, VALUE ser_name) {
  rbip_task *t = rb_check_typeddata(self, &task_type);
  if (t->task) rb_raise(rb_eRuntimeError, "InParallel::Task is already set up");
  long ms = NUM2LONG(timeout_ms);
  if (ms < 0 || ms > INT32_MAX) rb_raise(rb_eArgError, "timeout out of range");
  Check_Type(rlimits, T_ARRAY);
  StringValue(ser_name);
  ip_task *task = ip_task_new(child_fn, NULL); /* raw */
  if (!task) rb_sys_fail("ip_task_new");
  int rc = 0;
  snprintf(t->args_name, sizeof t->args_name, "ruby %.*s",
           (int)(RSTRING_LEN(ser_name) < 64 ? RSTRING_LEN(ser_name) : 64), RSTRING_PTR(ser_name));
  t->args.abi = IP_SERIALIZER_ABI;
  t->args.name = t->args_name;
  t->args.encode = args_encode;
  t->args.decode = args_decode;
  if ((rc = ip_task_set_arg_serializer(task, &t->args)) < 0) goto bad;
  t->timeout_ms = (int)ms;
  ip_task_set_fork(task, rbip_fork, NULL);
  ip_task_set_crash_report(task, 0); /* the VM reports its own crashes */
  if (ms > 0) ip_task_set_timeout(task, (int)ms);
  if (!NIL_P(max_result) && (rc = ip_task_set_max_result(task, NUM2ULL(max_result))) < 0) goto bad;
  if (!NIL_P(stdio) && (rc = ip_task_set_stdio(task, NUM2INT(stdio))) < 0) goto bad;
  for (long i = 0; i < RARRAY_LEN(rlimits); i++) {
    VALUE r = rb_ary_entry(rlimits, i);
    if (!RB_TYPE_P(r, T_ARRAY) || RARRAY_LEN(r) != 3) {
      rc = IP_EINVAL;
      goto bad;
    }
    rc = ip_task_set_rlimit(task, NUM2INT(rb_ary_entry(r, 0)), (rlim_t)NUM2ULL(rb_ary_entry(r, 1)),
                            (rlim_t)NUM2ULL(rb_ary_entry(r, 2)));
    if (rc < 0) goto bad;
  }
  t->task = task;
  return self;
bad:
  ip_task_free(task);
  rb_raise(rb_eArgError, "the core refused the task's options: %s", ip_strerror(rc));
}

/* Task#__spawn(args) { job }: forks; the child runs job through Task#__child. */
static VALUE task_spawn(VALUE self, VALUE args) {
  rbip_task *t = rbip_task_get(self);
  VALUE job = rb_block_proc();
  struct call c = {self, job, NULL, 0, -1};
  fork_state = 0;
  ip_future *f = ip_call(t->task, &c); /* in the child this never returns */
  RB_GC_GUARD(job);
  if (!f) rb_raise(rb_eNoMemError, "ip_call: no memory for a future");
  if (fork_state) {
    ip_future_free(f);
    rbip_fork_rethrow();
  }
  return rbip_future_new(f, self, args);
}

/* Task#__name=(name or nil): names the task in the core's registry (ip_task_set_name) or
 * takes its name away. 0 or the core's code (IP_EALREADY: another live task has it). */
static VALUE task_set_name(VALUE self, VALUE name) {
  rbip_task *t = rbip_task_get(self);
  if (NIL_P(name)) return INT2NUM(ip_task_set_name(t->task, NULL));
  return INT2NUM(ip_task_set_name(t->task, StringValueCStr(name)));
}

/* Task.__named(name): the live Task with that name, or nil. The core knows the ip_task; its
 * argument serializer leads back to the Task, as in a worker (args_decode). */
static VALUE task_named(VALUE klass, VALUE name) {
  ip_task *task = ip_task_find(StringValueCStr(name));
  const ip_serializer *s = task ? ip_task_arg_serializer(task) : NULL;
  if (!s || s->encode != args_encode) return Qnil;
  const rbip_task *t = (const rbip_task *)(const void *)((const char *)s - offsetof(rbip_task, args));
  return t->self;
}

void rbip_init_task(void) {
  id_fork = rb_intern("fork");
  id_child = rb_intern("__child");
  id_pool_child = rb_intern("__pool_child");
  id_errno = rb_intern("errno");
  rbip_cTask = rb_define_class_under(rbip_mInParallel, "Task", rb_cObject);
  /* :nodoc: */
  cPieces = rb_define_class_under(rbip_mInParallel, "Pieces", rb_cArray);

  /* Every RLIMIT_* this system has, by lower-case name (RLIMITS[:nofile]), for the rlimit:
   * option; and the core's stdio flags by name, for stdio:. */
  VALUE rl = rb_hash_new();
#define RBIP_RLIMIT(name, value) rb_hash_aset(rl, ID2SYM(rb_intern(name)), INT2NUM(value));
#ifdef RLIMIT_AS
  RBIP_RLIMIT("as", RLIMIT_AS)
#endif
#ifdef RLIMIT_CORE
  RBIP_RLIMIT("core", RLIMIT_CORE)
#endif
#ifdef RLIMIT_CPU
  RBIP_RLIMIT("cpu", RLIMIT_CPU)
#endif
#ifdef RLIMIT_DATA
  RBIP_RLIMIT("data", RLIMIT_DATA)
#endif
#ifdef RLIMIT_FSIZE
  RBIP_RLIMIT("fsize", RLIMIT_FSIZE)
#endif
#ifdef RLIMIT_LOCKS
  RBIP_RLIMIT("locks", RLIMIT_LOCKS)
#endif
#ifdef RLIMIT_MEMLOCK
  RBIP_RLIMIT("memlock", RLIMIT_MEMLOCK)
#endif
#ifdef RLIMIT_MSGQUEUE
  RBIP_RLIMIT("msgqueue", RLIMIT_MSGQUEUE)
#endif
#ifdef RLIMIT_NICE
  RBIP_RLIMIT("nice", RLIMIT_NICE)
#endif
#ifdef RLIMIT_NOFILE
  RBIP_RLIMIT("nofile", RLIMIT_NOFILE)
#endif
#ifdef RLIMIT_NPROC
  RBIP_RLIMIT("nproc", RLIMIT_NPROC)
#endif
#ifdef RLIMIT_RSS
  RBIP_RLIMIT("rss", RLIMIT_RSS)
#endif
#ifdef RLIMIT_RTPRIO
  RBIP_RLIMIT("rtprio", RLIMIT_RTPRIO)
#endif
#ifdef RLIMIT_RTTIME
  RBIP_RLIMIT("rttime", RLIMIT_RTTIME)
#endif
#ifdef RLIMIT_SIGPENDING
  RBIP_RLIMIT("sigpending", RLIMIT_SIGPENDING)
#endif
#ifdef RLIMIT_STACK
  RBIP_RLIMIT("stack", RLIMIT_STACK)
#endif
#undef RBIP_RLIMIT
  rb_define_const(rbip_mInParallel, "RLIMITS", rb_obj_freeze(rl));
  rb_define_const(rbip_mInParallel, "RLIM_INFINITY", ULL2NUM((unsigned long long)RLIM_INFINITY));
  VALUE st = rb_hash_new();
  rb_hash_aset(st, ID2SYM(rb_intern("purge_inherited")), INT2NUM(IP_STDIO_PURGE_INHERITED));
  rb_hash_aset(st, ID2SYM(rb_intern("flush_std")), INT2NUM(IP_STDIO_FLUSH_STD));
  rb_hash_aset(st, ID2SYM(rb_intern("flush_all")), INT2NUM(IP_STDIO_FLUSH_ALL));
  rb_define_const(rbip_mInParallel, "STDIO_FLAGS", rb_obj_freeze(st));
  rb_define_alloc_func(rbip_cTask, task_alloc);
  rb_define_private_method(rbip_cTask, "__setup", task_setup, 5);
  rb_define_private_method(rbip_cTask, "__name=", task_set_name, 1);
  rb_define_private_method(rb_singleton_class(rbip_cTask), "__named", task_named, 1);
  rb_define_private_method(rbip_cTask, "__spawn", task_spawn, 1);
}
