/* bench-serializers: what each serializer costs, against raw bytes, for two payloads.
 *
 * Built by `make` when both plugins are (configure found msgpack-c and protobuf-c):
 *   ./bench/bench-serializers --runs=11 --reps=3 --calls=500
 *
 *   map   100 fields. msgpack: a map of 100 string keys ("field_000".."field_099") to mixed
 *         values, cycling int / float64 / short string (34 ints, 33 floats, 33 strings).
 *         protobuf (ipt.Sample, tests/proto/sample.proto, which has no map): 100 repeated
 *         `items` (ipt.Inner), one per field, label = the key; an int field carries its value
 *         in values[0], a float field the IEEE-754 bits of its double in values[0], a string
 *         field no value, its string going to `tags` (33 tags); plus the required id.
 *         raw: the msgpack encoding of the map, as an opaque blob.
 *   blob  1 MiB of pseudo-random bytes. msgpack: one bin; protobuf: Sample.blob (bytes);
 *         raw: the bytes.
 *
 * Part 1, in process (no fork): for each serializer, the median over --runs runs of N
 * iterations of
 *   pack    msgpack only: a fresh msgpack_sbuffer packed with the object and destroyed (what
 *           the child does before returning it); protobuf messages and raw bytes are built
 *           once, outside the timing (for protobuf that is pointer assignments)
 *   encode  the serializer's encode() (what the child runs after fn returns), with a write
 *           callback that appends into a preallocated buffer
 *   decode  the serializer's decode() of those bytes followed by free_value() (what the
 *           parent runs), plus a check of the decoded value's shape
 * reported in ns per op, with enc+dec (and, for msgpack, pack+enc+dec) as a ratio to raw.
 * The clock is this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so time spent descheduled on
 * a busy machine does not count; --clock=wall uses CLOCK_MONOTONIC instead.
 *
 * Part 2, end to end: the same payloads returned from a real ip_call (fork) per serializer,
 * concurrency 1 (ip_call, ip_future_value, ip_future_free, one after another), --calls calls
 * per run, median of --reps runs, interleaved across variants; calls/s and ratio to raw, and
 * the CPU per call of parent (all threads) and child together, which other load on the
 * machine disturbs less than wall time. The child makes its value the way the row says:
 * prebuilt values are made in the parent before the fork and returned as they are.
 *
 * Usage: bench-serializers [--runs=N] [--reps=N] [--calls=N] [--scale=F] [--only=inproc|e2e]
 *                          [--clock=cpu|wall] [-v]
 * Per-run figures go to stderr with -v, the tables to stdout.
 */
#define _GNU_SOURCE
#include <inparallel.h>
#include <inparallel/msgpack.h>
#include <inparallel/protobuf.h>
#include "sample.pb-c.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_RUNS 31
#define NFIELDS 100
#define BLOB_LEN ((size_t)1 << 20)

static struct {
  int runs, reps, calls;
  double scale;
  bool inproc, e2e, verbose;
} opt = {9, 5, 500, 1.0, true, true, false};

static double clock_ns(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}
static double now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
/* The in-process clock: this thread's CPU time by default, so that time spent descheduled on
 * a busy machine does not count; --clock=wall for the monotonic clock. */
static clockid_t inproc_clock = CLOCK_THREAD_CPUTIME_ID;
static double op_ns(void) { return clock_ns(inproc_clock); }

/* CPU seconds of this process (all threads) plus its reaped children. */
static double cpu_with_children(void) {
  struct rusage a, b;
  getrusage(RUSAGE_SELF, &a);
  getrusage(RUSAGE_CHILDREN, &b);
  return (double)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) +
         (double)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec +
                  b.ru_stime.tv_usec) / 1e6;
}

