# frozen_string_literal: true

# What one step of InParallel.waitfor costs as the list grows: a list of n futures that have
# all completed is drained; the cost per step at n = 10,000 is set against n = 100 in the same
# run (target: within 1.5x). The futures are real calls, completed before the drain starts;
# each drain refills a list for the next round, so the forks are paid once. Rounds interleave
# the sizes; the figure is the median. The drain only hands futures back, so it is timed in
# this process's CPU time, which a busy machine disturbs less than the wall clock.
#
#   ruby -Ibindings/ruby/lib bench/bench-waitfor.rb [rounds]
require "inparallel"

rounds = Integer(ARGV[0] || 9)
sizes = [100, 10_000]
one = InParallel.task { 1 }

completed = lambda do |n|
  list = []
  n.times.each_slice(64) do |slice| # at most 64 calls in flight (descriptors)
    batch = slice.map { one.() }
    batch.each(&:wait)
    list.concat(batch)
  end
  list
end

drain = lambda do |list|
  n = list.size
  got = []
  t0 = Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID)
  InParallel.waitfor(list) { |f| got << f }
  dt = Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID) - t0
  raise "drained #{got.size} of #{n}" unless got.size == n && list.empty?

  [got, dt / n]
end

lists = sizes.map { |n| completed.(n) }
per = sizes.map { [] }
rounds.times do
  sizes.each_index do |s|
    lists[s], t = drain.(lists[s])
    per[s] << t
  end
end

puts "| futures drained | us per step (median of #{rounds}, ruby #{RUBY_VERSION}) | vs #{sizes[0]} |"
puts "|---:|---:|---:|"
med = per.map { |v| v.sort[v.size / 2] }
sizes.each_with_index do |n, s|
  puts format("| %d | %.2f | %.2fx |", n, med[s] * 1e6, med[s] / med[0])
end
ratio = med[-1] / med[0]
puts format("\nstep cost at %d against %d: %.2fx (target <= 1.5x): %s", sizes[-1], sizes[0], ratio,
            ratio <= 1.5 ? "meets" : "MISSES")
