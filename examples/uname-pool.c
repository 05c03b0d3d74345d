/* The same fan-out as uname.c, on a pool: three worker processes are forked once and run
 * the twelve "logins" between them, three at a time. The server's name travels to the
 * worker as bytes (the raw argument serializer); the futures, the waitfor loop and the
 * failure of the unreachable server are exactly those of uname.c.
 *
 * Build against an installed library:  cc uname-pool.c $(pkg-config --cflags --libs inparallel)
 */
#include <inparallel.h>
#include <stdio.h>
#include <string.h>

static const char *servers[] = {
    "alpha.local", "bravo.local", "charlie.local", "delta.local", "echo.local", "foxtrot.local",
    "golf.local",  "hotel.local", "india.local",   "juliet.local", "kilo.local", "lima.local",
};

/* Runs in a worker, once per call. The argument is the server's name as bytes, which live
 * until this returns; the result is made with ip_bytes_copy, which the library frees in the
 * worker once it is sent. */
static void *get_os(void *arg) {
  const ip_bytes *name = arg;
  char server[64];
  snprintf(server, sizeof server, "%.*s", (int)name->len, (const char *)name->data);
  if (strcmp(server, "kilo.local") == 0) ip_raise(EHOSTUNREACH, "cannot reach %s", server);
  FILE *p = popen("uname -a", "r");
  if (!p) ip_raise(errno, "popen failed on %s", server);
  char line[512];
  size_t n = fread(line, 1, sizeof line - 1, p);
  pclose(p);
  while (n && line[n - 1] == '\n') n--;
  return ip_bytes_copy(line, n);
}

int main(void) {
  ip_task *task = ip_task_new(get_os, NULL); /* made before the pool, so its workers have it */
  ip_pool *pool = ip_pool_new(3);
  ip_list *active = ip_list_new();
  if (!task || !pool || !active) {
    perror("uname-pool");
    return 1;
  }
  size_t next = 0, count = sizeof servers / sizeof *servers;
  int failures = 0;
  /* Kept for the whole loop: ip_future_arg gives back this pointer, to name the server. */
  ip_bytes names[sizeof servers / sizeof *servers];
  for (size_t i = 0; i < count; i++) names[i] = (ip_bytes){(void *)servers[i], strlen(servers[i])};

  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  int rc;
  while ((rc = ip_waitfor_step(&w, active, 3, -1, &f)) > 0) {
    if (rc == IP_WAITFOR_ASK) {
      if (next < count) ip_list_push(active, ip_pool_call(pool, task, &names[next++]));
      continue;
    }
    const ip_bytes *name = ip_future_arg(f);
    const ip_bytes *out = ip_future_value(f);
    if (out) {
      printf("%-14.*s (worker %d) %.*s\n", (int)name->len, (const char *)name->data,
             (int)ip_future_pid(f), (int)out->len, (const char *)out->data);
    } else {
      const ip_error *e = ip_future_error(f);
      printf("%-14.*s (worker %d) FAILED [%s] %s\n", (int)name->len, (const char *)name->data,
             (int)ip_future_pid(f), e->kind, e->message);
      failures++;
    }
    ip_future_free(f);
  }
  if (rc < 0) fprintf(stderr, "waitfor: %s\n", ip_strerror(rc));
  ip_list_free(active);
  printf("%zu servers on %d workers, %d failed (as expected: kilo.local is down)\n", count,
         ip_pool_workers(pool), failures);
  ip_pool_free(pool);
  ip_task_free(task);
  return rc < 0 || failures != 1;
}
