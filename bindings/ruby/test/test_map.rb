# frozen_string_literal: true

require_relative "test_helper"
require "rbconfig"
require "tmpdir"

# Raised by an item in the child; defined here, at top level, so the parent has the class too
# and the exception comes back as itself.
class MapItemError < StandardError; end

class TestMap < InParallelTest
  INCLUDES = GEM_LOAD_PATH.flat_map { |d| ["-I", d] }.freeze

  # Made before any pool of this file, so every pool's workers have it.
  PID_OF = InParallel.task { |x| [x, Process.pid] }
  MSGPACK = begin
    require "msgpack"
    InParallel.task(serializer: :msgpack) { |x| { "a" => x } }
  rescue LoadError
    nil
  end

  # A fresh Ruby running `script` with the gem on its load path: its output (stderr too).
  def run_script(script)
    out = IO.popen([RbConfig.ruby, *INCLUDES, "-e", script], err: %i[child out], &:read)
    [out, $?]
  end

  # --- results --------------------------------------------------------------------------

  def test_results_come_back_in_input_order_for_an_array
    # Items that finish in reverse order (the first sleeps longest) still come back in order.
    items = [5, 4, 3, 2, 1, 0]
    assert_equal items.map { |x| "v#{x}" }, InParallel.map(items, workers: 3) { |x| sleep(x * 0.01); "v#{x}" }
    assert_no_children
  end

  def test_results_come_back_in_input_order_for_a_range_and_an_enumerable
    assert_equal (1..5000).map { |x| x * 2 }, InParallel.map(1..5000, workers: 2) { |x| x * 2 }
    enum = Enumerator.new { |y| 10.times { |i| y << i * i } } # not an Array, not a Range
    assert_equal [0, 1, 4, 9, 16, 25, 36, 49, 64, 81].map(&:to_s), InParallel.map(enum) { |x| x.to_s }
    assert_no_children
  end

  def test_empty_input_gives_an_empty_array
    assert_equal [], InParallel.map([]) { |x| x }
    assert_equal [], InParallel.map(1...1) { raise "never called" }
    assert_no_children
  end

  # The block runs on a copy of this process's memory: a local made just before the call is
  # there, unsent.
  def test_the_block_sees_the_callers_memory
    offset = 1000 + rand(1000)
    table = { "a" => offset, "b" => -offset }
    assert_equal [offset + 1, offset + 2, offset + 3], InParallel.map([1, 2, 3]) { |x| x + offset }
    assert_equal [offset, -offset], InParallel.map(%w[a b], workers: 2) { |k| table.fetch(k) }
    assert_no_children
  end

  # --- where the work runs ----------------------------------------------------------------

  def test_work_runs_on_at_most_workers_other_processes
    pids = InParallel.map(1..400, workers: 2) { Process.pid }
    assert_equal 400, pids.size
    assert_operator pids.uniq.size, :<=, 2, "pids: #{pids.uniq}"
    refute_includes pids, Process.pid
    assert_no_children
  end

  def test_isolation_forks_a_process_per_item
    pids = InParallel.map(1..20, isolation: true, workers: 4) { Process.pid }
    assert_equal 20, pids.uniq.size, "pids: #{pids}"
    refute_includes pids, Process.pid
    assert_no_children
  end

  # --- failures -------------------------------------------------------------------------

  def test_an_item_that_raises_fails_the_map_with_its_own_exception_and_index
    err = assert_raises(MapItemError) do
      InParallel.map(0...10, workers: 1) { |x| x == 3 ? raise(MapItemError, "bad item #{x}") : x }
    end
    assert_instance_of MapItemError, err
    assert_kind_of InParallel::ItemFailure, err
    assert_equal 3, err.index
    assert err.message.start_with?("item 3: "), err.message
    assert_includes err.message, "bad item 3"
    assert err.backtrace.any? { |l| l.include?("test_map.rb") }, "backtrace: #{err.backtrace.inspect}"
    assert_no_children
  end

  # The class exists only in the worker (a pool of one: it is the one that defines it), so
  # the parent cannot rebuild the exception and gets a RemoteError naming it.
  def test_an_exception_class_only_in_the_child_comes_back_as_remote_error
    err = assert_raises(InParallel::RemoteError) do
      InParallel.map(0...5, workers: 1) do |x|
        next x unless x == 2

        klass = Object.const_defined?(:MapOnlyInChildError) ? Object.const_get(:MapOnlyInChildError) : Object.const_set(:MapOnlyInChildError, Class.new(StandardError))
        raise klass, "only here"
      end
    end
    refute Object.const_defined?(:MapOnlyInChildError)
    assert_equal 2, err.index
    assert_equal "MapOnlyInChildError", err.remote_class
    assert err.message.start_with?("item 2: "), err.message
    assert_includes err.message, "only here"
    assert_no_children
  end

  # Each item first leaves a line in a shared file (O_APPEND: whole lines from any process);
  # after the failure of item 5 nothing more starts, so most of the 3000 never ran.
  def test_a_failure_stops_the_map
    Dir.mktmpdir do |dir|
      log = File.join(dir, "ran")
      err = assert_raises(MapItemError) do
        InParallel.map(0...3000) do |x|
          File.open(log, File::WRONLY | File::CREAT | File::APPEND) { |f| f.write("#{x}\n") }
          raise MapItemError, "stop" if x == 5

          x
        end
      end
      assert_equal 5, err.index
      ran = File.readlines(log, chomp: true)
      assert_includes ran, "5"
      assert_operator ran.size, :<, 3000 / 2, "#{ran.size} items ran"
    end
    assert_no_children
  end

  # Trivially fast items travel in batches; a worker that dies mid-batch still names the
  # item that killed it, not the batch's first.
  def test_a_kill_names_its_item_inside_a_batch
    err = assert_raises(InParallel::ProcessError) do
      InParallel.map(0...2000, workers: 2) { |x| Process.kill(:KILL, Process.pid) if x == 1500; x }
    end
    assert_equal 1500, err.index
    assert_equal 9, err.signal
    assert err.message.start_with?("item 1500: "), err.message
    assert_no_children
  end

  def test_an_exit_bang_names_its_item_inside_a_batch
    err = assert_raises(InParallel::ProcessError) do
      InParallel.map(0...2000, workers: 2) { |x| exit!(7) if x == 1700; x }
    end
    assert_equal 1700, err.index
    assert_equal 7, err.exit_status
    assert_no_children
  end

  # `exit` is an exception in the worker: the batch reports it as the item's failure.
  def test_an_exit_names_its_item_inside_a_batch
    err = assert_raises(InParallel::ProcessError) do
      InParallel.map(0...2000, workers: 2) { |x| exit 3 if x == 800; x }
    end
    assert_equal 800, err.index
    assert_equal 3, err.exit_status
    assert_no_children
  end

  def test_a_result_that_cannot_be_encoded_names_its_item
    err = assert_raises(InParallel::EncodeError) do
      InParallel.map(0...2000, workers: 2) { |x| x == 1200 ? -> {} : x }
    end
    assert_equal 1200, err.index
    assert_includes err.message, "Proc"
    assert_no_children
  end

  # An item that cannot travel fails the map with its index before it runs, alone or in a
  # batch.
  def test_an_item_that_cannot_be_encoded_names_its_index
    [[1, 2, -> {}, 4], (1..3000).to_a + [-> {}]].each do |items|
      err = assert_raises(InParallel::EncodeError) { InParallel.map(items, workers: 2) { |x| x } }
      assert_equal items.size - (items.size == 4 ? 2 : 1), err.index
      assert_match(/\Aitem #{err.index}: .*Proc/, err.message)
      assert_no_children
    end
  end

  # --- timeout --------------------------------------------------------------------------

  def test_an_item_over_the_timeout_fails_the_map_with_task_timeout_error
    err = assert_raises(InParallel::TaskTimeoutError) do
      InParallel.map(0..5, workers: 2, timeout: 0.5) { |x| sleep 30 if x == 2; x }
    end
    assert_equal 2, err.index
    assert_equal 9, err.signal
    assert_no_children
  end

  def test_timeout_with_isolation_also_names_the_item
    err = assert_raises(InParallel::TaskTimeoutError) do
      InParallel.map(0..5, isolation: true, timeout: 0.5) { |x| sleep 30 if x == 4; x }
    end
    assert_equal 4, err.index
    assert_no_children
  end

  # --- pool: ----------------------------------------------------------------------------

  def test_map_on_a_given_pool
    t = PID_OF
    pool = InParallel::Pool.new(2)
    begin
      got = InParallel.map(1..50, pool: pool, &t)
      assert_equal (1..50).to_a, got.map(&:first)
      pids = got.map(&:last).uniq
      assert_operator pids.size, :<=, 2, "pids: #{pids}"
      refute_includes pids, Process.pid
      assert_empty pids - children_of_children, "pids #{pids} are not the pool's processes"

      err = assert_raises(ArgumentError) { InParallel.map(1..3, pool: pool) { |x| x } }
      assert_includes err.message, "task made before"

      late = InParallel.task { |x| x }
      err = assert_raises(ArgumentError) { InParallel.map(1..3, pool: pool, &late) }
      assert_match(/made after the pool/, err.message)

      # The pool still runs calls after all of that.
      x, pid = pool.call(t, 7).value
      assert_equal 7, x
      assert_includes children_of_children, pid
    ensure
      pool.close
    end
    assert_no_children
  end

  # A pool with no progress slot free (an MPI pool has none) sends one item per call, each
  # once: a batch's items are never counted as sent when only the first went.
  def test_a_pool_out_of_progress_slots_sends_single_items
    pool = InParallel::Pool.new(2)
    def pool.__take_slot = nil
    begin
      got = InParallel.map(1..2000, pool: pool, &PID_OF)
      assert_equal (1..2000).to_a, got.map(&:first)
    ensure
      pool.close
    end
  end

  def test_a_msgpack_task_through_a_pool
    skip "msgpack is not installed" unless MSGPACK
    InParallel.pool(2) do |pool|
      assert_equal (1..300).map { |x| { "a" => x } }, InParallel.map(1..300, pool: pool, &MSGPACK)
    end
    assert_no_children
  end

  # --- option checks --------------------------------------------------------------------

  def test_bad_options_are_refused_before_anything_runs
    assert_raises(ArgumentError) { InParallel.map([1], workers: 0) { |x| x } }
    assert_raises(ArgumentError) { InParallel.map([1], workers: -1) { |x| x } }
    assert_raises(TypeError) { InParallel.map([1], workers: "2") { |x| x } }
    assert_raises(TypeError) { InParallel.map([1], pool: "x") { |x| x } }
    err = assert_raises(ArgumentError) { InParallel.map([1]) }
    assert_match(/block/, err.message)
    assert_raises(TypeError) { InParallel.map(42) { |x| x } }
    assert_raises(ArgumentError) { InParallel.map([1], timeout: -1) { |x| x } }
    assert_raises(ArgumentError) { InParallel.map([1], timeout: 0) { |x| x } }
    assert_raises(TypeError) { InParallel.map([1], progress: 3) { |x| x } }
    assert_empty children, "children: #{children.map { |pid| describe_process(pid) }.join("; ")}"
    pool = InParallel::Pool.new(1)
    begin
      err = assert_raises(ArgumentError) { InParallel.map([1], pool: pool, isolation: true, &PID_OF) }
      assert_match(/not both/, err.message)
    ensure
      pool.close
    end
    assert_no_children
  end

  # --- each -----------------------------------------------------------------------------

  def test_each_returns_the_items_and_runs_the_block_for_each
    Dir.mktmpdir do |dir|
      items = (1..30).to_a
      ret = InParallel.each(items, workers: 3) { |x| File.write(File.join(dir, "f#{x}"), x.to_s) }
      assert_same items, ret
      assert_equal items.map { |x| "f#{x}" }.sort, Dir.children(dir).sort
      assert_equal "17", File.read(File.join(dir, "f17"))
    end
    assert_no_children
  end

  # --- progress -------------------------------------------------------------------------

  # The script's stdout is a pipe here whatever the test's is, so no bar: the output is the
  # script's own line and nothing else (no bar, no escape, no warning).
  def test_progress_prints_nothing_when_the_output_is_not_a_terminal
    out, status = run_script(<<~RUBY)
      require "inparallel"
      r = InParallel.map(1..200, progress: "Title") { |x| x }
      puts "done \#{r.sum}"
    RUBY
    assert status.success?, out
    assert_equal "done 20100\n", out
  end

  def test_progress_shows_a_bar_on_a_terminal
    begin
      require "pty"
      require "ruby-progressbar"
    rescue LoadError => e
      skip "needs pty and ruby-progressbar: #{e.message}"
    end
    out = read_pty(<<~RUBY)
      require "inparallel"
      r = InParallel.map(1..200, progress: "Title") { |x| x }
      puts "done \#{r.sum}"
    RUBY
    assert_includes out, "done 20100"
    # ruby-progressbar's default format ("%t: |%B|") has no percentage: the last bar drawn
    # before the script's line is the full one.
    last = out.split("\r\ndone").first.split("\r").last
    assert_match(/\ATitle: \|=+\|\z/, last, out.inspect)

    # A Hash of ruby-progressbar options: here a format with the percentage.
    out = read_pty(<<~RUBY)
      require "inparallel"
      InParallel.map(1..200, progress: { title: "Title", format: "%t %p%%" }) { |x| x }
    RUBY
    assert_includes out, "Title 100%"
  end

  def read_pty(script)
    out = +""
    reader, writer, pid = PTY.spawn(RbConfig.ruby, *INCLUDES, "-e", script)
    writer.close
    begin
      loop { out << reader.readpartial(4096) }
    rescue Errno::EIO, EOFError
      # how a PTY reports that the other side is gone
    end
    reader.close
    Process.wait(pid)
    assert $?.success?, out
    out
  end

  # --- Ctrl-C ---------------------------------------------------------------------------

  # SIGINT to the caller only: its map raises Interrupt, cancels what runs and closes its
  # pool, so the worker (which printed its pid) is gone.
  def test_ctrl_c_interrupts_the_map_and_ends_its_workers
    script = <<~RUBY
      require "inparallel"
      begin
        InParallel.map([1], workers: 1) do
          $stdout.write("started \#{Process.pid}\\n")
          $stdout.flush
          sleep 60
        end
        puts "not interrupted"
      rescue Interrupt
        puts "interrupted"
        $stdout.flush
        exit 0
      end
    RUBY
    lines = []
    worker = nil
    IO.popen([RbConfig.ruby, *INCLUDES, "-e", script]) do |io|
      while (line = io.gets)
        lines << line
        next unless line.start_with?("started ")

        worker = line.split.last.to_i
        Process.kill(:INT, io.pid)
      end
    end
    status = $?
    assert_operator worker.to_i, :>, 0, "lines: #{lines}"
    refute_equal status.pid, worker
    assert_equal "interrupted\n", lines.last, "lines: #{lines}"
    assert_equal 0, status.exitstatus, "status: #{status.inspect}"
    gone = eventually do
      Process.kill(0, worker)
      false
    rescue Errno::ESRCH
      true
    end
    assert gone, "worker #{worker} is still there"
    assert_no_children
  end

  private

  # This process's children and theirs: a pool's workers are its template's children.
  def children_of_children
    mine = children
    Dir.children("/proc").grep(/\A\d+\z/).select do |pid|
      mine.include?(File.read("/proc/#{pid}/stat")[/\) \S (\d+)/, 1].to_i)
    rescue SystemCallError
      false
    end.map(&:to_i) + mine
  end
end
