/* storm: many calls with every kind of ending at once, and proof that nothing is left behind.
 *
 * A standalone program (plain main, no Criterion). It runs N tasks (default 1000) at
 * concurrency C (default 64) through ip_waitfor_next with a concurrency factor. A seeded random
 * mix (exact counts, shuffled by the seed) decides what each child does:
 *
 *   5%  SIGSEGV      a real null write through a volatile pointer
 *   5%  abort        abort(), i.e. SIGABRT
 *   5%  killed       the child tells the parent it runs (8 bytes on a pipe: its index and
 *                    pid) and pause()s; a killer thread in the parent SIGKILLs the pid it got
 *                    from ip_future_pid() (after checking it equals the one the child sent)
 *   5%  timeout      the child pause()s forever; the task has ip_task_set_timeout(200 ms)
 *   5%  exit(3)      _exit(3) without a result
 *   5%  raise        ip_raise(code, message) with a per-task code and message
 *   5%  large value  10-50 MiB from ip_bytes_alloc, byte i = (i*31 + task_seed) & 0xff;
 *                    the parent verifies every byte
 *   65% small value  0 B .. 1 MiB (mostly under 256 B) of per-task pseudo-random bytes;
 *                    the parent verifies every byte
 *
 * Every future must come back with exactly the expected outcome: status code, error kind,
 * signal, exit status, raised_code, message (exact for raise, the key words otherwise),
 * backtrace presence, pid, and the value's length and bytes. Afterwards (with every future
 * freed): no child of this process alive or zombie, the descriptor and thread counts equal
 * to the baseline taken after a warm-up call (the library keeps the supervisor thread that the
 * timed tasks start, and the waiting thread's eventfd), and VmRSS within 64 MiB of that baseline. The program prints a
 * table and exits 0 only when everything was exact.
 *
 * Modes
 *   storm                                  one storm in the main thread
 *   storm --threads 8                      8 threads, each its own storm on its own ip_list,
 *                                          concurrently; tasks and concurrency divided among
 *                                          them (so the process still has C children at most)
 *   storm --pool 4                         the same calls on a pool of 4 workers (ip_pool_call):
 *                                          each death fails only its call and is replaced, so
 *                                          after the round the pool has 4 workers again
 *   storm --duration 1800                  soak: storms with new seeds until the time has
 *                                          passed, checking "nothing left behind" after each
 *                                          round; one line per round and a summary. Without
 *                                          --threads, rounds alternate 1 and 8 threads.
 *
 * Commands (see also tests/storm/README)
 *   bounded (the test command):  tests/storm/storm --tasks 1000 --concurrency 64
 *                                tests/storm/storm --tasks 1000 --concurrency 64 --threads 8
 *   soak (documented, by hand):  tests/storm/storm --duration 1800
 *   valgrind:                    valgrind --trace-children=yes --child-silent-after-fork=no
 *                                  --leak-check=full --suppressions=tests/storm/storm.supp
 *                                  tests/storm/storm --tasks 100 --concurrency 16
 *
 * Exit status: 0 all exact; 1 something was wrong (the output says what); 2 bad usage, a
 * setup failure, or the watchdog fired (a hang).
 *
 * Build: make tests/storm/storm (a check program of the autotools build).
 */
#define _GNU_SOURCE
#include "../proc.h"
#include <stdatomic.h>

#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/time.h>

#define MIB ((size_t)1 << 20)
#define RSS_SLACK_KIB (64 * 1024) /* VmRSS may exceed the baseline by this much */
#define MAX_REPORTS 20            /* wrong outcomes printed in full per storm */

/* ---- options -------------------------------------------------------------------------------- */

static struct {
  size_t tasks;
  int concurrency;
  int threads; /* 0: not given */
  uint64_t seed;
  bool seed_given;
  double duration; /* seconds; 0: one run */
  int timeout_ms;  /* the timeout tasks' limit */
  int stall_ms;    /* ip_waitfor_next waits this long for any completion before calling it a hang */
  int watchdog_s;  /* per round: the whole process gives up (exit 2) after this long */
  bool verbose;
  bool host_sigchld; /* install a host SIGCHLD handler (SA_RESTART), as many programs have */
  int pool;          /* run the calls on a pool of this many workers (0: a fork per call) */
} opt = {1000, 64, 0, 0, false, 0, 200, 120000, 900, false, false, 0};

/* The host's SIGCHLD handler of --host-sigchld: it only counts. Only the library's children
 * end in a storm, so no step may return IP_EINTR, handler or not. */
static atomic_ulong host_sigchlds;
static void on_host_sigchld(int sig) {
  (void)sig;
  atomic_fetch_add_explicit(&host_sigchlds, 1, memory_order_relaxed);
}

/* ---- random numbers ------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* xorshift64*: the storm's mix and each task's parameters. */
static uint64_t rnd(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545f4914f6cdd1dull;
}

static uint64_t rnd_range(uint64_t *s, uint64_t lo, uint64_t hi) { /* [lo, hi] */
  return lo + rnd(s) % (hi - lo + 1);
}

/* ---- "nothing left behind" measurements (the counters are tests/proc.h's) ----------------- */

/* Pids of this process's children (alive or zombie), from /proc; for the failure report. */
static void print_children(FILE *out) {
  pid_t kids[64];
  int n = children_of(getpid(), kids, 64);
  if (n <= 0) return;
  fprintf(out, "    children:");
  for (int i = 0; i < n; i++) fprintf(out, " %d", (int)kids[i]);
  fprintf(out, "%s\n", n == 64 ? " (the first 64)" : "");
}

/* Seconds since `t0` (a now_ms() time). */
static double seconds_since(int64_t t0) { return (double)(now_ms() - t0) / 1e3; }

static long vm_rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
  fclose(f);
  return kib;
}

/* ---- the mix -------------------------------------------------------------------------------- */

