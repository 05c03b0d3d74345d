/* "Log in" to twelve servers, three at a time, and collect each one's `uname -a`. Each call
 * runs in its own forked child; results are printed as they complete, and a failure prints
 * what happened instead of hanging the loop.
 *
 * Build against an installed library:  cc uname.c $(pkg-config --cflags --libs inparallel)
 */
#include <inparallel.h>
#include <stdio.h>
#include <string.h>

static const char *servers[] = {
    "alpha.local", "bravo.local", "charlie.local", "delta.local", "echo.local", "foxtrot.local",
    "golf.local",  "hotel.local", "india.local",   "juliet.local", "kilo.local", "lima.local",
};

/* Runs in the child: the "remote" command is local here, and one server is down. */
static void *get_os(void *arg) {
  const char *server = arg;
  if (strcmp(server, "kilo.local") == 0) ip_raise(EHOSTUNREACH, "cannot reach %s", server);
  FILE *p = popen("uname -a", "r");
  if (!p) ip_raise(errno, "popen failed on %s", server);
  char line[512];
  size_t n = fread(line, 1, sizeof line - 1, p);
  pclose(p);
  while (n && line[n - 1] == '\n') n--;
  return ip_bytes_copy(line, n); /* must outlive get_os: the library sends it afterwards */
}

int main(void) {
  ip_task *task = ip_task_new(get_os, NULL); /* NULL: the raw serializer */
  ip_list *active = ip_list_new();
  if (!task || !active) return 1;
  size_t next = 0, count = sizeof servers / sizeof *servers;
  int failures = 0;

  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  int rc;
  while ((rc = ip_waitfor_step(&w, active, 3, -1, &f)) > 0) {
    if (rc == IP_WAITFOR_ASK) { /* waitfor asks for another task: start one if any are left */
      if (next < count) ip_list_push(active, ip_call(task, (void *)servers[next++]));
      continue;
    }
    const char *server = ip_future_arg(f);
    const ip_bytes *out = ip_future_value(f);
    if (out) {
      printf("%-14s %.*s\n", server, (int)out->len, (const char *)out->data);
    } else {
      const ip_error *e = ip_future_error(f);
      printf("%-14s FAILED [%s] %s\n", server, e->kind, e->message);
      failures++;
    }
    ip_future_free(f);
  }
  if (rc < 0) fprintf(stderr, "waitfor: %s\n", ip_strerror(rc));
  ip_list_free(active);
  ip_task_free(task);
  printf("%zu servers, %d failed (as expected: kilo.local is down)\n", count, failures);
  return rc < 0 || failures != 1;
}
