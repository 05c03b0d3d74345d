# frozen_string_literal: true

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
require "minitest/autorun"
require "inparallel"

module Hygiene
  # pids of this process's children (zombies included), from /proc.
  def children
    Dir.children("/proc").grep(/\A\d+\z/).select do |pid|
      File.read("/proc/#{pid}/stat")[/\) \S (\d+)/, 1].to_i == Process.pid
    rescue SystemCallError
      false
    end.map(&:to_i)
  end

  def fd_count = Dir.children("/proc/self/fd").size

  # Waits up to 5 s for `cond` (the supervisor reaps asynchronously).
  def eventually(timeout = 5)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      return true if yield
      return false if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.02
    end
  end

  def assert_no_children
    assert eventually { children.empty? }, "children left: #{children.inspect}"
  end
end

class InParallelTest < Minitest::Test
  include Hygiene
end
