# frozen_string_literal: true

# The Ruby binding's storm: a seeded mix of calls that crash, raise, time out, exit
# without a result, are killed from outside, canceled or dropped unreferenced, among calls that
# return values of every serializer, run through InParallel.waitfor at a concurrency factor.
# Every future must come back exactly once with exactly the right outcome, and afterwards
# nothing is left behind: no child (alive or zombie), no descriptor, no thread.
#
# The same storm runs on an InParallel::Pool too (inside Pool#run, so the same calls go to its
# workers), where a crash, kill or timeout ends a worker that the pool replaces.
#
#   STORM_SEED=123 ruby -Ilib -Itest test/test_storm.rb    # replays a seed (printed by each run)
#   STORM_TASKS=2000 ...                                     # a longer storm (default 200)
#
# No sleeps synchronise anything here: the children that must still be running when they are
# killed, canceled or dropped block forever (sleep, or a read of a pipe nobody writes), so the
# outcome does not depend on timing; the only timeouts are the timeout: option under test.
require_relative "test_helper"

# Raised in children: a custom class with state that Marshal carries...
class StormError < StandardError
  attr_reader :detail

  def initialize(msg = "storm", detail: nil)
    super(msg)
    @detail = detail
  end
end

# ...and one Marshal cannot dump (a Proc in an instance variable): it comes back rebuilt from
# its class name and message, so without the Proc.
class StormUnmarshalableError < StandardError
  attr_reader :hook

  def initialize(msg = "unmarshalable")
    super(msg)
    @hook = proc {}
  end
end

StormPoint = Struct.new(:x, :y, :tag)

