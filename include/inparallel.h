/* inparallel: run a C function in a forked child and get a future for its result.
 *
 * The model in five lines:
 *
 *     ip_task *t = ip_task_new(my_fn, NULL);        // NULL serializer = raw bytes
 *     ip_future *f = ip_call(t, my_arg);            // forks; returns at once
 *     const ip_bytes *b = ip_future_value(f);       // waits, then decodes in this thread
 *     if (!b) puts(ip_future_error(f)->message);    // every failure is a value
 *     ip_future_free(f); ip_task_free(t);
 *
 * Each ip_call() fork()s. The child runs `fn(arg)` on a copy of the caller's memory, encodes
 * the value `fn` returns with the task's serializer, sends it to the parent over a socketpair
 * and _exit()s. The parent's supervisor receives the bytes, reaps the child and completes the
 * future. ip_waitfor_next() walks a caller-owned list of futures in completion order and,
 * given a concurrency factor, asks the caller to start more.
 *
 * Threads: the library starts none for calls that are waited for. A thread that waits (in
 * ip_future_wait, ip_future_value, ip_waitfor_next, ip_future_cancel) runs the supervisor
 * itself while no other thread does, and ip_future_done() does one non-blocking round, so a
 * single-threaded program stays single-threaded, and its fork()s take glibc's faster path.
 * One supervisor thread is started, and then runs it alone for the life of the process, by
 * the first call of a task with a timeout (the child must die on time even when nobody
 * waits) and by ip_ready_fd() (its user polls instead of waiting). Until someone waits, a
 * child whose result outgrows the socket buffer waits for the parent to read it.
 *
 * Conventions used throughout this header:
 *   - Functions that can fail return a negative IP_E* code (0 or a count on success).
 *     ip_strerror() and ip_err_name() turn a code into text.
 *   - Constructors that return a pointer return NULL on failure and set errno
 *     (EINVAL for bad arguments, ENOMEM when memory ran out).
 *   - "Owned by X" means X frees it; nothing returned by this library needs free() from you
 *     unless it says so. All times are in milliseconds; a negative timeout means "forever".
 *   - Passing NULL where a handle is required is never a crash: the call returns IP_EINVAL
 *     (or NULL / 0 for accessors, as documented per function).
 *   - Everything is thread-safe unless a function says otherwise.
 *
 * Processes: each call's child leads a process group of its own, and everything it starts
 * (its children, a shell and the commands the shell runs, however deep) is in that group
 * unless it leaves it. A timeout, ip_future_cancel(), freeing a running future, the end of
 * the call, and the death of the calling process each SIGKILL the whole group. For this to
 * hold, a task must not move what it starts into another group or session (setsid(),
 * setpgid(), coreutils' `timeout` without --foreground, a shell with job control), and must
 * not close descriptors it did not open (closefrom(), close_range()): one of them carries
 * the parent-death signal. Being in its own group also means a task is not in the terminal's
 * foreground group: the terminal's Ctrl-C reaches the caller, which ends the calls, and a
 * task that reads the terminal is stopped by SIGTTIN.
 *
 * Signals: a wait returns IP_EINTR only for the host's own signals (a handler of the host's
 * ran in the waiting thread, and nothing the wait was waiting for completed meanwhile). The
 * SIGCHLD of the library's own children never interrupts a wait; the SIGCHLD of the host's
 * own children does, so a host's handler sees its children as before. While a thread waits
 * with a host SIGCHLD handler installed, the library blocks SIGCHLD in it, reads whose child
 * sent it, and re-raises it for the handler at once, with the same information.
 *
 * The same rules in the Lua module and the Ruby gem (each README has this table, in full):
 *
 *   concurrency factor: none
 *     C: 0                     Lua: nil or absent (0: an error)   Ruby: nil (0: an error)
 *   "start another"
 *     C: IP_WAITFOR_ASK        Lua: the iterator gives false      Ruby: the block gets nil
 *   the end
 *     C: IP_WAITFOR_END        Lua: the iterator gives nil        Ruby: the loop ends
 *   a wait's timeout
 *     C: milliseconds,         Lua: seconds (floats too),         Ruby: the same as Lua
 *        negative = forever         nil = forever
 *   a wait that runs out
 *     C: IP_ETIMEDOUT          Lua: raises code "ETIMEDOUT"       Ruby: InParallel::TimeoutError
 *   a task's timeout
 *     C: milliseconds,         Lua: seconds, absent or math.huge  Ruby: seconds, nil or
 *        0 = none                   = none (0: an error)                Float::INFINITY = none
 *   a call past its task's timeout
 *     C: IP_ETIMEDOUT          Lua: code "ETIMEDOUT"              Ruby: TaskTimeoutError
 *   per-task options
 *     C: ip_task_set_timeout, _max_result, _rlimit, _stdio
 *     Lua: timeout, max_result, rlimit, stdio         Ruby: timeout:, max_result:, rlimit:, stdio:
 *   stdio policies
 *     C: IP_STDIO_PURGE_INHERITED, _FLUSH_STD, _FLUSH_ALL, 0
 *     Lua: "purge_inherited", ..., "none"             Ruby: :purge_inherited, ..., :none
 *   how a failure looks
 *     C: ip_error (code, kind, message, backtrace, exit status, signal, rusage)
 *     Lua: an error table (code, message, traceback, kind, value)
 *     Ruby: an exception (the child's own class, or RemoteError, ProcessError, ...)
 *   a host's signal during a wait
 *     C: IP_EINTR              Lua: raises code "EINTR"           Ruby: Ruby's own (Interrupt)
 *   a pool
 *     C: ip_pool_new           Lua: ip.pool                       Ruby: InParallel::Pool
 *   a pool call's argument
 *     C: one, by the task's    Lua: the call's arguments,         Ruby: the call's arguments,
 *        argument serializer        as msgpack                          by the task's serializer
 *   a parallel map
 *     C: none (pool calls)     Lua: ip.map                        Ruby: InParallel.map
 *
 * Linux only: the library relies on epoll, eventfd, signalfd and memfd, and on pidfd (Linux
 * 5.3+) to watch each child. Without pidfd (an older kernel, or valgrind, which does not know
 * the call) each call in flight has a small thread of its own that waits for its child.
 */
