# frozen_string_literal: true

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
require "minitest/autorun"
require "inparallel"

# Where a Ruby that a test starts finds the gem: lib/ here and the directory the extension was
# loaded from, which is elsewhere when the build tree is not the source tree (make check-ruby).
GEM_LOAD_PATH = [File.expand_path("../lib", __dir__),
                 *$LOADED_FEATURES.grep(%r{/inparallel/inparallel\.[^/]+\z}).map { |f| File.dirname(f, 2) }].uniq.freeze
GEM_LOAD_PATH_CODE = "$LOAD_PATH.unshift(*#{GEM_LOAD_PATH.inspect})"

module Minitest
  # Minitest's summary only counts skips ("S" in the progress line): this names each skipped
  # test and why, one "skipped: Class#test: why" line each after the summary (scripts/test.sh
  # lists them in its own summary).
  class SkipListReporter < AbstractReporter
    def initialize(io)
      super()
      @io = io
      @skips = []
    end

    def record(result)
      @skips << result if result.skipped?
    end

    def report
      @skips.each { |r| @io.puts "skipped: #{r.class_name}##{r.name}: #{r.failure.message}" }
    end
  end

  def self.plugin_skip_list_init(options)
    reporter << SkipListReporter.new(options[:io])
  end
end
Minitest.load_plugins # what Minitest.run does first, but only while no extension is known
Minitest.extensions << "skip_list"

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

  # True while thread `tid` of process `pid` sleeps in the library's wait: in epoll_wait (the
  # thread that drives) or ppoll (one that waits beside it), by the system call /proc shows;
  # on an architecture not listed here, by the kernel function it sleeps in (names vary).
  WAIT_SYSCALLS = { "x86_64" => [232, 281, 271, 7], "aarch64" => [22, 73] }.freeze
  def asleep_in_wait?(pid, tid = pid)
    if (nrs = WAIT_SYSCALLS[RbConfig::CONFIG["host_cpu"]])
      nrs.include?(File.read("/proc/#{pid}/task/#{tid}/syscall").to_i)
    else
      File.read("/proc/#{pid}/task/#{tid}/wchan").include?("poll")
    end
  rescue SystemCallError
    false
  end

  # A call that another test left running, its future no longer referenced, ends when the
  # garbage collector frees that future (its child is killed and reaped then): collect, so only
  # a child the library lost counts. Tests run in random order, so such a future may be there.
  def assert_no_children
    assert eventually { children.empty? || (GC.start(full_mark: true, immediate_sweep: true) && false) },
           "children left: #{children.map { |pid| describe_process(pid) }.join('; ')}"
  end

  # "pid (state, command line, parent)" from /proc, for a failure message.
  def describe_process(pid)
    stat = File.read("/proc/#{pid}/stat")
    cmd = File.read("/proc/#{pid}/cmdline").tr("\0", " ").strip
    "#{pid} (state #{stat[/\) (\S)/, 1]}, #{cmd.empty? ? stat[/\((.*)\)/, 1] : cmd}, ppid #{stat[/\) \S (\d+)/, 1]})"
  rescue SystemCallError
    "#{pid} (gone)"
  end
end

class InParallelTest < Minitest::Test
  include Hygiene
end
