# frozen_string_literal: true

require_relative "test_helper"
require "open3"
require "rbconfig"

class TestHygiene < InParallelTest
  def test_no_zombies_or_descriptors_left
    # First the descriptors the library keeps for good: its supervisor's, and this thread's
    # waiter (an eventfd the thread keeps for its life, made by its first wait that sleeps).
    # The warm-up call waits on a pipe, so the wait for it surely sleeps; a call that had
    # already ended would make no waiter, and the first sleeping wait below would.
    r, w = IO.pipe
    held = InParallel.task { r.read(1) }.()
    assert_raises(InParallel::TimeoutError) { held.value(0.01) }
    w.write("x")
    assert_equal "x", held.value
    [r, w].each(&:close)
    base = fd_count
    t = InParallel.task { |x| x }
    list = 20.times.map { |i| t.(i) }
    InParallel.waitfor(list).map(&:value)
    list = 5.times.map { InParallel.task { exit 1 }.() }
    InParallel.waitfor(list).each(&:error)
    assert_no_children
    assert eventually { fd_count <= base }, "fds: #{fd_count} > #{base}"
  end

  def test_gc_of_unreferenced_running_futures_reaps_their_children
    t = InParallel.task { sleep 30 }
    pids = []
    # In a method frame of its own, so no stack slot keeps a future alive.
    spawn_some = ->(n) { n.times { pids << t.().pid }; nil }
    spawn_some.(4)
    assert_equal 4, (children & pids).size
    assert eventually(10) { GC.start(full_mark: true, immediate_sweep: true); (children & pids).empty? },
           "children still there: #{children & pids}"
  end

  # RLIMIT_NPROC binds only a user other than root (the kernel lets root fork past it). A
  # fresh Ruby loads the gem first and only then, when it runs as root, gives root up for
  # nobody: by then it has read all it needs from the checkout, so the test works wherever
  # the checkout lives and whoever may read it (nobody cannot enter /root, say).
  def test_a_failed_fork_is_a_value_not_an_exception
    code = <<~RUBY
      #{GEM_LOAD_PATH_CODE}
      require "inparallel"
      if Process.uid.zero?
        Process.groups = []
        Process::Sys.setresgid(65534, 65534, 65534)
        Process::Sys.setresuid(65534, 65534, 65534)
      end
      Process.setrlimit(:NPROC, 0, 0)
      f = InParallel.task { 1 }.()
      e = f.error
      puts [Process.uid, e.class, e.code].inspect
    RUBY
    out, status = Open3.capture2e(RbConfig.ruby, "-e", code)
    assert status.success?, out
    assert_match(/\A\[[1-9]\d*, InParallel::ProcessError, .*EAGAIN/, out)
  end

  def test_ctrl_c_interrupts_value_and_waitfor
    %w[value waitfor].each do |how|
      code = <<~RUBY
        #{GEM_LOAD_PATH_CODE}
        require "inparallel"
        f = InParallel.task { sleep 30 }.()
        $stdout.puts f.pid; $stdout.flush
        begin
          #{how == 'value' ? 'f.value' : 'InParallel.waitfor([f]) { }'}
        rescue Interrupt
          f.cancel
          puts "interrupted"
        end
      RUBY
      Open3.popen2(RbConfig.ruby, "-e", code) do |_in, out, thr|
        child = out.gets.to_i
        assert_operator child, :>, 0
        # Ctrl-C once the script's main thread sleeps in the wait, so the wait is what it ends.
        assert eventually { asleep_in_wait?(thr.pid) }, "the #{how} run never slept in its wait"
        Process.kill(:INT, thr.pid)
        assert_equal "interrupted", out.gets&.chomp, how
        assert thr.value.success?
        refute File.exist?("/proc/#{child}"), "child #{child} of the #{how} run is still there"
      end
    end
  end

  def test_futures_inherited_by_a_users_fork_do_not_hang
    f = InParallel.task { sleep 30 }.()
    r, w = IO.pipe
    pid = fork do
      r.close
      w.puts(f.error.class)
      exit!(0)
    end
    w.close
    assert_equal "InParallel::CanceledError", r.read.chomp
    Process.wait(pid)
    f.cancel
  end

  def test_a_user_fork_in_a_task_child
    v = InParallel.task { IO.popen(%w[echo hi], &:read) }.().value
    assert_equal "hi\n", v
  end
end