enum kind { K_SMALL, K_BIG, K_SEGV, K_ABORT, K_KILLED, K_TIMEOUT, K_EXIT, K_RAISE, K_OTHER,
            K_N };
static const char *const kind_name[K_N] = {"small value", "large value", "SIGSEGV",
                                           "abort",       "killed",      "timeout",
                                           "exit(3)",     "raise",       "other"};
/* Per mille of the tasks for each kind but K_SMALL (the rest) and K_OTHER (never expected). */
static const int kind_permille[K_N] = {0, 50, 50, 50, 50, 50, 50, 50, 0};

struct spec {
  ip_bytes self; /* {this spec, its size}: a pool call's argument (raw); first, so the
                    pointer ip_future_arg gives back is the spec's in both modes */
  uint32_t idx;
  uint8_t kind;
  uint64_t tseed; /* the task's own seed: content of values, raise code */
  size_t len;     /* value length for K_SMALL and K_BIG */
  int raise_code;
  int kill_wfd;  /* K_KILLED: where the child says it runs */
  bool killed;   /* K_KILLED: the killer thread sent SIGKILL to this task's child */
  pid_t pid;     /* ip_future_pid() right after ip_call (pool: -2, known at the start only);
                    -1 once the future is gone; under storm.mu */
  pid_t sent_pid; /* the pid the child sent on the pipe */
};

struct killmsg {
  uint32_t idx;
  int32_t pid;
};

/* ---- what children do ----------------------------------------------------------------------- */

/* Value bytes of a small result: splitmix64 of (task seed, 8-byte block). */
static void small_fill(unsigned char *p, size_t len, uint64_t tseed) {
  for (size_t i = 0; i < len; i += 8) {
    uint64_t v = splitmix64(tseed ^ (i * 0x100000001b3ull));
    size_t n = len - i < 8 ? len - i : 8;
    memcpy(p + i, &v, n);
  }
}

/* 4096 bytes of the large pattern; it repeats every 256 bytes, so every 4096-byte chunk of a
 * buffer equals this block. */
static void big_block(unsigned char blk[4096], uint64_t tseed) {
  for (size_t i = 0; i < 4096; i++) blk[i] = (unsigned char)((i * 31 + tseed) & 0xff);
}

/* The null store is the point; keep UBSan from turning the crash into its own report. The
 * pointer itself is volatile too, so the compiler cannot see it is null and emit a trap. */
__attribute__((noinline, no_sanitize("undefined"))) void *storm_segfault_here(void);
__attribute__((noinline, no_sanitize("undefined"))) void *storm_segfault_here(void) {
  volatile int *volatile p = NULL;
  *p = 1;
  return NULL;
}

static void *storm_fn(void *arg) {
  /* A pool worker gets the spec as bytes; a forked child, the caller's pointer. */
  const struct spec *s = opt.pool ? ((const ip_bytes *)arg)->data : arg;
  switch (s->kind) {
  case K_SMALL: {
    ip_bytes *b = ip_bytes_alloc(s->len);
    if (b) small_fill(b->data, s->len, s->tseed);
    return b;
  }
  case K_BIG: {
    ip_bytes *b = ip_bytes_alloc(s->len);
    if (!b) return NULL;
    unsigned char blk[4096];
    big_block(blk, s->tseed);
    unsigned char *p = b->data;
    for (size_t i = 0; i < s->len; i += 4096) memcpy(p + i, blk, s->len - i < 4096 ? s->len - i : 4096);
    return b;
  }
  case K_SEGV:
    return storm_segfault_here();
  case K_ABORT:
    abort();
  case K_KILLED: {
    struct killmsg m = {s->idx, (int32_t)getpid()};
    ssize_t w;
    while ((w = write(s->kill_wfd, &m, sizeof m)) < 0 && errno == EINTR) {
    }
    if (w != (ssize_t)sizeof m) _exit(97); /* shows up as a wrong outcome */
    for (;;) pause();
  }
  case K_TIMEOUT:
    for (;;) pause();
  case K_EXIT:
    _exit(3);
  case K_RAISE:
    ip_raise(s->raise_code, "storm task %u raised %d (task seed %016" PRIx64 ")", s->idx,
             s->raise_code, s->tseed);
  }
  _exit(98);
}

/* ---- one storm ------------------------------------------------------------------------------ */

struct storm {
  int id; /* thread index */
  uint64_t seed;
  size_t n;
  int conc;
  struct spec *specs;
  ip_task *t_main, *t_timeout;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int kill_pipe[2];
  pthread_t killer;
  bool killer_started;
  ip_pool *pool; /* with --pool: the round's pool, shared by its storms */
  /* results */
  size_t expected[K_N], got[K_N], correct[K_N];
  size_t wrong, reported;
  size_t kills;
  long max_child_rss_kib; /* largest ru_maxrss among this storm's children */
  bool stalled, setup_failed;
  char killer_problem[200];
  double wall;
  pthread_t thread;
};

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static IP_PRINTF(2, 3) void report(struct storm *st, const char *fmt, ...) {
  pthread_mutex_lock(&out_lock);
  va_list ap;
  va_start(ap, fmt);
  fprintf(stdout, "  [storm %d seed %016" PRIx64 "] ", st->id, st->seed);
  vfprintf(stdout, fmt, ap);
  fputc('\n', stdout);
  fflush(stdout);
  va_end(ap);
  pthread_mutex_unlock(&out_lock);
}

