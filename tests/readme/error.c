/* What the README's ip_future_error fragment uses: a future that failed. */
#include <inparallel.h>
#include <errno.h>
#include <stdio.h>

static void *unreachable(void *arg) {
  ip_raise(ECONNREFUSED, "cannot reach %s", (const char *)arg);
}

int main(void) {
  ip_task *t = ip_task_new(unreachable, NULL);
  ip_future *f = ip_call(t, "alpha.local");
  ip_future_wait(f, -1);
  /* README BLOCK */
  int failed = ip_future_error(f) && ip_future_error(f)->raised_code == ECONNREFUSED;
  ip_future_free(f);
  ip_task_free(t);
  return failed ? 0 : 1;
}
