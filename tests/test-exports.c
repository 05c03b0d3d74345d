/* The shared library exports exactly the functions include/inparallel.h declares with
 * IP_EXTERN: nothing private leaks (everything internal is ip__* and hidden), nothing
 * documented is missing. */
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

#define LIB_PATH IP_TOP_BUILDDIR "/lib/.libs/libinparallel.so"
#define HEADER_PATH IP_TOP_SRCDIR "/include/inparallel.h"

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

/* Names declared as `IP_EXTERN [IP_NORETURN] type *name(`. */
static void declared_names(struct names *s) {
  char *text = slurp(HEADER_PATH);
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

/* Symbols the shared library defines and exports (types T, D, B, R, W). */
static void exported_names(struct names *s) {
  /* tests/sanitize.sh builds with --disable-shared: there is no shared library to check. */
  if (access(LIB_PATH, R_OK) != 0 &&
      access(IP_TOP_BUILDDIR "/lib/.libs/libinparallel.a", R_OK) == 0)
    cr_skip_test("built without a shared library (--disable-shared): nothing is exported");
  FILE *fp = popen("nm -D --defined-only '" LIB_PATH "' 2>&1", "r");
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
  cr_assert(lines > 0 && has_name(s, "ip_call"),
            "nm -D found no ip_call in %s (%d lines, status %d)", LIB_PATH, lines, st);
}

Test(exports, header_declares_the_documented_api) {
  struct names d = {0};
  declared_names(&d);
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

Test(exports, every_exported_symbol_is_declared_in_the_header) {
  struct names d = {0}, x = {0};
  exported_names(&x); /* first: it may skip the test */
  declared_names(&d);
  cr_assert_gt(x.n, 0u, "no exported symbols in %s", LIB_PATH);
  for (size_t i = 0; i < x.n; i++)
    cr_expect(has_name(&d, x.v[i]), "%s is exported but not declared with IP_EXTERN", x.v[i]);
  free_names(&d);
  free_names(&x);
}

Test(exports, every_declared_function_is_exported) {
  struct names d = {0}, x = {0};
  exported_names(&x); /* first: it may skip the test */
  declared_names(&d);
  for (size_t i = 0; i < d.n; i++)
    cr_expect(has_name(&x, d.v[i]), "%s is declared with IP_EXTERN but not exported", d.v[i]);
  free_names(&d);
  free_names(&x);
}

Test(exports, every_exported_name_starts_with_ip_and_none_is_private) {
  struct names x = {0};
  exported_names(&x);
  for (size_t i = 0; i < x.n; i++) {
    cr_expect(strncmp(x.v[i], "ip_", 3) == 0, "%s does not start with ip_", x.v[i]);
    cr_expect(strncmp(x.v[i], "ip__", 4) != 0, "private symbol %s is exported", x.v[i]);
  }
  free_names(&x);
}
