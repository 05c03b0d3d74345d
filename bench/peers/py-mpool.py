# Python's multiprocessing.Pool(C), the default start method (fork on Linux up to Python
# 3.13). Timed from before the pool to the `with` block's end (which terminates the
# workers).
#   trivial N C  p.map(add_one, range(1, N + 1)): the default chunksize, which sends the
#                items in chunks of about N / (4 * C), pickled
#   big BYTES    p.apply(give) on 1 worker: bytes made before the pool (so the worker has
#                them) and only moved back, pickled.
# Before the timed run, the same at a tenth of the size, untimed.
#
#   /usr/bin/python3 bench/peers/py-mpool.py trivial N C | big BYTES
# Prints one line: peer=py-mpool workload=... conc=C n=N|bytes=B seconds=S
import multiprocessing
import sys
import time

PAYLOAD = b""


def add_one(x):
    return x + 1


def give():
    return PAYLOAD


def trivial(n, c):
    t0 = time.perf_counter()
    with multiprocessing.Pool(c) as p:
        total = sum(p.map(add_one, range(1, n + 1)))
    s = time.perf_counter() - t0
    assert total == n * (n + 1) // 2 + n, "wrong sum"
    return s


def big(nbytes):
    global PAYLOAD
    PAYLOAD = b"x" * nbytes
    t0 = time.perf_counter()
    with multiprocessing.Pool(1) as p:
        got = p.apply(give)
    s = time.perf_counter() - t0
    assert len(got) == nbytes, "wrong length"
    return s


def main(argv):
    if len(argv) == 4 and argv[1] == "trivial":
        n, c = int(argv[2]), int(argv[3])
        trivial(n // 10 + 1, c)
        print(f"peer=py-mpool workload=trivial conc={c} n={n} seconds={trivial(n, c):.6f}")
    elif len(argv) == 3 and argv[1] == "big":
        nbytes = int(argv[2])
        big(nbytes // 10)
        print(f"peer=py-mpool workload=big conc=1 bytes={nbytes} seconds={big(nbytes):.6f}")
    else:
        sys.exit("usage: py-mpool.py trivial N C | big BYTES")


if __name__ == "__main__":
    main(sys.argv)