/* Reads "I run" messages and SIGKILLs the child, by the pid ip_future_pid() gave. */
static void *killer_main(void *p) {
  struct storm *st = p;
  for (;;) {
    struct killmsg m;
    ssize_t r = read(st->kill_pipe[0], &m, sizeof m);
    if (r < 0 && errno == EINTR) continue;
    if (r != (ssize_t)sizeof m) {
      snprintf(st->killer_problem, sizeof st->killer_problem, "kill pipe read returned %zd (%s)",
               r, r < 0 ? strerror(errno) : "short");
      return NULL;
    }
    if (m.idx == UINT32_MAX) return NULL;
    if (m.idx >= st->n) {
      snprintf(st->killer_problem, sizeof st->killer_problem, "kill pipe: bad index %u", m.idx);
      continue;
    }
    struct spec *s = &st->specs[m.idx];
    pthread_mutex_lock(&st->mu);
    while (s->pid == 0) pthread_cond_wait(&st->cv, &st->mu);
    s->sent_pid = m.pid;
    /* s->pid is -1 once the future is gone (or never had a child): never kill then, the pid
     * may be someone else's by now. The child cannot have been reaped before this kill: it
     * waits in pause() for it and its task has no timeout. A pool worker's pid is known to
     * the future only once the worker started the call, so there the pid the worker sent is
     * used, and check() compares it with ip_future_pid afterwards. */
    if ((s->pid > 0 && s->pid == m.pid) || (s->pid == -2 && m.pid > 0)) {
      pid_t victim = s->pid == -2 ? m.pid : s->pid;
      if (kill(victim, SIGKILL) == 0) {
        s->killed = true;
        st->kills++;
      } else {
        snprintf(st->killer_problem, sizeof st->killer_problem, "kill(%d, SIGKILL): %s",
                 (int)victim, strerror(errno));
      }
    }
    pthread_mutex_unlock(&st->mu);
  }
}

static bool has(const char *hay, const char *needle) { return hay && strstr(hay, needle); }

/* Compares f's outcome with what its spec asks for. Returns the kind observed; writes what is
 * wrong to why (empty when exact). */
static enum kind check(struct storm *st, ip_future *f, const struct spec *s, char *why,
                       size_t whylen) {
  why[0] = '\0';
#define WRONG(...)                                                                           \
  do {                                                                                       \
    if (!why[0]) snprintf(why, whylen, __VA_ARGS__);                                         \
  } while (0)
  int status = ip_future_status(f);
  const ip_error *e = ip_future_error(f);
  pid_t pid = ip_future_pid(f);
  enum kind got = K_OTHER;
  const ip_bytes *b = NULL;

  if (!ip_future_done(f)) WRONG("ip_future_done is 0 for a future waitfor returned");
  struct rusage ru;
  if (ip_future_rusage(f, &ru) != 0) WRONG("ip_future_rusage failed");
  else if (ru.ru_maxrss > st->max_child_rss_kib) st->max_child_rss_kib = ru.ru_maxrss;
  if (pid <= 0) WRONG("no child pid (%d)", (int)pid);
  else if (!opt.pool && pid != s->pid)
    WRONG("ip_future_pid %d, %d right after ip_call", (int)pid, (int)s->pid);

  if (status == 0) {
    b = ip_future_value(f);
    if (ip_future_status(f) != 0) WRONG("value failed to decode: %s", ip_err_name(ip_future_status(f)));
    if (!b) {
      WRONG("status 0 but no value");
      return K_OTHER;
    }
    got = b->len >= 10 * MIB ? K_BIG : K_SMALL;
    if (e) WRONG("status 0 but an error: %s", e->message);
  } else {
    if (!e) {
      WRONG("status %s without an ip_error", ip_err_name(status));
      return K_OTHER;
    }
    if (ip_future_value(f)) WRONG("a failed future has a value");
    if (e->code != status) WRONG("error code %s, status %s", ip_err_name(e->code), ip_err_name(status));
    if (!e->kind || !e->message) WRONG("kind or message NULL");
    if (e->pid != pid) WRONG("error pid %d, future pid %d", (int)e->pid, (int)pid);
    if (status == IP_ESIGNALED) {
      got = e->signal == SIGSEGV ? K_SEGV : e->signal == SIGABRT ? K_ABORT
            : e->signal == SIGKILL ? K_KILLED : K_OTHER;
    } else if (status == IP_ETIMEDOUT) {
      got = K_TIMEOUT;
    } else if (status == IP_EEXITED) {
      got = K_EXIT;
    } else if (status == IP_ERAISED) {
      got = K_RAISE;
    }
  }
  if (got != s->kind) {
    if (e)
      WRONG("expected %s, got %s: status %s kind %s signal %d exit_status %d raised_code %d: %s",
            kind_name[s->kind], kind_name[got], ip_err_name(status), e->kind, e->signal,
            e->exit_status, e->raised_code, e->message);
    else
      WRONG("expected %s, got %s (%zu bytes)", kind_name[s->kind], kind_name[got], b ? b->len : 0);
    return got;
  }

  switch (s->kind) {
  case K_SMALL: {
    if (b->len != s->len) {
      WRONG("small value of %zu bytes, expected %zu", b->len, s->len);
      break;
    }
    unsigned char chunk[4096];
    for (size_t i = 0; i < s->len; i += sizeof chunk) {
      size_t n = s->len - i < sizeof chunk ? s->len - i : sizeof chunk;
      /* small_fill works in 8-byte blocks from offset 0; 4096 is a multiple of 8. */
      unsigned char tmp[4096 + 8];
      for (size_t j = 0; j < n; j += 8) {
        uint64_t v = splitmix64(s->tseed ^ ((i + j) * 0x100000001b3ull));
        memcpy(tmp + j, &v, 8);
      }
      memcpy(chunk, tmp, n);
      if (memcmp((const unsigned char *)b->data + i, chunk, n) != 0) {
        size_t k = 0;
        while (((const unsigned char *)b->data)[i + k] == chunk[k]) k++;
        WRONG("small value differs at byte %zu of %zu", i + k, s->len);
        break;
      }
    }
    break;
  }
  case K_BIG: {
    if (b->len != s->len) {
      WRONG("large value of %zu bytes, expected %zu", b->len, s->len);
      break;
    }
    unsigned char blk[4096];
    big_block(blk, s->tseed);
    const unsigned char *p = b->data;
    for (size_t i = 0; i < s->len; i += 4096) {
      size_t n = s->len - i < 4096 ? s->len - i : 4096;
      if (memcmp(p + i, blk, n) != 0) {
        size_t k = 0;
        while (p[i + k] == blk[k]) k++;
        WRONG("large value differs at byte %zu of %zu: %#x, expected %#x", i + k, s->len,
              p[i + k], blk[k]);
        break;
      }
    }
    break;
  }
  case K_SEGV:
  case K_ABORT: {
    const char *sig = s->kind == K_SEGV ? "SIGSEGV" : "SIGABRT";
    if (strcmp(e->kind, sig) != 0) WRONG("kind %s, expected %s", e->kind, sig);
    if (e->exit_status != -1) WRONG("exit_status %d for a signal", e->exit_status);
    if (e->raised_code != 0) WRONG("raised_code %d", e->raised_code);
    if (e->core_dumped) WRONG("core_dumped with RLIMIT_CORE 0");
    if (!e->backtrace) WRONG("%s without a backtrace (crash report is on)", sig);
    if (!has(e->message, sig)) WRONG("message lacks %s: %s", sig, e->message);
    break;
  }
  case K_KILLED: {
    /* Under the lock: the killer sets `killed` only after its kill(), so the call can end (and
     * be checked here) before the flag is set; the killer holds the lock across both. */
    pthread_mutex_lock(&st->mu);
    bool killed = s->killed;
    pid_t sent = s->sent_pid;
    pthread_mutex_unlock(&st->mu);
    if (!killed) WRONG("died of SIGKILL but the killer never sent it (child sent pid %d)",
                       (int)sent);
    if (sent != pid) WRONG("killed pid %d, but ip_future_pid is %d", (int)sent, (int)pid);
    if (strcmp(e->kind, "SIGKILL") != 0) WRONG("kind %s, expected SIGKILL", e->kind);
    if (e->exit_status != -1) WRONG("exit_status %d for a signal", e->exit_status);
    if (e->raised_code != 0) WRONG("raised_code %d", e->raised_code);
    if (e->backtrace) WRONG("a backtrace for SIGKILL");
    if (!has(e->message, "signal 9")) WRONG("message lacks 'signal 9': %s", e->message);
    break;
  }
  case K_TIMEOUT: {
    char want[64];
    snprintf(want, sizeof want, "timeout of %d ms", opt.timeout_ms);
    if (strcmp(e->kind, "ETIMEDOUT") != 0) WRONG("kind %s, expected ETIMEDOUT", e->kind);
    if (e->signal != SIGKILL) WRONG("signal %d, expected SIGKILL", e->signal);
    if (e->exit_status != -1) WRONG("exit_status %d", e->exit_status);
    if (e->raised_code != 0) WRONG("raised_code %d", e->raised_code);
    if (!has(e->message, want)) WRONG("message lacks '%s': %s", want, e->message);
    break;
  }
  case K_EXIT:
    if (strcmp(e->kind, "EEXITED") != 0) WRONG("kind %s, expected EEXITED", e->kind);
    if (e->exit_status != 3) WRONG("exit_status %d, expected 3", e->exit_status);
    if (e->signal != 0) WRONG("signal %d", e->signal);
    if (e->raised_code != 0) WRONG("raised_code %d", e->raised_code);
    if (!has(e->message, "exited with status 3")) WRONG("message: %s", e->message);
    break;
  case K_RAISE: {
    char want[160];
    snprintf(want, sizeof want, "storm task %u raised %d (task seed %016" PRIx64 ")", s->idx,
             s->raise_code, s->tseed);
    /* Codes from 10000 up are no errno value, so the kind is ERAISED. */
    if (strcmp(e->kind, "ERAISED") != 0) WRONG("kind %s, expected ERAISED", e->kind);
    if (e->raised_code != s->raise_code) WRONG("raised_code %d, expected %d", e->raised_code, s->raise_code);
    if (strcmp(e->message, want) != 0) WRONG("message '%s', expected '%s'", e->message, want);
    /* A forked child exits 0 after raising; a pool worker does not exit at all. */
    if (e->exit_status != (opt.pool ? -1 : 0))
      WRONG("exit_status %d, expected %d", e->exit_status, opt.pool ? -1 : 0);
    if (e->signal != 0) WRONG("signal %d", e->signal);
    if (!e->backtrace) WRONG("raise without a backtrace");
    break;
  }
  default:
    WRONG("unexpected kind");
  }
  return got;
#undef WRONG
}

