/* The C side of bench-lua.lua: the same work as the Lua binding's runs, through the core
 * directly, so the Lua figures can be put as ratios against it in the same run.
 *
 *   bench-lua-core fork N C     N tasks returning x * 2 (an 8-byte raw result), C at a time
 *                               with ip_waitfor_next; prints "tasks/s <rate>"
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
  fprintf(stderr, "usage: bench-lua-core fork N C | large BYTES inplace|streamed|copy\n");
  return 2;
}