static _Noreturn void fail(const char *what) {
  fprintf(stderr, "bench-serializers: %s\n", what);
  exit(2);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(const double *v, int n) {
  double s[MAX_RUNS];
  memcpy(s, v, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static volatile uint64_t sink; /* keeps results alive */

/* ---- payloads ------------------------------------------------------------------------------ */

enum { P_MAP, P_BLOB, NPAYLOADS };
static const char *payload_name[NPAYLOADS] = {"map (100 fields)", "blob (1 MiB)"};

static char keys[NFIELDS][16];
static int64_t ints[NFIELDS];
static double floats[NFIELDS];
static char strs[NFIELDS][16];
static unsigned char *blob;

static void make_data(void) {
  for (int i = 0; i < NFIELDS; i++) {
    snprintf(keys[i], sizeof keys[i], "field_%03d", i);
    /* ints of every msgpack width: fixint, negative, 16, 32 and 64 bit */
    static const int64_t mags[] = {7, -3, 1000, -70000, 5000000000LL, 42, 300, -2};
    ints[i] = mags[i % 8] * (i + 1);
    floats[i] = (double)i * 1.25 + 0.1;
    snprintf(strs[i], sizeof strs[i], "val-%02d-x", i);
  }
  blob = malloc(BLOB_LEN);
  if (!blob) fail("malloc");
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < BLOB_LEN; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    memcpy(blob + i, &x, 8);
  }
}

static void pack_map(msgpack_sbuffer *sb) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, NFIELDS);
  for (int i = 0; i < NFIELDS; i++) {
    size_t kl = strlen(keys[i]);
    msgpack_pack_str(&pk, kl);
    msgpack_pack_str_body(&pk, keys[i], kl);
    switch (i % 3) {
    case 0: msgpack_pack_int64(&pk, ints[i]); break;
    case 1: msgpack_pack_double(&pk, floats[i]); break;
    default: {
      size_t sl = strlen(strs[i]);
      msgpack_pack_str(&pk, sl);
      msgpack_pack_str_body(&pk, strs[i], sl);
    }
    }
  }
}

static void pack_blob(msgpack_sbuffer *sb) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_bin(&pk, BLOB_LEN);
  msgpack_pack_bin_body(&pk, blob, BLOB_LEN);
}

static void (*const packers[NPAYLOADS])(msgpack_sbuffer *) = {pack_map, pack_blob};

/* protobuf messages, built once */
static Ipt__Inner pb_inner[NFIELDS];
static Ipt__Inner *pb_items[NFIELDS];
static int64_t pb_vals[NFIELDS];
static char *pb_tags[NFIELDS];
static Ipt__Sample pb_msg[NPAYLOADS];

static void make_protobuf(void) {
  Ipt__Sample *m = &pb_msg[P_MAP];
  ipt__sample__init(m);
  m->id = 1;
  size_t ntags = 0;
  for (int i = 0; i < NFIELDS; i++) {
    Ipt__Inner *in = &pb_inner[i];
    ipt__inner__init(in);
    in->label = keys[i];
    switch (i % 3) {
    case 0: pb_vals[i] = ints[i]; break;
    case 1: memcpy(&pb_vals[i], &floats[i], 8); break;
    default: pb_tags[ntags++] = strs[i]; break;
    }
    if (i % 3 != 2) in->n_values = 1, in->values = &pb_vals[i];
    pb_items[i] = in;
  }
  m->n_items = NFIELDS;
  m->items = pb_items;
  m->n_tags = ntags;
  m->tags = pb_tags;

  m = &pb_msg[P_BLOB];
  ipt__sample__init(m);
  m->id = 1;
  m->has_blob = 1;
  m->blob.len = BLOB_LEN;
  m->blob.data = blob;
}

/* raw values: the map's msgpack bytes, and the blob */
static ip_bytes raw_val[NPAYLOADS];
static msgpack_sbuffer prepacked[NPAYLOADS]; /* msgpack child-side inputs, packed once */

/* ---- checks on decoded values (outside and inside the timing: they are cheap) ------------- */

static size_t expect_len[NPAYLOADS][3]; /* [payload][serializer]: encoded size */

static bool check_raw(const void *v, int p) {
  const ip_bytes *b = v;
  return b && b->len == raw_val[p].len;
}
static bool check_mp(const void *v, int p) {
  const msgpack_object *o = v;
  if (!o) return false;
  if (p == P_MAP) return o->type == MSGPACK_OBJECT_MAP && o->via.map.size == NFIELDS;
  return o->type == MSGPACK_OBJECT_BIN && o->via.bin.size == BLOB_LEN;
}
static bool check_pb(const void *v, int p) {
  const Ipt__Sample *m = v;
  if (!m || m->id != 1) return false;
  if (p == P_MAP) return m->n_items == NFIELDS && m->n_tags == pb_msg[P_MAP].n_tags;
  return m->has_blob && m->blob.len == BLOB_LEN;
}

