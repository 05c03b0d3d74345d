/* Each shared library exports exactly the functions its header declares with IP_EXTERN:
 * nothing private leaks, nothing documented is missing. The linker enforces it (libtool's
 * -export-symbols-regex '^ip_[a-z]' in Makefile.am makes every other symbol local, whatever
 * its visibility); this suite checks the libraries that came out against the headers, which
 * stay the one list of the public API. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef IP_TOP_BUILDDIR
#error "the Makefile defines IP_TOP_BUILDDIR for the tests"
#endif
#ifndef IP_TOP_SRCDIR
#error "the Makefile defines IP_TOP_SRCDIR for the tests"
#endif

/* A shared library and the header that declares its API. `built` is 0 for a plugin or
 * libinparallel-mpi when configure left it out (what it needs was not found), which is then not
 * checked. */
struct library {
  const char *so;
  const char *header;
  int built;
};

static const struct library libraries[] = {
    {IP_TOP_BUILDDIR "/lib/.libs/libinparallel.so", IP_TOP_SRCDIR "/include/inparallel.h", 1},
    {IP_TOP_BUILDDIR "/serializers/msgpack/.libs/libinparallel-msgpack.so",
     IP_TOP_SRCDIR "/include/inparallel/msgpack.h",
#ifdef IP_HAVE_MSGPACK
     1
#else
     0
#endif
    },
    {IP_TOP_BUILDDIR "/serializers/protobuf/.libs/libinparallel-protobuf.so",
     IP_TOP_SRCDIR "/include/inparallel/protobuf.h",
#ifdef IP_HAVE_PROTOBUF
     1
#else
     0
#endif
    },
    {IP_TOP_BUILDDIR "/mpi/.libs/libinparallel-mpi.so", IP_TOP_SRCDIR "/include/inparallel/mpi.h",
#ifdef IP_HAVE_MPI
     1
#else
     0
#endif
    },
};
#define N_LIBRARIES (sizeof libraries / sizeof *libraries)
#define CORE (&libraries[0])

#define MAX_NAMES 512

struct names {
  size_t n;
  char *v[MAX_NAMES];
};

static void add_name(struct names *s, const char *name, size_t len) {
  for (size_t i = 0; i < s->n; i++)
    if (strlen(s->v[i]) == len && memcmp(s->v[i], name, len) == 0) return;
  cr_assert_lt(s->n, MAX_NAMES);
  s->v[s->n++] = strndup(name, len);
}

static int has_name(const struct names *s, const char *name) {
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->v[i], name) == 0) return 1;
  return 0;
}

static void free_names(struct names *s) {
  for (size_t i = 0; i < s->n; i++) free(s->v[i]);
  s->n = 0;
}

static char *slurp(const char *path) {
  FILE *fp = fopen(path, "r");
  cr_assert_not_null(fp, "cannot open %s", path);
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  size_t r;
  while ((r = fread(buf + len, 1, cap - len - 1, fp)) > 0) {
    len += r;
    if (cap - len < 2) buf = realloc(buf, cap *= 2);
  }
  buf[len] = '\0';
  fclose(fp);
  return buf;
}

/* The header without comments and preprocessor lines (including their continuations). */
static char *header_code(const char *text) {
  size_t n = strlen(text);
  char *out = malloc(n + 1), *o = out;
  const char *p = text;
  int line_start = 1;
  while (*p) {
    if (p[0] == '/' && p[1] == '*') {
      const char *e = strstr(p + 2, "*/");
      p = e ? e + 2 : p + strlen(p);
      *o++ = ' ';
      continue;
    }
    if (p[0] == '/' && p[1] == '/') {
      while (*p && *p != '\n') p++;
      continue;
    }
    if (line_start) {
      const char *q = p;
      while (*q == ' ' || *q == '\t') q++;
      if (*q == '#') {
        /* Skip the directive and every line it continues onto. */
        while (*q) {
          const char *nl = strchr(q, '\n');
          if (!nl) {
            q += strlen(q);
            break;
          }
          const char *last = nl;
          while (last > q && (last[-1] == ' ' || last[-1] == '\t' || last[-1] == '\r')) last--;
          q = nl + 1;
          if (last == nl || last[-1] != '\\') break;
        }
        p = q;
        *o++ = '\n';
        continue;
      }
    }
    line_start = *p == '\n';
    *o++ = *p++;
  }
  *o = '\0';
  return out;
}

static int ident_char(int c) { return isalnum(c) || c == '_'; }

/* Names `header` declares as `IP_EXTERN [IP_NORETURN] type *name(`. */
static void declared_names(struct names *s, const char *header) {
  char *text = slurp(header);
  char *code = header_code(text);
  const char *p = code;
  while ((p = strstr(p, "IP_EXTERN"))) {
    int word = (p == code || !ident_char((unsigned char)p[-1])) && !ident_char((unsigned char)p[9]);
    p += 9;
    if (!word) continue;
    const char *paren = strchr(p, '(');
    const char *semi = strchr(p, ';');
    cr_assert(paren && (!semi || paren < semi), "IP_EXTERN without a function declarator near %.60s",
              p);
    const char *e = paren;
    while (e > p && isspace((unsigned char)e[-1])) e--;
    const char *b = e;
    while (b > p && ident_char((unsigned char)b[-1])) b--;
    cr_assert_gt(e - b, 0, "no name before '(' near %.60s", p);
    add_name(s, b, (size_t)(e - b));
    p = paren;
  }
  free(code);
  free(text);
}

