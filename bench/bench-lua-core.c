/* The C side of bench-lua.lua: the same work as the Lua binding's runs, through the core
 * directly, so the Lua figures can be put as ratios against it in the same run.
 *
 *   bench-lua-core fork N C     N tasks returning x * 2 (an 8-byte raw result), C at a time
 *                               with ip_waitfor_next; prints "tasks/s <rate>"
 *   bench-lua-core pool N C W   N trivial calls (a 2-byte raw result) on a pool of W workers,
 *                               C at a time with ip_waitfor_next, after N / 10 to warm the
 *                               workers; prints "calls/s <rate>" (bench-pool.lua)
 *   bench-lua-core large BYTES MODE
 *                               one task returning BYTES bytes the parent filled before the
 *                               call (the child inherits them); prints "seconds <t>". MODE:
 *                               inplace  the child copies them into ip_bytes_alloc (memfd)
 *                               streamed the child returns them as they are (socket)
 *                               copy     streamed, then the parent copies the value into a
 *                                        fresh buffer, as a binding must to make a string
 *
 * Build (in-tree): cc -O2 -Iinclude bench/bench-lua-core.c -o bench/bench-lua-core \
 *                     -Llib/.libs -Wl,-rpath,$PWD/lib/.libs -linparallel
 */
#include <inparallel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *twice(void *arg) {
  long x = (long)(intptr_t)arg * 2;
  return ip_bytes_copy(&x, sizeof x);
}

static void *trivial(void *arg) {
  (void)arg;
  static ip_bytes ok = {"ok", 2};
  return &ok;
}

/* Seconds for n trivial calls on p, cf at a time; -1 when one failed. */
static double pool_run(ip_pool *p, ip_task *t, long n, int cf) {
  long started = 0, done = 0;
  ip_list *l = ip_list_new();
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  double t0 = now();
  while (ip_waitfor_next(&w, l, cf, -1, &f) == 1) {
    if (!f) {
      if (started < n) ip_list_push(l, ip_pool_call(p, t, NULL)), started++;
      continue;
    }
    if (ip_future_status(f) != 0) return -1;
    done++;
    ip_future_free(f);
  }
  double dt = now() - t0;
  ip_list_free(l);
  return done == n ? dt : -1;
}

static ip_bytes large_src;
static void *large_inplace(void *arg) {
  (void)arg;
  return ip_bytes_copy(large_src.data, large_src.len);
}
static void *large_streamed(void *arg) {
  (void)arg;
  return &large_src;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "fork") == 0) {
    long n = atol(argv[2]), started = 0, done = 0;
    int cf = atoi(argv[3]);
    ip_task *t = ip_task_new(twice, NULL);
    ip_list *l = ip_list_new();
    ip_waitfor w = IP_WAITFOR_INIT;
    ip_future *f;
    double t0 = now();
    while (ip_waitfor_next(&w, l, cf, -1, &f) == 1) {
      if (!f) {
        if (started < n) ip_list_push(l, ip_call(t, (void *)(intptr_t)++started));
        continue;
      }
      const ip_bytes *b = ip_future_value(f);
      if (!b || b->len != sizeof(long)) return fprintf(stderr, "a call failed\n"), 1;
      done++;
      ip_future_free(f);
    }
    double dt = now() - t0;
    if (done != n) return 1;
    printf("tasks/s %.1f\n", n / dt);
    return 0;
  }
  if (argc == 5 && strcmp(argv[1], "pool") == 0) {
    long n = atol(argv[2]);
    int cf = atoi(argv[3]), workers = atoi(argv[4]);
    ip_task *t = ip_task_new(trivial, NULL);
    ip_pool *p = t ? ip_pool_new(workers) : NULL;
    if (!p || n < 1 || cf < 1) return fprintf(stderr, "no pool\n"), 1;
    double dt;
    if (pool_run(p, t, n / 10 + 1, cf) < 0 || (dt = pool_run(p, t, n, cf)) < 0)
      return fprintf(stderr, "a call failed\n"), 1;
    printf("calls/s %.1f\n", n / dt);
    ip_pool_free(p);
    ip_task_free(t);
    return 0;
  }
  if (argc == 4 && strcmp(argv[1], "large") == 0) {
    large_src.len = (size_t)atoll(argv[2]);
    large_src.data = malloc(large_src.len);
    if (!large_src.data) return 1;
    memset(large_src.data, 'x', large_src.len);
    const char *mode = argv[3];
    ip_task *t = ip_task_new(strcmp(mode, "inplace") == 0 ? large_inplace : large_streamed, NULL);
    double t0 = now();
    ip_future *f = ip_call(t, NULL);
    const ip_bytes *b = ip_future_value(f);
    if (!b || b->len != large_src.len) return fprintf(stderr, "the call failed\n"), 1;
    if (strcmp(mode, "copy") == 0) {
      char *copy = malloc(b->len);
      if (!copy) return 1;
      memcpy(copy, b->data, b->len);
      volatile char sink = copy[b->len - 1]; /* keeps the compiler from dropping the copy */
      (void)sink;
      free(copy);
    }
    printf("seconds %.6f\n", now() - t0);
    return 0;
  }
  fprintf(stderr, "usage: bench-lua-core fork N C | pool N C W | large BYTES inplace|streamed|copy\n");
  return 2;
}