#ifndef INPARALLEL_H
#define INPARALLEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <errno.h>
#include <sys/types.h>
#include <sys/time.h>
#include <sys/resource.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(IP_BUILDING) && defined(__GNUC__)
#define IP_EXTERN __attribute__((visibility("default")))
#else
#define IP_EXTERN
#endif

#if defined(__GNUC__)
#define IP_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define IP_PRINTF(fmt, args)
#endif

#if defined(__cplusplus)
#define IP_NORETURN [[noreturn]]
#else
#define IP_NORETURN _Noreturn
#endif

/* ---------------------------------------------------------------------------------------- */
/* Version                                                                                   */

#define IP_VERSION_MAJOR 0
#define IP_VERSION_MINOR 1
#define IP_VERSION_PATCH 0
#define IP_VERSION_HEX ((IP_VERSION_MAJOR << 16) | (IP_VERSION_MINOR << 8) | IP_VERSION_PATCH)

/* The version of the library actually loaded, "MAJOR.MINOR.PATCH". Static storage. */
IP_EXTERN const char *ip_version(void);

/* ---------------------------------------------------------------------------------------- */
/* Error codes                                                                               */

/* One list makes the enum, the names and the messages, so they can never disagree.
 * Codes that have an errno twin use its negative value, as libuv does, and an errno the
 * kernel gives that is not listed here passes through the same way: a fork refused with
 * EPERM fails its call with -EPERM, whose name is "EPERM". */
#define IP_ERRNO_MAP(XX)                                                                      \
  XX(ERAISED, -3000, "the task function raised an error")                                   \
  XX(ESIGNALED, -3001, "the child process was killed by a signal")                          \
  XX(EEXITED, -3002, "the child process exited without sending a result")                   \
  XX(EENCODE, -3003, "the child could not encode the result")                               \
  XX(EDECODE, -3004, "the result could not be decoded")                                     \
  XX(EPROTO, -EPROTO, "malformed or truncated frame from the child")                        \
  XX(ECANCELED, -ECANCELED, "the call was canceled")                                        \
  XX(ETIMEDOUT, -ETIMEDOUT, "timed out")                                                    \
  XX(EINTR, -EINTR, "interrupted by a signal handler")                                      \
  XX(ENOMEM, -ENOMEM, "out of memory")                                                      \
  XX(EINVAL, -EINVAL, "invalid argument")                                                   \
  XX(EAGAIN, -EAGAIN, "no process could be created (fork failed; see RLIMIT_NPROC)")        \
  XX(EMFILE, -EMFILE, "no file descriptor could be created (see RLIMIT_NOFILE)")            \
  XX(E2BIG, -E2BIG, "the result is larger than the task's size limit")                      \
  XX(EALREADY, -EALREADY, "the future had already completed")                               \
  XX(ENOSYS, -ENOSYS, "the kernel lacks a system call the library needs")

typedef enum {
#define IP__ERR_ENUM(name, value, text) IP_##name = (value),
  IP_ERRNO_MAP(IP__ERR_ENUM)
#undef IP__ERR_ENUM
} ip_errno;

/* A sentence describing `code`. 0 gives "success", another errno's negative strerror's text
 * ("Operation not permitted"), any other code "unknown error <code>". Static storage, except
 * for that last kind: a buffer of the calling thread's, valid until its next call. */
IP_EXTERN const char *ip_strerror(int code);
/* The code's name without the IP_ prefix, e.g. "ETIMEDOUT"; 0 gives "OK", another errno's
 * negative its name ("EPERM"), any other code "E<number>" ("E4242" for -4242). Storage as
 * for ip_strerror. */
IP_EXTERN const char *ip_err_name(int code);

/* ---------------------------------------------------------------------------------------- */
/* Types                                                                                     */

typedef struct ip_task ip_task;             /* fn + serializer + options; reusable */
typedef struct ip_future ip_future;         /* one call; owned by whoever called ip_call() */
typedef struct ip_list ip_list;             /* caller-owned list of futures for ip_waitfor_next */
typedef struct ip_serializer ip_serializer; /* see "Serializers" below */

/* Runs in the child. The pointer it returns is handed to the serializer's encode() after fn
 * returns, so it must outlive fn: static storage, the heap, or ip_bytes_alloc/ip_bytes_copy. */
typedef void *(*ip_fn)(void *arg);

/* A byte string: the value type of the raw serializer. In the child, `data` of a buffer from
 * ip_bytes_alloc() is writable; in the parent it is read-only (it may be a read-only mapping). */
typedef struct ip_bytes {
  void *data;
  size_t len;
} ip_bytes;