module Storm
  SEED = Integer(ENV.fetch("STORM_SEED") { Random.new_seed % 2**31 })
  TASKS = Integer(ENV.fetch("STORM_TASKS", "200"))
  TIMEOUT = 0.05 # s; the timed tasks block forever, so any value gives the same outcome

  # A pipe nobody ever writes: a child reading it blocks forever (it holds the write end too).
  BLOCK_R, BLOCK_W = IO.pipe
  # Where a pool's worker says it runs a call to be killed (its pid, a line); the killer
  # thread reads it. A pool call's pid is known to its future only once the worker started it.
  ANNOUNCE_R, ANNOUNCE_W = IO.pipe

  # Natural failures: the parent runs each too, for the exact class and message to expect.
  NATURAL = [
    -> { Integer("storm") },
    -> { 1 / 0 },
    -> { {}.fetch(:storm) },
    -> { [].fetch(7) },
    -> { File.read("/nonexistent/inparallel-storm") },
    -> { nil.storm_method },
    -> { raise "plain RuntimeError" }
  ].freeze

  BUILTIN = [ArgumentError, KeyError, IndexError, RuntimeError, TypeError, ZeroDivisionError, IOError,
             NotImplementedError, RangeError, Errno::EPIPE, Errno::ENOENT, SecurityError].freeze

  # The child's side of every kind that is not a timeout.
  def self.child(kind, arg)
    case kind
    when :value then arg
    when :builtin then raise arg[0], arg[1]
    when :natural then NATURAL.fetch(arg).call
    when :custom then raise StormError.new(arg[0], detail: arg[1])
    when :unmarshalable then raise StormUnmarshalableError, arg
    when :child_only
      Object.const_set(:StormChildOnlyError, Class.new(StandardError)) unless defined?(::StormChildOnlyError)
      raise ::StormChildOnlyError, arg
    when :segv, :abrt
      Process.setrlimit(:CORE, 0, 0) # no core file in the working directory
      $stderr.reopen(File::NULL)     # the VM's [BUG] report for SIGSEGV
      Process.kill(kind == :segv ? :SEGV : :ABRT, Process.pid)
      sleep
    when :exit_bang then exit!(arg)
    when :exit then exit(arg)
    when :forever then sleep
    when :announce
      ANNOUNCE_W.syswrite("#{Process.pid}\n") # one write, under PIPE_BUF: never interleaved
      sleep
    else raise "storm: unknown kind #{kind}"
    end
  end

  # The marshal kinds go through a decorated method (self works in the child)...
  class Worker
    include InParallel
    task def run(kind, arg = nil) = Storm.child(kind, arg)
  end
  WORKER = Worker.new

  # ...the others through InParallel.task.
  MSGPACK = InParallel.task(serializer: :msgpack) { |v| v }
  RAW = InParallel.task(serializer: :raw) { |v| v }
  TIMED = InParallel.task(timeout: TIMEOUT) { |how| how == :pipe ? BLOCK_R.read : sleep }

  # kind => weight (percent); every kind is also planned at least once per storm.
  MIX = {
    value_marshal: 20, value_msgpack: 12, value_raw: 10,
    builtin: 6, natural: 4, custom: 5, unmarshalable: 4, child_only: 2,
    segv: 5, abrt: 5, exit_bang: 5, exit: 2,
    timeout_sleep: 3, timeout_pipe: 3, killed: 3, cancel: 3,
    dropped: 8
  }.freeze

  Job = Struct.new(:index, :kind, :start, :check)

  # ---- values ----------------------------------------------------------------------------

  UTF8 = ["a", "z", " ", "é", "ü", "ß", "漢", "字", "🙂", "\u0000", "\n"].freeze

  def self.utf8(rng) = Array.new(rng.rand(0..20)) { UTF8.sample(random: rng) }.join
  # For messages: Errno classes refuse a NUL, and the core carries messages as C strings.
  def self.text(rng) = utf8(rng).delete("\0")
  def self.binary(rng, max = 64) = rng.bytes(rng.rand(0..max))

  def self.float(rng)
    case rng.rand(8)
    when 0 then [0.0, -0.0, Float::INFINITY, -Float::INFINITY, Float::MAX, Float::MIN, Float::EPSILON].sample(random: rng)
    else (rng.rand - 0.5) * 10.0**rng.rand(-300..300)
    end
  end

  def self.int(rng, lo = -2**200, hi = 2**200)
    case rng.rand(4)
    when 0 then rng.rand(-1000..1000)
    when 1 then [lo, hi, 2**62, -2**62, 2**63 - 1, -2**63, 2**64 - 1].select { |x| x.between?(lo, hi) }.sample(random: rng)
    else rng.rand(lo..hi)
    end
  end

  # Anything Marshal carries, nested.
  def self.marshal_value(rng, depth = 0)
    kinds = depth < 3 ? 16 : 11
    case rng.rand(kinds)
    when 0 then nil
    when 1 then rng.rand(2).zero?
    when 2 then int(rng)
    when 3 then rng.rand(10).zero? ? Float::NAN : float(rng)
    when 4 then utf8(rng)
    when 5 then binary(rng)
    when 6 then :"sym_#{rng.rand(100)}"
    when 7 then Rational(int(rng, -10**30, 10**30), rng.rand(1..10**20))
    when 8 then Time.at(rng.rand(2**33), rng.rand(10**9), :nsec, in: "+0#{rng.rand(10)}:00")
    when 9 then utf8(rng).encode("UTF-16LE")
    when 10 then Complex(int(rng, -100, 100), float(rng))
    when 11, 12 then Array.new(rng.rand(0..5)) { marshal_value(rng, depth + 1) }
    when 13
      h = rng.rand(2).zero? ? {} : Hash.new(marshal_value(rng, 3))
      rng.rand(0..5).times { h[marshal_value(rng, 3)] = marshal_value(rng, depth + 1) }
      h
    when 14 then StormPoint.new(int(rng), marshal_value(rng, depth + 1), :tag)
    else Range.new(int(rng, -10, 10), int(rng, 11, 100), rng.rand(2).zero?)
    end
  end

  # [what the child returns, what the parent must get] under :msgpack: Symbols arrive as
  # Strings, everything else as itself (UTF-8 strings as UTF-8, binary ones as binary).
  def self.msgpack_value(rng, depth = 0)
    case rng.rand(depth < 3 ? 10 : 7)
    when 0 then [nil, nil]
    when 1 then b = rng.rand(2).zero?; [b, b]
    when 2 then i = int(rng, -2**63, 2**64 - 1); [i, i]
    when 3 then f = float(rng); [f, f]
    when 4 then s = utf8(rng); [s, s.encode("UTF-8")] # a msgpack str: UTF-8 (an empty join is US-ASCII)
    when 5 then s = binary(rng); [s, s]
    when 6 then s = "sym_#{rng.rand(100)}"; [s.to_sym, s]
    when 7, 8
      pairs = Array.new(rng.rand(0..5)) { msgpack_value(rng, depth + 1) }
      [pairs.map(&:first), pairs.map(&:last)]
    else
      sent = {}
      want = {}
      rng.rand(0..5).times do
        k = rng.rand(2).zero? ? "k#{rng.rand(1000)}" : rng.rand(-1000..1000)
        next if sent.key?(k)

        v, w = msgpack_value(rng, depth + 1)
        sent[k] = v
        want[k] = w
      end
      [sent, want]
    end
  end

  # Exactly the same: class, encoding and bytes of strings, bit patterns of floats, order of
  # hashes, default values.
  def self.same?(a, b)
    return false unless a.instance_of?(b.class)

    case a
    when Float then [a].pack("G") == [b].pack("G")
    when String then a.encoding == b.encoding && a.b == b.b
    when Array then a.size == b.size && a.zip(b).all? { |x, y| same?(x, y) }
    when Hash
      a.size == b.size && same?(a.default, b.default) && same?(a.keys, b.keys) && same?(a.values, b.values)
    when Struct then same?(a.to_a, b.to_a)
    when Range then same?(a.begin, b.begin) && same?(a.end, b.end) && a.exclude_end? == b.exclude_end?
    when Complex then same?(a.real, b.real) && same?(a.imaginary, b.imaginary)
    when Time then a == b && a.utc_offset == b.utc_offset && a.nsec == b.nsec
    else a.eql?(b)
    end
  end

  def self.short(v) = v.inspect[0, 100]

  # ---- outcomes --------------------------------------------------------------------------

  def self.check_value(f, want)
    err = f.error
    return "expected #{short(want)}, got #{err.class}: #{err.message}" if err

    got = f.value
    same?(got, want) ? nil : "round trip differs: got #{short(got)}, expected #{short(want)}"
  end

  # An exception raised in the child: its class (exactly), message, the child's backtrace.
  def self.check_raised(f, klass, message)
    err = f.error
    return "expected #{klass}, got the value #{short(f.value)}" unless err
    return "expected #{klass}, got #{err.class}: #{err.message}" unless err.instance_of?(klass)
    return "#{klass}: message #{err.message.inspect}, expected #{message.inspect}" unless err.message == message
    return "#{klass}: not the child's backtrace: #{short(err.backtrace)}" unless err.backtrace&.any? { |l| l.include?("test_storm.rb") }
    return "#{klass}: f.error is not the same object twice" unless f.error.equal?(err)

    yield err if block_given?
  end

  # The child ended without a result.
  def self.check_process(f, klass, code:, signal: nil, exit_status: nil, message: nil)
    err = f.error
    return "expected #{klass}, got the value #{short(f.value)}" unless err
    return "expected #{klass}, got #{err.class}: #{err.message}" unless err.instance_of?(klass)

    got = [err.code, err.signal, err.exit_status, err.core_dumped?, err.pid]
    want = [code, signal, exit_status, false, f.pid]
    return "#{klass} [code, signal, exit_status, core_dumped?, pid] = #{got}, expected #{want} (#{err.message})" unless got == want
    return "#{klass}: message #{err.message.inspect} does not match #{message.inspect}" if message && !err.message.match?(message)

    nil
  end

  # ---- one storm -------------------------------------------------------------------------

  # One storm: `tasks` calls at `concurrency` through waitfor, on this thread. Returns
  # [problems, counts by kind, pids of the dropped futures].
  class Run
    attr_reader :problems, :counts, :dropped

    # pool: the calls run on the pool of the enclosing Pool#run.
    def initialize(seed, tasks, concurrency, pool: false)
      @pool = pool
      @rng = Random.new(seed)
      @tasks = tasks
      @cf = concurrency
      @problems = []
      @counts = Hash.new(0)
      @dropped = []
    end

    def plan
      kinds = MIX.keys.dup # each kind at least once
      total = MIX.values.sum
      (@tasks - kinds.size).times do
        r = @rng.rand(total)
        kinds << MIX.find { |_, w| (r -= w).negative? }.first
      end
      kinds.shuffle(random: @rng).each_with_index.map { |kind, i| job(i, kind) }
    end

    def run
      jobs = plan
      expect = {}.compare_by_identity
      list = []
      done = 0
      InParallel.waitfor(list, concurrency_factor: @cf) do |f|
        if f
          job = expect.delete(f)
          unless job
            @problems << "waitfor handed back a future twice, or one never added: #{f.inspect}"
            next
          end
          @problems << "task #{job.index} (#{job.kind}): handed back while not done" unless f.done?
          @problems << "task #{job.index} (#{job.kind}): still in the list" if list.any? { |x| x.equal?(f) }
          problem = job.check.(f)
          @problems << "task #{job.index} (#{job.kind}): #{problem}" if problem
          @counts[job.kind] += 1
          done += 1
          GC.start if (done % 25).zero? # collects dropped futures while the storm runs
        else
          while (job = jobs.shift)
            if job.kind == :dropped
              drop(job)
              next
            end
            f = job.start.()
            expect[f] = job
            list << f
            break
          end
        end
      end
      @problems << "#{expect.size} futures never handed back" unless expect.empty?
      @problems << "#{list.size} futures left in the list" unless list.empty?
      @problems << "#{jobs.size} jobs never started" unless jobs.empty?
      self
    end

    private

    # In a method frame of its own: nothing keeps the future once this returns. A pool call
    # may still be queued (no pid yet): it is dropped all the same.
    def drop(job)
      pid = job.start.().pid
      if @pool
        @counts[:dropped] += 1
      elsif pid
        @dropped << pid
        @counts[:dropped] += 1
      else
        @problems << "task #{job.index} (dropped): no child was started"
      end
      nil
    end

    def job(i, kind)
      rng = @rng
      start, check =
        case kind
        when :value_marshal
          v = Storm.marshal_value(rng)
          [-> { WORKER.run(:value, v) }, ->(f) { Storm.check_value(f, v) }]
        when :value_msgpack
          sent, want = Storm.msgpack_value(rng)
          [-> { MSGPACK.(sent) }, ->(f) { Storm.check_value(f, want) }]
        when :value_raw
          s = rng.rand(12).zero? ? rng.bytes(rng.rand((1 << 20)..(2 << 20))) : Storm.binary(rng, 4096) # >= 1 MiB: memfd
          s = s.dup.force_encoding("UTF-8") if rng.rand(3).zero? # comes back binary all the same
          [-> { RAW.(s) }, ->(f) { Storm.check_value(f, s.b) }]
        when :builtin
          klass = BUILTIN.sample(random: rng)
          msg = "storm #{i}: #{Storm.text(rng)}"
          check = if klass <= StandardError
                    ->(f) { Storm.check_raised(f, klass, klass.new(msg).message) }
                  else # NotImplementedError, SecurityError: wrapped, so that `rescue => e` sees them
                    lambda do |f|
                      Storm.check_raised(f, InParallel::RemoteError, "#{klass}: #{klass.new(msg).message}") do |e|
                        "remote_class #{e.remote_class.inspect}" unless e.remote_class == klass.name
                      end
                    end
                  end
          [-> { WORKER.run(:builtin, [klass, msg]) }, check]
        when :natural
          n = rng.rand(NATURAL.size)
          want = begin
            NATURAL[n].call
          rescue StandardError => e
            e
          end
          # Without error_highlight's snippet: it needs the raising frame, which stays in the child.
          msg = want.respond_to?(:original_message) ? want.original_message : want.message
          [-> { WORKER.run(:natural, n) }, ->(f) { Storm.check_raised(f, want.class, msg) }]
        when :custom
          msg = "custom #{i}"
          detail = [i, Storm.marshal_value(rng, 2)]
          [-> { WORKER.run(:custom, [msg, detail]) },
           lambda do |f|
             Storm.check_raised(f, StormError, msg) do |e|
               "StormError#detail #{Storm.short(e.detail)}, expected #{Storm.short(detail)}" unless Storm.same?(e.detail, detail)
             end
           end]
        when :unmarshalable
          msg = "not marshalable #{i}"
          [-> { WORKER.run(:unmarshalable, msg) },
           lambda do |f|
             Storm.check_raised(f, StormUnmarshalableError, msg) do |e|
               "StormUnmarshalableError was not rebuilt from name and message (hook #{e.hook.inspect})" unless e.hook.nil?
             end
           end]
        when :child_only
          msg = "only in the child #{i}"
          [-> { WORKER.run(:child_only, msg) },
           lambda do |f|
             Storm.check_raised(f, InParallel::RemoteError, "StormChildOnlyError: #{msg}") do |e|
               "remote_class #{e.remote_class.inspect}" unless e.remote_class == "StormChildOnlyError" && e.code == "ERAISED"
             end
           end]
        when :segv, :abrt # the VM's SIGSEGV handler reports the crash and aborts
          [-> { WORKER.run(kind) },
           ->(f) { Storm.check_process(f, InParallel::ProcessError, code: "ESIGNALED", signal: 6, message: /killed by signal 6 \(SIGABRT/) }]
        when :exit_bang, :exit
          st = [0, 3, rng.rand(1..125)].sample(random: rng)
          [-> { WORKER.run(kind, st) },
           lambda do |f|
             Storm.check_process(f, InParallel::ProcessError, code: "EEXITED", exit_status: st,
                                                              message: /exited with status #{st} without sending a result/)
           end]
        when :timeout_sleep, :timeout_pipe
          how = kind == :timeout_pipe ? :pipe : :sleep
          [-> { TIMED.(how) },
           lambda do |f|
             Storm.check_process(f, InParallel::TaskTimeoutError, code: "ETIMEDOUT", signal: 9,
                                                              message: /longer than the task's timeout of #{(TIMEOUT * 1000).round} ms/)
           end]
        when :killed # from outside, while it runs
          [lambda do
             next WORKER.run(:announce) if @pool # the killer thread ends it

             f = WORKER.run(:forever)
             Process.kill(:KILL, f.pid)
             f
           end,
           ->(f) { Storm.check_process(f, InParallel::ProcessError, code: "ESIGNALED", signal: 9, message: /killed by signal 9/) }]
        when :cancel
          canceled = nil
          [lambda do
             f = WORKER.run(:forever)
             canceled = f.cancel
             f
           end,
           lambda do |f|
             next "cancel returned #{canceled.inspect}, expected true" unless canceled == true
             next "a second cancel did not return false" unless f.cancel == false

             # On a pool: killed with its worker if it had started, else taken out of the queue.
             signal = @pool && f.pid.nil? ? nil : 9
             Storm.check_process(f, InParallel::CanceledError, code: "ECANCELED", signal: signal, message: /cancel/)
           end]
        when :dropped # on a pool, a call that ends: one that did not would hold its worker until GC
          [-> { @pool ? WORKER.run(:value, i) : WORKER.run(:forever) }, nil]
        else raise "unplanned kind #{kind}"
        end
      Job.new(i, kind, start, check)
    end
  end
end

class TestStorm < InParallelTest
  def os_tids = Dir.children("/proc/self/task").map(&:to_i)

  # Native threads that are not live Ruby threads: the supervisor, and finished Ruby threads
  # the VM keeps cached for a few seconds (they may exit at any time, or be reused).
  def non_ruby_tids = os_tids - Thread.list.map(&:native_thread_id)

  # fd => what it is ("socket:[123]", "anon_inode:[eventfd]", a path); the inode numbers make
  # a reused number with a new object a different entry.
  def fd_table
    Dir.children("/proc/self/fd").each_with_object({}) do |fd, h|
      h[fd.to_i] = File.readlink("/proc/self/fd/#{fd}")
    rescue SystemCallError
      nil # the listing's own descriptor, closed by now
    end
  end

  # Frees every dropped future (GC cancels and reaps its child on the spot: ip_future_free
  # kills and waits for the reap) and then expects no child at all. Bounded in rounds, no sleep.
  def gc_until_no_children(dropped)
    50.times do
      break if children.empty?

      GC.start(full_mark: true, immediate_sweep: true)
    end
    alive = children
    assert_empty dropped & alive, "dropped futures not canceled and reaped by GC (seed #{Storm::SEED})"
    assert_empty alive, "children left: #{alive.inspect} (seed #{Storm::SEED})"
    assert_raises(Errno::ECHILD, "a child or zombie is left (seed #{Storm::SEED})") do
      Process.wait2(-1, Process::WNOHANG)
    end
  end

  # What is left when nothing runs: a warm-up storm of every kind (the supervisor, the waiter's
  # eventfd, msgpack), then no child, and the descriptors and threads to come back to.
  def baseline
    run = Storm::Run.new(Storm::SEED ^ 0x5eed, Storm::MIX.size, 4).run
    assert_empty run.problems, "warm-up (seed #{Storm::SEED})"
    gc_until_no_children(run.dropped)
    GC.start(full_mark: true, immediate_sweep: true) # earlier tests' garbage IOs close now, not later
    [fd_table, non_ruby_tids, Thread.list.size]
  end

  # fds: every descriptor open now was open at the baseline (the same object), but for the
  # waiter eventfds of threads that still exist. Some baseline ones may have gone (the
  # eventfds of finished threads that the VM had kept cached): that is no leak.
  def assert_fds_back(base, extra_eventfds: 0)
    added = fd_table.reject { |fd, what| base[fd] == what }
    ev, other = added.partition { |_, what| what == "anon_inode:[eventfd]" }
    assert_empty other.to_h, "descriptors left (seed #{Storm::SEED}): #{other.to_h}"
    assert_operator ev.size, :<=, extra_eventfds, "eventfds left (seed #{Storm::SEED}): #{ev.to_h}"
  end

  def report(label, runs, secs)
    counts = runs.map(&:counts).inject { |a, b| a.merge(b) { |_, x, y| x + y } }
    puts format("\n%s: STORM_SEED=%d, %d tasks in %.2f s: %s", label, Storm::SEED, counts.values.sum, secs,
                counts.sort.map { |k, n| "#{k} #{n}" }.join(", "))
  end

  def test_storm
    base_fds, base_tids, base_threads = baseline
    t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    run = Storm::Run.new(Storm::SEED, Storm::TASKS, 16).run
    secs = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
    report("storm", [run], secs)
    assert_empty run.problems, "seed #{Storm::SEED}"
    assert_equal Storm::TASKS, run.counts.values.sum
    assert_equal Storm::MIX.keys.sort, run.counts.keys.sort
    gc_until_no_children(run.dropped)
    assert_fds_back(base_fds)
    assert_empty non_ruby_tids - base_tids, "threads left (seed #{Storm::SEED})"
    assert_equal base_threads, Thread.list.size
  end

  # The storm on a pool of 4 workers: every call goes through Pool#run to the pool; a thread
  # kills the workers that announce a :killed call. Afterwards the pool has its 4 workers,
  # and once closed nothing of it is left.
  def test_storm_on_a_pool
    base_fds, base_tids, base_threads = baseline
    pool = InParallel::Pool.new(4)
    release = Queue.new
    # Parked once done, until the checks are over: the VM keeps a finished thread's native
    # thread for a while, which would blur the count of threads left.
    killer = Thread.new do
      while (pid = Storm::ANNOUNCE_R.gets.to_i).positive?
        Process.kill(:KILL, pid)
      end
      release.pop
    end
    begin
      t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      run = pool.run { Storm::Run.new(Storm::SEED, Storm::TASKS, 16, pool: true).run }
      secs = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
      report("storm on a pool of 4", [run], secs)
      assert_empty run.problems, "seed #{Storm::SEED}"
      assert_equal Storm::TASKS, run.counts.values.sum
      assert_equal Storm::MIX.keys.sort, run.counts.keys.sort
      assert_equal 4, pool.workers, "the pool did not get its workers back (seed #{Storm::SEED})"
      pool.close
      gc_until_no_children([])
      assert_fds_back(base_fds, extra_eventfds: 1) # the killer's waiter, while it lives
      assert_empty non_ruby_tids - base_tids, "threads left (seed #{Storm::SEED})"
      assert_equal base_threads + 1, Thread.list.size
    ensure
      pool.close
      Storm::ANNOUNCE_W.syswrite("0\n")
      release << true
      killer.join
    end
    assert_equal base_threads, Thread.list.size
  end

  # Four Ruby threads, each its own storm on its own list, at once. The workers stay parked
  # until the checks are done, so the threads and descriptors the VM keeps for a finished
  # thread do not blur them.
  def test_storm_in_four_threads
    base_fds, base_tids, base_threads = baseline
    rng = Random.new(Storm::SEED)
    seeds = Array.new(4) { rng.rand(2**31) }
    finished = Queue.new
    release = Queue.new
    t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    workers = seeds.map do |seed|
      Thread.new do
        finished << Storm::Run.new(seed, [Storm::TASKS / 4, Storm::MIX.size].max, 6).run
      rescue Exception => e # rubocop:disable Lint/RescueException
        finished << e
      ensure
        release.pop
      end
    end
    runs = Array.new(4) { finished.pop }
    secs = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
    begin
      runs.each { |r| raise r if r.is_a?(Exception) }
      report("storm in 4 threads (seeds #{seeds.join(' ')})", runs, secs)
      runs.each_with_index { |r, i| assert_empty r.problems, "thread #{i}, seed #{seeds[i]} (STORM_SEED #{Storm::SEED})" }
      gc_until_no_children(runs.flat_map(&:dropped))
      # Each worker's thread has its waiter's eventfd until the thread itself ends.
      assert_fds_back(base_fds, extra_eventfds: workers.size)
      assert_empty non_ruby_tids - base_tids, "threads left (seed #{Storm::SEED})"
      assert_equal base_threads + workers.size, Thread.list.size
    ensure
      workers.size.times { release << true }
      workers.each(&:join)
    end
    assert_equal base_threads, Thread.list.size
  end
end
