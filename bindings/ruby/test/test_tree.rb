# frozen_string_literal: true

require_relative "test_helper"
require "tmpdir"
require "fileutils"

# A call's whole process tree ends with it: the shell that backticks start in a task, and the
# command the shell runs in the background, end with a timeout, a cancel, the GC's cancel of a
# dropped future, and the death of the calling process.
class TestTree < InParallelTest
  # The shell writes its pids into a FIFO and keeps it open, as does its background sleep: the
  # FIFO reads end of file once every process of the tree has ended.
  SHELL = "exec >%s; sleep 300 & echo $!; echo $$; wait"

  def setup
    super
    @dir = Dir.mktmpdir("inparallel-tree")
    @fifo = File.join(@dir, "pids")
    File.mkfifo(@fifo)
  end

  def teardown
    FileUtils.rm_rf(@dir)
    super
  end

  def shell_task(**opts)
    InParallel.task(**opts) do |path|
      `#{format(SHELL, path)}`
      "the shell ended on its own"
    end
  end

  # Opens the FIFO (which waits for the shell to open it) and reads the two pids.
  def started
    r = File.open(@fifo, "r")
    pids = [r.gets, r.gets].map { |l| Integer(l) }
    [r, pids]
  end

  # Reads the FIFO to its end in a timed call of its own, so that a tree left running fails
  # the test (TaskTimeoutError) instead of hanging it.
  def assert_gone(r, pids, ending)
    reader = InParallel.task(timeout: 20) { r.read }
    err = reader.().error
    r.close
    pids.each { |pid| Process.kill(:KILL, pid) rescue nil } if err
    assert_nil err, "after #{ending}, the shell or its command still runs"
    pids.each do |pid|
      state = File.read("/proc/#{pid}/stat")[/\) (\w)/, 1] rescue nil
      assert(state.nil? || state == "Z", "process #{pid} is #{state}")
    end
  end

  def test_ends_with_a_timeout
    f = shell_task(timeout: 0.3).(@fifo)
    r, pids = started
    assert_instance_of InParallel::TaskTimeoutError, f.error
    assert_gone(r, pids, "a timeout")
  end

  def test_ends_with_a_cancel
    f = shell_task.(@fifo)
    r, pids = started
    assert f.cancel
    assert_gone(r, pids, "a cancel")
  end

  def test_ends_when_the_gc_takes_the_running_future
    t = shell_task
    # In a frame of its own, so no stack slot keeps the future alive.
    start = ->(path) { t.(path).pid }
    child = start.(@fifo)
    r, pids = started
    assert eventually(10) { GC.start(full_mark: true, immediate_sweep: true); !children.include?(child) },
           "the dropped future's child is still there"
    assert_gone(r, pids, "the future's collection")
  end

  def test_ends_with_the_calling_process
    # The caller is itself a call's child: it starts the shell's call and waits for it. Its
    # cancel kills the caller alone (the shell's call leads a group of its own), and the
    # caller's death must end that call's whole tree.
    inner = shell_task
    caller = InParallel.task { |path| inner.(path).value }
    f = caller.(@fifo)
    r, pids = started
    assert f.cancel
    assert_gone(r, pids, "the caller's death")
  end
end