enum { S_RAW, S_MP, S_PB, NSER };
static const char *ser_name[NSER] = {"raw", "msgpack", "protobuf"};
static const ip_serializer *sers[NSER];
static bool (*const checks[NSER])(const void *, int) = {check_raw, check_mp, check_pb};

static const void *encode_input(int s, int p) {
  switch (s) {
  case S_RAW: return &raw_val[p];
  case S_MP: return &prepacked[p];
  default: return &pb_msg[p];
  }
}

/* ---- part 1: in process ------------------------------------------------------------------- */

struct outbuf {
  unsigned char *p;
  size_t len, cap;
};

static int append(void *ctx, const void *buf, size_t len) {
  struct outbuf *o = ctx;
  if (len > o->cap - o->len) return IP_E2BIG;
  memcpy(o->p + o->len, buf, len);
  o->len += len;
  return 0;
}

static struct outbuf enc[NSER][NPAYLOADS]; /* one encoding each, the decode input */
static struct outbuf scratch;              /* encode target in the timed loop */

enum { PH_PACK, PH_ENC, PH_DEC, NPH };
static double samples[NSER][NPAYLOADS][NPH][MAX_RUNS];

static double time_pack(int p, long n) {
  double t0 = op_ns();
  for (long i = 0; i < n; i++) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    packers[p](&sb);
    sink += sb.size;
    msgpack_sbuffer_destroy(&sb);
  }
  return (op_ns() - t0) / (double)n;
}

static double time_encode(int s, int p, long n) {
  const ip_serializer *ser = sers[s];
  const void *in = encode_input(s, p);
  double t0 = op_ns();
  for (long i = 0; i < n; i++) {
    scratch.len = 0;
    if (ser->encode(ser, in, append, &scratch) != 0) fail("encode failed");
    sink += scratch.len;
  }
  return (op_ns() - t0) / (double)n;
}

static double time_decode(int s, int p, long n) {
  const ip_serializer *ser = sers[s];
  const struct outbuf *e = &enc[s][p];
  double t0 = op_ns();
  for (long i = 0; i < n; i++) {
    void *v = NULL;
    if (ser->decode(ser, e->p, e->len, &v) != 0) fail("decode failed");
    if (!checks[s](v, p)) fail("decoded value has the wrong shape");
    if (ser->free_value) ser->free_value(ser, v);
  }
  return (op_ns() - t0) / (double)n;
}