static void plan(struct storm *st) {
  uint64_t r = splitmix64(st->seed) | 1;
  size_t n = st->n, at = 0;
  st->specs = calloc(n ? n : 1, sizeof *st->specs);
  if (!st->specs) {
    st->setup_failed = true;
    return;
  }
  for (int k = K_BIG; k < K_N; k++)
    for (size_t c = n * (size_t)kind_permille[k] / 1000; c > 0; c--) st->specs[at++].kind = (uint8_t)k;
  while (at < n) st->specs[at++].kind = K_SMALL;
  for (size_t i = n; i > 1; i--) { /* Fisher-Yates */
    size_t j = rnd(&r) % i;
    uint8_t t = st->specs[i - 1].kind;
    st->specs[i - 1].kind = st->specs[j].kind;
    st->specs[j].kind = t;
  }
  for (size_t i = 0; i < n; i++) {
    struct spec *s = &st->specs[i];
    s->self = (ip_bytes){s, sizeof *s};
    s->idx = (uint32_t)i;
    s->tseed = rnd(&r);
    s->kill_wfd = st->kill_pipe[1];
    st->expected[s->kind]++;
    if (s->kind == K_BIG) {
      s->len = (size_t)rnd_range(&r, 10 * MIB, 50 * MIB);
    } else if (s->kind == K_SMALL) {
      uint64_t p = rnd(&r) % 100;
      s->len = p < 60   ? (size_t)rnd_range(&r, 0, 255)
               : p < 90 ? (size_t)rnd_range(&r, 256, 16383)
               : p < 98 ? (size_t)rnd_range(&r, 16384, 131071)
                        : (size_t)rnd_range(&r, 131072, MIB - 1); /* below the in-place size */
    } else if (s->kind == K_RAISE) {
      s->raise_code = 10000 + (int)(s->tseed % 50000);
    }
  }
}

