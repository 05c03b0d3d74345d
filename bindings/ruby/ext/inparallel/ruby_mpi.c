/* InParallel::MPI's C half: libinparallel-mpi (include/inparallel/mpi.h), compiled into this
 * extension with the core when extconf.rb found MPI (RBIP_HAVE_MPI), so that it works on the
 * extension's one copy of the core. lib/inparallel/mpi.rb is the API; these private methods
 * answer nil or a value, or [code name, message] for a failure, which Ruby raises.
 *
 * A rank that serves (ip_mpi_pool on a rank that is not the root) stays inside MPI.__pool,
 * holding the GVL, until the root closes its pool: it runs no Ruby code of its own meanwhile,
 * only the forks of the calls, through Process.fork (the tasks' fork hook, and
 * ip_mpi_set_fork for a reused process). Each call's child runs the task as a pool worker
 * does (Task#__pool_child): the Task is found from the argument serializer, so every named
 * Task is pinned (alive, not moved) while the rank serves. The slot of the arguments is
 * always -1: an MPI pool hands out no progress slots (lib/inparallel/mpi.rb).
 *
 * Signals while serving: Ruby's handlers only note a signal for the VM to act on between Ruby
 * steps, and a serving rank takes none, so SIGINT, SIGTERM and SIGHUP would be noted and
 * never acted on. Those three get their default action instead (unless ignored): the rank
 * ends at once, as a C program would, and the children of its calls die with it (the core's
 * lifeline); mpirun, which is what sends them, then ends the job. Each child gets Ruby's
 * handlers back as it starts, so a task sees the signals as a forked call does. */
#include "ruby_inparallel.h"
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#ifdef RBIP_HAVE_MPI
#include <inparallel/mpi.h>
#endif

static VALUE mMPI;

#ifdef RBIP_HAVE_MPI

/* The process that started MPI: a fork child (a user's fork, whose at_exit runs) has MPI's
 * memory but not MPI, and must leave it alone. */
static pid_t inited_pid;

static VALUE failure(int code, const char *msg) {
  return rb_ary_new_from_args(2, rb_str_new_cstr(ip_err_name(code)), rb_utf8_str_new_cstr(msg));
}

static int mpi_state(void) { /* 0: not started, 1: running, 2: ended */
  int on = 0, off = 0;
  MPI_Initialized(&on);
  if (on) MPI_Finalized(&off);
  return off ? 2 : on;
}

/* MPI.__init: ip_mpi_init. The GVL stays held: MPI_Init_thread cannot be interrupted, and the
 * check of the tasks must see them as they are now. */
static VALUE m_init(VALUE mod) {
  if (mpi_state() == 2) return failure(IP_EINVAL, "inparallel-mpi: MPI has ended in this process (MPI.finalize); it cannot start again");
  int rc = ip_mpi_init(NULL, NULL);
  /* Failed or not, MPI runs if it started: finalize must end it, or mpirun fails the job. */
  if (!inited_pid && mpi_state() == 1) inited_pid = getpid();
  return rc < 0 ? failure(rc, ip_mpi_errmsg()) : Qnil;
}

/* ---- serving -------------------------------------------------------------------------------- */

static const int ending_signals[] = {SIGINT, SIGTERM, SIGHUP};
#define N_ENDING (sizeof ending_signals / sizeof *ending_signals)
static struct sigaction ruby_actions[N_ENDING];
static int replaced[N_ENDING];

static void signals_default(void) {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (size_t i = 0; i < N_ENDING; i++) {
    replaced[i] = 0;
    if (sigaction(ending_signals[i], NULL, &ruby_actions[i]) != 0) continue;
    if (!(ruby_actions[i].sa_flags & SA_SIGINFO) && ruby_actions[i].sa_handler == SIG_IGN) continue;
    replaced[i] = sigaction(ending_signals[i], &dfl, NULL) == 0;
  }
}

static void signals_ruby(void) {
  for (size_t i = 0; i < N_ENDING; i++)
    if (replaced[i]) sigaction(ending_signals[i], &ruby_actions[i], NULL);
  memset(replaced, 0, sizeof replaced);
}

