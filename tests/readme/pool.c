/* What the README's first pool fragment uses: the task's function. The call must succeed. */
#include <inparallel.h>
#include <stdio.h>
#include <string.h>

static void *get_os(void *arg) {
  const ip_bytes *host = arg;
  char line[128];
  int n = snprintf(line, sizeof line, "%.*s: Linux", (int)host->len, (const char *)host->data);
  return ip_bytes_copy(line, (size_t)n);
}

int main(void) {
  /* README BLOCK */
  return 0;
}
