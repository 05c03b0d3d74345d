/* inparallel over MPI: a pool whose workers are the other ranks of an MPI job.
 *
 *     #include <inparallel/mpi.h>              // link: pkg-config inparallel-mpi
 *
 *     static void *get_os(void *arg) { ... }   // runs on a worker rank, in a forked child
 *
 *     int main(int argc, char **argv) {
 *       ip_task *t = ip_task_new(get_os, NULL);
 *       ip_task_set_name(t, "get_os");          // every rank names the same tasks
 *       if (ip_mpi_init(&argc, &argv) < 0) { fprintf(stderr, "%s\n", ip_mpi_errmsg()); return 1; }
 *       ip_pool *pool = ip_mpi_pool(MPI_COMM_WORLD, 0);
 *       if (pool) {                             // rank 0: calls, futures, waitfor as on any pool
 *         ...
 *         ip_pool_free(pool);                   // the other ranks' ip_mpi_pool return now
 *       } else if (errno) { fprintf(stderr, "%s\n", ip_mpi_errmsg()); }
 *       ip_mpi_finalize();
 *     }
 *
 *     mpirun -np 4 ./prog                       // rank 0 and 3 worker ranks
 *
 * Every rank runs the same program. Tasks travel by name (ip_task_set_name); arguments and
 * results through the task's serializers, as on a local pool: the argument is encoded on the
 * root with the task's argument serializer and decoded on the worker rank, the result the
 * other way with the task's serializer. ip_mpi_init and ip_mpi_pool check that every rank
 * named the same tasks with the same serializers; if not, they fail on every rank with the
 * same message, which names the first difference.
 *
 * On the root, the pool is an ip_pool like a local one: ip_pool_call, the futures,
 * ip_waitfor_step, ip_future_cancel, ip_pool_workers (the worker ranks) and ip_pool_free
 * behave as the core's header says for pools, except:
 * - A worker rank runs each call in a child forked for it (ip_call_encoded), with the task's
 *   options as that rank has them (timeout, rlimits, max_result, ...). A crash, a timeout, an
 *   exit or an out-of-memory kill fails that call's future and the rank serves on.
 *   ip_mpi_set_reuse(1) runs the calls in one pre-forked process per rank instead, reused
 *   call after call (a local pool of one worker): no fork per call, still no crash that a
 *   rank does not survive; the pool rules of the core's header then apply on each rank
 *   (workers are copies made when the rank started serving).
 * - Tasks may be newer than the pool, but a call's task must have been named when ip_mpi_pool
 *   checked the ranks' tasks (the ranks know those): a call of a task unnamed then, or of no
 *   name at all, fails at once with IP_EINVAL and a message that says which.
 * - A rank runs one call at a time and holds the next; the root keeps the rest queued.
 * - ip_future_pid is the pid, on its rank's host, of the process that ran the call;
 *   ip_future_rusage is that process's usage.
 * - ip_pool_set_max_calls and ip_pool_set_max_rss do nothing.
 * - MPI gives no descriptor to sleep on, so a thread of the library on the root polls MPI
 *   while calls are out, backing off, while nothing comes, to one look per millisecond, then
 *   to looks a 32nd of the time nothing came apart, at most 10 ms: a result is seen at most
 *   that late, and calls that run long cost the root a few ms of CPU per second; with
 *   nothing out it sleeps. Worker ranks look at MPI the same way while a call runs, and
 *   once per millisecond while idle. The core's waits (ip_future_wait, ip_waitfor_step)
 *   still sleep in the kernel.
 *
 * Failures of whole ranks: with an MPI without fault tolerance (Open MPI 4.x, MPICH) the
 * death of a rank ends the job: mpirun kills the other ranks and exits non-zero. Built
 * against an Open MPI with ULFM (5.x configured --with-ft=ulfm), the calls out on a dead
 * rank fail with IP_EEXITED ("rank N died") and the pool goes on with the others.
 *
 * Threads: ip_mpi_init initializes MPI with MPI_THREAD_MULTIPLE, which the root's thread
 * needs; a program that initialized MPI itself must have asked for it.
 */
#ifndef INPARALLEL_MPI_H
#define INPARALLEL_MPI_H

#include <inparallel.h>
#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sets up MPI and checks the ranks' tasks. Call it on every rank, after naming the tasks: it
 * initializes MPI (MPI_Init_thread with MPI_THREAD_MULTIPLE) unless the program did, then
 * checks over MPI_COMM_WORLD that every rank named the same tasks with the same serializers.
 * Collective. Returns 0, or on every rank alike: IP_EINVAL when the ranks' tasks differ, or MPI was initialized with a thread
 * level below MPI_THREAD_MULTIPLE; IP_EPROTO when MPI failed. ip_mpi_errmsg says which. */
IP_EXTERN int ip_mpi_init(int *argc, char ***argv);

/* The root's pool over comm's other ranks; on those ranks, their service. Collective over comm
 * (which it duplicates; MPI_COMM_WORLD or any other). On `root`: checks
 * the tasks again (as ip_mpi_init) and returns a pool whose workers are comm's other ranks;
 * free it with ip_pool_free, which ends their service. On every other rank: serves the root's
 * calls until the root frees its pool, then returns NULL with errno 0. NULL with errno set on
 * failure, on every rank alike (ip_mpi_errmsg says why): EINVAL (ip_mpi_init not called, a
 * bad root, the tasks differ, comm has one rank), EPROTO (MPI failed), ENOMEM. */
IP_EXTERN ip_pool *ip_mpi_pool(MPI_Comm comm, int root);

/* Whether worker ranks reuse one process for their calls. On: each worker rank runs its calls
 * in one pre-forked process, reused call after call; off (the default): in a process forked
 * per call. The root's setting counts: ip_mpi_pool sends it
 * to the worker ranks, so it applies from the next ip_mpi_pool on. Returns 0. */
IP_EXTERN int ip_mpi_set_reuse(int on);

/* How a worker rank forks the process it reuses (ip_mpi_set_reuse) and that process's
 * replacements: fork_fn(ud), as ip_pool_new_fork takes it, for a runtime that must see its
 * forks (Ruby's Process.fork). NULL (the default) forks with fork(). Each rank's own setting
 * counts. Calls forked one by one use their task's fork (ip_task_set_fork). Returns 0. */
IP_EXTERN int ip_mpi_set_fork(ip_fork_fn fork_fn, void *ud);

/* Ends MPI if ip_mpi_init started it (MPI_Finalize), also after ip_mpi_init failed the check of
 * the tasks (MPI had started; every rank is then alike). On the root, a pool not freed is freed
 * first, so the worker ranks stop serving. In a fork child of the process that started MPI it
 * does nothing: MPI and the pools are the parent's. 0, or IP_EPROTO when MPI failed. */
IP_EXTERN int ip_mpi_finalize(void);

/* The message of the last failure of an ip_mpi_ function in this process: one line. Static storage
 * of the library's, valid until the next failure; "" if none failed. */
IP_EXTERN const char *ip_mpi_errmsg(void);

#ifdef __cplusplus
}
#endif

#endif