/* How a call failed. Read-only; owned by the future and valid until ip_future_free(). */
typedef struct ip_error {
  int code;              /* an IP_E* code: IP_ERAISED, IP_ESIGNALED, IP_EEXITED, ... */
  const char *kind;      /* short name: ip_err_name(code), the errno name an ip_raise() gave
                            ("ECONNREFUSED"), the signal's name when a signal killed the child
                            ("SIGSEGV"), or a binding's exception class; never NULL */
  const char *message;   /* one line saying exactly what happened; never NULL */
  const char *backtrace; /* the child's stack, one frame per line, or NULL if none was sent */
  int raised_code;       /* the `code` given to ip_raise() in the child; 0 otherwise */
  int exit_status;       /* exit status if the child exited, else -1 */
  int signal;            /* signal that killed the child, else 0 */
  int core_dumped;       /* 1 when the kernel wrote a core for that signal */
  struct rusage rusage;  /* the child's resource usage (ru_maxrss = peak RSS in KiB) */
  pid_t pid;             /* the child's pid (0 if no child was created) */
  void *reserved[4];
} ip_error;

/* ---------------------------------------------------------------------------------------- */
/* Serializers                                                                               */

#define IP_SERIALIZER_ABI 1u

/* Sink for encoded bytes: copy or send `len` bytes of `buf` before returning. Returns 0, or a
 * negative code that encode() should return as is. */
typedef int (*ip_write_fn)(void *ctx, const void *buf, size_t len);

struct ip_serializer {
  unsigned abi;     /* IP_SERIALIZER_ABI, checked by ip_task_new and ip_serializer_register */
  const char *name; /* wire id ("raw", "msgpack", ...): a frame from another serializer is
                       refused with IP_EDECODE. 1..63 bytes. */
  /* Child side: write the encoding of `value` (what fn returned) through w(ctx, ...).
   * Return 0, or non-zero to fail the call with IP_EENCODE; `return ip_encode_error(code,
   * "why", ...)` says why (see below). */
  int (*encode)(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx);
  /* Parent side, in the thread that first looks at the completed future (its status, error or
   * value): turn `len` bytes at `buf` into a value stored in *value. `buf` is owned by the future and stays valid until free_value()
   * has run, so a value may point into it. It is read-only: for a result that travelled in
   * place (see inplace below) it is the child's sealed memfd mapped PROT_READ, and writing to
   * it kills the process. Return 0, or non-zero for IP_EDECODE. Must never read outside
   * buf[0..len): the bytes come from another process. */
  int (*decode)(const ip_serializer *s, const void *buf, size_t len, void **value);
  /* Frees what decode() stored. May be NULL when decode allocates nothing. */
  void (*free_value)(const ip_serializer *s, void *value);
  /* Frees a serializer made at run time (e.g. ip_serializer_protobuf_new); NULL for static
   * ones. Called by ip_serializer_free(). */
  void (*destroy)(ip_serializer *s);
  /* Optional, child side, tried before encode(): for a value that already holds its own
   * encoding in a sealed memfd, return that descriptor and store the encoding's length in
   * *len; the parent maps it and hands the mapping to decode() as `buf`, so the bytes are
   * never copied through the socket. Return -1 to have encode() stream the value instead (the
   * value must then still be encodable). The descriptor stays the serializer's (the child
   * exits right after sending it); it must be sealed with F_SEAL_WRITE, F_SEAL_GROW and
   * F_SEAL_SHRINK and hold at least *len bytes, or the call fails with IP_EENCODE saying so; a
   * *len above the task's max_result fails with IP_E2BIG. ip_bytes_inplace() does all this
   * for a buffer of ip_bytes_alloc(): a serializer that builds its encoding in one can return
   * what that gives. NULL (as in serializers written before this member, which was reserved
   * space) means always stream. */
  int (*inplace)(const ip_serializer *s, const void *value, size_t *len);
  void *reserved[2];
};

/* For encode(), to say why it fails: `return ip_encode_error(IP_EENCODE, "the task returned
 * NULL");`. Formats the message (printf-style) for the call whose value is being encoded and
 * returns `code` unchanged. When encode() then returns non-zero, the call fails with
 * IP_EENCODE, raised_code = what encode() returned, and the message "the NAME serializer could
 * not encode the result: MESSAGE" (without a message it says which code encode() returned).
 * The text is copied (fmt and its arguments may be gone once this returns) and owned by the
 * library; a later call replaces it, and it is dropped when encode() returns 0. A result too
 * large for the task's max_result still fails with IP_E2BIG, whatever was said here. Only
 * meaningful in a task's child while encode() runs; anywhere else (a test calling encode()
 * directly, the parent) it records nothing and just returns `code`. */
IP_EXTERN int ip_encode_error(int code, const char *fmt, ...) IP_PRINTF(2, 3);

/* The built-in raw serializer: fn returns `const ip_bytes *` (NULL = empty); the parent gets a
 * `const ip_bytes *`. An ip_bytes from ip_bytes_alloc() of 1 MiB or more travels without being
 * copied: it lives in a sealed memfd that the parent maps read-only (its inplace member is
 * ip_bytes_inplace). */
IP_EXTERN const ip_serializer *ip_serializer_raw(void);

/* Makes `s` findable by name for bindings and configuration. `s` is borrowed and must stay
 * valid until the process ends. Returns 0; IP_EINVAL for NULL, a wrong abi, a missing
 * encode/decode or a bad name; IP_EALREADY when another serializer has that name (registering
 * the same pointer twice is 0). */
IP_EXTERN int ip_serializer_register(const ip_serializer *s);
/* The serializer registered as `name` ("raw" is always there), or NULL. */
IP_EXTERN const ip_serializer *ip_serializer_lookup(const char *name);
/* Frees a serializer made at run time by a plugin's _new function (through its destroy
 * member), unregistering it first if it was registered. Tasks and futures using it must be
 * gone. NULL and static serializers (destroy == NULL) are ignored. */
