/* drain N: makes N calls on a pool of two workers, waits until every one has completed, puts
 * them in one list and drains it with ip_waitfor_step, one step per future. It prints
 * "drained N". tests/waitfor-cost/run.sh runs it under callgrind, counting the instructions
 * spent inside ip_waitfor_step only, for a short list and a long one: a step must cost the
 * same however long the list is. */
#include <inparallel.h>
#include <stdio.h>
#include <stdlib.h>

static void *trivial(void *arg) {
  (void)arg;
  return ip_bytes_copy("ok", 2);
}

static _Noreturn void die(const char *what, int rc) {
  fprintf(stderr, "drain: %s: %s\n", what, ip_strerror(rc));
  exit(1);
}

int main(int argc, char **argv) {
  long n = argc == 2 ? strtol(argv[1], NULL, 10) : 0;
  if (n <= 0) {
    fprintf(stderr, "usage: drain N (N > 0)\n");
    return 2;
  }
  ip_task *t = ip_task_new(trivial, NULL);
  ip_pool *p = t ? ip_pool_new(2) : NULL;
  ip_list *l = ip_list_new();
  if (!t || !p || !l) die("setting up", IP_ENOMEM);
  for (long i = 0; i < n; i++) {
    int rc = ip_list_push(l, ip_pool_call(p, t, NULL));
    if (rc < 0) die("ip_list_push", rc);
  }
  /* Every call completes before the drain, so each step only hands a future back. */
  for (size_t i = 0; i < ip_list_len(l); i++) {
    ip_future *f = ip_list_at(l, i);
    int rc = ip_future_wait(f, -1);
    if (rc == 0) rc = ip_future_status(f);
    if (rc != 0) die("a call", rc);
  }
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  long drained = 0;
  int rc;
  while ((rc = ip_waitfor_step(&w, l, 0, -1, &f)) == IP_WAITFOR_FUTURE) {
    ip_future_free(f);
    drained++;
  }
  if (rc != IP_WAITFOR_END || drained != n) die("ip_waitfor_step", rc);
  ip_list_free(l);
  ip_pool_free(p);
  ip_task_free(t);
  printf("drained %ld\n", drained);
  return 0;
}