static void inproc(void) {
  /* Iterations per run: about 20-50 ms each on an idle machine. */
  long iters[NPAYLOADS] = {(long)(20000 * opt.scale), (long)(400 * opt.scale)};
  for (int p = 0; p < NPAYLOADS; p++)
    if (iters[p] < 1) iters[p] = 1;

  /* One encoding per serializer and payload, checked, as the decode input. */
  for (int s = 0; s < NSER; s++) {
    for (int p = 0; p < NPAYLOADS; p++) {
      struct outbuf *o = &enc[s][p];
      o->cap = BLOB_LEN + 4096;
      o->p = malloc(o->cap);
      if (!o->p) fail("malloc");
      if (sers[s]->encode(sers[s], encode_input(s, p), append, o) != 0) fail("encode failed");
      expect_len[p][s] = o->len;
      void *v = NULL;
      if (sers[s]->decode(sers[s], o->p, o->len, &v) != 0 || !checks[s](v, p))
        fail("round trip failed");
      if (sers[s]->free_value) sers[s]->free_value(sers[s], v);
    }
  }
  if (enc[S_RAW][P_MAP].len != enc[S_MP][P_MAP].len ||
      memcmp(enc[S_RAW][P_MAP].p, enc[S_MP][P_MAP].p, enc[S_MP][P_MAP].len) != 0)
    fail("raw map bytes differ from the msgpack encoding");
  scratch.cap = BLOB_LEN + 4096;
  scratch.p = malloc(scratch.cap);
  if (!scratch.p) fail("malloc");
  memset(scratch.p, 0, scratch.cap); /* fault the pages in before timing */

  /* Warm-up, then runs; within a run every case is measured in turn, so drift in the
   * machine's load spreads over all of them. */
  for (int p = 0; p < NPAYLOADS; p++) {
    time_pack(p, iters[p] / 10 + 1);
    for (int s = 0; s < NSER; s++) {
      time_encode(s, p, iters[p] / 10 + 1);
      time_decode(s, p, iters[p] / 10 + 1);
    }
  }
  for (int r = 0; r < opt.runs; r++) {
    for (int p = 0; p < NPAYLOADS; p++) {
      samples[S_MP][p][PH_PACK][r] = time_pack(p, iters[p]);
      for (int s = 0; s < NSER; s++) {
        samples[s][p][PH_ENC][r] = time_encode(s, p, iters[p]);
        samples[s][p][PH_DEC][r] = time_decode(s, p, iters[p]);
        if (opt.verbose)
          fprintf(stderr, "run %d %s %s: enc %.0f dec %.0f ns\n", r, payload_name[p],
                  ser_name[s], samples[s][p][PH_ENC][r], samples[s][p][PH_DEC][r]);
      }
    }
    fprintf(stderr, "in process: run %d/%d done\n", r + 1, opt.runs);
  }

  printf("### In process (no fork): %s ns per op, median of %d runs (map: %ld "
         "iterations/run, blob: %ld)\n\n",
         inproc_clock == CLOCK_MONOTONIC ? "wall-clock" : "thread CPU", opt.runs, iters[P_MAP],
         iters[P_BLOB]);
  printf("| payload | serializer | encoded bytes | pack ns | encode ns | decode+free ns | "
         "enc+dec ns | enc+dec vs raw | pack+enc+dec ns | pack+enc+dec vs raw |\n");
  printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int p = 0; p < NPAYLOADS; p++) {
    double raw_ed = median(samples[S_RAW][p][PH_ENC], opt.runs) +
                    median(samples[S_RAW][p][PH_DEC], opt.runs);
    for (int s = 0; s < NSER; s++) {
      double e = median(samples[s][p][PH_ENC], opt.runs);
      double d = median(samples[s][p][PH_DEC], opt.runs);
      double pk = s == S_MP ? median(samples[S_MP][p][PH_PACK], opt.runs) : 0;
      char pkcol[32] = "—", allcol[32] = "—", allratio[32] = "—";
      if (s == S_MP) {
        snprintf(pkcol, sizeof pkcol, "%.0f", pk);
        snprintf(allcol, sizeof allcol, "%.0f", pk + e + d);
        snprintf(allratio, sizeof allratio, "%.2fx", (pk + e + d) / raw_ed);
      } else if (s == S_RAW) {
        snprintf(allcol, sizeof allcol, "%.0f", e + d);
        snprintf(allratio, sizeof allratio, "1.00x");
      }
      printf("| %s | %s | %zu | %s | %.0f | %.0f | %.0f | %.2fx | %s | %s |\n", payload_name[p],
             ser_name[s], expect_len[p][s], pkcol, e, d, e + d, (e + d) / raw_ed, allcol,
             allratio);
    }
  }
  printf("\n");
}

/* ---- part 2: end to end ------------------------------------------------------------------- */

/* Child-side functions. `arg` points into the parent's memory, which the child sees a copy of. */
static void *fn_same(void *arg) { return arg; } /* prebuilt value: raw bytes, sbuffer, message */
static void *fn_raw_copy(void *arg) {           /* ip_bytes_alloc + copy: in place at 1 MiB */
  const ip_bytes *b = arg;
  return ip_bytes_copy(b->data, b->len);
}
static void *fn_mp_pack(void *arg) { /* pack in the child, as msgpack.h shows */
  int p = *(const int *)arg;
  msgpack_sbuffer *sb = msgpack_sbuffer_new();
  if (!sb) return NULL;
  packers[p](sb);
  return sb;
}

static const int payload_ids[NPAYLOADS] = {P_MAP, P_BLOB};