IP_EXTERN void ip_serializer_free(ip_serializer *s);

/* ---------------------------------------------------------------------------------------- */
/* Tasks                                                                                     */

/* A task: the function to run in each child and how. `s` NULL means raw; `s` is borrowed and
 * must outlive the task and every future made from it. Returns NULL with errno EINVAL (fn
 * NULL, s with a wrong abi or without encode/decode) or ENOMEM. Tasks may be shared between
 * threads; set options before sharing. */
IP_EXTERN ip_task *ip_task_new(ip_fn fn, const ip_serializer *s);
/* Frees the task. Futures already made stay valid. NULL is ignored; freeing a task twice is
 * undefined, as for free(). */
IP_EXTERN void ip_task_free(ip_task *t);

/* Kill the child (and its process group) with SIGKILL when a call runs longer than
 * `timeout_ms` (0 or negative: no limit, the default). The future then fails with
 * IP_ETIMEDOUT. The first call of such a
 * task starts the process's supervisor thread (see "Threads" above). Returns 0 or
 * IP_EINVAL. */
IP_EXTERN int ip_task_set_timeout(ip_task *t, int timeout_ms);
/* Parent-death protection (on by default): the child and its process group are SIGKILLed
 * when the parent process dies, whichever thread made the call and even if that thread exits first. An execve() by
 * the parent counts as its death: the new program knows nothing of the calls. 0 turns it
 * off. Returns 0 or IP_EINVAL. */
IP_EXTERN int ip_task_set_pdeathsig(ip_task *t, int on);

/* What the child does with stdio. Default IP_STDIO_PURGE_INHERITED | IP_STDIO_FLUSH_STD. */
enum {
  IP_STDIO_PURGE_INHERITED = 1, /* drop the stdout/stderr bytes the parent had buffered, so
                                   they are not printed twice */
  IP_STDIO_FLUSH_STD = 2,       /* fflush(stdout) and fflush(stderr) before _exit */
  IP_STDIO_FLUSH_ALL = 4        /* fflush(NULL) before _exit (every FILE the child has) */
};
IP_EXTERN int ip_task_set_stdio(ip_task *t, int flags); /* 0 or IP_EINVAL */

/* setrlimit(resource, {soft, hard}) in the child before fn runs (up to 8 resources; setting
 * one twice replaces it). If setrlimit fails there, the call fails with IP_EINVAL and says
 * why. Returns 0, or IP_EINVAL for a bad resource or soft > hard, IP_ENOMEM past 8. */
IP_EXTERN int ip_task_set_rlimit(ip_task *t, int resource, rlim_t soft, rlim_t hard);

/* The largest result the parent accepts (default 4 GiB). Larger ones fail with IP_E2BIG. */
IP_EXTERN int ip_task_set_max_result(ip_task *t, uint64_t bytes);

/* Report a crashing child's stack (on by default): the child installs handlers for SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL and SIGABRT that send a backtrace and then die of the same signal.
 * Bindings whose interpreter handles these signals itself turn this off. */
IP_EXTERN int ip_task_set_crash_report(ip_task *t, int on);

/* Replace fork() for this task, e.g. so a Ruby binding forks through its VM. `fork_fn(ud)`
 * must behave like fork(): return the child's pid in the parent, 0 in the child, -1 with
 * errno on failure. NULL restores fork(). */
typedef pid_t (*ip_fork_fn)(void *ud);
IP_EXTERN int ip_task_set_fork(ip_task *t, ip_fork_fn fork_fn, void *ud);

/* Names: a task that travels by name (to another process of the same program, such as an
 * MPI rank of libinparallel-mpi) needs one. A name is 1 to 255 bytes, unique among the live
 * tasks of the process; NULL takes the task's name away. The registry of named tasks keeps
 * them in the order they were named; ip_task_free takes a task out of it. Returns 0,
 * IP_EINVAL (NULL task, an empty or longer name), IP_EALREADY (another task has the name;
 * naming a task again with its own name is 0), IP_ENOMEM. */
IP_EXTERN int ip_task_set_name(ip_task *t, const char *name);
/* The task's name (owned by the task), or NULL when it has none or t is NULL. */
IP_EXTERN const char *ip_task_name(const ip_task *t);
/* The live task named `name`, or NULL. */
IP_EXTERN ip_task *ip_task_find(const char *name);
/* The registry in naming order: NULL gives the first named task, a named task the one named
 * after it; NULL at the end (and for an unnamed `prev`). Tasks must not be named or freed by
 * another thread during the walk. */
IP_EXTERN ip_task *ip_task_next_named(const ip_task *prev);
/* The serializer of t's results, and of its arguments on a pool (ip_task_set_arg_serializer);
 * NULL for NULL. */
IP_EXTERN const ip_serializer *ip_task_serializer(const ip_task *t);
IP_EXTERN const ip_serializer *ip_task_arg_serializer(const ip_task *t);

/* ---------------------------------------------------------------------------------------- */
/* Calls and futures                                                                         */

/* Forks and runs t's fn(arg) in the child. Returns at once with a future owned by the caller
 * (free it with ip_future_free). `arg` is borrowed: the child sees its own copy of the
 * caller's memory, so arg needs no serialization. If the call cannot start (fork or
 * socketpair failed, t is NULL) the future comes back already failed, with the errno the
 * kernel gave as its code (IP_EAGAIN, IP_EMFILE, -ENFILE, IP_ENOMEM, -EPERM, ...) or
 * IP_EINVAL. NULL only when the future itself cannot be allocated. */
