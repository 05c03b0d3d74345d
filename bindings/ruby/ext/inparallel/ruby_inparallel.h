/* The C half of the inparallel gem: the handles (Task, Future, Waiter) and the few steps that
 * must be C (forking through the VM, the child's entry point, waits without the GVL). Anything
 * that can be Ruby lives in lib/inparallel/. */
#ifndef RUBY_INPARALLEL_H
#define RUBY_INPARALLEL_H

#include <ruby.h>
#include <ruby/thread.h>
#include <inparallel.h>

extern VALUE rbip_mInParallel, rbip_cTask, rbip_cFuture, rbip_cWaiter, rbip_cPool;

/* Every task's values travel as bytes through the core's raw serializer: the child encodes
 * in Ruby (Marshal, MessagePack, ...), the parent decodes in Ruby (lib/inparallel/). */

typedef struct rbip_task {
  ip_task *task;
  VALUE self; /* the Task, which a pool's worker finds through `args` */
  int timeout_ms; /* the task's own, 0 for none */
  /* How a pool call's arguments travel: bytes the Task encoded, as they are. Each task has its
   * own copy, so that decoding them in a worker leads back to the task. */
  ip_serializer args;
  /* args.name: "ruby " and the Ruby serializer's name, so that ranks whose tasks differ in
   * serializer are told apart by ip_mpi_init's check */
  char args_name[80];
} rbip_task;

rbip_task *rbip_task_get(VALUE obj); /* TypeError for anything but a set-up Task */

/* A pool call's argument, as Pool#__call hands it to the task's argument serializer: the
 * bytes Task#__encode_args made, and for a batch of InParallel.map the progress slot its
 * worker marks each item in (-1 for a single call). They travel as the slot (4 bytes) and the
 * bytes. */
typedef struct rbip_args {
  ip_bytes bytes;
  int32_t slot;
} rbip_args;

/* The progress slots of one pool: shared with its workers, which mark the item of a batch they
 * are at, so that a batch whose worker died names the item that was running. */
#define RBIP_SLOTS 1024

/* Forks through Process.fork (the VM's at-fork work and its _fork hooks): an ip_fork_fn. A
 * failure that is not a SystemCallError is kept for rbip_fork_rethrow. */
pid_t rbip_fork(void *unused);
/* Re-raises what rbip_fork kept, once the core returned; nothing if it kept nothing. */
void rbip_fork_rethrow(void);
/* Run by rbip_fork in each child it made, first thing, when set (ruby_mpi.c: a serving rank
 * gives its children Ruby's signal handlers back). */
extern void (*rbip_fork_child_hook)(void);

typedef struct rbip_future {
  ip_future *future;
  VALUE task; /* the Task: decodes the value */
  VALUE args; /* the call's arguments, for Future#args */
  size_t value_bytes; /* the result's bytes the future holds, once they were looked at */
  long wf_index; /* 1 + its index in the Array of the Waiter that mirrors it; 0: none */
} rbip_future;

rbip_future *rbip_future_get(VALUE obj); /* TypeError for anything but a Future */
VALUE rbip_future_new(ip_future *f, VALUE task, VALUE args);

/* Waits for f with the GVL released; Ruby's interrupts (Ctrl-C, Thread#raise, Timeout) are
 * checked while waiting and raise from here. timeout_ms < 0: forever. 0 or IP_ETIMEDOUT. */
int rbip_wait(ip_future *f, long timeout_ms);
/* Deadlines for waits: CLOCK_MONOTONIC in microseconds, and the milliseconds left until one,
 * rounded up (0 once it has passed), so that a wait never ends before its time. */
long long rbip_now_us(void);
long long rbip_ms_until(long long deadline_us);

/* A Pool object (allocated, not started) made the owner of p, a backend's pool, and of
 * pinned, an Array of Tasks kept alive and in place for as long as the Pool has p. p NULL:
 * only the pins, for the rank that serves (ruby_mpi.c); pinned nil drops them. */
void rbip_pool_adopt(VALUE pool, ip_pool *p, VALUE pinned);
/* Closes every backend's pool still open (before MPI ends), leaving their objects closed. */
void rbip_pool_close_backends(void);

void rbip_init_task(void);
void rbip_init_future(void);
void rbip_init_waitfor(void);
void rbip_init_pool(void);
void rbip_init_mpi(void);

#endif
