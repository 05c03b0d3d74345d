/* The uname fan-out of uname.c over the ranks of an MPI job: rank 0 sends twelve "logins", the
 * other ranks run them, each in a child forked for the call, and rank 0 prints each answer as
 * it comes, with the host and pid that ran it. One server is down: its call fails alone.
 *
 *   mpirun -np 4 ./examples/uname-mpi                     (4 ranks on this machine)
 *   mpirun --host a,b,c,d ./examples/uname-mpi            (one rank per host)
 *
 * Build against an installed library:  cc uname-mpi.c $(pkg-config --cflags --libs inparallel-mpi)
 */
#include <inparallel/mpi.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *servers[] = {
    "alpha.local", "bravo.local", "charlie.local", "delta.local", "echo.local", "foxtrot.local",
    "golf.local",  "hotel.local", "india.local",   "juliet.local", "kilo.local", "lima.local",
};

/* Runs in a child on a worker rank. The argument came over MPI as raw bytes: an ip_bytes. */
static void *get_os(void *arg) {
  const ip_bytes *b = arg;
  char server[64];
  snprintf(server, sizeof server, "%.*s", (int)b->len, (const char *)b->data);
  if (strcmp(server, "kilo.local") == 0) ip_raise(EHOSTUNREACH, "cannot reach %s", server);
  char host[64] = "?", line[512];
  gethostname(host, sizeof host);
  FILE *p = popen("uname -sr", "r");
  if (!p) ip_raise(errno, "popen failed on %s", server);
  size_t n = fread(line, 1, sizeof line - 1, p);
  pclose(p);
  while (n && line[n - 1] == '\n') n--;
  char out[700];
  int len = snprintf(out, sizeof out, "%.*s (ran on %s)", (int)n, line, host);
  return ip_bytes_copy(out, (size_t)len);
}

int main(int argc, char **argv) {
  ip_task *task = ip_task_new(get_os, NULL); /* raw results, raw arguments */
  if (!task || ip_task_set_name(task, "get_os") != 0) return 1; /* the same name on every rank */
  if (ip_mpi_init(&argc, &argv) < 0) {
    fprintf(stderr, "%s\n", ip_mpi_errmsg());
    return 1;
  }
  ip_pool *pool = ip_mpi_pool(MPI_COMM_WORLD, 0);
  if (!pool) { /* a worker rank: it served until rank 0 freed the pool */
    int e = errno;
    if (e) fprintf(stderr, "%s\n", ip_mpi_errmsg());
    ip_mpi_finalize();
    ip_task_free(task);
    return e ? 1 : 0;
  }
  printf("%d worker ranks\n", ip_pool_workers(pool));
  ip_list *active = ip_list_new();
  size_t next = 0, count = sizeof servers / sizeof *servers;
  ip_bytes names[sizeof servers / sizeof *servers]; /* outlive the calls: ip_future_arg */
  int failures = 0, rc;
  ip_waitfor w = IP_WAITFOR_INIT;
  ip_future *f;
  while ((rc = ip_waitfor_step(&w, active, 6, -1, &f)) > 0) {
    if (rc == IP_WAITFOR_ASK) {
      if (next < count) {
        names[next] = (ip_bytes){(void *)servers[next], strlen(servers[next])};
        ip_list_push(active, ip_pool_call(pool, task, &names[next])); /* encoded at once */
        next++;
      }
      continue;
    }
    const ip_bytes *name = ip_future_arg(f), *out = ip_future_value(f);
    if (out) {
      printf("%-14.*s %.*s, pid %d\n", (int)name->len, (const char *)name->data, (int)out->len,
             (const char *)out->data, (int)ip_future_pid(f));
    } else {
      const ip_error *e = ip_future_error(f);
      printf("%-14.*s FAILED [%s] %s\n", (int)name->len, (const char *)name->data, e->kind, e->message);
      failures++;
    }
    ip_future_free(f);
  }
  ip_list_free(active);
  ip_pool_free(pool); /* the worker ranks' ip_mpi_pool return now */
  ip_mpi_finalize();
  ip_task_free(task);
  return failures == 1 ? 0 : 1; /* kilo.local is down on purpose */
}