IP_EXTERN ip_future *ip_call(ip_task *t, void *arg);
/* ip_call for an argument that arrived encoded (from another process): the child decodes
 * `arg` (len bytes) with t's argument serializer (ip_task_set_arg_serializer) and runs fn on
 * the value. The decoding happens in the child, so a decoder that fails (IP_EDECODE) or
 * crashes fails this call alone. `arg` is borrowed, as for ip_call; ip_future_arg gives it
 * back. Failures as for ip_call. */
IP_EXTERN ip_future *ip_call_encoded(ip_task *t, const void *arg, size_t len);

/* Blocks until f completes or timeout_ms passes (negative = forever, 0 = poll).
 * Returns 0 when done (also when a handler ran but f completed meanwhile), IP_ETIMEDOUT,
 * IP_EINTR when a handler of the host's ran in this thread while f was still running
 * (with or without SA_RESTART; see "Signals" above), IP_EINVAL. A signal that arrives
 * after the wait began but before it went to sleep runs its handler without interrupting the
 * wait.
 * The first wait that blocks in a thread gives that thread an eventfd to sleep on when
 * another thread runs the supervisor (this and ip_waitfor_next share it); it is closed when
 * the thread exits. */
IP_EXTERN int ip_future_wait(ip_future *f, int timeout_ms);
/* 1 when f has completed (successfully or not), 0 while running or for NULL. Never blocks;
 * while no thread runs the supervisor it takes in what is ready first, so a caller that
 * polls this sees its calls complete. */
IP_EXTERN int ip_future_done(const ip_future *f);
/* 0 when f succeeded, its failure code when it failed, IP_EINVAL for NULL. A future still
 * running reports IP_EAGAIN (try again later). Never waits for the call. A completed future
 * never changes: the first look at it (this, ip_future_error or ip_future_value, in whichever
 * thread) decodes the value, in that thread, so a value that fails to decode is IP_EDECODE
 * in all three from the first look on. */
IP_EXTERN int ip_future_status(const ip_future *f);
/* Waits for f (through signals: it never returns early with IP_EINTR), then decodes the
 * result in this thread if no look at f did yet. The value is owned by the future and valid until
 * ip_future_free(). NULL when f failed (see ip_future_error), or when
 * the serializer decoded to NULL. */
IP_EXTERN const void *ip_future_value(ip_future *f);
/* Why f failed, or NULL while it runs, when it succeeded, or for NULL. Owned by the future.
 * Decodes f on first look, as ip_future_status does. */
IP_EXTERN const ip_error *ip_future_error(const ip_future *f);
/* SIGKILLs the child and its process group, reaps it, and fails f with IP_ECANCELED. Returns 0 once done;
 * IP_EALREADY when f had already completed (its outcome stands); IP_EINVAL for NULL. */
IP_EXTERN int ip_future_cancel(ip_future *f);
/* The child's pid, or 0 when no child was created. */
IP_EXTERN pid_t ip_future_pid(const ip_future *f);
/* The `arg` given to ip_call (borrowed; the library never touches it). */
IP_EXTERN void *ip_future_arg(const ip_future *f);
/* The child's resource usage once f completed (also on success). 0, IP_EAGAIN while
 * running, IP_EINVAL for NULL. */
IP_EXTERN int ip_future_rusage(const ip_future *f, struct rusage *out);
/* Cancels f if it still runs (so no child or zombie is left), takes it out of the list it is
 * in, if any, then frees it and its value. NULL is ignored. Using f afterwards is undefined.
 * A future in a list may only be freed by the thread that uses the list, or while no thread
 * does. */
/* A completed call's result as the child's serializer encoded it, without decoding it (to pass
 * it on): its bytes, owned by f, and their count in *len. NULL with *len 0 while f runs, when
 * it failed, or for NULL. It does not decode, so it is no first look (see ip_future_status):
 * the value may still fail to decode. */
IP_EXTERN const void *ip_future_bytes(ip_future *f, size_t *len);
IP_EXTERN void ip_future_free(ip_future *f);

/* ---------------------------------------------------------------------------------------- */
/* Pools: reused worker processes                                                            */

