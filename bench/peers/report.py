# The peer chart's aggregation: reads the raw lines of bench/peers/run.sh and writes the
# markdown table and the data the chart is drawn from (peers.gp). Standard library only.
#
#   /usr/bin/python3 bench/peers/report.py peers.raw peers.md peers.dat
#
# A figure is the median over the rounds; a ratio is the median over the rounds of the
# contender's figure divided by the floor's (c-fork's) figure of the same round and workload,
# so that both sides of each ratio were measured a few seconds apart.
import math
import os
import statistics
import sys

FLOOR = "c-fork"

# Display order: calls that fork each time, then pools and maps. (name, label, what is timed)
PEERS = [
    ("c-fork", "inparallel C: ip_call (the floor)",
     "C, `ip_call` per item (a fork each), at most C children at once through "
     "`ip_waitfor_next`; from the first call to the last result summed. 100 MiB: the child "
     "copies the bytes into `ip_bytes_alloc` (they travel in place, a memfd) and the caller "
     "reads every page."),
    ("lua-ip-fork", "inparallel Lua: task(x), fork per call",
     "Lua 5.3, `ip.task(fn)` called per item (a fork each), C at once through "
     "`ip.waitfor(active, C)`, msgpack; from the first call to the last result summed. "
     "100 MiB: one call returning a string made before it."),
    ("lua-posix", "Lua: luaposix fork + pipe per call",
     "Lua 5.3 with luaposix alone: per item a pipe and a fork, the child writes its result "
     "as a string, the parent polls the pipes of at most C children, reads to EOF, reaps and "
     "converts; from the first fork to the last result summed. 100 MiB: one child writing a "
     "string made before the fork."),
    ("gnu-parallel", "GNU parallel -j C, a job per item",
     "`seq 1 N | parallel -j C 'echo $(( {} + 1 ))'` into awk, defaults otherwise (a shell "
     "per job, output grouped through temporary files); the whole command, Perl start "
     "included. 100 MiB: `parallel -j 1 'head -c {} /dev/zero' ::: 104857600 | wc -c`."),
    ("c-pool", "inparallel C: ip_pool_call",
     "C, `ip_pool_new(C)`, `ip_pool_call` per item with 2 * C in flight, `ip_pool_free`; "
     "pool start and end included. 100 MiB: a 1-worker pool, as c-fork's call otherwise."),
    ("lua-ip-map", "inparallel Lua: ip.map",
     "Lua 5.3, `ip.map(fn, list, {workers = C})`: the map makes its pool, runs the items "
     "and closes the pool, all timed. 100 MiB: 1 item, 1 worker."),
    ("ruby-ip-map", "inparallel Ruby: InParallel.map",
     "Ruby, `InParallel.map(items, workers: C) { |x| x + 1 }` (its own pool, items in "
     "batches), all timed. 100 MiB: 1 item, 1 worker, a String made before."),
    ("ruby-ip-pool", "inparallel Ruby: Pool#call",
     "Ruby, `InParallel.pool(C)`, `pool.call(task, x)` per item with 2 * C in flight "
     "through `InParallel.waitfor`, then close; pool start and end included. 100 MiB: "
     "`InParallel.pool(1) { |p| p.call(task).value }`."),
    ("ruby-parallel", "Ruby: Parallel.map, in_processes",
     "Ruby, `Parallel.map(items, in_processes: C) { |x| x + 1 }` (parallel gem: forks C "
     "workers per map, a thread per worker sends one item per round trip, Marshal), all "
     "timed. 100 MiB: `Parallel.map([0], in_processes: 1) { payload }`."),
    ("py-executor", "Python: ProcessPoolExecutor",
     "Python 3 (Debian), `with ProcessPoolExecutor(max_workers=C) as ex: "
     "sum(ex.map(add_one, range(1, N + 1)))`, default start method (fork) and chunksize (1); "
     "executor start and shutdown included. 100 MiB: `ex.submit(give).result()`, 1 worker."),
    ("py-mpool", "Python: multiprocessing.Pool",
     "Python 3 (Debian), `with multiprocessing.Pool(C) as p: sum(p.map(add_one, ...))`, "
     "default start method (fork) and chunksize (about N / (4 * C) items per chunk); pool "
     "start and end included. 100 MiB: `p.apply(give)`, 1 worker."),
]
WORKLOADS = [("trivial", 2), ("trivial", 8), ("big", 1)]


def workload_name(w, c):
    return f"trivial calls, {c} at once" if w == "trivial" else "one 100 MiB result"


def parse(path):
    meta, runs, failed = {}, {}, {}
    with open(path) as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            if words[0] == "meta":
                key, _, value = line[5:].strip().partition("=")
                meta[key] = value
                continue
            kv = dict(w.split("=", 1) for w in words if "=" in w)
            if "failed" in kv:
                failed[kv["peer"]] = failed.get(kv["peer"], 0) + 1
                continue
            if kv["workload"] == "trivial":
                size, rate = int(kv["n"]), int(kv["n"]) / float(kv["seconds"])
            else:
                size = int(kv["bytes"])
                rate = size / 1048576 / float(kv["seconds"])
            key = (kv["peer"], kv["workload"], int(kv["conc"]))
            runs.setdefault(key, {})[int(kv["round"])] = (rate, size)
    return meta, runs, failed


