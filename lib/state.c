/* The process-wide state and its one-time set-up and tear-down. */
#include "internal.h"
#include <execinfo.h>

struct ip__global ip__g = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .epfd = -1,
    .wake_fd = -1,
    .ready_fd = -1,
    .sigchld_fd = -1,
    .lifeline = {-1, -1},
};

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init_once(void) {
  ip__fork_handlers_install();
  /* backtrace() loads libgcc_s on first use; do it here, not in a child's signal handler. */
  void *a[2];
  backtrace(a, 2);
}

void ip__init(void) { pthread_once(&once, init_once); }

__attribute__((destructor)) static void ip__fini(void) {
  ip__supervisor_shutdown();
  pthread_mutex_lock(&ip__g.lock);
  ip__serializers_reset();
  pthread_mutex_unlock(&ip__g.lock);
}
