# inparallel's Ruby binding, two ways (the default :marshal serializer both ways):
#   map   InParallel.map(items, workers: C) { |x| x + 1 }: the map makes its pool, runs the
#         items (in batches, its own choice) and closes the pool, all timed.
#   pool  InParallel.pool(C) { |p| ... }: one p.call(task, x) per item, 2 * C in flight through
#         InParallel.waitfor, then the pool closes; timed from before the pool to after close.
# Workloads: `trivial N C` (x -> x + 1 over 1..N) and `big BYTES` (one item returning a
# BYTES-byte String made before, so the worker has it and only moves it; 1 worker). Before
# the timed run, the same at a tenth of the size, untimed.
#
#   ruby bench/peers/ruby-ip.rb map|pool trivial N C | map|pool big BYTES
# Prints one line: peer=ruby-ip-map|ruby-ip-pool workload=... conc=C n=N|bytes=B seconds=S
in_tree = File.expand_path("../../bindings/ruby/lib", __dir__)
$LOAD_PATH.unshift(in_tree) unless Dir[File.join(in_tree, "inparallel", "inparallel.*")].empty?
require "inparallel"

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

ADD_ONE = InParallel.task { |x| x + 1 }
$payload = nil
GIVE = InParallel.task { $payload }

def trivial(mode, n, c)
  items = (1..n).to_a
  GC.start
  t0 = now
  sum = 0
  if mode == "map"
    sum = InParallel.map(items, workers: c) { |x| x + 1 }.sum
  else
    InParallel.pool(c) do |pool|
      active = []
      i = 0
      InParallel.waitfor(active, concurrency_factor: 2 * c) do |f|
        if f then sum += f.value
        elsif i < n then active << pool.call(ADD_ONE, items[i]) and i += 1
        end
      end
    end
  end
  s = now - t0
  raise "wrong sum" unless sum == n * (n + 1) / 2 + n
  s
end

def big(mode, bytes)
  $payload = "x" * bytes
  GC.start
  t0 = now
  got = if mode == "map" then InParallel.map([0], workers: 1) { $payload }.first
        else InParallel.pool(1) { |pool| pool.call(GIVE).value }
        end
  s = now - t0
  raise "wrong length" unless got.bytesize == bytes
  s
end

mode, workload, *rest = ARGV
usage = "usage: ruby-ip.rb map|pool trivial N C | map|pool big BYTES"
abort usage unless %w[map pool].include?(mode)
case [workload, rest.size]
when ["trivial", 2]
  n, c = rest.map { |a| Integer(a) }
  trivial(mode, n / 10 + 1, c)
  printf("peer=ruby-ip-%s workload=trivial conc=%d n=%d seconds=%.6f\n", mode, c, n, trivial(mode, n, c))
when ["big", 1]
  bytes = Integer(rest[0])
  big(mode, bytes / 10)
  printf("peer=ruby-ip-%s workload=big conc=1 bytes=%d seconds=%.6f\n", mode, bytes, big(mode, bytes))
else abort usage
end