def summarize(runs):
    out = {}
    for (peer, w, c), by_round in runs.items():
        floor = runs.get((FLOOR, w, c), {})
        ratios = [rate / floor[r][0] for r, (rate, _) in by_round.items() if r in floor]
        out[(peer, w, c)] = {
            "rate": statistics.median(rate for rate, _ in by_round.values()),
            "size": next(iter(by_round.values()))[1],
            "rounds": len(by_round),
            "ratio": statistics.median(ratios) if ratios else None,
            "lo": min(ratios) if ratios else None,
            "hi": max(ratios) if ratios else None,
        }
    return out


def fmt_ratio(x):
    if x is None:
        return "n/a"
    return f"{x:.3f}x" if x < 0.1 else f"{x:.2f}x" if x < 10 else f"{x:.0f}x" if x >= 100 else f"{x:.1f}x"


def write_md(path, meta, stats, failed):
    m = meta.get
    lines = [
        "# inparallel and the tools users would pick instead",
        "",
        "Generated by `bash bench/peers/run.sh`: every figure is a ratio to inparallel's C fork per",
        "call (`ip_call`) measured in the same run, higher is better: the median over the rounds of",
        "the contender's figure divided by the floor's figure of the same round. "
        + ("A smoke run (`--quick`): too few calls and rounds to quote. " if m("quick") == "1" else ""),
        "",
        f"Machine: {m('nproc')} CPUs (`nproc`), {m('cpu')}, Linux {m('kernel')}; run on {m('date')}, "
        f"{m('rounds')} interleaved rounds in {m('seconds')} s, load average {m('load_start')} before and "
        f"{m('load_end')} after (other processes share the CPUs: compare ratios, not rates). Versions: inparallel {m('inparallel')}, "
        f"Python {m('python3')} (Debian's `/usr/bin/python3`, stdlib), Ruby {m('ruby')} with parallel "
        f"{m('ruby-parallel')}, Lua {m('lua')} with luaposix {m('lua-posix')}, GNU parallel {m('parallel')}.",
        "",
        "![ratio to C fork per call](peers.png)",
        "",
        "| contender | workload | N | figure (median) | ratio to floor (median) | ratio range over rounds |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for w, c in WORKLOADS:
        for name, label, _ in PEERS:
            s = stats.get((name, w, c))
            if not s:
                lines.append(f"| {label} | {workload_name(w, c)} | | failed | | |")
                continue
            fig = f"{s['rate']:,.0f} calls/s" if w == "trivial" else f"{s['rate']:,.0f} MiB/s"
            n = f"{s['size']:,}" if w == "trivial" else "1"
            rng = f"{fmt_ratio(s['lo'])} - {fmt_ratio(s['hi'])}" if s["lo"] is not None else ""
            lines.append(f"| {label} | {workload_name(w, c)} | {n} | {fig} | {fmt_ratio(s['ratio'])} | {rng} |")
    if failed:
        lines += ["", "Failed runs (left out of the medians): "
                  + ", ".join(f"{p} {k}" for p, k in sorted(failed.items())) + "."]
    lines += [
        "",
        "## What is measured",
        "",
        "Trivial calls: a function of one integer returning it plus one, over 1..N; the caller "
        "checks the sum of the results. C is the concurrency: the children alive at once for a "
        "fork per call, the workers of a pool. 100 MiB: one call whose result, bytes made before "
        "the call (a forked child or a pool's worker inherits them), ends up whole in the caller. "
        "Every program runs the same measurement once at a tenth of the size, untimed, before the "
        "timed one; interpreter start is never timed. Every pool or map is timed from before it "
        "is made to after it is closed: what N calls cost a program that has no pool yet.",
        "",
    ]
    lines += [f"- **{label}** (`{name}`): {what}" for name, label, what in PEERS]
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write_dat(path, meta, stats):
    values = []
    with open(path, "w") as f:
        f.write("# row label ratio(trivial c=2) ratio(trivial c=8) ratio(100 MiB)\n")
        for i, (name, label, _) in enumerate(PEERS):
            row = []
            for w, c in WORKLOADS:
                r = stats.get((name, w, c), {}).get("ratio")
                row.append("NaN" if r is None else f"{r:.4g}")
                if r:
                    values.append(r)
            f.write(f'{i} "{label}" {" ".join(row)}\n')
    lo = 10 ** math.floor(math.log10(min(values) / 2)) if values else 0.01
    hi = 10 ** math.ceil(math.log10(max(values) * 2)) if values else 100
    with open(path + ".range", "w") as f:
        f.write(f"xmin={lo:g}; xmax={hi:g}; rows={len(PEERS)}; ")
        f.write(f"sub='{meta.get('nproc')} CPUs, medians of {meta.get('rounds')} interleaved rounds "
                f"(bench/peers/run.sh)'\n")


def main(argv):
    if len(argv) != 4:
        sys.exit("usage: report.py peers.raw peers.md peers.dat")
    meta, runs, failed = parse(argv[1])
    stats = summarize(runs)
    write_md(argv[2], meta, stats, failed)
    write_dat(argv[3], meta, stats)
    print(open(argv[2]).read().split("## What is measured")[0].rstrip(), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
