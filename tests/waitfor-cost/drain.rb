# frozen_string_literal: true

# ruby drain.rb N: N calls on a pool of two workers, all completed, then drained by
# InParallel.waitfor one step per future (see run.sh, which counts the instructions of the steps).
require "inparallel"
n = Integer(ARGV.fetch(0))
one = InParallel.task { 1 }
InParallel.pool(2) do |pool|
  list = Array.new(n) { pool.call(one) }
  list.each { |f| raise "a call failed: #{f.error.inspect}" unless f.value == 1 }
  drained = 0
  InParallel.waitfor(list) { drained += 1 }
  raise "drained #{drained} of #{n}" unless drained == n && list.empty?

  puts "drained #{drained}"
end
