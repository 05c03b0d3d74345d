/* The version, and the small helpers every lib/ file shares. */
#include "internal.h"
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define IP__STR2(x) #x
#define IP__STR(x) IP__STR2(x)
const char *ip_version(void) {
  return IP__STR(IP_VERSION_MAJOR) "." IP__STR(IP_VERSION_MINOR) "." IP__STR(IP_VERSION_PATCH);
}

void ip__close(int *fd) {
  if (*fd >= 0) {
    close(*fd);
    *fd = -1;
  }
}

int64_t ip__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void ip__format_rusage(char *buf, size_t n, const struct rusage *ru) {
  double cpu = (double)(ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) +
               (double)(ru->ru_utime.tv_usec + ru->ru_stime.tv_usec) / 1e6;
  snprintf(buf, n, "peak RSS %.1f MiB, CPU %.3f s", (double)ru->ru_maxrss / 1024.0, cpu);
}