struct variant {
  int payload, ser;
  const char *label;
  ip_fn fn;
  void *arg;
  bool base; /* the raw row the others are compared with */
  ip_task *t;
  double cps[MAX_RUNS];
  double cpu_us[MAX_RUNS]; /* CPU per call, parent (all threads) + child */
};

static struct variant variants[] = {
    {.payload = P_MAP, .ser = S_RAW, .label = "raw (static ip_bytes, the msgpack bytes)",
     .fn = fn_same, .arg = &raw_val[P_MAP], .base = true},
    {.payload = P_MAP, .ser = S_MP, .label = "msgpack (packed in the child)", .fn = fn_mp_pack,
     .arg = (void *)&payload_ids[P_MAP]},
    {.payload = P_MAP, .ser = S_MP, .label = "msgpack (sbuffer packed before fork)",
     .fn = fn_same, .arg = &prepacked[P_MAP]},
    {.payload = P_MAP, .ser = S_PB, .label = "protobuf (message built before fork)",
     .fn = fn_same, .arg = &pb_msg[P_MAP]},
    {.payload = P_BLOB, .ser = S_RAW, .label = "raw (static ip_bytes: streamed over the socket)",
     .fn = fn_same, .arg = &raw_val[P_BLOB], .base = true},
    {.payload = P_BLOB, .ser = S_RAW,
     .label = "raw (ip_bytes_copy in the child: in place, memfd)", .fn = fn_raw_copy,
     .arg = &raw_val[P_BLOB]},
    {.payload = P_BLOB, .ser = S_MP, .label = "msgpack (packed in the child)", .fn = fn_mp_pack,
     .arg = (void *)&payload_ids[P_BLOB]},
    {.payload = P_BLOB, .ser = S_MP, .label = "msgpack (sbuffer packed before fork)",
     .fn = fn_same, .arg = &prepacked[P_BLOB]},
    {.payload = P_BLOB, .ser = S_PB, .label = "protobuf (message built before fork)",
     .fn = fn_same, .arg = &pb_msg[P_BLOB]},
};
#define NVARIANTS (int)(sizeof variants / sizeof variants[0])

static double e2e_run(struct variant *v, int calls, double *cpu_us) {
  double c0 = cpu_with_children(), t0 = now_ns();
  for (int i = 0; i < calls; i++) {
    ip_future *f = ip_call(v->t, v->arg);
    if (!f) fail("ip_call returned NULL");
    const void *val = ip_future_value(f);
    if (!val) {
      const ip_error *e = ip_future_error(f);
      fprintf(stderr, "bench-serializers: %s: %s\n", v->label, e ? e->message : "NULL value");
      exit(2);
    }
    if (!checks[v->ser](val, v->payload)) fail("end to end: decoded value has the wrong shape");
    ip_future_free(f);
  }
  double t1 = now_ns();
  if (cpu_us) *cpu_us = (cpu_with_children() - c0) * 1e6 / calls;
  return calls / ((t1 - t0) / 1e9);
}

static void e2e(void) {
  for (int i = 0; i < NVARIANTS; i++) {
    variants[i].t = ip_task_new(variants[i].fn, sers[variants[i].ser]);
    if (!variants[i].t) fail("ip_task_new");
    e2e_run(&variants[i], 20, NULL); /* warm-up */
  }
  for (int r = 0; r < opt.reps; r++) {
    for (int i = 0; i < NVARIANTS; i++) {
      variants[i].cps[r] = e2e_run(&variants[i], opt.calls, &variants[i].cpu_us[r]);
      if (opt.verbose)
        fprintf(stderr, "rep %d %s %s: %.0f calls/s, %.0f us CPU/call\n", r,
                payload_name[variants[i].payload], variants[i].label, variants[i].cps[r],
                variants[i].cpu_us[r]);
    }
    fprintf(stderr, "end to end: rep %d/%d done\n", r + 1, opt.reps);
  }
  printf("### End to end (ip_call + fork, concurrency 1): calls/s, median of %d runs of %d "
         "calls\n\n",
         opt.reps, opt.calls);
  printf("| payload | serializer / how the child makes the value | calls/s | min–max | "
         "vs raw | CPU µs per call (parent+child) | CPU vs raw |\n");
  printf("|---|---|---:|---:|---:|---:|---:|\n");
  for (int i = 0; i < NVARIANTS; i++) {
    struct variant *v = &variants[i];
    double base = 0, base_cpu = 0;
    for (int j = 0; j < NVARIANTS; j++)
      if (variants[j].base && variants[j].payload == v->payload) {
        base = median(variants[j].cps, opt.reps);
        base_cpu = median(variants[j].cpu_us, opt.reps);
      }
    double cpu = median(v->cpu_us, opt.reps);
    double m = median(v->cps, opt.reps), lo = v->cps[0], hi = v->cps[0];
    for (int r = 1; r < opt.reps; r++) {
      if (v->cps[r] < lo) lo = v->cps[r];
      if (v->cps[r] > hi) hi = v->cps[r];
    }
    printf("| %s | %s | %.0f | %.0f–%.0f | %.2fx | %.0f | %.2fx |\n", payload_name[v->payload],
           v->label, m, lo, hi, m / base, cpu, cpu / base_cpu);
  }
  printf("\n");
  for (int i = 0; i < NVARIANTS; i++) ip_task_free(variants[i].t);
}

