# Python's concurrent.futures.ProcessPoolExecutor(max_workers=C), the default start method
# (fork on Linux up to Python 3.13) and the default chunksize (1: one item per round trip,
# pickled, through a queue fed by a thread of the caller). Timed from before the executor
# to after its shutdown (the `with` block's end, which joins the workers).
#   trivial N C  list(ex.map(add_one, range(1, N + 1)))
#   big BYTES    ex.submit(give).result() on 1 worker: bytes made before the executor (so
#                the worker has them) and only moved back, pickled.
# Before the timed run, the same at a tenth of the size, untimed.
#
#   /usr/bin/python3 bench/peers/py-executor.py trivial N C | big BYTES
# Prints one line: peer=py-executor workload=... conc=C n=N|bytes=B seconds=S
import sys
import time
from concurrent.futures import ProcessPoolExecutor

PAYLOAD = b""


def add_one(x):
    return x + 1


def give():
    return PAYLOAD


def trivial(n, c):
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=c) as ex:
        total = sum(ex.map(add_one, range(1, n + 1)))
    s = time.perf_counter() - t0
    assert total == n * (n + 1) // 2 + n, "wrong sum"
    return s


def big(nbytes):
    global PAYLOAD
    PAYLOAD = b"x" * nbytes
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=1) as ex:
        got = ex.submit(give).result()
    s = time.perf_counter() - t0
    assert len(got) == nbytes, "wrong length"
    return s


def main(argv):
    if len(argv) == 4 and argv[1] == "trivial":
        n, c = int(argv[2]), int(argv[3])
        trivial(n // 10 + 1, c)
        print(f"peer=py-executor workload=trivial conc={c} n={n} seconds={trivial(n, c):.6f}")
    elif len(argv) == 3 and argv[1] == "big":
        nbytes = int(argv[2])
        big(nbytes // 10)
        print(f"peer=py-executor workload=big conc=1 bytes={nbytes} seconds={big(nbytes):.6f}")
    else:
        sys.exit("usage: py-executor.py trivial N C | big BYTES")


if __name__ == "__main__":
    main(sys.argv)
