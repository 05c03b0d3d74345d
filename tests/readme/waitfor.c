/* What the README's ip_waitfor_step fragment uses: a task, the names to call it with, and a
 * cursor. It must end with IP_WAITFOR_END after every call completed. */
#include <inparallel.h>
#include <stdio.h>
#include <string.h>

static void *greet(void *arg) {
  char line[64];
  int n = snprintf(line, sizeof line, "hello from %s", (const char *)arg);
  return ip_bytes_copy(line, (size_t)n);
}

int main(void) {
  const char *names[] = {"alpha", "bravo", "charlie", "delta", "echo"};
  size_t next = 0, count = sizeof names / sizeof *names;
  ip_task *task = ip_task_new(greet, NULL);
  /* README BLOCK */
  ip_task_free(task);
  return rc == IP_WAITFOR_END && next == count ? 0 : 1;
}