/* MPI.__pool(root, reuse, pinned, pool): ip_mpi_pool over MPI_COMM_WORLD. `pool` is an
 * MPI::Pool allocated beforehand (nothing can fail between getting the ip_pool and handing it
 * over) and holds the pins while this rank serves. :root when `pool` became the root's pool,
 * nil when this rank served until the root closed it, or a failure. */
static VALUE m_pool(VALUE mod, VALUE root, VALUE reuse, VALUE pinned, VALUE pool) {
  int r = NUM2INT(root);
  Check_Type(pinned, T_ARRAY);
  if (mpi_state() != 1) return failure(IP_EINVAL, "inparallel-mpi: InParallel::MPI.pool before InParallel::MPI.init");
  rbip_pool_adopt(pool, NULL, pinned);
  ip_mpi_set_reuse(RTEST(reuse));
  ip_mpi_set_fork(rbip_fork, NULL);
  signals_default();
  rbip_fork_child_hook = signals_ruby;
  errno = 0;
  ip_pool *p = ip_mpi_pool(MPI_COMM_WORLD, r);
  int err = errno;
  rbip_fork_child_hook = NULL;
  signals_ruby();
  if (p) {
    rbip_pool_adopt(pool, p, pinned);
    RB_GC_GUARD(pinned);
    return ID2SYM(rb_intern("root"));
  }
  rbip_pool_adopt(pool, NULL, Qnil);
  RB_GC_GUARD(pool);
  RB_GC_GUARD(pinned);
  /* A fork that an exception interrupted (a trap's handler, say) failed its call; the
   * exception is this rank's, raised now that the root let it go. */
  rbip_fork_rethrow();
  return err ? failure(-err, ip_mpi_errmsg()) : Qnil;
}

/* MPI.__rank / MPI.__size: of MPI_COMM_WORLD; nil unless MPI runs. */
static VALUE m_rank(VALUE mod) {
  int n = 0;
  if (mpi_state() != 1) return Qnil;
  MPI_Comm_rank(MPI_COMM_WORLD, &n);
  return INT2NUM(n);
}

static VALUE m_size(VALUE mod) {
  int n = 0;
  if (mpi_state() != 1) return Qnil;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return INT2NUM(n);
}

/* MPI.__finalize: closes the root's pools still open (their objects stay, closed), then
 * ip_mpi_finalize. Only in the process that started MPI. */
static VALUE m_finalize(VALUE mod) {
  if (!inited_pid || inited_pid != getpid()) return Qnil;
  rbip_pool_close_backends();
  inited_pid = 0;
  int rc = ip_mpi_finalize();
  return rc < 0 ? failure(rc, ip_mpi_errmsg()) : Qnil;
}

/* MPI.__started: whether this process started MPI with MPI.init and has not ended it. */
static VALUE m_started(VALUE mod) { return inited_pid && inited_pid == getpid() ? Qtrue : Qfalse; }

static VALUE m_built(VALUE mod) { return Qtrue; }
#else
static VALUE m_built(VALUE mod) { return Qfalse; }
#endif

void rbip_init_mpi(void) {
  mMPI = rb_define_module_under(rbip_mInParallel, "MPI");
  /* MPI.__built: whether this extension has libinparallel-mpi. */
  rb_define_private_method(rb_singleton_class(mMPI), "__built", m_built, 0);
#ifdef RBIP_HAVE_MPI
  rb_define_private_method(rb_singleton_class(mMPI), "__init", m_init, 0);
  rb_define_private_method(rb_singleton_class(mMPI), "__pool", m_pool, 4);
  rb_define_private_method(rb_singleton_class(mMPI), "__rank", m_rank, 0);
  rb_define_private_method(rb_singleton_class(mMPI), "__size", m_size, 0);
  rb_define_private_method(rb_singleton_class(mMPI), "__finalize", m_finalize, 0);
  rb_define_private_method(rb_singleton_class(mMPI), "__started", m_started, 0);
#endif
}
