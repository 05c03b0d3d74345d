# frozen_string_literal: true

# InParallel::Pool: worker processes forked once (through Process.fork) that run call after
# call, with the futures, waitfor, errors and timeouts of forked calls. Every test runs real
# processes: the template is this process's child, the workers are the template's children.
require_relative "test_helper"
require "open3"
require "rbconfig"

# Raised in workers: comes back as itself, with its state.
class PoolTestError < StandardError
  attr_reader :detail

  def initialize(msg = "pool", detail: nil)
    super(msg)
    @detail = detail
  end
end

# A plain object whose copies travel to workers as a task def's receiver.
class PoolCounter
  include InParallel

  attr_reader :n

  def initialize(n) = @n = n

  task def add(x, times: 1) = [@n + (x * times), Process.pid]

  # Changes the worker's copy only.
  task def bump!
    @n += 100
    @n
  end
end

PoolPoint = Struct.new(:x, :y)

# Process._fork hooks are what libraries (connection pools, tracers) use to hear of forks. This
# one records, in the child, that it ran there; it does so only while a test asks.
module PoolForkProbe
  def _fork
    GC.start if $pool_fork_gc # in a template too: before it forks each worker
    pid = super
    $pool_fork_probe_pid = Process.pid if pid.zero? && $pool_fork_probe_on
    pid
  end
end
Process.singleton_class.prepend(PoolForkProbe)

