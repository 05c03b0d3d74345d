# Ruby pools and map against Parallel.map(in_processes:) from the parallel gem, in one run:
#   - trivial items (x * 2), 2 workers each: InParallel.map, and InParallel::Pool#call one
#     future per item through waitfor (what a user writes without map);
#   - a 100 MiB String per item (a few items), 2 workers each.
# Rounds interleave the contenders, so drift hits both alike; figures are medians of the
# per-round rates, ratios the median of per-round ratios (> 1: inparallel is faster).
#
#   rake -f bindings/ruby/Rakefile compile && ruby bench/bench-map.rb [--items=N] [--reps=N]
#        [--big-items=N] [--big-mib=N]
in_tree = File.expand_path("../bindings/ruby/lib", __dir__)
$LOAD_PATH.unshift(in_tree) unless Dir[File.join(in_tree, "inparallel", "inparallel.*")].empty?
require "inparallel"
begin
  require "parallel"
rescue LoadError
  abort "bench-map needs the parallel gem (Debian: ruby-parallel)"
end

opts = { items: 20_000, reps: 5, big_items: 4, big_mib: 100 }
ARGV.each do |a|
  case a
  when /\A--items=(\d+)\z/ then opts[:items] = Integer($1)
  when /\A--reps=(\d+)\z/ then opts[:reps] = Integer($1)
  when /\A--big-items=(\d+)\z/ then opts[:big_items] = Integer($1)
  when /\A--big-mib=(\d+)\z/ then opts[:big_mib] = Integer($1)
  else abort "unknown option #{a}"
  end
end

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
def median(xs) = xs.sort[xs.size / 2]

def timed
  GC.start
  t = now
  yield
  now - t
end

WORKERS = 2
DOUBLE = InParallel.task { |x| x * 2 }
BIG = opts[:big_mib] << 20

def check_trivial(out, items)
  raise "wrong results" unless out.size == items.size && out.first == 2 && out.last == items.last * 2
end

def check_big(out, n)
  raise "wrong results" unless out.size == n && out.all? { |s| s.bytesize == BIG }
end

# One future per item on a pool, 2 calls per worker in flight.
def pool_calls(pool, items)
  out = Array.new(items.size)
  active = []
  index = {}.compare_by_identity
  i = 0
  InParallel.waitfor(active, concurrency_factor: 2 * WORKERS) do |f|
    if f
      out[index.delete(f)] = f.value
    elsif i < items.size
      f = pool.call(DOUBLE, items[i])
      index[f] = i
      i += 1
      active << f
    end
  end
  out
end

items = (1..opts[:items]).to_a
big = (1..opts[:big_items]).to_a
rows = Hash.new { |h, k| h[k] = [] }
pool = InParallel::Pool.new(WORKERS)
opts[:reps].times do
  t_par = timed { check_trivial(Parallel.map(items, in_processes: WORKERS) { |x| x * 2 }, items) }
  t_map = timed { check_trivial(InParallel.map(items, workers: WORKERS) { |x| x * 2 }, items) }
  t_call = timed { check_trivial(pool_calls(pool, items), items) }
  rows[:par] << items.size / t_par
  rows[:map] << items.size / t_map
  rows[:call] << items.size / t_call
  rows[:map_ratio] << t_par / t_map
  rows[:call_ratio] << t_par / t_call

  b_par = timed { check_big(Parallel.map(big, in_processes: WORKERS) { |_| "x" * BIG }, big.size) }
  b_map = timed { check_big(InParallel.map(big, workers: WORKERS) { |_| "x" * BIG }, big.size) }
  mib = big.size * opts[:big_mib]
  rows[:bpar] << mib / b_par
  rows[:bmap] << mib / b_map
  rows[:big_ratio] << b_par / b_map
end
pool.close

puts "| what | inparallel | Parallel.map | ratio | target |"
puts "|---|---:|---:|---:|---|"
verdict = ->(r, t) { r >= t ? "meets" : "MISSES" }
printf "| trivial items, InParallel.map(workers: 2) | %.0f items/s | %.0f items/s | %.2fx | >= 1.0x: %s |\n",
       median(rows[:map]), median(rows[:par]), median(rows[:map_ratio]), verdict.(median(rows[:map_ratio]), 1.0)
printf "| trivial items, Pool#call per item (2 workers) | %.0f items/s | %.0f items/s | %.2fx | (no target) |\n",
       median(rows[:call]), median(rows[:par]), median(rows[:call_ratio])
printf "| %d MiB String per item, InParallel.map(workers: 2) | %.0f MiB/s | %.0f MiB/s | %.2fx | >= 1.0x: %s |\n",
       opts[:big_mib], median(rows[:bmap]), median(rows[:bpar]), median(rows[:big_ratio]),
       verdict.(median(rows[:big_ratio]), 1.0)
puts
puts "(median of #{opts[:reps]} interleaved rounds; #{opts[:items]} trivial items, " \
     "#{opts[:big_items]} items of #{opts[:big_mib]} MiB per round; Ruby #{RUBY_VERSION})"
