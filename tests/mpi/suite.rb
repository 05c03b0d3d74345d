# InParallel::MPI under a real mpirun: tests/mpi/run.sh starts this script once per case,
# `mpirun -np 4 ruby suite.rb CASE`, and reads what the root prints: "ok - what" or
# "not ok - what: why" per check, then "done". Every rank names the same tasks (but in the
# "mismatch" case); the other ranks serve until the root closes its pool. The "failures" case
# leaves closing the pool and MPI_Finalize to the exit (at_exit): a rank that skipped it would
# make mpirun fail the job.
require "inparallel"

$stdout.sync = true
CASE = ARGV[0] || "calls"
$failed = false

def check(ok, what, why = nil)
  if ok
    puts "ok - #{what}"
  else
    $failed = true
    puts "not ok - #{what}: #{why}"
  end
end

# The class of a failure, as the root sees it, or the value when there was none.
def outcome(future)
  future.value
rescue StandardError => e
  e
end

# Every rank defines these, so a raise of one comes back as itself, state and all.
class QuotaError < StandardError
  attr_reader :host

  def initialize(msg = nil, host: nil)
    super(msg)
    @host = host
  end
end

class Fleet
  include InParallel
  # A task def method: named "Fleet#get_os" on every rank, so it runs on a rank in Pool#run.
  task def get_os(host) = "#{host}: #{`uname -s`.strip} on rank #{InParallel::MPI.rank}"

  def label(x) = "#{@prefix}#{x}"

  def initialize(prefix = "") = @prefix = prefix
end

SQUARE = InParallel.task(name: "square") { |x| [x * x, x] }
RAISE = InParallel.task(name: "raise") { |host| raise QuotaError.new("over quota", host: host) }
# A class the root does not have: it comes back as a RemoteError naming it.
RAISE_ALIEN = InParallel.task(name: "raise_alien") do
  Object.const_set(:OnlyOnRanks, Class.new(StandardError)) unless defined?(OnlyOnRanks)
  raise OnlyOnRanks, "only the ranks have this class"
end
CRASH = InParallel.task(name: "crash") { Process.kill(:SEGV, Process.pid) }
EXIT3 = InParallel.task(name: "exit3") { exit 3 }
FOREVER = InParallel.task(name: "forever") { loop {} }
TIMED = InParallel.task(name: "timed", timeout: 0.3) { loop {} }
# The call's child's parent is the rank: it is killed outright, or sent SIGTERM, after which
# the child waits to die with its rank (a rank that took SIGTERM as Ruby notes a signal,
# and served on, would leave this call running and the job hanging).
KILL_RANK = InParallel.task(name: "kill_rank") { Process.kill(:KILL, Process.ppid) }
TERM_RANK = InParallel.task(name: "term_rank") do
  Process.kill(:TERM, Process.ppid)
  sleep
end
UNNAMED = InParallel.task { 1 }
# Whether the process that runs a call was forked through Process.fork, whose _fork hooks
# (and the VM's at-fork work) run: the reused process of a rank (reuse: true) as well.
Process.singleton_class.prepend(Module.new do
  def _fork
    pid = super
    $forked_by_ruby = true if pid.zero?
    pid
  end
end)
FORKED_BY_RUBY = InParallel.task(name: "forked_by_ruby") { $forked_by_ruby == true }

MPI = InParallel::MPI

if CASE == "serializer-mismatch"
  # Rank 2's "cube" travels as msgpack, the others' as Marshal: its calls could not decode.
  # Before init, the rank is in mpirun's environment (Open MPI, MPICH).
  rank = Integer(ENV.fetch("OMPI_COMM_WORLD_RANK", ENV.fetch("PMI_RANK", "-1")))
  CUBE = InParallel.task(name: "cube", serializer: rank == 2 ? :msgpack : :marshal) { |x| x**3 }
  begin
    MPI.init
    warn "rank #{MPI.rank}: no failure"
    status = 0
  rescue MPI::Error => e
    warn "rank #{rank}: #{e.class}: #{e.message} (#{e.code})"
    status = 3
  end
  MPI.finalize
  exit status
end

if CASE == "mismatch"
  MPI.init
  ONLY_ON_RANK_2 = InParallel.task(name: "only_on_rank_2") { nil } if MPI.rank == 2
  begin
    MPI.pool
    warn "rank #{MPI.rank}: no failure"
    status = 0
  rescue MPI::Error => e
    warn "rank #{MPI.rank}: #{e.class}: #{e.message} (#{e.code})"
    status = 3
  end
  MPI.finalize
  exit status
end

# Tasks move (GC.compact) but stay where a call finds them: the ranks find them by name.
GC.compact if GC.respond_to?(:compact)
MPI.init
pool = MPI.pool(reuse: CASE == "reuse") # nil on the ranks that served