class TestPool < InParallelTest
  ECHO = InParallel.task { |*args, **kw| [args, kw] }
  PID = InParallel.task { Process.pid }
  RAISE = InParallel.task { |msg| raise PoolTestError.new(msg, detail: [1, :two]) }
  SIGNAL = InParallel.task do |sig|
    Process.setrlimit(:CORE, 0, 0) # no core file in the working directory
    $stderr.reopen(File::NULL)     # the VM's [BUG] report for SIGSEGV
    Process.kill(sig, Process.pid)
    sleep
  end
  EXIT = InParallel.task { |st| exit(st) }
  EXIT_BANG = InParallel.task { |st| exit!(st) }
  SLEEP = InParallel.task { sleep }
  TIMED = InParallel.task(timeout: 0.2) { sleep }
  # Keyword names as the worker saw them: their class too (the result itself is msgpack).
  MSGPACK = InParallel.task(serializer: :msgpack) { |*args, **kw| [args, kw.map { |k, v| [k.class.name, k.to_s, v] }] }
  RAW = InParallel.task(serializer: :raw) { |s| s.reverse }
  RAND = InParallel.task { Random.rand(2**62) }
  FORKED_BY_HOOK = InParallel.task { $pool_fork_probe_pid == Process.pid }
  THREADS = InParallel.task { |n| Array.new(n) { |i| Thread.new { i * i } }.map(&:value) }
  GLOBAL = InParallel.task { $pool_test_global }

  def teardown
    @pools&.each(&:close)
    super
  end

  def pool(n, **opts)
    p = InParallel::Pool.new(n, **opts)
    (@pools ||= []) << p
    p
  end

  # The pool's template (this process's only child here) and the template's children.
  def template_and_workers
    tpl = children
    assert_equal 1, tpl.size, "expected one child, the template: #{tpl.inspect}"
    workers = Dir["/proc/#{tpl[0]}/task/*/children"].flat_map { |f| File.read(f).split.map(&:to_i) }
    [tpl[0], workers]
  end

  def alive?(pid)
    Process.kill(0, pid)
    true
  rescue Errno::ESRCH
    false
  end

  # ---- making and closing ----------------------------------------------------------------

  def test_a_pool_has_its_workers_and_close_ends_every_process
    p = pool(3)
    assert_equal 3, p.workers
    tpl, workers = template_and_workers
    assert_equal 3, workers.size
    pids = Array.new(30) { p.call(PID) }.map(&:value).uniq
    refute_includes pids, Process.pid
    assert_empty pids - workers, "calls ran outside the pool's workers"
    p.close
    assert p.closed?
    refute alive?(tpl), "the template is left"
    workers.each { |w| refute alive?(w), "worker #{w} is left" }
    assert_no_children
    p.close # again: nothing
    assert_raises(IOError) { p.call(PID) }
    assert_raises(IOError) { p.workers }
  end

  def test_bad_arguments_to_new
    assert_raises(ArgumentError) { InParallel::Pool.new(0) }
    assert_raises(ArgumentError) { InParallel::Pool.new(-2) }
    assert_raises(TypeError) { InParallel::Pool.new("2") }
    assert_raises(TypeError) { InParallel::Pool.new(nil) }
    assert_raises(ArgumentError) { InParallel::Pool.new(1, max_calls: 0) }
    assert_raises(ArgumentError) { InParallel::Pool.new(1, max_rss: -1) }
    assert_raises(TypeError) { InParallel::Pool.new(1, max_calls: 1.5) }
    assert_no_children
  end

  def test_inparallel_pool_closes_after_the_block_even_when_it_raises
    got = InParallel.pool(2) { |p| p.call(ECHO, 7).value }
    assert_equal [[7], {}], got
    assert_no_children
    kept = nil
    assert_raises(PoolTestError) do
      InParallel.pool(1) do |p|
        kept = p
        raise PoolTestError, "out"
      end
    end
    assert kept.closed?
    assert_no_children
  end

  # ---- what the workers are ----------------------------------------------------------------

  def test_workers_are_copies_of_the_process_as_it_was_at_new
    $pool_test_global = :before
    p = pool(1)
    $pool_test_global = :after
    assert_equal :before, p.call(GLOBAL).value
    late = InParallel.task { 1 }
    err = assert_raises(ArgumentError) { p.call(late) }
    assert_match(/made after the pool/, err.message)
    err = assert_raises(ArgumentError) { p.call(late.to_proc) }
    assert_match(/made after the pool/, err.message)
  ensure
    $pool_test_global = nil
  end

  def test_every_worker_is_forked_through_process_fork_and_its_hooks
    $pool_fork_probe_on = true
    p = pool(2, max_calls: 1) # every call on a new worker: replacements too
    got = Array.new(6) { p.call(FORKED_BY_HOOK) }.map { |f| [f.value, f.pid] }
    assert_equal [true] * 6, got.map(&:first), "a worker was forked without Process._fork"
    assert_equal 6, got.map(&:last).uniq.size, "max_calls 1 reused a worker"
  ensure
    $pool_fork_probe_on = false
  end

  def test_the_vms_at_fork_work_ran_in_every_worker
    p = pool(2, max_calls: 1)
    # Random's seed is reset at each fork by the VM: workers forked behind its back would all
    # draw the template's next number.
    draws = Array.new(8) { p.call(RAND) }.map(&:value)
    assert_equal 8, draws.uniq.size, "workers drew the same numbers: #{draws}"
    assert_equal [0, 1, 4, 9], p.call(THREADS, 4).value
  end

  # A task that only another thread's locals hold, made before the pool, runs on it, though
  # the fork that made the template kept only this thread and the template collects garbage as
  # it forks each worker (here on purpose, through a Process._fork hook). The pool pins every
  # task alive when it is made, so this holds whatever a Ruby version keeps of a dead thread.
  def test_a_task_only_another_thread_holds_runs_on_a_pool_made_after_it
    made = Queue.new
    go = Queue.new
    holder = Thread.new do
      t = InParallel.task { |x| [x, :from_the_other_thread] }
      made << true
      pool = go.pop
      pool.call(t, 5).value
    end
    made.pop
    $pool_fork_gc = true
    p = pool(1, max_calls: 1) # a new worker, so a template collection, for every call
    $pool_fork_gc = false
    p.call(PID).value
    go << p
    assert_equal [5, :from_the_other_thread], holder.value
  ensure
    $pool_fork_gc = false
  end

  # What a pool pins is alive: a task that is garbage, still to be swept when the pool is made,
  # must not be among them (the pool would then hold a freed object).
  def test_tasks_that_died_before_a_pool_are_never_pinned_by_it
    200.times do |i|
      InParallel.task { i } # garbage at once
      GC.start(full_mark: false, immediate_sweep: false) if (i % 7).zero? # leaves garbage unswept
      InParallel.pool(1) { |p| assert_equal [[i], {}], p.call(ECHO, i).value }
      GC.verify_internal_consistency
    end
  end

  # ---- arguments -----------------------------------------------------------------------------

  def test_arguments_travel_through_the_tasks_serializer
    p = pool(2)
    pt = PoolPoint.new(1, [:a, 2.5])
    assert_equal [[pt, :sym, { k: "v" }], { opt: 3 }], p.call(ECHO, pt, :sym, { k: "v" }, opt: 3).value
    # msgpack has no Symbols: they arrive as Strings; keyword names are Symbols again.
    assert_equal [["sym", { "k" => [1, nil] }], [%w[Symbol opt x]]], p.call(MSGPACK, :sym, { k: [1, nil] }, opt: :x).value
    assert_equal "cba".b, p.call(RAW, "abc").value
    err = assert_raises(ArgumentError) { p.call(RAW, "a", "b") }
    assert_match(/exactly one argument/, err.message)
    err = assert_raises(InParallel::EncodeError) { p.call(ECHO, -> {}) }
    assert_match(/Proc/, err.message)
    err = assert_raises(InParallel::EncodeError) { p.call(MSGPACK, 1, Object.new) }
    assert_match(/argument\[1\]/, err.message)
    f = p.call(ECHO, 1, 2)
    assert_equal [1, 2], f.args
    assert_equal [[1, 2], {}], f.value
  end

  def test_a_task_def_call_sends_a_copy_of_its_receiver
    p = pool(1)
    c = PoolCounter.new(5) # made after the pool: its class was there before
    value, pid = p.run { c.add(2, times: 3) }.value
    assert_equal 11, value
    refute_equal Process.pid, pid
    assert_equal 105, p.run { c.bump! }.value
    assert_equal 105, p.run { c.bump! }.value, "the worker kept a copy from an earlier call"
    assert_equal 5, c.n, "the caller's object changed"
  end

  def test_run_sends_task_calls_of_this_thread_to_the_pool_and_returns_the_blocks_value
    p = pool(2)
    workers = template_and_workers.last
    c = PoolCounter.new(1)
    fs = p.run { [PID.(), c.add(1), PID.call] }
    pids = [fs[0].value, fs[1].value.last, fs[2].value]
    assert_empty pids - workers, "a call in run did not run on the pool"
    # Other threads, and this one after the block, fork as before.
    other = p.run { Thread.new { PID.() }.value }
    refute_includes workers, other.value
    refute_includes workers, PID.().value
    assert_equal :result, p.run { :result }
  end

  def test_run_nests_and_restores_the_outer_pool
    a = pool(1)
    b = pool(1)
    wa = a.call(PID).value
    wb = b.call(PID).value
    got = a.run { [PID.(), b.run { PID.() }, PID.()] }.map(&:value)
    assert_equal [wa, wb, wa], got
  end

  def test_call_takes_methods_and_callable_objects_but_not_procs_or_blocks
    p = pool(1)
    assert_equal 7, p.call(3.method(:+), 4).value
    assert_equal [[2], {}], p.call(ECHO.to_proc, 2).value # a task's own Proc is the task
    callable = PoolPoint.new(3, 4)
    def callable.call(k) = (x + y) * k # a singleton method: Marshal refuses the object
    assert_raises(InParallel::EncodeError) { p.call(callable, 2) }
    err = assert_raises(ArgumentError) { p.call(->(x) { x }, 1) }
    assert_match(/Proc cannot travel/, err.message)
    assert_raises(ArgumentError) { p.call(ECHO, 1) { :block } }
    assert_raises(TypeError) { p.call(42) }
  end

  # ---- failures ------------------------------------------------------------------------------

  def test_a_raise_fails_its_call_with_the_workers_exception_and_the_worker_lives_on
    p = pool(1)
    w = p.call(PID).value
    f = p.call(RAISE, "in the worker")
    err = f.error
    assert_instance_of PoolTestError, err
    assert_equal "in the worker", err.message
    assert_equal [1, :two], err.detail
    assert(err.backtrace.any? { |l| l.include?("test_pool.rb") }, err.backtrace.inspect)
    assert_equal w, f.pid
    assert_equal w, p.call(PID).value, "the worker was replaced after a raise"
  end

  def test_exit_fails_its_call_with_the_status_and_exit_bang_ends_the_worker
    p = pool(1)
    w = p.call(PID).value
    err = p.call(EXIT, 3).error
    assert_instance_of InParallel::ProcessError, err
    assert_equal 3, err.exit_status
    assert_equal w, p.call(PID).value
    err = p.call(EXIT_BANG, 4).error
    assert_instance_of InParallel::ProcessError, err
    assert_equal "EEXITED", err.code
    assert_equal 4, err.exit_status
    assert_equal w, err.pid
    refute_equal w, p.call(PID).value, "the worker that exited was not replaced"
    assert_equal 1, p.workers
  end

  def test_a_crash_or_kill_fails_exactly_its_call_and_the_worker_is_replaced
    p = pool(1)
    { KILL: 9, SEGV: 6 }.each do |sig, want| # the VM reports a SIGSEGV and aborts
      w = p.call(PID).value
      queued = p.call(ECHO, :after) # behind the crash on the one worker: runs on the next
      err = p.call(SIGNAL, sig).error
      assert_instance_of InParallel::ProcessError, err
      assert_equal "ESIGNALED", err.code
      assert_equal want, err.signal
      assert_equal w, err.pid
      assert_equal [[:after], {}], queued.value
      refute_equal w, p.call(PID).value
      assert_equal 1, p.workers
    end
  end

  def test_a_task_timeout_kills_the_worker_and_counts_from_its_start
    p = pool(1)
    w = p.call(PID).value
    f = p.call(TIMED)
    err = f.error
    assert_instance_of InParallel::TaskTimeoutError, err
    assert_equal "ETIMEDOUT", err.code
    assert_equal w, err.pid
    refute_equal w, p.call(PID).value
    # A wait's timeout leaves the call running.
    g = p.call(SLEEP)
    assert_raises(InParallel::TimeoutError) { g.value(0.05) }
    refute g.done?
    assert g.cancel
    assert_instance_of InParallel::CanceledError, g.error
  end

  def test_cancel_a_queued_call_never_runs_it
    r, w = IO.pipe # before the pool: its workers have it
    blocker = InParallel.task { r.read(1) }
    p = pool(1)
    running = p.call(blocker)
    queued = p.call(ECHO, :never)
    assert queued.cancel
    assert_nil queued.pid
    assert_instance_of InParallel::CanceledError, queued.error
    w.write("x")
    assert_equal "x", running.value
    assert_equal [[:again], {}], p.call(ECHO, :again).value
  ensure
    r&.close
    w&.close
  end

  def test_max_rss_replaces_a_worker_that_grew_past_it
    grow = InParallel.task { $pool_ballast = "x" * (64 << 20); Process.pid }
    p = pool(1, max_rss: 32 << 20)
    a = p.call(grow).value
    b = p.call(PID).value
    refute_equal a, b, "a worker above max_rss ran the next call"
  ensure
    $pool_ballast = nil
  end

  # ---- futures, waitfor, threads -------------------------------------------------------------

  def test_waitfor_takes_pool_and_forked_calls_in_one_list
    p = pool(2)
    list = Array.new(10) { |i| p.call(ECHO, i) } + Array.new(3) { |i| ECHO.(i + 100) }
    got = []
    InParallel.waitfor(list) { |f| got << f.value[0][0] }
    assert_equal (0...10).to_a + [100, 101, 102], got.sort
    assert_empty list
  end

  def test_a_wait_lets_other_threads_of_the_caller_run
    r, w = IO.pipe
    gate = InParallel.task { r.read(1) }
    p = pool(1)
    f = p.call(gate)
    opener = Thread.new { w.write("y") }
    assert_equal "y", f.value(30), "the wait held the GVL, so the thread that opens the gate never ran"
    opener.join
  ensure
    r&.close
    w&.close
  end

  def test_dropped_futures_of_queued_and_running_calls_are_freed_by_gc
    p = pool(1)
    drop = lambda do
      p.call(SLEEP) # running, then queued behind it
      p.call(SLEEP)
      p.call(SLEEP)
      nil
    end
    drop.()
    assert eventually(10) {
      GC.start(full_mark: true, immediate_sweep: true)
      p.call(PID).value(5).is_a?(Integer)
    }, "the pool stayed busy with calls nobody holds"
    assert_equal 1, p.workers
  end

  def test_ctrl_c_stops_a_wait_and_close_leaves_no_worker
    code = <<~RUBY
      #{GEM_LOAD_PATH_CODE}
      require "inparallel"
      t = InParallel.task { $stdout.puts "started \#{Process.pid}"; $stdout.flush; sleep 60 }
      pool = InParallel::Pool.new(1)
      begin
        pool.call(t).value
      rescue Interrupt
        $stdout.puts "interrupted"
        pool.close
        $stdout.puts "closed"
      end
    RUBY
    Open3.popen2(RbConfig.ruby, "-e", code) do |_in, out, wait|
      line = out.gets
      assert_match(/\Astarted (\d+)\n\z/, line)
      worker = line[/\d+/].to_i
      Process.kill(:INT, wait.pid)
      rest = out.read
      assert_equal "interrupted\nclosed\n", rest
      assert wait.value.success?
      refute alive?(worker), "the worker outlived close"
    end
  end
end