/* Skips the test when there is no shared library at all (tests/sanitize.sh builds with
 * --disable-shared). */
static void need_shared_libraries(void) {
  if (access(CORE->so, R_OK) != 0 &&
      access(IP_TOP_BUILDDIR "/lib/.libs/libinparallel.a", R_OK) == 0)
    cr_skip_test("built without a shared library (--disable-shared): nothing is exported");
}

/* Symbols the shared library `so` defines and exports (types T, D, B, R, W). */
static void exported_names(struct names *s, const char *so) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "nm -D --defined-only '%s' 2>&1", so);
  FILE *fp = popen(cmd, "r");
  cr_assert_not_null(fp);
  char line[1024];
  int lines = 0;
  while (fgets(line, sizeof line, fp)) {
    char addr[64], type[8], name[512];
    lines++;
    if (sscanf(line, "%63s %7s %511s", addr, type, name) != 3) continue;
    if (strlen(type) != 1 || !strchr("TDBRW", type[0])) continue;
    char *at = strchr(name, '@'); /* symbol versions, if the library ever gets them */
    if (at) *at = '\0';
    if (!isalpha((unsigned char)name[0])) continue; /* _init, _fini, _edata, __bss_start... */
    add_name(s, name, strlen(name));
  }
  int st = pclose(fp);
  /* nm's exit status is not checked: under valgrind --trace-children the traced nm exits
   * with valgrind's error code over noise in ld.so. Its output is what counts. */
  cr_assert(lines > 0 && s->n > 0, "nm -D found no symbol in %s (%d lines, status %d)", so,
            lines, st);
}

Test(exports, header_declares_the_documented_api) {
  struct names d = {0};
  declared_names(&d, CORE->header);
  /* A sanity check of the parser: a few names from every part of the header. */
  static const char *sample[] = {"ip_version",      "ip_strerror",    "ip_serializer_raw",
                                 "ip_task_new",     "ip_call",        "ip_future_free",
                                 "ip_waitfor_next", "ip_ready_fd",    "ip_raise",
                                 "ip_vraise",       "ip_raise_error", "ip_bytes_alloc",
                                 "ip_list_new",     "ip_list_at",     "ip_task_set_fork"};
  for (size_t i = 0; i < sizeof sample / sizeof *sample; i++)
    cr_expect(has_name(&d, sample[i]), "%s not found among IP_EXTERN declarations", sample[i]);
  cr_expect_geq(d.n, 40u);
  free_names(&d);
}

Test(exports, every_configured_library_was_built) {
  need_shared_libraries();
  for (size_t i = 0; i < N_LIBRARIES; i++)
    if (libraries[i].built)
      cr_expect_eq(access(libraries[i].so, R_OK), 0, "%s is missing", libraries[i].so);
}

Test(exports, every_exported_symbol_is_declared_in_the_header) {
  need_shared_libraries();
  for (size_t l = 0; l < N_LIBRARIES; l++) {
    if (!libraries[l].built) continue;
    struct names d = {0}, x = {0};
    exported_names(&x, libraries[l].so);
    declared_names(&d, libraries[l].header);
    for (size_t i = 0; i < x.n; i++)
      cr_expect(has_name(&d, x.v[i]), "%s exports %s, which %s does not declare with IP_EXTERN",
                libraries[l].so, x.v[i], libraries[l].header);
    free_names(&d);
    free_names(&x);
  }
}

Test(exports, every_declared_function_is_exported) {
  need_shared_libraries();
  for (size_t l = 0; l < N_LIBRARIES; l++) {
    if (!libraries[l].built) continue;
    struct names d = {0}, x = {0};
    exported_names(&x, libraries[l].so);
    declared_names(&d, libraries[l].header);
    cr_expect_gt(d.n, 0u, "%s declares nothing with IP_EXTERN", libraries[l].header);
    for (size_t i = 0; i < d.n; i++)
      cr_expect(has_name(&x, d.v[i]), "%s declares %s with IP_EXTERN but %s does not export it",
                libraries[l].header, d.v[i], libraries[l].so);
    free_names(&d);
    free_names(&x);
  }
}

Test(exports, every_exported_name_starts_with_ip_and_none_is_private) {
  need_shared_libraries();
  for (size_t l = 0; l < N_LIBRARIES; l++) {
    if (!libraries[l].built) continue;
    struct names x = {0};
    exported_names(&x, libraries[l].so);
    for (size_t i = 0; i < x.n; i++) {
      cr_expect(strncmp(x.v[i], "ip_", 3) == 0, "%s: %s does not start with ip_",
                libraries[l].so, x.v[i]);
      cr_expect(strncmp(x.v[i], "ip__", 4) != 0, "%s: private symbol %s is exported",
                libraries[l].so, x.v[i]);
    }
    free_names(&x);
  }
}
