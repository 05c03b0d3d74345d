# The parallel gem (Debian ruby-parallel): Parallel.map(items, in_processes: C) { ... }, which
# forks its C workers for this one map (a thread in the caller feeds each worker one item per
# round trip through pipes, with Marshal) and reaps them before it returns: all timed.
# Workloads: `trivial N C` (x -> x + 1 over 1..N) and `big BYTES` (one item returning a
# BYTES-byte String made before, so the worker has it and only moves it; 1 worker). Before
# the timed run, the same at a tenth of the size, untimed.
#
#   ruby bench/peers/ruby-parallel.rb trivial N C | big BYTES
# Prints one line: peer=ruby-parallel workload=... conc=C n=N|bytes=B seconds=S
require "parallel"

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

def trivial(n, c)
  items = (1..n).to_a
  GC.start
  t0 = now
  sum = Parallel.map(items, in_processes: c) { |x| x + 1 }.sum
  s = now - t0
  raise "wrong sum" unless sum == n * (n + 1) / 2 + n
  s
end

def big(bytes)
  payload = "x" * bytes
  GC.start
  t0 = now
  got = Parallel.map([0], in_processes: 1) { payload }.first
  s = now - t0
  raise "wrong length" unless got.bytesize == bytes
  s
end

workload, *rest = ARGV
case [workload, rest.size]
when ["trivial", 2]
  n, c = rest.map { |a| Integer(a) }
  trivial(n / 10 + 1, c)
  printf("peer=ruby-parallel workload=trivial conc=%d n=%d seconds=%.6f\n", c, n, trivial(n, c))
when ["big", 1]
  bytes = Integer(rest[0])
  big(bytes / 10)
  printf("peer=ruby-parallel workload=big conc=1 bytes=%d seconds=%.6f\n", bytes, big(bytes))
else abort "usage: ruby-parallel.rb trivial N C | big BYTES"
end
