/* Tasks: the function, its serializer and the options every call of it uses. */
#include "internal.h"
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 255

static _Atomic uint64_t serials;

ip_task *ip_task_new(ip_fn fn, const ip_serializer *s) {
  if (!s) s = ip_serializer_raw();
  if (!fn || ip__serializer_check(s) < 0) {
    errno = EINVAL;
    return NULL;
  }
  ip__init();
  ip_task *t = calloc(1, sizeof *t);
  if (!t) {
    errno = ENOMEM;
    return NULL;
  }
  t->fn = fn;
  t->ser = s;
  t->ser_id = ip__ser_id(s->name);
  t->pdeathsig = 1;
  t->stdio = IP_STDIO_PURGE_INHERITED | IP_STDIO_FLUSH_STD;
  t->crash_report = 1;
  t->max_result = IP__DEFAULT_MAX_RESULT;
  t->arg_ser = ip_serializer_raw();
  t->arg_ser_id = ip__ser_id(t->arg_ser->name);
  /* Last, once the task is whole: a pool made after this line has it in its copy. */
  t->serial = atomic_fetch_add(&serials, 1);
  return t;
}

uint64_t ip__task_epoch(void) { return atomic_load(&serials); }

static void unname_locked(ip_task *t) {
  for (ip_task **pp = &ip__g.named; *pp; pp = &(*pp)->named_next)
    if (*pp == t) {
      *pp = t->named_next;
      break;
    }
  t->named_next = NULL;
  free(t->name);
  t->name = NULL;
}

void ip_task_free(ip_task *t) {
  if (!t) return;
  if (t->name) {
    pthread_mutex_lock(&ip__g.lock);
    unname_locked(t);
    pthread_mutex_unlock(&ip__g.lock);
  }
  free(t);
}

static ip_task *find_locked(const char *name) {
  ip_task *t = ip__g.named;
  while (t && strcmp(t->name, name) != 0) t = t->named_next;
  return t;
}

int ip_task_set_name(ip_task *t, const char *name) {
  if (!t) return IP_EINVAL;
  size_t n = name ? strnlen(name, NAME_MAX_LEN + 1) : 0;
  if (name && (n == 0 || n > NAME_MAX_LEN)) return IP_EINVAL;
  char *copy = name ? strdup(name) : NULL;
  if (name && !copy) return IP_ENOMEM;
  pthread_mutex_lock(&ip__g.lock);
  ip_task *other = name ? find_locked(name) : NULL;
  if (other && other != t) {
    pthread_mutex_unlock(&ip__g.lock);
    free(copy);
    return IP_EALREADY;
  }
  if (other == t) { /* the same name again: it keeps its place */
    pthread_mutex_unlock(&ip__g.lock);
    free(copy);
    return 0;
  }
  if (t->name) unname_locked(t);
  if (copy) {
    t->name = copy;
    ip_task **pp = &ip__g.named;
    while (*pp) pp = &(*pp)->named_next;
    *pp = t;
  }
  pthread_mutex_unlock(&ip__g.lock);
  return 0;
}

const char *ip_task_name(const ip_task *t) { return t ? t->name : NULL; }

ip_task *ip_task_find(const char *name) {
  if (!name) return NULL;
  pthread_mutex_lock(&ip__g.lock);
  ip_task *t = find_locked(name);
  pthread_mutex_unlock(&ip__g.lock);
  return t;
}

ip_task *ip_task_next_named(const ip_task *prev) {
  pthread_mutex_lock(&ip__g.lock);
  ip_task *t = prev ? (prev->name ? prev->named_next : NULL) : ip__g.named;
  pthread_mutex_unlock(&ip__g.lock);
  return t;
}

const ip_serializer *ip_task_serializer(const ip_task *t) { return t ? t->ser : NULL; }
const ip_serializer *ip_task_arg_serializer(const ip_task *t) { return t ? t->arg_ser : NULL; }

int ip_task_set_timeout(ip_task *t, int timeout_ms) {
  if (!t) return IP_EINVAL;
  t->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
  return 0;
}

int ip_task_set_pdeathsig(ip_task *t, int on) {
  if (!t) return IP_EINVAL;
  t->pdeathsig = on != 0;
  return 0;
}

int ip_task_set_stdio(ip_task *t, int flags) {
  const int all = IP_STDIO_PURGE_INHERITED | IP_STDIO_FLUSH_STD | IP_STDIO_FLUSH_ALL;
  if (!t || (flags & ~all)) return IP_EINVAL;
  t->stdio = flags;
  return 0;
}

int ip_task_set_rlimit(ip_task *t, int resource, rlim_t soft, rlim_t hard) {
  if (!t || resource < 0 || resource >= RLIM_NLIMITS) return IP_EINVAL;
  if (soft > hard) return IP_EINVAL; /* RLIM_INFINITY is the largest rlim_t */
  int i = 0;
  while (i < t->n_rlimits && t->rlimits[i].resource != resource) i++;
  if (i == t->n_rlimits) {
    if (t->n_rlimits == IP__MAX_RLIMITS) return IP_ENOMEM;
    t->n_rlimits++;
  }
  t->rlimits[i].resource = resource;
  t->rlimits[i].lim.rlim_cur = soft;
  t->rlimits[i].lim.rlim_max = hard;
  return 0;
}

int ip_task_set_max_result(ip_task *t, uint64_t bytes) {
  if (!t || bytes == 0) return IP_EINVAL;
  t->max_result = bytes;
  return 0;
}

int ip_task_set_crash_report(ip_task *t, int on) {
  if (!t) return IP_EINVAL;
  t->crash_report = on != 0;
  return 0;
}

int ip_task_set_fork(ip_task *t, ip_fork_fn fork_fn, void *ud) {
  if (!t) return IP_EINVAL;
  t->fork_fn = fork_fn;
  t->fork_ud = ud;
  return 0;
}
