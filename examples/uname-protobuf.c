/* examples/uname.c with a protobuf result: each child returns a uname.HostInfo message
 * (examples/uname.proto: host, uname, elapsed_ms), and the parent gets it unpacked.
 * Twelve "servers", three at a time, printed as they complete; kilo.local is down.
 *
 * Build against an installed library:
 *   protoc-c --c_out=. uname.proto
 *   cc uname-protobuf.c uname.pb-c.c $(pkg-config --cflags --libs inparallel-protobuf)
 */
#include <inparallel/protobuf.h>
#include "uname.pb-c.h"
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *servers[] = {
    "alpha.local", "bravo.local", "charlie.local", "delta.local", "echo.local", "foxtrot.local",
    "golf.local",  "hotel.local", "india.local",   "juliet.local", "kilo.local", "lima.local",
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Runs in the child: returns a HostInfo (a ProtobufCMessage) that outlives get_os. */
static void *get_os(void *arg) {
  static char line[512];
  static Uname__HostInfo info = UNAME__HOST_INFO__INIT;
  const char *server = arg;
  double start = now_ms();
  if (strcmp(server, "kilo.local") == 0) ip_raise(EHOSTUNREACH, "cannot reach %s", server);
  FILE *p = popen("uname -a", "r");
  if (!p) ip_raise(errno, "popen failed on %s", server);
  size_t n = fread(line, 1, sizeof line - 1, p);
  pclose(p);
  while (n && line[n - 1] == '\n') n--;
  line[n] = '\0';
  info.host = (char *)server;
  info.uname = line;
  info.elapsed_ms = now_ms() - start;
  return &info;
}

int main(void) {
  /* A protobuf serializer is bound to one message type; it is ours to free. */
  ip_serializer *hostinfo = ip_serializer_protobuf_new(&uname__host_info__descriptor);
  ip_task *task = ip_task_new(get_os, hostinfo);
  ip_list *active = ip_list_new();
  if (!hostinfo || !task || !active) return 1;
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
    const Uname__HostInfo *h = ip_future_value(f); /* unpacked here, freed with f */
    if (h) {
      printf("%-14s %6.1f ms  %s\n", h->host, h->elapsed_ms, h->uname);
    } else {
      const ip_error *e = ip_future_error(f);
      printf("%-14s FAILED [%s] %s\n", (const char *)ip_future_arg(f), e->kind, e->message);
      failures++;
    }
    ip_future_free(f);
  }
  if (rc < 0) fprintf(stderr, "waitfor: %s\n", ip_strerror(rc));
  ip_list_free(active);
  ip_task_free(task);
  ip_serializer_free(hostinfo); /* after its tasks and futures */
  printf("%zu servers, %d failed (as expected: kilo.local is down)\n", count, failures);
  return rc < 0 || failures != 1;
}
