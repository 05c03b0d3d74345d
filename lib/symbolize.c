/* Return addresses to text: the one place that turns a stack into the lines an ip_error's
 * backtrace holds, for ip_raise in the child and for a crash report in the parent.
 *
 * With elfutils' libdw (configure --with-libdw, the default where it is installed) every
 * function gets its name, static ones included (from .symtab, not only the dynamic symbols
 * glibc's backtrace_symbols sees), and its file:line where debug information exists:
 *
 *     raise_econnrefused+0x1b (tests/test-errors.c:55) [/path/to/test-errors]
 *
 * An address no symbol covers shows as its value and its offset in the module,
 * `0x55d0c4a1b87b (+0x187b) [/path/to/prog]`, ready for addr2line; one outside every module as
 * its value alone. Without libdw (or when it fails) the lines are backtrace_symbols' own.
 *
 * libdw runs in a helper process forked for the purpose, never in the caller's: it is not
 * built for allocation failures (a failed malloc makes it crash, or exit() the process with
 * "libdw: Cannot allocate memory"), and the parent must survive them, as the child must still
 * report its raise. The helper is a copy of the caller, so it has the same mappings; it writes
 * the text to a pipe and _exit()s, and anything that goes wrong in it (a crash, an exit, no
 * fork to be had) leaves the caller with backtrace_symbols' lines instead. In the parent the
 * supervisor runs this before it takes ip__g.lock to complete the call, and the helper's
 * SIGCHLD counts as the library's own (see wait.c).
 *
 * Each report reads the mappings afresh into a Dwfl of its own. Nothing is cached: a crash
 * report is rare, and a cached Dwfl would have to live in the caller (see above), would hold
 * the descriptors of every ELF file it opened, and would have to notice a dlopen() since it
 * was filled. */
#include "internal.h"
#include <execinfo.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef IP_HAVE_LIBDW
#include <dwarf.h>
#include <elfutils/libdwfl.h>
#include <fcntl.h>
#include <gelf.h>
#include <poll.h>
#include <stdio_ext.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

static char *with_glibc(void *const *addrs, int n) {
  char **syms = backtrace_symbols(addrs, n);
  if (!syms) return NULL;
  size_t len = 1;
  for (int i = 0; i < n; i++) len += strlen(syms[i]) + 1;
  char *text = malloc(len), *p = text;
  if (text) {
    for (int i = 0; i < n; i++) {
      size_t l = strlen(syms[i]);
      memcpy(p, syms[i], l);
      p[l] = '\n';
      p += l + 1;
    }
    *p = '\0';
  }
  free(syms);
  return text;
}

#ifdef IP_HAVE_LIBDW

/* libdwfl's own find_elf opens files without O_CLOEXEC; this one opens the regular files of
 * the mappings with it (a fork or exec by another thread while a report runs must not take
 * them along) and leaves the special cases (the vDSO, deleted files) to libdwfl. */
