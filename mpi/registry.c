/* The ranks agree on their tasks: each names the same tasks, with the same serializers for
 * results and arguments. Calls then carry a task as its index in the root's list, and a rank
 * whose program differs stops at the start, with a message that says how, rather than at its
 * first call. */
#include "ipm.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The named tasks as "name\0result serializer\0argument serializer\0" each, in naming order. */
static char *describe(size_t *len, uint32_t *n) {
  size_t cap = 256, used = 0;
  char *b = malloc(cap);
  *n = 0;
  for (ip_task *t = ip_task_next_named(NULL); b && t; t = ip_task_next_named(t)) {
    const char *f[3] = {ip_task_name(t), ip_task_serializer(t)->name,
                        ip_task_arg_serializer(t)->name};
    for (int i = 0; i < 3 && b; i++) {
      size_t l = strlen(f[i]) + 1;
      if (used + l > cap) {
        char *nb = realloc(b, cap = 2 * (used + l));
        if (!nb) free(b);
        b = nb;
      }
      if (b) memcpy(b + used, f[i], l), used += l;
    }
    ++*n;
  }
  *len = used;
  return b;
}

/* This rank against the root's list: "" when alike, else what differs, in `why`. Fills map
 * (the root's order) when given. */
static void compare(const char *root_list, size_t len, uint32_t n, int root, int me,
                    ip_task **map, char *why, size_t whylen) {
  const char *p = root_list;
  why[0] = '\0';
  for (uint32_t i = 0; i < n; i++) {
    const char *name = p, *ser = name + strlen(name) + 1, *arg = ser + strlen(ser) + 1;
    p = arg + strlen(arg) + 1;
    ip_task *t = ip_task_find(name);
    if (map) map[i] = t;
    if (!t) {
      snprintf(why, whylen, "task \"%s\" is named on rank %d but not on rank %d", name, root, me);
      return;
    }
    const char *mine = ip_task_serializer(t)->name, *mine_arg = ip_task_arg_serializer(t)->name;
    if (strcmp(mine, ser) != 0 || strcmp(mine_arg, arg) != 0) {
      bool res = strcmp(mine, ser) != 0;
      snprintf(why, whylen, "task \"%s\" has the %s serializer %s on rank %d but %s on rank %d",
               name, res ? "result" : "argument", res ? ser : arg, root, res ? mine : mine_arg, me);
      return;
    }
  }
  (void)len;
  for (ip_task *t = ip_task_next_named(NULL); t; t = ip_task_next_named(t)) {
    const char *q = root_list;
    bool found = false;
    for (uint32_t i = 0; i < n && !found; i++) {
      found = strcmp(q, ip_task_name(t)) == 0;
      for (int k = 0; k < 3; k++) q += strlen(q) + 1;
    }
    if (!found) {
      snprintf(why, whylen, "task \"%s\" is named on rank %d but not on rank %d", ip_task_name(t),
               me, root);
      return;
    }
  }
}

int ipm_registry_check(MPI_Comm comm, int root, bool reuse, struct ipm_registry *reg) {
  int me, size, rc;
  MPI_Comm_rank(comm, &me);
  MPI_Comm_size(comm, &size);
  size_t len = 0;
  uint32_t n = 0;
  char *mine = describe(&len, &n);
  /* What the root has, to every rank: [count, bytes, reuse], then the list. */
  uint64_t head[3] = {n, mine ? len : UINT64_MAX, reuse};
  if ((rc = MPI_Bcast(head, 3, MPI_UINT64_T, root, comm)) != MPI_SUCCESS) {
    free(mine);
    return ipm_mpi_fail(rc, "MPI_Bcast of the root's tasks");
  }
  if (head[1] == UINT64_MAX || head[1] > INT_MAX) {
    free(mine);
    return ipm_fail(IP_ENOMEM, "inparallel-mpi: the root could not list its tasks");
  }
  char *list = me == root ? mine : malloc(head[1] ? head[1] : 1);
  ip_task **map = reg ? calloc(head[0] ? head[0] : 1, sizeof *map) : NULL;
  char why[700] = "";
  int bad = size; /* the lowest rank that differs (or that ran out of memory), size if none */
  if (!list || (reg && !map)) bad = me, snprintf(why, sizeof why, "out of memory on rank %d", me);
  rc = MPI_Bcast(list ? list : why, list ? (int)head[1] : 0, MPI_BYTE, root, comm);
  if (rc == MPI_SUCCESS && bad == size) {
    compare(list, head[1], (uint32_t)head[0], root, me, map, why, sizeof why);
    if (why[0]) bad = me;
  }
  int first = size;
  if (rc == MPI_SUCCESS) rc = MPI_Allreduce(&bad, &first, 1, MPI_INT, MPI_MIN, comm);
  /* The first rank that differs says how, to every rank: one message, the same everywhere. */
  if (rc == MPI_SUCCESS && first < size) rc = MPI_Bcast(why, sizeof why, MPI_CHAR, first, comm);
  if (list != mine) free(list);
  free(mine);
  if (rc != MPI_SUCCESS) {
    free(map);
    return ipm_mpi_fail(rc, "checking the ranks' tasks");
  }
  if (first < size) {
    free(map);
    return ipm_fail(IP_EINVAL, "inparallel-mpi: the ranks named different tasks: %s (every rank "
                    "must name the same tasks, with the same serializers)", why);
  }
  if (reg) {
    reg->tasks = map;
    reg->n = (uint32_t)head[0];
    reg->reuse = head[2] != 0;
  }
  return 0;
}

void ipm_registry_free(struct ipm_registry *reg) {
  free(reg->tasks);
  reg->tasks = NULL;
  reg->n = 0;
}
