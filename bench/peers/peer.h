/* What c-fork.c and c-pool.c share: the clock, the command line, the result line and the
 * checks, so the two differ only in how a call is made. See run.sh for the protocol:
 *
 *   PROG trivial N C    N calls of x -> x + 1 (8-byte integers), C processes at once
 *   PROG big BYTES      one call returning BYTES bytes, read by the caller
 *
 * Each prints one line: peer=NAME workload=trivial|big conc=C n=N|bytes=BYTES seconds=S. */
#ifndef PEER_H
#define PEER_H
#define _GNU_SOURCE
#include <inparallel.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static inline double peer_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline _Noreturn void peer_fail(const char *peer, const char *what, const char *why) {
  fprintf(stderr, "%s: %s: %s\n", peer, what, why);
  exit(1);
}

/* The value a call returns for x, and the sum the caller checks for 1..n. */
static inline uint64_t peer_trivial(uint64_t x) { return x + 1; }
static inline uint64_t peer_trivial_sum(uint64_t n) { return n * (n + 1) / 2 + n; }

/* The big result's source, filled before any call so that every call moves bytes that exist
 * (the child inherits them) and none is charged for making them. */
static inline unsigned char *peer_source(size_t len) {
  unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  for (size_t i = 0; i < len; i++) p[i] = (unsigned char)(i * 31 + 7);
  return p;
}

/* What the caller does with the big result: reads a byte of every page (the other peers hold
 * the bytes in a string, which they wrote), and checks a sample against the source. */
static inline int peer_read_big(const unsigned char *got, const unsigned char *src, size_t len) {
  volatile unsigned char sink = 0;
  for (size_t i = 0; i < len; i += 4096) sink ^= got[i];
  (void)sink;
  for (size_t i = 0; i < len; i += 4096 * 97 + 1)
    if (got[i] != src[i]) return -1;
  return got[len - 1] == src[len - 1] ? 0 : -1;
}

struct peer_args {
  int big;       /* 0: trivial, 1: big */
  long n;        /* trivial: calls */
  int conc;      /* trivial: processes at once */
  size_t bytes;  /* big: result size */
};

static inline struct peer_args peer_parse(const char *peer, int argc, char **argv) {
  struct peer_args a = {0, 0, 1, 0};
  if (argc == 4 && !strcmp(argv[1], "trivial")) {
    a.n = atol(argv[2]);
    a.conc = atoi(argv[3]);
    if (a.n >= 1 && a.conc >= 1) return a;
  } else if (argc == 3 && !strcmp(argv[1], "big")) {
    a.big = 1;
    a.bytes = (size_t)strtoull(argv[2], NULL, 10);
    if (a.bytes >= 4096) return a;
  }
  fprintf(stderr, "usage: %s trivial N C | %s big BYTES\n", peer, peer);
  exit(2);
}

static inline void peer_report(const char *peer, const struct peer_args *a, double seconds) {
  if (a->big)
    printf("peer=%s workload=big conc=1 bytes=%zu seconds=%.6f\n", peer, a->bytes, seconds);
  else
    printf("peer=%s workload=trivial conc=%d n=%ld seconds=%.6f\n", peer, a->conc, a->n, seconds);
  fflush(stdout);
}

#endif