static int find_elf(Dwfl_Module *mod, void **userdata, const char *name, Dwarf_Addr base,
                    char **file_name, Elf **elfp) {
  struct stat st;
  if (name[0] == '/' && stat(name, &st) == 0 && S_ISREG(st.st_mode)) {
    int fd = open(name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    if (!(*file_name = strdup(name))) {
      close(fd);
      return -1;
    }
    return fd;
  }
  return dwfl_linux_proc_find_elf(mod, userdata, name, base, file_name, elfp);
}

/* Separate debug files are looked up by build ID only (/usr/lib/debug/.build-id/...):
 * dwfl_standard_find_debuginfo would, failing that, load libdebuginfod and ask a server
 * (DEBUGINFOD_URLS), which no crash report should wait for. */
static const Dwfl_Callbacks callbacks = {
    .find_elf = find_elf,
    .find_debuginfo = dwfl_build_id_find_debuginfo,
};

/* Whether the module's own file carries a line table. Line numbers are looked up only there:
 * the separate debug file of a system library (libc6-dbg) holds its DWARF compressed, and
 * unpacking it took a crash report from under a millisecond to some 50. Symbols still come
 * from such a file, which names the library's static functions. The answer is kept in the
 * module's user data: 1 yes, 2 no. */
static bool has_own_lines(Dwfl_Module *mod, void **userdata) {
  if (*userdata) return *userdata == (void *)1;
  bool yes = false;
  GElf_Addr bias;
  Elf *elf = dwfl_module_getelf(mod, &bias);
  size_t shstrndx;
  if (elf && elf_getshdrstrndx(elf, &shstrndx) == 0) {
    for (Elf_Scn *scn = NULL; !yes && (scn = elf_nextscn(elf, scn));) {
      GElf_Shdr sh;
      const char *name = gelf_getshdr(scn, &sh) ? elf_strptr(elf, shstrndx, sh.sh_name) : NULL;
      yes = name && strcmp(name, ".debug_line") == 0;
    }
  }
  *userdata = yes ? (void *)1 : (void *)2;
  return yes;
}

/* The source file and line of address `a` of the module (its line entry's address in *at), or
 * NULL. libdwfl finds the compilation unit through .debug_aranges, which clang does not emit
 * by default; without it every unit's own address ranges are searched instead. */
static const char *source_line(Dwfl_Module *mod, Dwarf_Addr a, Dwarf_Addr *at, int *lineno) {
  Dwfl_Line *line = dwfl_module_getsrc(mod, a);
  if (line) return dwfl_lineinfo(line, at, lineno, NULL, NULL, NULL);
  Dwarf_Addr bias;
  Dwarf *dw = dwfl_module_getdwarf(mod, &bias);
  if (!dw) return NULL;
  Dwarf_CU *cu = NULL;
  Dwarf_Half version;
  uint8_t type;
  Dwarf_Die cudie;
  while (dwarf_get_units(dw, cu, &cu, &version, &type, &cudie, NULL) == 0) {
    if (dwarf_tag(&cudie) != DW_TAG_compile_unit || dwarf_haspc(&cudie, a - bias) != 1) continue;
    Dwarf_Line *l = dwarf_getsrc_die(&cudie, a - bias);
    if (!l || dwarf_lineaddr(l, at) != 0 || dwarf_lineno(l, lineno) != 0) return NULL;
    *at += bias;
    return dwarf_linesrc(l, NULL, NULL);
  }
  return NULL;
}

static void frame(FILE *out, Dwfl *dwfl, void *addr) {
  Dwarf_Addr a = (Dwarf_Addr)(uintptr_t)addr;
  Dwfl_Module *mod = dwfl_addrmodule(dwfl, a);
  if (!mod) {
    fprintf(out, "0x%" PRIx64 "\n", (uint64_t)a);
    return;
  }
  void **userdata = NULL;
  Dwarf_Addr start = 0;
  const char *modname = dwfl_module_info(mod, &userdata, &start, NULL, NULL, NULL, NULL, NULL);
  GElf_Off off = 0;
  GElf_Sym sym;
  const char *name = dwfl_module_addrinfo(mod, a, &off, &sym, NULL, NULL, NULL);
  if (name && *name) {
    /* .symtab may name a versioned definition, "fn@@VER_1": the name alone is enough. */
    fprintf(out, "%.*s+0x%" PRIx64, (int)strcspn(name, "@"), name, (uint64_t)off);
  } else {
    fprintf(out, "0x%" PRIx64 " (+0x%" PRIx64 ")", (uint64_t)a, (uint64_t)(a - start));
  }
  int lineno = 0;
  Dwarf_Addr line_addr = 0;
  const char *file = userdata && has_own_lines(mod, userdata)
                         ? source_line(mod, a, &line_addr, &lineno)
                         : NULL;
  /* A function's first line entry is at its entry: one before it belongs to code before the
   * function, found for an address (such as _start's) that no compilation unit describes. */
  if (name && *name && line_addr < a - off) file = NULL;
  if (file && lineno > 0) fprintf(out, " (%s:%d)", file, lineno);
  fprintf(out, " [%s]\n", modname && *modname ? modname : "?");
}

static char *with_libdw(void *const *addrs, int n) {
  Dwfl *dwfl = dwfl_begin(&callbacks);
  if (!dwfl) return NULL;
  char *text = NULL;
  size_t len = 0;
  FILE *out = NULL;
  dwfl_report_begin(dwfl);
  int rc = dwfl_linux_proc_report(dwfl, getpid());
  if (dwfl_report_end(dwfl, NULL, NULL) == 0 && rc == 0 && (out = open_memstream(&text, &len))) {
    for (int i = 0; i < n; i++) frame(out, dwfl, addrs[i]);
    if (fclose(out) != 0) {
      free(text);
      text = NULL;
    }
  }
  dwfl_end(dwfl);
  return text;
}

/* ---- the helper process -------------------------------------------------------------------- */

/* Longest wait for the helper; it needs about a millisecond, but runs under valgrind too. */
#define HELPER_TIMEOUT_MS 10000
#define HELPER_TEXT_MAX ((size_t)1 << 20)

static void helper_exit_guard(void) { _exit(3); }

static _Noreturn void helper_main(int wfd, void *const *addrs, int n) {
  /* Quiet and disposable: libdw's complaints go nowhere; the caller's buffered output is not
   * ours to flush (error() flushes stdout first); an exit() from libdw runs none of the
   * host's atexit handlers (ours, registered last, runs first); and a crash here is a plain
   * death, not a crash report of the task's (the child's handler would write on its socket). */
  __fpurge(stdout);
  __fpurge(stderr);
  int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null >= 0) dup2(null, STDERR_FILENO);
  static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
  for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) signal(sigs[i], SIG_DFL);
  atexit(helper_exit_guard);
  char *text = with_libdw(addrs, n);
  if (!text) _exit(1);
  size_t len = strlen(text), off = 0;
  while (off < len) {
    ssize_t w = write(wfd, text + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) _exit(2);
    off += (size_t)w;
  }
  _exit(0);
}

