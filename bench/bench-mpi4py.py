"""bench-mpi4py: the mpi4py.futures side of bench/bench-mpi.sh, the same parts as
bench/bench-mpi.c, run as

    mpiexec -n 4 python3 -m mpi4py.futures bench/bench-mpi4py.py \
        [--calls=N] [--big-calls=M] [--sleep-ms=T] [--chunksize=K]

Rank 0 runs this script's main part; the 3 others are the MPIPoolExecutor's workers. Pool
start-up is not timed (executor.bootup(), then a warm map of a tenth of the calls).

  trivial   N calls (default 20,000) of a function returning its argument + 1, through
            executor.map(fn, range(N)) with the default chunksize=1; timed on the root from
            the map call to the last result taken (summed, then checked). "trivial CALLS_PER_S".
  chunked   the same with chunksize=K, when --chunksize=K is given. "chunked CALLS_PER_S".
  big       M calls (default 40) each returning a 10 MiB bytes object (bytes([i & 255]) *
            10 MiB: one allocation and a memset, like bench-mpi's ip_bytes_alloc + memset);
            the root checks each result's length and first and last byte. "big MIB_PER_S".
  cpu       3 calls, each sleeping T ms (default 2000) on a worker: the root process's CPU
            time (getrusage RUSAGE_SELF: every thread, the executor's manager included) from
            before the map to after the last result, per second of that wall time.
            "cpu MS_PER_S".
"""
import resource
import sys
import time

from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor

MIB = 1 << 20
BIG = 10 * MIB


def plus_one(x):
    return x + 1


def ten_mib(i):
    return bytes([i & 0xFF]) * BIG


def sleeper(ms):
    time.sleep(ms / 1000.0)


def cpu_s():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def trivial(ex, n, chunksize=1):
    t0 = time.perf_counter()
    total = sum(ex.map(plus_one, range(n), chunksize=chunksize))
    s = time.perf_counter() - t0
    if total != n * (n + 1) // 2:
        raise SystemExit("bench-mpi4py: trivial calls: wrong sum")
    return s


def big(ex, m):
    t0 = time.perf_counter()
    total = 0
    for v in ex.map(ten_mib, range(m)):
        if len(v) != BIG or v[0] != v[-1]:
            raise SystemExit("bench-mpi4py: a 10 MiB result is wrong")
        total += v[0]
    s = time.perf_counter() - t0
    if total != sum(i & 0xFF for i in range(m)):
        raise SystemExit("bench-mpi4py: 10 MiB calls: wrong bytes")
    return s


def main():
    calls, big_calls, sleep_ms, chunksize = 20000, 40, 2000, 0
    for a in sys.argv[1:]:
        k, _, v = a.partition("=")
        if k == "--calls":
            calls = int(v)
        elif k == "--big-calls":
            big_calls = int(v)
        elif k == "--sleep-ms":
            sleep_ms = int(v)
        elif k == "--chunksize":
            chunksize = int(v)
        else:
            raise SystemExit("usage: mpiexec -n 4 python3 -m mpi4py.futures bench-mpi4py.py "
                             "[--calls=N] [--big-calls=M] [--sleep-ms=T] [--chunksize=K]")
    with MPIPoolExecutor() as ex:
        ex.bootup(wait=True)
        # mpi4py 4 has num_workers; in 3.x, under -m mpi4py.futures, the other ranks
        workers = getattr(ex, "num_workers", None) or MPI.COMM_WORLD.Get_size() - 1

        trivial(ex, calls // 10)  # warm
        print("trivial %.1f" % (calls / trivial(ex, calls)), flush=True)
        if chunksize > 1:
            trivial(ex, calls // 10, chunksize)
            print("chunked %.1f" % (calls / trivial(ex, calls, chunksize)), flush=True)

        big(ex, max(big_calls // 10, workers))  # warm
        print("big %.1f" % (big_calls * 10 / big(ex, big_calls)), flush=True)

        c0, t0 = cpu_s(), time.perf_counter()
        list(ex.map(sleeper, [sleep_ms] * 3))
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        print("cpu %.2f" % (cpu * 1000 / wall))
        print("cpu_wall %.3f" % wall, flush=True)


if __name__ == "__main__":
    main()
