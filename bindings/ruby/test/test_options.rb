# frozen_string_literal: true

require_relative "test_helper"
require "open3"
require "rbconfig"
require "tmpdir"

# Per-task options with the core's names: timeout:, max_result:, rlimit:, stdio:.
class TestOptions < InParallelTest
  LIMITS = -> { %i[NOFILE CPU CORE].map { |r| Process.getrlimit(r) } }

  class Limited
    include InParallel
    task def limits = [Process.getrlimit(:NOFILE), Process.getrlimit(:FSIZE)],
         rlimit: { nofile: 200, fsize: [1 << 20, 2 << 20] }, max_result: 1 << 16, stdio: :flush_std
  end

  def test_rlimit_is_set_in_the_child_only
    before = LIMITS.()
    t = InParallel.task(rlimit: { nofile: 100, "cpu" => [50, 60], CORE: :infinity }, &LIMITS)
    inf = Process::RLIM_INFINITY
    assert_equal [[100, 100], [50, 60], [inf, inf]], t.().value
    assert_equal({ nofile: [100, 100], cpu: [50, 60], core: [inf, inf] }, t.rlimit)
    assert_equal before, LIMITS.()
  end

  def test_every_rlimit_by_its_lower_case_name
    Process.constants.grep(/\ARLIMIT_/).each do |c|
      assert_equal Process.const_get(c), InParallel::RLIMITS.fetch(c.to_s.delete_prefix("RLIMIT_").downcase.to_sym)
    end
    # Each one reaches the child: set it to what it is, which any user may.
    InParallel::RLIMITS.keys.each_slice(8) do |names|
      now = names.to_h { |n| [n, Process.getrlimit(InParallel::RLIMITS[n])] }
      got = InParallel.task(rlimit: now) { now.keys.to_h { |n| [n, Process.getrlimit(InParallel::RLIMITS[n])] } }.().value
      assert_equal now, got
    end
  end

  def test_a_limit_the_child_runs_into
    t = InParallel.task(rlimit: { nofile: 30 }) { 40.times.map { File.open(File::NULL) } && :opened }
    err = t.().error
    assert_kind_of Errno::EMFILE, err
  end

  # The kernel refuses more descriptors than fs.nr_open, even to root: the call fails.
  def test_a_limit_the_kernel_refuses_fails_the_call
    err = InParallel.task(rlimit: { nofile: 2**40 }) { :ran }.().error
    assert_instance_of InParallel::ProcessError, err
    assert_equal "EINVAL", err.code
    assert_match(/setrlimit\(#{Process::RLIMIT_NOFILE}, 1099511627776, 1099511627776\) failed in the child/, err.message)
  end

  def test_options_on_a_decorated_method
    assert_equal [[200, 200], [1 << 20, 2 << 20]], Limited.new.limits.value
  end

  def test_max_result
    t = InParallel.task(max_result: 4096, serializer: :raw) { |n| "x" * n }
    assert_equal 4096, t.(4096).value.bytesize
    err = assert_raises(InParallel::EncodeError) { t.(4097).value }
    assert_equal "E2BIG", err.code
    assert_match(/max_result of 4096 bytes/, err.message)
    big = InParallel.task(max_result: 1 << 20, serializer: :raw) { "y" * (2 << 20) } # via a memfd
    assert_equal "E2BIG", big.().error.code
    assert_equal 4096, t.max_result
  end

  # The stdio policy acts on the child's C stdio (what C extensions print through FILE
  # streams) and on Ruby's $stdout and $stderr. Each run is a fresh Ruby whose stdout is a
  # pipe (so C's stdout is fully buffered) and whose parent leaves "parent;" in C's buffer
  # across the fork: purge_inherited keeps the child from printing it a second time. The
  # child also writes "file;" to a FILE of its own (fopen), which only flush_all flushes.
  def run_stdio(stdio)
    path = File.join(Dir.tmpdir, "inparallel-stdio-#{Process.pid}")
    code = <<~RUBY
      #{GEM_LOAD_PATH_CODE}
      require "inparallel"
      require "fiddle"
      cputs = Fiddle::Function.new(Fiddle::Handle::DEFAULT["printf"], [Fiddle::TYPE_VOIDP], Fiddle::TYPE_INT)
      fn = ->(name, args, ret) { Fiddle::Function.new(Fiddle::Handle::DEFAULT[name], args, ret) }
      fopen = fn.("fopen", [Fiddle::TYPE_VOIDP, Fiddle::TYPE_VOIDP], Fiddle::TYPE_VOIDP)
      fputs = fn.("fputs", [Fiddle::TYPE_VOIDP, Fiddle::TYPE_VOIDP], Fiddle::TYPE_INT)
      t = InParallel.task(stdio: #{stdio.inspect}) do
        fputs.call("file;", fopen.call(#{path.inspect}, "w"))
        cputs.call("c-child;")
        print "rb-child;"
        1
      end
      cputs.call("parent;")
      t.().value
      $stdout.flush
      print "|"
    RUBY
    out, status = Open3.capture2(RbConfig.ruby, "-e", code)
    assert status.success?
    out + File.read(path)
  ensure
    File.unlink(path) if File.exist?(path)
  end

  def test_stdio_policies
    # Ruby's streams are flushed first, then C's.
    assert_equal "rb-child;c-child;|parent;", run_stdio(nil)
    assert_equal "rb-child;c-child;|parent;", run_stdio(%i[purge_inherited flush_std])
    assert_equal "rb-child;parent;c-child;|parent;", run_stdio(:flush_std)
    assert_equal "rb-child;parent;c-child;|parent;file;", run_stdio([:flush_all])
    assert_equal "rb-child;c-child;|parent;file;", run_stdio(%i[purge_inherited flush_all])
    assert_equal "|parent;", run_stdio(:none)
    assert_equal "|parent;", run_stdio(:purge_inherited)
    assert_equal %i[purge_inherited flush_std], InParallel.task { 1 }.stdio
    assert_equal [], InParallel.task(stdio: []) { 1 }.stdio
  end

  def assert_refused(klass, pattern, **opts)
    err = assert_raises(klass, opts.inspect) { InParallel.task(**opts) { 1 } }
    assert_match pattern, err.message
    klass_err = assert_raises(klass, opts.inspect) { Class.new { include InParallel }.class_eval { task def x = 1, **opts } }
    assert_match pattern, klass_err.message
  end

  def test_bad_options
    assert_refused ArgumentError, /rlimit: unknown resource :bogus \(known: .*nofile/, rlimit: { bogus: 1 }
    assert_refused TypeError, /rlimit must be a Hash/, rlimit: [1]
    assert_refused ArgumentError, /rlimit nofile: a limit cannot be negative/, rlimit: { nofile: -1 }
    assert_refused TypeError, /rlimit nofile: a limit is an Integer or :infinity, got 1.5/, rlimit: { nofile: 1.5 }
    assert_refused ArgumentError, /soft limit 20 is above the hard limit 10/, rlimit: { nofile: [20, 10] }
    assert_refused ArgumentError, /give one limit or \[soft, hard\]/, rlimit: { nofile: [1, 2, 3] }
    assert_refused ArgumentError, /too large/, rlimit: { nofile: 2**64 }
    nine = InParallel::RLIMITS.keys.first(9).to_h { |k| [k, :infinity] }
    assert_refused ArgumentError, /at most 8 resources/, rlimit: nine if nine.size == 9
    assert_refused ArgumentError, /stdio: unknown flag :loud/, stdio: :loud
    assert_refused TypeError, /stdio must be a name/, stdio: 3
    assert_refused ArgumentError, /max_result must be a positive number of bytes, got 0/, max_result: 0
    assert_refused TypeError, /max_result must be a number of bytes/, max_result: 1.5
    assert_refused ArgumentError, /timeout must be positive/, timeout: 0
    assert_refused ArgumentError, /unknown keyword: :rlimits/, rlimits: {}
    assert_no_children
  end
end