/* A fork per call costs a fork (and the caller's page tables: more the larger the caller);
 * a pool forks its workers once and sends them calls, so small calls run 20 to 100 times
 * faster. The futures are the same: ip_future_wait, ip_waitfor_next (pool and forked calls
 * may share a list), ip_ready_fd, ip_future_cancel and ip_future_free all work on them.
 *
 * How a pool works, and what that means for its tasks:
 * - Snapshot. ip_pool_new forks a template process, and the template forks the workers; a
 *   worker that dies or retires is replaced by a new fork of the template, never of the
 *   caller. So every worker runs on the caller's memory as it was when ip_pool_new was
 *   called, whatever the caller did since. A task made after its pool cannot run on it: the
 *   call fails with IP_EINVAL. Changing a task's serializers after making a pool fails its
 *   pool calls with IP_EINVAL; its timeout, max_result and stdio policy are read at each call.
 * - Arguments travel. `arg` is encoded in the caller, during ip_pool_call, with the task's
 *   argument serializer (ip_task_set_arg_serializer; raw by default, which takes a
 *   `const ip_bytes *`, NULL being empty), so the caller may free it as soon as the call
 *   returns. The worker's fn gets the decoded value (raw: a `const ip_bytes *`), which lives
 *   until fn returns. ip_future_arg still returns the pointer given.
 * - Results travel as for a forked call: the task's serializer, the in-place path for large
 *   ip_bytes, max_result. A worker runs call after call, so what fn allocates stays allocated
 *   unless fn frees it; ip_bytes buffers made during a call (ip_bytes_alloc, ip_bytes_copy)
 *   are freed by the library once the call's answer is sent, so fn must not keep them.
 * - Failures. A crash, an exit or a kill of a worker fails exactly the call it was running
 *   (IP_ESIGNALED or IP_EEXITED, with the worker's pid, signal and rusage, and a crash's
 *   stack) and the worker is replaced; calls it had not started run on another worker: none
 *   is lost, none runs twice. ip_raise and a result that fails to encode fail the call and
 *   the worker runs on (ip_raise from a thread fn started ends the worker, after the call's
 *   failure is sent). A task timeout counts from the moment a worker starts the call; it
 *   kills that worker (IP_ETIMEDOUT), which is replaced.
 * - Per-fork options do not apply: rlimits, pdeathsig off and ip_task_set_fork are ignored by
 *   pool calls (ip_pool_new_fork sets the pool's fork). ip_task_set_crash_report applies as it
 *   was when the pool was made: a worker installs or takes back its crash handlers when a
 *   call's task wants otherwise than the call before. Workers always die with the caller (and with the
 *   template), each in a process group of its own that dies with it.
 * - ip_future_cancel: a call a worker runs (or is starting) ends with its worker, which is
 *   replaced (IP_ECANCELED, the worker's pid); a call still waiting, in the caller or behind
 *   another call on its worker, is only taken out and never runs (IP_ECANCELED, pid 0).
 * - ip_future_pid of a pool call is the worker's pid once a worker started it (0 before);
 *   ip_future_rusage is zero unless the worker died, then it is the worker's whole usage.
 * - Each worker has one channel and at most two calls sent to it (the one it runs and the
 *   next); the others wait in the caller, in the order they were made, for a free worker.
 *
 * A pool belongs to the process that made it: in a fork child, ip_pool_call fails with
 * IP_EINVAL and ip_pool_free only frees memory. Any thread may use a pool. */
typedef struct ip_pool ip_pool;

/* Forks the template and, from it, `workers` workers, and returns once they all run. NULL
 * with errno EINVAL when workers < 1, or the errno of what failed (EAGAIN: fork, EMFILE:
 * descriptors, ENOMEM); nothing is left behind then. Free with ip_pool_free. */
IP_EXTERN ip_pool *ip_pool_new(int workers);
/* ip_pool_new, with every fork of the pool made by fork_fn(ud) (see ip_task_set_fork): the
 * template's, in the caller, and each worker's, first or replacement, in the template. For a
 * runtime that must see its forks, such as Ruby's Process.fork with its at-fork work and
 * hooks. In the template fork_fn runs with every signal blocked, on the caller's thread as it
 * was inside this call, and must not wait for the caller; a worker starts once fork_fn
 * returned 0 in it. A failure of fork_fn (-1 and errno) is a failure of fork(). fork_fn NULL
 * is ip_pool_new. */
IP_EXTERN ip_pool *ip_pool_new_fork(int workers, ip_fork_fn fork_fn, void *ud);
/* Runs t's fn on a worker with `arg` (see "Arguments travel" above). Returns at once with a
 * future owned by the caller. Fails the future at once with IP_EINVAL (NULL pool or task, a
 * task made after the pool, a pool of the parent process, a pool being freed), IP_EENCODE
 * (the argument could not be encoded), IP_EEXITED (the pool's template died; the pool cannot
 * run calls any more). NULL only when the future itself cannot be allocated. */
IP_EXTERN ip_future *ip_pool_call(ip_pool *p, ip_task *t, const void *arg);
/* ip_pool_call for an argument already encoded with t's argument serializer (`arg`, len
 * bytes, copied before this returns): it travels as it is. ip_future_arg gives `arg` back.
 * Failures as for ip_pool_call (IP_ENOMEM instead of IP_EENCODE). */
IP_EXTERN ip_future *ip_pool_call_encoded(ip_pool *p, ip_task *t, const void *arg, size_t len);
/* The workers the pool has: `workers` from ip_pool_new on, as each replacement comes in with
 * the report of the death it replaces; fewer only while the template cannot fork (RLIMIT_NPROC;
 * it tries again at each event), 0 once the template died. IP_EINVAL for NULL. */
IP_EXTERN int ip_pool_workers(const ip_pool *p);
/* Replaces a worker after it was sent n calls (0, the default: never), between calls: it
 * finishes them, exits, and its replacement takes new ones. 0, or IP_EINVAL for NULL. */
IP_EXTERN int ip_pool_set_max_calls(ip_pool *p, unsigned n);
/* Replaces a worker whose resident memory exceeds `bytes` after a call (0, the default:
 * never). Calls sent to it and not started run elsewhere. 0, or IP_EINVAL for NULL. */
IP_EXTERN int ip_pool_set_max_rss(ip_pool *p, size_t bytes);
/* How t's argument travels to a pool worker: NULL for raw (the default). The serializer
 * must outlive the task. 0, or IP_EINVAL for a NULL task or a serializer of another ABI. */
IP_EXTERN int ip_task_set_arg_serializer(ip_task *t, const ip_serializer *s);
/* Fails the calls still queued or running with IP_ECANCELED (their futures stay the
 * caller's to free), kills the workers and their process groups, reaps them and the
 * template, and frees p. Returns once no process and no descriptor of the pool is left.
 * NULL is ignored. */
IP_EXTERN void ip_pool_free(ip_pool *p);

