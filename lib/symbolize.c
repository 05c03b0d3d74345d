/* Return addresses to text: the one place that turns a stack into the lines an ip_error's
 * backtrace holds, for ip_raise in the child and for a crash report in the parent. */
#include "internal.h"
#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *ip__symbolize(void *const *addrs, int n) {
  if (n <= 0) return NULL;
  char **syms = backtrace_symbols(addrs, n);
  if (!syms) return NULL;
  size_t len = 1;
  for (int i = 0; i < n; i++) len += strlen(syms[i]) + 1;
  char *text = malloc(len), *p = text;
  if (text) {
    for (int i = 0; i < n; i++) {
      size_t l = strlen(syms[i]);
      memcpy(p, syms[i], l);
      p[l] = '\n';
      p += l + 1;
    }
    *p = '\0';
  }
  free(syms);
  return text;
}