static bool start_one(struct storm *st, ip_list *l, size_t i) {
  struct spec *s = &st->specs[i];
  ip_task *t = s->kind == K_TIMEOUT ? st->t_timeout : st->t_main;
  ip_future *f = st->pool ? ip_pool_call(st->pool, t, &s->self) : ip_call(t, s);
  if (!f) {
    report(st, "task %zu: ip_call returned NULL (%s)", i, strerror(errno));
    return false;
  }
  pid_t pid = ip_future_pid(f);
  pthread_mutex_lock(&st->mu);
  s->pid = st->pool && !ip_future_done(f) ? -2 : pid > 0 ? pid : -1;
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
  if (ip_list_push(l, f) != 0) {
    report(st, "task %zu: ip_list_push failed", i);
    ip_future_free(f);
    return false;
  }
  return true;
}

/* Frees f; a killed-kind task's pid is withdrawn first so the killer never uses a stale pid. */
static void drop(struct storm *st, ip_future *f) {
  struct spec *s = ip_future_arg(f);
  pthread_mutex_lock(&st->mu);
  s->pid = -1;
  pthread_mutex_unlock(&st->mu);
  ip_future_free(f);
}

static int storm_setup(struct storm *st) {
  st->kill_pipe[0] = st->kill_pipe[1] = -1;
  if (pipe2(st->kill_pipe, O_CLOEXEC) < 0) return -1;
  st->t_main = ip_task_new(storm_fn, NULL);
  st->t_timeout = ip_task_new(storm_fn, NULL);
  return 0;
}

static void run_storm(struct storm *st) {
  int64_t t0 = now_ms();
  pthread_mutex_init(&st->mu, NULL);
  pthread_cond_init(&st->cv, NULL);
  /* A pool's storms got their pipe and tasks before the pool (storm_setup), so its workers
   * have them too. */
  if (!st->pool && storm_setup(st) < 0) {
    report(st, "pipe2: %s", strerror(errno));
    st->setup_failed = true;
    goto out;
  }
  plan(st);
  if (!st->specs || !st->t_main || !st->t_timeout ||
      ip_task_set_timeout(st->t_timeout, opt.timeout_ms) != 0) {
    report(st, "setup failed (%s)", strerror(errno));
    st->setup_failed = true;
    goto out;
  }
  if (pthread_create(&st->killer, NULL, killer_main, st) != 0) {
    report(st, "pthread_create(killer) failed");
    st->setup_failed = true;
    goto out;
  }
  st->killer_started = true;

  ip_list *l = ip_list_new();
  if (!l) {
    st->setup_failed = true;
    goto out;
  }
  ip_waitfor w = IP_WAITFOR_INIT;
  size_t next = 0, done = 0;
  char why[1024];
  for (;;) {
    ip_future *f;
    int rc = ip_waitfor_next(&w, l, st->conc, opt.stall_ms, &f);
    if (rc == 0) break;
    if (rc == IP_EINTR) {
      report(st, "ip_waitfor_next returned IP_EINTR, though no host child ended");
      st->wrong++;
      continue;
    }
    if (rc == IP_ETIMEDOUT) {
      st->stalled = true;
      report(st, "HANG: nothing completed for %d ms; %zu started, %zu done, %zu in flight:",
             opt.stall_ms, next, done, ip_list_len(l));
      for (size_t i = 0; i < ip_list_len(l); i++) {
        ip_future *g = ip_list_at(l, i);
        const struct spec *s = ip_future_arg(g);
        report(st, "  task %u kind %s pid %d done %d status %s killed %d", s->idx,
               kind_name[s->kind], (int)ip_future_pid(g), ip_future_done(g),
               ip_err_name(ip_future_status(g)), (int)s->killed);
      }
      while (ip_list_len(l)) drop(st, ip_list_remove(l, 0));
      break;
    }
    if (rc < 0) {
      report(st, "ip_waitfor_next: %s", ip_err_name(rc));
      st->stalled = true;
      while (ip_list_len(l)) drop(st, ip_list_remove(l, 0));
      break;
    }
    if (!f) {
      if (next < st->n && !start_one(st, l, next++)) st->setup_failed = true;
      continue;
    }
    const struct spec *s = ip_future_arg(f);
    enum kind got = check(st, f, s, why, sizeof why);
    st->got[got]++;
    if (!why[0]) {
      st->correct[s->kind]++;
    } else {
      st->wrong++;
      if (st->reported++ < MAX_REPORTS || opt.verbose)
        report(st, "task %u (%s, pid %d): %s", s->idx, kind_name[s->kind], (int)ip_future_pid(f),
               why);
    }
    drop(st, f);
    done++;
  }
  ip_list_free(l);
  if (next < st->n) {
    report(st, "only %zu of %zu tasks were started", next, st->n);
    st->setup_failed = true;
  }

out:
  if (st->killer_started) {
    struct killmsg end = {UINT32_MAX, 0};
    ssize_t w2 = write(st->kill_pipe[1], &end, sizeof end);
    (void)w2;
    pthread_join(st->killer, NULL);
    if (st->killer_problem[0]) {
      report(st, "killer: %s", st->killer_problem);
      st->wrong++;
    }
  }
  if (st->kill_pipe[0] >= 0) close(st->kill_pipe[0]);
  if (st->kill_pipe[1] >= 0) close(st->kill_pipe[1]);
  ip_task_free(st->t_main);
  ip_task_free(st->t_timeout);
  pthread_cond_destroy(&st->cv);
  pthread_mutex_destroy(&st->mu);
  st->wall = seconds_since(t0);
}

static void *storm_thread(void *p) {
  run_storm(p);
  return NULL;
}

