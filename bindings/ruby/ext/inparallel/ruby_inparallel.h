/* The C half of the inparallel gem: the handles (Task, Future, Waiter) and the few steps that
 * must be C (forking through the VM, the child's entry point, waits without the GVL). Anything
 * that can be Ruby lives in lib/inparallel/. */
#ifndef RUBY_INPARALLEL_H
#define RUBY_INPARALLEL_H

#include <ruby.h>
#include <ruby/thread.h>
#include <inparallel.h>

extern VALUE rbip_mInParallel, rbip_cTask, rbip_cFuture, rbip_cWaiter;

/* Every task's values travel as bytes through the core's raw serializer: the child encodes
 * in Ruby (Marshal, MessagePack, ...), the parent decodes in Ruby (lib/inparallel/). */

typedef struct rbip_task {
  ip_task *task;
} rbip_task;

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

void rbip_init_task(void);
void rbip_init_future(void);
void rbip_init_waitfor(void);

#endif
