/* examples/uname.c with a structured result: each child returns a MessagePack map
 * {host, uname, elapsed_ms} built with msgpack-c, and the parent reads the fields by name.
 * Twelve "servers", three at a time, printed as they complete; kilo.local is down.
 *
 * Build against an installed library:
 *   cc uname-msgpack.c $(pkg-config --cflags --libs inparallel-msgpack)
 */
#include <inparallel/msgpack.h>
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

static void pack_str(msgpack_packer *pk, const char *s) {
  msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* Runs in the child: returns a msgpack_sbuffer holding exactly one object. */
static void *get_os(void *arg) {
  const char *server = arg;
  double start = now_ms();
  if (strcmp(server, "kilo.local") == 0) ip_raise(EHOSTUNREACH, "cannot reach %s", server);
  FILE *p = popen("uname -a", "r");
  if (!p) ip_raise(errno, "popen failed on %s", server);
  char line[512];
  size_t n = fread(line, 1, sizeof line - 1, p);
  pclose(p);
  while (n && line[n - 1] == '\n') n--;
  line[n] = '\0';

  msgpack_sbuffer *sb = msgpack_sbuffer_new(); /* outlives get_os: freed when the child exits */
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 3);
  pack_str(&pk, "host");
  pack_str(&pk, server);
  pack_str(&pk, "uname");
  pack_str(&pk, line);
  pack_str(&pk, "elapsed_ms");
  msgpack_pack_double(&pk, now_ms() - start);
  return sb;
}

/* The value of `key` in map `m`, or NULL. */
static const msgpack_object *field(const msgpack_object *m, const char *key) {
  if (m->type != MSGPACK_OBJECT_MAP) return NULL;
  for (uint32_t i = 0; i < m->via.map.size; i++) {
    const msgpack_object *k = &m->via.map.ptr[i].key;
    if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
        memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
      return &m->via.map.ptr[i].val;
  }
  return NULL;
}

int main(void) {
  ip_task *task = ip_task_new(get_os, ip_serializer_msgpack());
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
    const msgpack_object *o = ip_future_value(f); /* owned by f, with the strings it holds */
    if (o) {
      const msgpack_object *host = field(o, "host"), *un = field(o, "uname"),
                           *ms = field(o, "elapsed_ms");
      /* msgpack strings are not NUL-terminated: print them with their size. */
      printf("%-14.*s %6.1f ms  %.*s\n", (int)host->via.str.size, host->via.str.ptr,
             ms->via.f64, (int)un->via.str.size, un->via.str.ptr);
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
  printf("%zu servers, %d failed (as expected: kilo.local is down)\n", count, failures);
  return rc < 0 || failures != 1;
}
