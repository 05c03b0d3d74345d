/* bench-waitfor: what one ip_waitfor_next step costs as the list grows. A list of n futures
 * that have all completed is drained step by step; the cost per step at n = 10,000 is set
 * against the cost at n = 100, measured in the same run. Target: within 1.5x (a step is O(1)
 * amortized, however long the list).
 *
 * The futures are real calls, each a forked child that returned a few bytes, completed before
 * the drain starts; a drain only hands them back. Drained futures go into a fresh list for the
 * next repetition (a push of a completed future costs O(1) too), so the forks are paid once.
 *
 * Usage: bench-waitfor [--reps=N] [--sizes=100,10000]
 */
#define _GNU_SOURCE
#include <inparallel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SIZES 8
#define MAX_REPS 101

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void *small(void *arg) {
  (void)arg;
  return ip_bytes_copy("ok", 2);
}

static _Noreturn void die(const char *what, int rc) {
  fprintf(stderr, "bench-waitfor: %s: %s\n", what, ip_strerror(rc));
  exit(1);
}

/* n completed calls, in a list, made 64 at a time (each in-flight call holds descriptors). */
static ip_list *completed_calls(ip_task *t, size_t n) {
  ip_list *l = ip_list_new();
  if (!l) die("ip_list_new", IP_ENOMEM);
  ip_future *batch[64];
  for (size_t done = 0; done < n;) {
    size_t k = n - done < 64 ? n - done : 64;
    for (size_t i = 0; i < k; i++) batch[i] = ip_call(t, NULL);
    for (size_t i = 0; i < k; i++) {
      int rc = ip_future_wait(batch[i], -1);
      if (rc < 0) die("ip_future_wait", rc);
      if (ip_future_status(batch[i]) != 0) die("a call", ip_future_status(batch[i]));
      rc = ip_list_push(l, batch[i]);
      if (rc < 0) die("ip_list_push", rc);
    }
    done += k;
  }
  return l;
}

/* Drains *lp into a new list (which replaces it); returns the nanoseconds per step. */
static double drain(ip_list **lp) {
  ip_list *l = *lp, *next = ip_list_new();
  size_t n = ip_list_len(l);
  ip_future **got = malloc(n * sizeof *got);
  if (!next || !got) die("drain", IP_ENOMEM);
  ip_waitfor w = IP_WAITFOR_INIT;
  size_t k = 0;
  int rc;
  double t0 = now_ns();
  while ((rc = ip_waitfor_next(&w, l, 0, -1, &got[k])) == 1) k++;
  double t1 = now_ns();
  if (rc != 0 || k != n) die("ip_waitfor_next", rc);
  for (size_t i = 0; i < n; i++) ip_list_push(next, got[i]);
  free(got);
  ip_list_free(l);
  *lp = next;
  return (t1 - t0) / (double)n;
}

int main(int argc, char **argv) {
  int reps = 15;
  size_t sizes[MAX_SIZES] = {100, 10000};
  int nsizes = 2;
  for (int i = 1; i < argc; i++) {
    if (!strncmp(argv[i], "--reps=", 7)) {
      reps = atoi(argv[i] + 7);
    } else if (!strncmp(argv[i], "--sizes=", 8)) {
      nsizes = 0;
      for (char *p = argv[i] + 8; *p && nsizes < MAX_SIZES; p += strcspn(p, ","), p += *p == ',')
        sizes[nsizes++] = strtoul(p, NULL, 10);
    } else {
      fprintf(stderr, "usage: bench-waitfor [--reps=N] [--sizes=100,10000]\n");
      return 2;
    }
  }
  if (reps < 1 || reps > MAX_REPS || nsizes < 1) {
    fprintf(stderr, "bench-waitfor: bad --reps or --sizes\n");
    return 2;
  }
  ip_task *t = ip_task_new(small, NULL);
  ip_list *lists[MAX_SIZES];
  for (int s = 0; s < nsizes; s++) lists[s] = completed_calls(t, sizes[s]);

  /* Rounds interleave the sizes, so drift on a noisy machine hits them alike. */
  double per[MAX_SIZES][MAX_REPS];
  for (int r = 0; r < reps; r++)
    for (int s = 0; s < nsizes; s++) per[s][r] = drain(&lists[s]);

  printf("| futures drained | ns per step (median of %d) | vs %zu |\n|---:|---:|---:|\n", reps,
         sizes[0]);
  double base = 0;
  for (int s = 0; s < nsizes; s++) {
    qsort(per[s], (size_t)reps, sizeof per[s][0], cmp_double);
    double med = per[s][reps / 2];
    if (s == 0) base = med;
    printf("| %zu | %.0f | %.2fx |\n", sizes[s], med, med / base);
  }
  double ratio = per[nsizes - 1][reps / 2] / base;
  printf("\nstep cost at %zu against %zu: %.2fx (target <= 1.5x): %s\n", sizes[nsizes - 1],
         sizes[0], ratio, ratio <= 1.5 ? "meets" : "MISSES");

  for (int s = 0; s < nsizes; s++) {
    ip_future *f;
    while ((f = ip_list_remove(lists[s], ip_list_len(lists[s]) ? ip_list_len(lists[s]) - 1 : 0)))
      ip_future_free(f);
    ip_list_free(lists[s]);
  }
  ip_task_free(t);
  return 0;
}