/* ---- one round: T storms, then the "nothing left behind" checks ----------------------------- */

struct baseline {
  int fds, threads;
  long rss_kib;
};

struct round {
  uint64_t seed;
  int threads;
  size_t tasks;
  int conc_each;
  size_t expected[K_N], got[K_N], correct[K_N];
  size_t wrong;
  size_t kills;
  bool stalled, setup_failed;
  double wall;
  int fds_after, threads_after, thread_wait_ms;
  int workers_after; /* with --pool: ip_pool_workers once every call is done */
  long rss_after_kib, max_child_rss_kib;
  bool children_left;
  bool pass;
};

static void run_round(struct round *rd, const struct baseline *base) {
  int T = rd->threads;
  struct storm *st = calloc((size_t)T, sizeof *st);
  if (!st) {
    rd->setup_failed = true;
    return;
  }
  rd->conc_each = (opt.concurrency + T - 1) / T;
  if (rd->conc_each < 1) rd->conc_each = 1;
  ip_pool *pool = NULL;
  for (int i = 0; i < T; i++) {
    st[i].id = i;
    st[i].seed = T == 1 ? rd->seed : splitmix64(rd->seed + (uint64_t)i);
    st[i].n = rd->tasks / (size_t)T + ((size_t)i < rd->tasks % (size_t)T);
    st[i].conc = rd->conc_each;
    if (opt.pool && storm_setup(&st[i]) < 0) rd->setup_failed = true;
  }
  if (opt.pool && !rd->setup_failed) {
    if (!(pool = ip_pool_new(opt.pool))) {
      fprintf(stdout, "ip_pool_new(%d): %s\n", opt.pool, strerror(errno));
      rd->setup_failed = true;
    }
    for (int i = 0; i < T; i++) st[i].pool = pool;
  }
  if (rd->setup_failed) { /* nothing runs: a pool storm without its pool would fork */
    for (int i = 0; i < T; i++) {
      ip_task_free(st[i].t_main);
      ip_task_free(st[i].t_timeout);
      if (st[i].kill_pipe[0] >= 0) close(st[i].kill_pipe[0]);
      if (st[i].kill_pipe[1] >= 0) close(st[i].kill_pipe[1]);
    }
    free(st);
    return;
  }
  alarm((unsigned)opt.watchdog_s);
  int64_t t0 = now_ms();
  if (T == 1) {
    run_storm(&st[0]);
  } else {
    int started = 0;
    for (; started < T; started++)
      if (pthread_create(&st[started].thread, NULL, storm_thread, &st[started]) != 0) break;
    if (started < T) {
      fprintf(stdout, "pthread_create failed after %d storm threads\n", started);
      rd->setup_failed = true;
    }
    for (int i = 0; i < started; i++) pthread_join(st[i].thread, NULL);
  }
  rd->wall = seconds_since(t0);
  alarm(0);
  if (pool) {
    /* Every call is done, so every death has been reported, with its replacement. */
    rd->workers_after = ip_pool_workers(pool);
    ip_pool_free(pool);
  }

  for (int i = 0; i < T; i++) {
    for (int k = 0; k < K_N; k++) {
      rd->expected[k] += st[i].expected[k];
      rd->got[k] += st[i].got[k];
      rd->correct[k] += st[i].correct[k];
    }
    rd->wrong += st[i].wrong;
    rd->kills += st[i].kills;
    rd->stalled |= st[i].stalled;
    rd->setup_failed |= st[i].setup_failed;
    if (st[i].max_child_rss_kib > rd->max_child_rss_kib) rd->max_child_rss_kib = st[i].max_child_rss_kib;
    free(st[i].specs);
  }
  free(st);

  /* Nothing left behind. Every future is freed by now. */
  rd->children_left = !no_children();
  if (rd->children_left) {
    fprintf(stdout, "  children left behind:\n");
    print_children(stdout);
  }
  rd->threads_after = threads_settled(base->threads, 5000, &rd->thread_wait_ms);
  rd->fds_after = count_fds();
  rd->rss_after_kib = vm_rss_kib();
  size_t total_correct = 0;
  for (int k = 0; k < K_N; k++) total_correct += rd->correct[k];
  rd->pass = !rd->stalled && !rd->setup_failed && rd->wrong == 0 && total_correct == rd->tasks &&
             !rd->children_left && rd->fds_after == base->fds &&
             (!opt.pool || rd->workers_after == opt.pool) &&
             rd->threads_after == base->threads &&
             rd->rss_after_kib <= base->rss_kib + RSS_SLACK_KIB;
}

static long maxrss_kib(int who) {
  struct rusage ru;
  getrusage(who, &ru);
  return ru.ru_maxrss;
}