if pool && %w[calls reuse].include?(CASE)
  active = []
  n = 0
  seen = {}
  good = 0
  bad = nil
  InParallel.waitfor(active, concurrency_factor: 16) do |f|
    if f
      sq, x = outcome(f)
      if sq == x * x && !seen[x]
        seen[x] = true
        good += 1
      else
        bad ||= "wrong or twice: #{f.args.inspect} -> #{sq.inspect}"
      end
    elsif n < 1000
      n += 1
      active << pool.call(SQUARE, n)
    end
  end
  check(good == 1000 && !bad, "1000 calls through InParallel.waitfor(list, concurrency_factor: 16)", bad || good)
  check(pool.workers == MPI.size - 1 && MPI.size == 4, "pool.workers is the worker ranks", pool.workers)

  values = InParallel.map(1..40, pool: pool, &SQUARE)
  want = (1..40).map { |x| [x * x, x] }
  check(values == want, "InParallel.map(pool: mpi_pool) gives the results in order",
        values.each_index.reject { |i| values[i] == want[i] }.first(3).map { |i| [i, values[i]] }.inspect)

  forks = Array.new(6) { pool.call(FORKED_BY_RUBY) }.map { |f| outcome(f) }
  check(forks.all?(true), "the processes that run calls on the ranks are forked through Process.fork", forks.inspect)

  fleet = Fleet.new
  got = pool.run { fleet.get_os("alpha") }.value
  check(got.match?(/\Aalpha: \S+ on rank [123]\z/), "a task def method runs on a rank in pool.run", got.inspect)

  f = pool.call(Fleet.new("x-").method(:label), 5)
  check(outcome(f) == "x-5", "a Method travels (its receiver with Marshal)", outcome(f).inspect)

  err = outcome(pool.call(UNNAMED))
  check(err.is_a?(InParallel::ProcessError) && err.code == "EINVAL" && err.message.include?("no name"),
        "a call of an unnamed task fails with EINVAL saying why", err.inspect)

  late = InParallel.task(name: "late") { 1 }
  err = outcome(pool.call(late))
  check(err.is_a?(InParallel::ProcessError) && err.code == "EINVAL" && err.message.include?("late"),
        "a task named after MPI.pool fails with EINVAL saying why", err.inspect)
  late.__drop_name # the ranks do not have it: the next MPI.pool would refuse to start
end

if pool && %w[failures reuse].include?(CASE)
  ok1 = pool.call(SQUARE, 7)
  r = pool.call(RAISE, "db1")
  alien = pool.call(RAISE_ALIEN)
  c = pool.call(CRASH)
  t = pool.call(TIMED)
  e3 = pool.call(EXIT3)

  err = outcome(r)
  check(err.is_a?(QuotaError) && err.message == "over quota" && err.host == "db1" &&
        err.backtrace.any? { |l| l.include?("suite.rb") },
        "a raise on a rank arrives as its own class, state and backtrace", err.inspect)
  err = outcome(alien)
  check(err.is_a?(InParallel::RemoteError) && err.remote_class == "OnlyOnRanks",
        "a class the root lacks arrives as a RemoteError naming it", err.inspect)
  err = outcome(c)
  check(err.is_a?(InParallel::ProcessError) && err.code == "ESIGNALED" && err.signal,
        "a crash on a rank fails its call", err.inspect)
  err = outcome(t)
  check(err.is_a?(InParallel::TaskTimeoutError) && err.code == "ETIMEDOUT", "a task timeout on a rank fails its call",
        err.inspect)
  err = outcome(e3)
  check(err.is_a?(InParallel::ProcessError) && err.code == "EEXITED" && err.exit_status == 3,
        "exit 3 on a rank fails its call with its status", err.inspect)

  runs = Array.new(4) { pool.call(FOREVER) }
  runs.each(&:cancel)
  errs = runs.map { |f| outcome(f) }
  check(errs.all?(InParallel::CanceledError), "Future#cancel of calls out on ranks and queued", errs.map(&:class).inspect)

  begin
    InParallel.map([1, 2, "x", 4], pool: pool, &SQUARE)
    check(false, "InParallel.map names the item that failed", "no failure")
  rescue StandardError => e
    check(e.is_a?(TypeError) && e.is_a?(InParallel::ItemFailure) && e.index == 2 && e.message.start_with?("item 2: "),
          "InParallel.map names the item that failed, with its own exception", e.inspect)
  end

  ok2 = pool.call(SQUARE, 8)
  check(outcome(ok1) == [49, 7] && outcome(ok2) == [64, 8], "the calls around the failures succeed",
        [outcome(ok1), outcome(ok2)].inspect)
end

if pool && CASE == "rank-death"
  pool.call(KILL_RANK).wait
  check(false, "the job ended when a rank died", "the root lived on")
end

if pool && CASE == "rank-term"
  pool.call(TERM_RANK).wait
  check(false, "the job ended when a serving rank got SIGTERM", "the root lived on")
end

exit 0 if CASE == "failures" && !pool # the ranks: MPI ends at the exit
if CASE == "failures"
  puts "done" # the pool and MPI end at the exit
  exit($failed ? 1 : 0)
end

if pool
  pool.close
  check(pool.closed?, "pool.close closes it")
end
if CASE == "calls"
  # Another pool, after the first: the block form, which the ranks return from without
  # calling the block, once the root's block is done.
  got = MPI.pool(reuse: true) { |again| again.call(SQUARE, 3).value }
  check(got == [9, 3], "a second MPI.pool { |pool| ... } after the first was closed", got.inspect) if pool
end
puts "done" if pool
MPI.finalize
exit($failed ? 1 : 0)