/* The helper's text, or NULL when it gave none. */
static char *in_helper(void *const *addrs, int n) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return NULL;
  /* In the parent (a crash report) the helper is one of the library's children, which a
   * waiting thread must tell from the host's by its SIGCHLD: counted as unrecorded until
   * its pid is known, and leading its own group, as ip__ours_locked expects of those. */
  bool parent = !ip_in_child();
  if (parent) {
    pthread_mutex_lock(&ip__g.lock);
    ip__g.unrecorded++;
    pthread_mutex_unlock(&ip__g.lock);
  }
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    close(p[0]);
    helper_main(p[1], addrs, n);
  }
  if (parent) {
    pthread_mutex_lock(&ip__g.lock);
    ip__g.unrecorded--;
    if (pid > 0) ip__remember_pid_locked(pid);
    pthread_mutex_unlock(&ip__g.lock);
  }
  close(p[1]);
  if (pid < 0) {
    close(p[0]);
    return NULL;
  }
  char *text = NULL;
  size_t len = 0, cap = 0;
  bool ok = true;
  int64_t deadline = ip__now_ns() + (int64_t)HELPER_TIMEOUT_MS * 1000000;
  for (;;) {
    if (len == cap) {
      size_t ncap = cap ? 2 * cap : 4096;
      char *t = ncap <= HELPER_TEXT_MAX ? realloc(text, ncap + 1) : NULL;
      if (!t) {
        ok = false;
        break;
      }
      text = t, cap = ncap;
    }
    int left = (int)((deadline - ip__now_ns()) / 1000000);
    struct pollfd pfd = {p[0], POLLIN, 0};
    int r = left > 0 ? poll(&pfd, 1, left) : 0;
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      ok = false; /* stuck, or poll failed: it is killed below */
      break;
    }
    ssize_t got = read(p[0], text + len, cap - len);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) ok = false;
    if (got <= 0) break;
    len += (size_t)got;
  }
  close(p[0]);
  if (!ok) kill(pid, SIGKILL);
  int st = 0;
  pid_t w;
  while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {
  }
  /* ECHILD: the host reaped it (a waitpid(-1)); the text is whole if the pipe said EOF. */
  if (w == pid && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) ok = false;
  if (!ok || !len) {
    free(text);
    return NULL;
  }
  text[len] = '\0';
  return text;
}

#endif

char *ip__symbolize(void *const *addrs, int n) {
  if (n <= 0) return NULL;
#ifdef IP_HAVE_LIBDW
  char *text = in_helper(addrs, n);
  if (text) return text;
#endif
  return with_glibc(addrs, n);
}