static void print_table(const struct round *rd, const struct baseline *base) {
  printf("\nstorm: seed %016" PRIx64 ", %zu tasks, concurrency %d", rd->seed, rd->tasks,
         opt.concurrency);
  if (rd->threads > 1) printf(" (%d threads x %d)", rd->threads, rd->conc_each);
  if (opt.pool) printf(", on a pool of %d workers", opt.pool);
  printf(", task timeout %d ms\n", opt.timeout_ms);
  printf("  %-14s %9s %9s %9s\n", "outcome", "expected", "got", "exact");
  size_t te = 0, tg = 0, tc = 0;
  for (int k = 0; k < K_N; k++) {
    if (k == K_OTHER && !rd->got[k]) continue;
    printf("  %-14s %9zu %9zu %9zu%s\n", kind_name[k], rd->expected[k], rd->got[k],
           rd->correct[k], rd->correct[k] != rd->expected[k] ? "   <-- WRONG" : "");
    te += rd->expected[k], tg += rd->got[k], tc += rd->correct[k];
  }
  printf("  %-14s %9zu %9zu %9zu\n", "total", te, tg, tc);
  printf("  %-26s %.2f s\n", "wall time", rd->wall);
  printf("  %-26s self %ld KiB, children %ld KiB (largest child via ip_future_rusage %ld KiB)\n",
         "max RSS (ru_maxrss)", maxrss_kib(RUSAGE_SELF), maxrss_kib(RUSAGE_CHILDREN),
         rd->max_child_rss_kib);
  printf("  %-26s baseline %ld KiB, after %ld KiB (%+ld KiB; limit +%d KiB)%s\n", "VmRSS",
         base->rss_kib, rd->rss_after_kib, rd->rss_after_kib - base->rss_kib, RSS_SLACK_KIB,
         rd->rss_after_kib <= base->rss_kib + RSS_SLACK_KIB ? "" : "   <-- WRONG");
  printf("  %-26s before %d, after %d%s\n", "fds", base->fds, rd->fds_after,
         rd->fds_after == base->fds ? "" : "   <-- WRONG");
  printf("  %-26s before %d, after %d%s", "threads", base->threads, rd->threads_after,
         rd->threads_after == base->threads ? "" : "   <-- WRONG");
  if (rd->thread_wait_ms > 50) printf(" (settled after %d ms)", rd->thread_wait_ms);
  printf("\n");
  if (opt.pool)
    printf("  %-26s %d at the start, %d once every call was done%s\n", "pool workers", opt.pool,
           rd->workers_after, rd->workers_after == opt.pool ? "" : "   <-- WRONG");
  printf("  %-26s %s\n", "children alive or zombie", rd->children_left ? "YES   <-- WRONG" : "none");
  printf("  %-26s %zu\n", "SIGKILLs sent by the test", rd->kills);
  if (rd->stalled) printf("  %-26s yes   <-- WRONG\n", "hang (no completion)");
  if (rd->setup_failed) printf("  %-26s yes   <-- WRONG\n", "setup failure");
  if (opt.host_sigchld)
    printf("  %-26s %lu so far\n", "host SIGCHLD handler ran", atomic_load(&host_sigchlds));
  printf("  %-26s %s\n", "result", rd->pass ? "PASS" : "FAIL");
  fflush(stdout);
}

/* ---- main ----------------------------------------------------------------------------------- */

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "\nstorm: WATCHDOG: the round ran past --watchdog seconds; a call "
                            "or a wait hangs. Giving up (exit 2).\n";
  ssize_t w = write(2, msg, sizeof msg - 1);
  (void)w;
  _exit(2);
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: storm [--tasks N] [--concurrency C] [--threads T] [--seed S] [--duration SECONDS]\n"
          "             [--timeout-ms MS] [--stall-ms MS] [--watchdog SECONDS] [--verbose]\n"
          "             [--host-sigchld]\n"
          "  --tasks N          tasks per storm round (default 1000)\n"
          "  --concurrency C    children in flight at most, in total (default 64); with T\n"
          "                     threads each storm gets ceil(C/T)\n"
          "  --threads T        T threads, each its own storm and ip_list (default 1; a soak\n"
          "                     without it alternates 1 and 8)\n"
          "  --seed S           the mix's seed (default: from the clock; always printed)\n"
          "  --duration SECS    soak: rounds with new seeds until SECS have passed\n"
          "  --timeout-ms MS    the timeout tasks' ip_task_set_timeout (default 200)\n"
          "  --stall-ms MS      a wait with no completion for this long is a hang (default 120000)\n"
          "  --watchdog SECS    exit 2 when one round runs longer (default 900)\n"
          "  --verbose          print every wrong outcome (default: the first %d per storm)\n"
          "  --host-sigchld     install a SIGCHLD handler (SA_RESTART) as a host might; no step\n"
          "                     may return IP_EINTR with it or without\n"
          "  --pool W           run the calls on a pool of W workers (made per round, shared by\n"
          "                     its threads) instead of a fork per call; after each round the\n"
          "                     pool must have its W workers again\n",
          MAX_REPORTS);
}

/* The warm-up child holds until the parent has waited once without it being done: that
 * wait is what gives this thread its eventfd, which the baseline must include. Its task is
 * timed, as the storm's timeout tasks are, so the supervisor thread they start is counted. */
static void *warm_fn(void *arg) {
  int *gate = arg;
  char c;
  while (read(gate[0], &c, 1) < 0 && errno == EINTR) {
  }
  static ip_bytes b = {"warm", 4};
  return &b;
}