/* Pool backends. A backend runs a pool's calls somewhere else (libinparallel-mpi: on other
 * MPI ranks). To its users the pool is an ip_pool like any other: ip_pool_call, the futures,
 * waitfor, cancel, ip_pool_workers and ip_pool_free behave as documented above, but for what
 * the backend documents (ip_pool_set_max_calls and ip_pool_set_max_rss are the backend's
 * business and do nothing; tasks may be newer than the pool, as they travel by name). The
 * core encodes each call's argument with the task's argument serializer and gives it to the
 * backend, which completes the call's future with ip_future_finish, from any thread; the
 * result is decoded by the task's serializer on the first look, as for local calls. */
#define IP_BACKEND_ABI 1u
typedef struct ip_backend {
  unsigned abi;     /* IP_BACKEND_ABI */
  const char *name; /* for messages, e.g. "mpi" */
  /* A call of t on the pool. `arg` is its encoded argument (len bytes), valid only during
   * this function, which runs in the thread of ip_pool_call, without the library's locks.
   * Returns 0 when the backend took the call (it will finish f), or a negative code: f then
   * fails with it at once. */
  int (*call)(void *self, ip_future *f, ip_task *t, const void *arg, size_t len);
  /* ip_future_cancel (or ip_future_free) of a call not finished: finish f soon, with
   * IP_ECANCELED unless it ended otherwise first; the canceling thread waits for it. Called
   * without the library's locks. */
  void (*cancel)(void *self, ip_future *f);
  int (*workers)(void *self); /* ip_pool_workers */
  /* ip_pool_free: finish every call not finished (IP_ECANCELED), then release self. */
  void (*free)(void *self);
} ip_backend;

/* A pool whose calls backend `b` runs; `b` is borrowed and must outlive the pool, `self` is
 * b's own. NULL with errno EINVAL (b NULL, another abi, a function missing) or ENOMEM. */
IP_EXTERN ip_pool *ip_pool_new_backend(const ip_backend *b, void *self);
/* Completes f, a call of a backend's pool, with how it ended. e->code 0: a result, whose
 * encoded bytes are `result` (len bytes, from malloc; f takes them). Otherwise the failure e
 * describes: e->code and the rest as ip_error says, strings copied; result must be NULL.
 * Either way e->pid and e->rusage say which process ran the call and what it used. Returns 0;
 * IP_EALREADY when f had completed already (a cancel came first; result is freed); IP_EINVAL
 * for a NULL f or e, or f not a call of a backend's pool (result is freed). */
IP_EXTERN int ip_future_finish(ip_future *f, const ip_error *e, void *result, size_t len);

/* ---------------------------------------------------------------------------------------- */
/* Lists and waitfor                                                                         */

/* A growable array of future pointers, in the order they were pushed. The list does not own
 * the futures: ip_list_free() frees only the list, and you free each future you take out.
 * A future is in at most one list at a time: pushing it into another moves it there. A list
 * is used by one thread at a time (any thread may complete its futures), and a future may
 * only move out of a list that no other thread is using. ip_list_push, ip_list_len and a waitfor step cost O(1)
 * amortized; ip_list_at and ip_list_remove may cost O(n) after waitfor steps. */
IP_EXTERN ip_list *ip_list_new(void); /* NULL with errno ENOMEM */
/* Appends f, taking it out of the list it was in, if another. Returns 0, IP_EINVAL (NULL
 * list or future), IP_EALREADY (f is in this list already), IP_ENOMEM. */
IP_EXTERN int ip_list_push(ip_list *l, ip_future *f);
IP_EXTERN size_t ip_list_len(const ip_list *l);            /* 0 for NULL */
IP_EXTERN ip_future *ip_list_at(const ip_list *l, size_t i); /* NULL when out of range */
/* Removes and returns item i, keeping the order of the others; NULL when out of range. */
IP_EXTERN ip_future *ip_list_remove(ip_list *l, size_t i);
/* Frees the list (not the futures in it, which may then go into another list). NULL is
 * ignored; freeing a list twice is undefined, as for free(). */
IP_EXTERN void ip_list_free(ip_list *l);

/* Iterator state for ip_waitfor_step / ip_waitfor_next. Make one with `ip_waitfor w = IP_WAITFOR_INIT;`; it
 * needs no freeing. Its fields are private. */
typedef struct ip_waitfor {
  unsigned ip__flags;
  size_t ip__ask_len;
  void *ip__reserved[2];
} ip_waitfor;
#define IP_WAITFOR_INIT { 0u, 0u, { NULL, NULL } }

/* What a waitfor step answers, by name (ip_waitfor_step). */
enum {
  IP_WAITFOR_END = 0,    /* the end: the list is empty (with a factor: the last ask added none) */
  IP_WAITFOR_FUTURE = 1, /* *out is a future that completed */
  IP_WAITFOR_ASK = 2     /* start another task, if you have one (*out is NULL) */
};

/* One step of the waitfor loop over the caller's `in_flight` list:
 *
 *   IP_WAITFOR_FUTURE, *out = f   a future that completed, removed from the list; the caller
 *                                 owns it now. Futures come back in completion order.
 *   IP_WAITFOR_ASK, *out = NULL   only with a concurrency factor: fewer than
 *                                 `concurrency_factor` futures are in the list, so start
 *                                 another task (push it) if you have one.
 *   IP_WAITFOR_END                the end: the list is empty (with a factor: and the last ask
 *                                 added none).
 *   IP_ETIMEDOUT    nothing completed within timeout_ms (negative = forever); call again.
 *   IP_EINTR        a host's signal handler ran while waiting and nothing completed (see
 *                   "Signals" at the top); call again to resume.
 *   IP_EINVAL       w, in_flight or out NULL, or concurrency_factor < 0.
 *
 * concurrency_factor 0 means none: it never asks. With a factor it asks again immediately
 * while you keep adding below the factor; once you decline an ask (add nothing) it waits for
 * a completion before asking again; when the list is empty it asks one last time and ends if
 * you add nothing. You may add or remove futures between steps. A step costs O(1) amortized,
 * however long the list. It never busy-waits: a waiting step sleeps in the kernel until a
 * child completes. */