/* ---- main --------------------------------------------------------------------------------- */

static void usage(void) {
  fprintf(stderr, "usage: bench-serializers [--runs=N (1..%d, default 9)] [--reps=N (1..%d, "
                  "default 5)] [--calls=N (default 500)] [--scale=F (in-process iterations, "
                  "default 1)] [--only=inproc|e2e] [--clock=cpu|wall] [-v]\n",
          MAX_RUNS, MAX_RUNS);
  exit(2);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strncmp(a, "--runs=", 7) == 0) opt.runs = atoi(a + 7);
    else if (strncmp(a, "--reps=", 7) == 0) opt.reps = atoi(a + 7);
    else if (strncmp(a, "--calls=", 8) == 0) opt.calls = atoi(a + 8);
    else if (strncmp(a, "--scale=", 8) == 0) opt.scale = atof(a + 8);
    else if (strcmp(a, "--only=inproc") == 0) opt.e2e = false;
    else if (strcmp(a, "--only=e2e") == 0) opt.inproc = false;
    else if (strcmp(a, "--clock=wall") == 0) inproc_clock = CLOCK_MONOTONIC;
    else if (strcmp(a, "--clock=cpu") == 0) inproc_clock = CLOCK_THREAD_CPUTIME_ID;
    else if (strcmp(a, "-v") == 0) opt.verbose = true;
    else usage();
  }
  if (opt.runs < 1 || opt.runs > MAX_RUNS || opt.reps < 1 || opt.reps > MAX_RUNS ||
      opt.calls < 1 || !(opt.scale > 0))
    usage();

  sers[S_RAW] = ip_serializer_raw();
  sers[S_MP] = ip_serializer_msgpack();
  ip_serializer *pb = ip_serializer_protobuf_new(&ipt__sample__descriptor);
  if (!pb) fail("ip_serializer_protobuf_new");
  sers[S_PB] = pb;

  make_data();
  make_protobuf();
  for (int p = 0; p < NPAYLOADS; p++) {
    msgpack_sbuffer_init(&prepacked[p]);
    packers[p](&prepacked[p]);
  }
  raw_val[P_MAP] = (ip_bytes){prepacked[P_MAP].data, prepacked[P_MAP].size};
  raw_val[P_BLOB] = (ip_bytes){blob, BLOB_LEN};

  double load[3] = {0};
  if (getloadavg(load, 3) < 0) load[0] = -1;
  printf("bench-serializers: inparallel %s, %ld CPUs online, load average %.2f at start\n\n",
         ip_version(), sysconf(_SC_NPROCESSORS_ONLN), load[0]);
  if (opt.inproc) inproc();
  if (opt.e2e) e2e();
  if (getloadavg(load, 3) < 0) load[0] = -1;
  printf("load average %.2f at the end\n", load[0]);

  for (int p = 0; p < NPAYLOADS; p++) msgpack_sbuffer_destroy(&prepacked[p]);
  ip_serializer_free(pb);
  return (int)(sink & 0); /* sink is read so the work is not optimized away */
}