static void warm_up(void) {
  int gate[2];
  if (pipe(gate) < 0) {
    perror("storm: pipe");
    exit(2);
  }
  ip_task *t = ip_task_new(warm_fn, NULL);
  if (t) ip_task_set_timeout(t, 600000);
  ip_future *f = ip_call(t, gate);
  int first = f ? ip_future_wait(f, 0) : 0;
  if (write(gate[1], "x", 1) != 1) perror("storm: write");
  close(gate[0]);
  close(gate[1]);
  if (!f || first != IP_ETIMEDOUT || ip_future_wait(f, -1) != 0 || ip_future_status(f) != 0) {
    fprintf(stderr, "storm: the warm-up call failed: %s\n",
            f && ip_future_error(f) ? ip_future_error(f)->message : "?");
    exit(2);
  }
  ip_future_free(f);
  ip_task_free(t);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"tasks", required_argument, NULL, 'n'},   {"concurrency", required_argument, NULL, 'c'},
      {"threads", required_argument, NULL, 't'}, {"seed", required_argument, NULL, 's'},
      {"duration", required_argument, NULL, 'd'}, {"timeout-ms", required_argument, NULL, 'T'},
      {"stall-ms", required_argument, NULL, 'S'}, {"watchdog", required_argument, NULL, 'W'},
      {"verbose", no_argument, NULL, 'v'},       {"host-sigchld", no_argument, NULL, 'H'},
      {"pool", required_argument, NULL, 'P'},    {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int c;
  char *end;
  while ((c = getopt_long(argc, argv, "n:c:t:s:d:T:S:W:P:vHh", longopts, NULL)) != -1) {
    errno = 0;
    end = NULL;
    switch (c) {
    case 'n': opt.tasks = strtoull(optarg, &end, 0); break;
    case 'c': opt.concurrency = (int)strtol(optarg, &end, 0); break;
    case 't': opt.threads = (int)strtol(optarg, &end, 0); break;
    case 's': opt.seed = strtoull(optarg, &end, 0); opt.seed_given = true; break;
    case 'd': opt.duration = strtod(optarg, &end); break;
    case 'T': opt.timeout_ms = (int)strtol(optarg, &end, 0); break;
    case 'S': opt.stall_ms = (int)strtol(optarg, &end, 0); break;
    case 'W': opt.watchdog_s = (int)strtol(optarg, &end, 0); break;
    case 'v': opt.verbose = true; break;
    case 'H': opt.host_sigchld = true; break;
    case 'P': opt.pool = (int)strtol(optarg, &end, 0); break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
    if (end && (*end || errno)) {
      fprintf(stderr, "storm: bad value '%s'\n", optarg);
      return 2;
    }
  }
  if (optind < argc || opt.tasks < 1 || opt.tasks > 10000000 || opt.concurrency < 1 ||
      opt.threads < 0 || opt.threads > 256 || opt.pool < 0 || opt.pool > 1024 ||
      opt.duration < 0 || opt.timeout_ms < 1 ||
      opt.stall_ms < 1 || opt.watchdog_s < 1) {
    usage(stderr);
    return 2;
  }
  if (!opt.seed_given)
    opt.seed = splitmix64((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)now_ms());

  /* 50 crashing children per 1000 tasks must not write cores (or wake a core handler). */
  struct rlimit nocore = {0, 0};
  setrlimit(RLIMIT_CORE, &nocore);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  if (opt.host_sigchld) {
    struct sigaction hs;
    memset(&hs, 0, sizeof hs);
    hs.sa_handler = on_host_sigchld;
    hs.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &hs, NULL);
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  printf("storm: inparallel %s, seed %016" PRIx64 " (rerun with --seed 0x%016" PRIx64 ")\n",
         ip_version(), opt.seed, opt.seed);
  warm_up();
  struct baseline base = {count_fds(), count_threads(), vm_rss_kib()};
  printf("storm: baseline after a warm-up call: %d fds, %d threads, VmRSS %ld KiB\n", base.fds,
         base.threads, base.rss_kib);

  if (opt.duration <= 0) {
    struct round rd = {.seed = opt.seed, .threads = opt.threads ? opt.threads : 1,
                       .tasks = opt.tasks};
    run_round(&rd, &base);
    print_table(&rd, &base);
    return rd.pass ? 0 : 1;
  }

  /* Soak. */
  int64_t t0 = now_ms();
  size_t rounds = 0, failed = 0;
  struct round sum = {.seed = opt.seed};
  long worst_rss = base.rss_kib;
  int worst_fds = base.fds, worst_threads = base.threads;
  printf("soak: %.0f s of storms of %zu tasks at concurrency %d\n", opt.duration, opt.tasks,
         opt.concurrency);
  while (seconds_since(t0) < opt.duration) {
    struct round rd = {.seed = splitmix64(opt.seed + rounds),
                       .threads = opt.threads ? opt.threads : (rounds % 2 ? 8 : 1),
                       .tasks = opt.tasks};
    run_round(&rd, &base);
    size_t tc = 0;
    for (int k = 0; k < K_N; k++) {
      tc += rd.correct[k];
      sum.expected[k] += rd.expected[k];
      sum.got[k] += rd.got[k];
      sum.correct[k] += rd.correct[k];
    }
    sum.tasks += rd.tasks;
    sum.kills += rd.kills;
    sum.wall += rd.wall;
    if (rd.rss_after_kib > worst_rss) worst_rss = rd.rss_after_kib;
    if (rd.fds_after != base.fds) worst_fds = rd.fds_after;
    if (rd.threads_after != base.threads) worst_threads = rd.threads_after;
    rounds++;
    failed += !rd.pass;
    printf("round %4zu  seed %016" PRIx64 "  threads %d  exact %zu/%zu  wall %6.2f s  fds %d/%d"
           "  threads %d/%d  VmRSS %+ld KiB  children %s  %s  (%.0f s elapsed)\n",
           rounds, rd.seed, rd.threads, tc, rd.tasks, rd.wall, rd.fds_after, base.fds,
           rd.threads_after, base.threads, rd.rss_after_kib - base.rss_kib,
           rd.children_left ? "LEFT" : "none", rd.pass ? "PASS" : "FAIL", seconds_since(t0));
    if (!rd.pass) print_table(&rd, &base);
  }
  printf("\nsoak summary: %zu rounds in %.0f s (%.0f s in storms), %zu tasks, %zu rounds failed\n",
         rounds, seconds_since(t0), sum.wall, sum.tasks, failed);
  printf("  %-14s %10s %10s %10s\n", "outcome", "expected", "got", "exact");
  for (int k = 0; k < K_N; k++) {
    if (k == K_OTHER && !sum.got[k]) continue;
    printf("  %-14s %10zu %10zu %10zu\n", kind_name[k], sum.expected[k], sum.got[k],
           sum.correct[k]);
  }
  printf("  max RSS: self %ld KiB, children %ld KiB; highest VmRSS after a round %ld KiB "
         "(baseline %ld)\n", maxrss_kib(RUSAGE_SELF), maxrss_kib(RUSAGE_CHILDREN), worst_rss,
         base.rss_kib);
  printf("  fds baseline %d%s; threads baseline %d%s; SIGKILLs sent %zu\n", base.fds,
         worst_fds != base.fds ? " (DIFFERED)" : ", always back", base.threads,
         worst_threads != base.threads ? " (DIFFERED)" : ", always back", sum.kills);
  printf("  result: %s\n", failed == 0 && rounds > 0 ? "PASS" : "FAIL");
  return failed == 0 && rounds > 0 ? 0 : 1;
}
