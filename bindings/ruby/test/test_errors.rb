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
    assert_equal "not in the parent", err.message
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
  # done? never waits.
  def test_error_waits_for_the_call_and_done_never_blocks
    clock = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }
    late = InParallel.task { sleep 0.4; raise ParcelError, "late" }.()
    ok = InParallel.task { sleep 0.4; :fine }.()
    t0 = clock.()
    refute late.done?
    refute ok.done?
    assert_operator clock.() - t0, :<, 0.2, "done? waited"
    err = late.error
    assert_operator clock.() - t0, :>=, 0.35, "error did not wait for the call"
    assert_instance_of ParcelError, err
    assert_equal "late", err.message
    assert late.done?
    assert_nil ok.error # waits too, and the call succeeded
    assert ok.done?
    slow = InParallel.task { sleep 30 }.()
    t0 = clock.()
    20.times { refute slow.done? }
    assert_operator clock.() - t0, :<, 0.2, "done? waited"
    assert slow.cancel
  end
end
