/* Shared by the Criterion suites: small task functions and "nothing left behind" checks. */
#ifndef IP_TEST_HELPERS_H
#define IP_TEST_HELPERS_H

#include <inparallel.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Open descriptors of this process. */
static inline int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the DIR's own descriptor */
}

/* Threads of this process. */
static inline int count_threads(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* 1 when this process has no child at all, alive or zombie. Reaps nothing. */
static inline int no_children(void) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int r = waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT);
  return r < 0 && errno == ECHILD;
}

/* 1 when `pid` no longer exists (not even as a zombie). */
static inline int pid_gone(pid_t pid) { return kill(pid, 0) < 0 && errno == ESRCH; }

/* A raw result holding a copy of a C string. */
static inline void *bytes_of(const char *s) { return ip_bytes_copy(s, strlen(s)); }

/* The raw value of a future as a NUL-terminated string (static buffer; tests only). */
static inline const char *str_of(ip_future *f) {
  static char buf[4096];
  const ip_bytes *b = ip_future_value(f);
  if (!b) return NULL;
  size_t n = b->len < sizeof buf - 1 ? b->len : sizeof buf - 1;
  memcpy(buf, b->data, n);
  buf[n] = '\0';
  return buf;
}

#endif
