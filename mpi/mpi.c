/* libinparallel-mpi's entry points: MPI's set-up and end, the pool, the last error's words. */
#include "ipm.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char errmsg[1024];
static bool started_mpi, inited, reuse;
static pid_t mpi_pid; /* the process that started MPI: a fork child of it must not end MPI */

int ipm_fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errmsg, sizeof errmsg, fmt, ap);
  va_end(ap);
  return code;
}

int ipm_mpi_fail(int mpi_rc, const char *what) {
  char text[MPI_MAX_ERROR_STRING];
  int n = 0;
  if (MPI_Error_string(mpi_rc, text, &n) != MPI_SUCCESS) n = 0;
  text[n] = '\0';
  return ipm_fail(IP_EPROTO, "inparallel-mpi: %s: %s", what, n ? text : "MPI failed");
}

const char *ip_mpi_errmsg(void) { return errmsg; }

int ip_mpi_set_reuse(int on) {
  reuse = on != 0;
  return 0;
}

ip_fork_fn ipm_fork_fn;
void *ipm_fork_ud;

int ip_mpi_set_fork(ip_fork_fn fork_fn, void *ud) {
  ipm_fork_fn = fork_fn;
  ipm_fork_ud = ud;
  return 0;
}

int ip_mpi_init(int *argc, char ***argv) {
  int flag = 0, level = MPI_THREAD_SINGLE, rc;
  MPI_Initialized(&flag);
  if (!flag) {
    if ((rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &level)) != MPI_SUCCESS)
      return ipm_mpi_fail(rc, "MPI_Init_thread");
    started_mpi = true;
    mpi_pid = getpid();
  } else if ((rc = MPI_Query_thread(&level)) != MPI_SUCCESS) {
    return ipm_mpi_fail(rc, "MPI_Query_thread");
  }
  if (level < MPI_THREAD_MULTIPLE)
    return ipm_fail(IP_EINVAL, "inparallel-mpi: MPI was initialized with thread level %d, "
                    "below MPI_THREAD_MULTIPLE (%d), which the root's thread needs: call "
                    "MPI_Init_thread with MPI_THREAD_MULTIPLE, or let ip_mpi_init do it",
                    level, MPI_THREAD_MULTIPLE);
  if ((rc = ipm_registry_check(MPI_COMM_WORLD, 0, reuse, NULL)) < 0) return rc;
  inited = true;
  return 0;
}

ip_pool *ip_mpi_pool(MPI_Comm comm, int root) {
  int size = 0, me = 0, rc;
  if (!inited) {
    ipm_fail(IP_EINVAL, "inparallel-mpi: ip_mpi_pool before ip_mpi_init");
    errno = EINVAL;
    return NULL;
  }
  if (comm == MPI_COMM_NULL || MPI_Comm_size(comm, &size) != MPI_SUCCESS ||
      MPI_Comm_rank(comm, &me) != MPI_SUCCESS) {
    ipm_fail(IP_EINVAL, "inparallel-mpi: ip_mpi_pool: not a communicator");
    errno = EINVAL;
    return NULL;
  }
  if (root < 0 || root >= size || size < 2) {
    ipm_fail(IP_EINVAL, size < 2 ? "inparallel-mpi: ip_mpi_pool: the communicator has one rank, "
                                   "so no rank is left to serve calls (mpirun -np 2 or more)"
                                 : "inparallel-mpi: ip_mpi_pool: root %d is not a rank of the "
                                   "communicator (0 to %d)", root, size - 1);
    errno = EINVAL;
    return NULL;
  }
  MPI_Comm c;
  if ((rc = MPI_Comm_dup(comm, &c)) != MPI_SUCCESS) {
    ipm_mpi_fail(rc, "MPI_Comm_dup");
    errno = EPROTO;
    return NULL;
  }
  /* Errors come back as codes: they become messages, not an abort in the library. */
  MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
  struct ipm_registry reg;
  if ((rc = ipm_registry_check(c, root, reuse, &reg)) < 0) {
    MPI_Comm_free(&c);
    errno = -rc;
    return NULL;
  }
  if (me == root) return ipm_root_pool(c, root, &reg); /* it owns c and reg */
  rc = ipm_serve(c, root, &reg);
  errno = rc < 0 ? -rc : 0;
  return NULL;
}

int ip_mpi_finalize(void) {
  /* A fork child (a call's, on a rank) has a copy of the pools and of MPI's state: both are the
   * parent's to end. */
  if (started_mpi && getpid() != mpi_pid) return 0;
  ipm_root_pools_free();
  inited = false;
  if (!started_mpi) return 0;
  started_mpi = false;
  int rc = MPI_Finalize();
  return rc == MPI_SUCCESS ? 0 : ipm_mpi_fail(rc, "MPI_Finalize");
}

int ipm_send_more(const unsigned char *p, uint64_t len, int dest, MPI_Comm comm) {
  while (len) {
    size_t n = len < IPM_CHUNK ? (size_t)len : IPM_CHUNK;
    int rc = MPI_Send(p, (int)n, MPI_BYTE, dest, IPM_TAG_MORE, comm);
    if (rc != MPI_SUCCESS) return rc;
    p += n, len -= n;
  }
  return MPI_SUCCESS;
}

int ipm_recv_more(unsigned char *p, uint64_t len, int src, MPI_Comm comm) {
  while (len) {
    size_t n = len < IPM_CHUNK ? (size_t)len : IPM_CHUNK;
    int rc = MPI_Recv(p, (int)n, MPI_BYTE, src, IPM_TAG_MORE, comm, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return rc;
    p += n, len -= n;
  }
  return MPI_SUCCESS;
}
