# frozen_string_literal: true

require_relative "test_helper"

class ParcelError < StandardError
  attr_reader :parcel

  def initialize(msg = "lost", parcel: nil)
    super(msg)
    @parcel = parcel
  end
end

class TestErrors < InParallelTest
  RUN = InParallel.task do |what|
    case what
    when :custom then raise ParcelError.new("parcel lost", parcel: 42)
    when :builtin then Integer("nope")
    when :errno then File.read("/nonexistent/inparallel")
    when :anonymous then raise Class.new(StandardError), "from an anonymous class"
    when :child_only
      Object.const_set(:OnlyInChildError, Class.new(StandardError))
      raise OnlyInChildError, "not in the parent"
    when :exit then exit 3
    when :exit_bang then exit!(4)
    when :abort then abort
    when :kill then Process.kill(:KILL, Process.pid)
    when :term then Process.kill(:TERM, Process.pid) && sleep(5)
    when :interrupt then raise Interrupt
    when :proc then -> {}
    when :child_class
      Object.const_set(:OnlyInChildValue, Struct.new(:a))
      OnlyInChildValue.new(1)
    else what
    end
  end

  def test_same_class_with_state_and_the_childs_backtrace
    f = RUN.(:custom)
    err = assert_raises(ParcelError) { f.value }
    assert_equal "parcel lost", err.message
    assert_equal 42, err.parcel
    assert_match(/test_errors\.rb:\d+/, err.backtrace.first)
    assert_same err, f.error
    assert_raises(ParcelError) { f.value } # raised again, same object
  end

  def test_builtin_and_errno_classes
    assert_raises(ArgumentError) { RUN.(:builtin).value }
    err = assert_raises(Errno::ENOENT) { RUN.(:errno).value }
    assert_match(/nonexistent/, err.message)
    assert_equal Errno::ENOENT::Errno, err.errno
  end

  def test_unknown_class_becomes_remote_error
    err = assert_raises(InParallel::RemoteError) { RUN.(:child_only).value }
    assert_equal "OnlyInChildError", err.remote_class
    assert_equal "OnlyInChildError: not in the parent", err.message
    assert_equal "ERAISED", err.code
    assert_match(/test_errors\.rb/, err.backtrace.join("\n"))
    err = assert_raises(InParallel::RemoteError) { RUN.(:anonymous).value }
    assert_match(/Class/, err.remote_class)
  end

  def test_exit_status
    err = assert_raises(InParallel::ProcessError) { RUN.(:exit).value }
    assert_equal 3, err.exit_status
    assert_nil err.signal
    assert_equal "EEXITED", err.code
    assert_match(/exited with status 3/, err.message)
    assert_equal 4, RUN.(:exit_bang).error.exit_status
    assert_equal 1, RUN.(:abort).error.exit_status
  end

  def test_signals
    f = RUN.(:kill)
    err = assert_raises(InParallel::ProcessError) { f.value }
    assert_equal 9, err.signal
    assert_nil err.exit_status
    assert_equal f.pid, err.pid
    assert_equal 15, RUN.(:term).error.signal
    assert_equal 2, RUN.(:interrupt).error.signal
  end

  def test_a_crash_is_left_to_the_vm_and_reported_as_a_signal
    require "fiddle"
    f = InParallel.task do
      $stderr.reopen(File::NULL) # the VM's [BUG] report
      Fiddle::Pointer.new(16).to_s
    end.()
    err = assert_raises(InParallel::ProcessError) { f.value }
    assert_equal 6, err.signal # the VM's SIGSEGV handler aborts
    assert_equal "ESIGNALED", err.code
  end

  def test_unmarshalable_result_names_its_class
    err = assert_raises(InParallel::EncodeError) { RUN.(:proc).value }
    assert_match(/\(Proc\)/, err.message)
    err = assert_raises(InParallel::DecodeError) { RUN.(:child_class).value }
    assert_match(/OnlyInChildValue/, err.message)
  end

  def test_timeout_and_cancel
    slow = InParallel.task(timeout: 0.3) { sleep 10 }
    err = assert_raises(InParallel::TaskTimeoutError) { slow.().value }
    assert_equal 9, err.signal
    assert_kind_of InParallel::ProcessError, err

    f = InParallel.task { sleep 10 }.()
    refute f.wait(0.05)
    assert f.cancel
    refute f.cancel
    assert f.done?
    assert_raises(InParallel::CanceledError) { f.value }
    done = InParallel.task { 1 }.()
    assert done.wait
    refute done.cancel
    assert_equal 1, done.value
  end

  def test_break_and_throw_out_of_the_child
    klass = Class.new do
      include InParallel
      task def each_one = yield(1)
    end
    f = nil
    [1].each { f = klass.new.each_one { break } }
    assert_raises(InParallel::RemoteError) { f.value }
    catch(:out) { f = InParallel.task { throw :out }.() }
    assert_match(/break, throw or return/, f.error.message)
  end

  def test_success_has_no_error
    f = RUN.(5)
    assert_nil f.error
    assert_equal 5, f.value
  end

  def test_bad_wait_arguments
    f = RUN.(1)
    assert_raises(ArgumentError) { f.wait(-1) }
    assert_raises(TypeError) { f.wait("1") }
    assert_equal true, f.wait(0.0 + 10)
  end

  # error waits for the call as value does (it never answers nil for a call still running);
  # done? never waits. The calls are held on a pipe until this process lets them go.
  def test_error_waits_for_the_call_and_done_never_blocks
    r, w = IO.pipe
    held = InParallel.task do |what|
      w.close # this child's copy: the read ends when the parent's copy closes
      r.read
      what == :raise ? raise(ParcelError, "late") : :fine
    end
    late = held.(:raise)
    ok = held.(:ok)
    # The calls cannot end before w closes: a done? that waited would never return.
    looker = Thread.new { 50.times.map { late.done? || ok.done? } }
    assert looker.join(30), "done? waited for a call"
    assert_equal [false] * 50, looker.value
    # Released only once this thread sleeps in error()'s wait: an error() that returned
    # without waiting finds `released` still false.
    released = false
    me = Thread.current.native_thread_id
    releaser = Thread.new do
      eventually(30) { asleep_in_wait?(Process.pid, me) }
      released = true
      w.close
    end
    err = late.error
    assert released, "error returned before the call completed"
    assert_instance_of ParcelError, err
    assert_equal "late", err.message
    assert late.done?
    assert_nil ok.error # waits too, and the call succeeded
    assert ok.done?
    releaser.join
    r.close
  end
  # A RemoteError's message starts with the child's class name, as Ruby prints an exception.
  def test_a_remote_errors_message_starts_with_the_class_name
    f = InParallel.task do
      Object.const_set(:CustomError, Class.new(StandardError)) unless defined?(::CustomError)
      raise ::CustomError, "only in child"
    end.()
    err = assert_raises(InParallel::RemoteError) { f.value }
    assert_equal "CustomError: only in child", err.message
    assert_equal "CustomError", err.remote_class
    assert_equal "#<InParallel::RemoteError: CustomError: only in child>", err.inspect
    assert_match(/: CustomError: only in child \(InParallel::RemoteError\)$/, err.full_message(highlight: false, order: :top))
    refute defined?(::CustomError)
  end

  # exit and abort end the child with their status, and abort's message is kept (the child
  # rescues the SystemExit and sends both).
  def test_abort_and_exit_keep_their_message_and_status
    t = InParallel.task do |how|
      $stderr.reopen(File::NULL) # abort also prints its message, as it does anywhere
      case how
      when :abort then abort("fatal: disk full")
      when :exit then exit 3
      when :exit_true then exit
      when :custom then raise SystemExit.new(5, "custom words")
      end
    end
    err = assert_raises(InParallel::ProcessError) { t.(:abort).value }
    assert_equal 1, err.exit_status
    assert_equal "EEXITED", err.code
    assert_nil err.signal
    assert_match(/\Achild \d+ exited with status 1 without sending a result: fatal: disk full\z/, err.message)
    assert_match(/test_errors\.rb:\d+/, err.backtrace.first, "where abort was called")
    f = t.(:exit)
    err = f.error
    assert_instance_of InParallel::ProcessError, err
    assert_equal 3, err.exit_status
    assert_equal f.pid, err.pid
    assert_equal "child #{f.pid} exited with status 3 without sending a result", err.message
    assert_equal 0, t.(:exit_true).error.exit_status
    err = t.(:custom).error
    assert_equal 5, err.exit_status
    assert_match(/: custom words\z/, err.message)
  end

  class OutsideStandardError < Exception; end # rubocop:disable Lint/InheritException

  # Exceptions outside StandardError would pass by `rescue => e` here as if this process had
  # run out of memory or failed to load code: they come back as RemoteErrors naming the class.
  def test_exceptions_outside_standard_error_come_back_wrapped
    t = InParallel.task do |what|
      case what
      when :nomem then raise NoMemoryError, "pretend"
      when :load then require "inparallel/no/such/file"
      when :notimpl then raise NotImplementedError, "later"
      when :security then raise SecurityError, "no"
      when :stack then (deep = ->(n) { deep.(n + 1) + 1 }).(0)
      when :outside then raise OutsideStandardError, "mine"
      end
    end
    { nomem: ["NoMemoryError", /\ANoMemoryError: pretend\z/],
      load: ["LoadError", /\ALoadError: cannot load such file -- inparallel\/no\/such\/file\z/],
      notimpl: ["NotImplementedError", /\ANotImplementedError: later\z/],
      security: ["SecurityError", /\ASecurityError: no\z/],
      stack: ["SystemStackError", /\ASystemStackError: stack level too deep\z/],
      outside: ["TestErrors::OutsideStandardError", /\ATestErrors::OutsideStandardError: mine\z/] }.each do |what, (klass, msg)|
      err = begin
        t.(what).value
      rescue => e # rubocop:disable Style/RescueStandardError
        e
      end
      assert_instance_of InParallel::RemoteError, err, what
      assert_equal klass, err.remote_class
      assert_match msg, err.message
      assert_match(/test_errors\.rb:\d+/, err.backtrace.join("\n"), what) unless what == :load
    end
    # A real one: the child runs out of the memory its rlimit gives it.
    err = InParallel.task(rlimit: { as: 512 << 20 }) { "x" * (1 << 30) }.().error
    assert_instance_of InParallel::RemoteError, err
    assert_equal "NoMemoryError", err.remote_class
  end

  # Messages travel without what error_highlight (a code snippet with carets) and did_you_mean
  # append on Ruby 3.1: one line, as the child's exception itself says it.
  def test_encode_errors_carry_the_plain_message
    bad = Class.new { def marshal_dump = nope_method }
    err = assert_raises(InParallel::EncodeError) { InParallel.task { bad.new }.().value }
    assert_match(/undefined local variable or method `nope_method'/, err.message)
    refute_match(/\n/, err.message)
    require "msgpack"
    factory = MessagePack::Factory.new
    point = Struct.new(:x)
    factory.register_type(1, point, packer: ->(pt) { pt.x.nope_method }, unpacker: ->(s) { point.new(s) })
    err = assert_raises(InParallel::EncodeError) { InParallel.task(serializer: factory) { [point.new(1)] }.().value }
    assert_match(/undefined method `nope_method' for 1:Integer/, err.message)
    refute_match(/\n|\^\^/, err.message)
    err = assert_raises(InParallel::EncodeError) { InParallel.task(serializer: :msgpack) { { key: -> {} } }.().value }
    refute_match(/\n|\^\^/, err.message)
  end
end