IP_EXTERN int ip_waitfor_step(ip_waitfor *w, ip_list *in_flight, int concurrency_factor,
                              int timeout_ms, ip_future **out);

/* ip_waitfor_step in its first form, kept for the code written against it: an ask is 1 with
 * *out = NULL, like a future, so a loop reads `while (ip_waitfor_next(...) == 1)` and tells
 * the two apart by *out. Everything else is as for ip_waitfor_step. */
IP_EXTERN int ip_waitfor_next(ip_waitfor *w, ip_list *in_flight, int concurrency_factor,
                              int timeout_ms, ip_future **out);

/* A descriptor that becomes readable whenever a future of this process completes, for event
 * loops (poll, epoll, libuv). It is an eventfd: read 8 bytes from it to clear it, then check
 * your futures with ip_future_done() or ip_waitfor_next(..., 0, ...). The first call starts
 * the supervisor thread, so that futures complete while nobody waits in the library. Owned
 * by the library; do not close it. Returns the fd, or a negative code (IP_EAGAIN when the
 * thread cannot start). */
IP_EXTERN int ip_ready_fd(void);

/* Has this process run its supervisor in a thread of its own, as after a timed call, instead
 * of in the threads that wait (see "Threads" at the top). For hosts that call, then compute
 * for a long time before they wait: with the thread, a child's large streamed result is
 * read as it comes and the child exits, rather than waiting on a full socket for the first
 * wait. The thread starts now if calls were made, else at the next call. Returns 0, or
 * IP_EAGAIN / IP_ENOMEM when the thread cannot start (each later call then tries again, and
 * fails the same way). */
IP_EXTERN int ip_use_supervisor_thread(void);

/* ---------------------------------------------------------------------------------------- */
/* Inside the child                                                                          */

/* Fails the current call: the parent's future gets code IP_ERAISED, raised_code = `code`
 * (e.g. ECONNREFUSED, or any number of yours), the formatted message, and this child's
 * backtrace from the caller of ip_raise outwards, one frame per line. Built with elfutils'
 * libdw (configure --with-libdw) a line reads `fn+0x1b (file.c:42) [/path/to/module]`: every
 * function is named, static ones too, with file:line where the module has debug information;
 * without it the lines are glibc's backtrace_symbols(), which names exported functions only
 * (link with -rdynamic). A crash report's backtrace has the same form. Only for code running
 * in a task's child (including threads the child started).
 * Called anywhere else it cannot return to a caller that expects it not to, so it prints an
 * explanation to stderr and abort()s: that is a programming error, like a failed assert. */
IP_EXTERN IP_NORETURN void ip_raise(int code, const char *fmt, ...) IP_PRINTF(2, 3);
IP_EXTERN IP_NORETURN void ip_vraise(int code, const char *fmt, va_list ap) IP_PRINTF(2, 0);
/* For bindings: fail the call with an explicit kind (e.g. an exception class name), message
 * and backtrace text (any may be NULL). `code` is the error code the future reports:
 * IP_ERAISED, IP_EENCODE, IP_EINVAL, IP_E2BIG or IP_ENOMEM; any other becomes IP_ERAISED.
 * Strings longer than 1 MiB are cut. Same rules as ip_raise. */
IP_EXTERN IP_NORETURN void ip_raise_error(int code, int raised_code, const char *kind,
                                          const char *message, const char *backtrace);
/* 1 in the child of a task call (the only place ip_raise may run), else 0. */
IP_EXTERN int ip_in_child(void);

/* A byte buffer for the raw serializer, writable through `data`. In a task's child a buffer
 * of 1 MiB or more is built in place in shared memory and handed to the parent without a
 * copy; return it from fn as is. Elsewhere it is ordinary heap memory. NULL with errno
 * ENOMEM. Free with ip_bytes_free() (never needed for a value returned from fn). */
IP_EXTERN ip_bytes *ip_bytes_alloc(size_t len);
/* ip_bytes_alloc(len) followed by a copy of `data`. NULL with errno ENOMEM or EINVAL. */
IP_EXTERN ip_bytes *ip_bytes_copy(const void *data, size_t len);
/* Frees a buffer from ip_bytes_alloc/ip_bytes_copy; NULL is ignored. Never pass the value of
 * a future: the future owns that. */
IP_EXTERN void ip_bytes_free(ip_bytes *b);
/* For a serializer's inplace member (see "Serializers"), in a task's child: when `b` is a
 * buffer of ip_bytes_alloc() built in shared memory (1 MiB or more), ends its writable life
 * and returns the descriptor that holds it, with b->len in *len. The memfd is cut to b->len
 * bytes and sealed against writing, growing and shrinking; b->data stays readable (a
 * read-only mapping now: writing to it kills the process). The descriptor is owned by the
 * buffer: do not close it. Calling it again returns the same descriptor. -1 for anything else
 * (NULL, a heap buffer, any other ip_bytes, outside a child, or when the kernel refuses the
 * seals), and the buffer is then still readable, for encode() to stream. */
IP_EXTERN int ip_bytes_inplace(const ip_bytes *b, size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* INPARALLEL_H */
