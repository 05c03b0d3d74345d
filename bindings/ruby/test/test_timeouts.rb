# frozen_string_literal: true

require_relative "test_helper"

# Two kinds of timeout: a wait that runs out (InParallel::TimeoutError, a Timeout::Error; the
# call keeps running) and a call that runs past its task's timeout: (TaskTimeoutError, a
# ProcessError: the child was killed).
class TestTimeouts < InParallelTest
  SLEEP = InParallel.task { |s| sleep s; s }

  def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  def test_the_hierarchy
    assert_operator InParallel::TimeoutError, :<, Timeout::Error
    refute_operator InParallel::TimeoutError, :<=, InParallel::Error
    assert_operator InParallel::TaskTimeoutError, :<, InParallel::ProcessError
    refute_operator InParallel::TaskTimeoutError, :<=, Timeout::Error
  end

  def test_value_with_a_timeout_raises_a_timeout_error_and_the_call_keeps_running
    f = SLEEP.(30)
    t0 = now
    err = assert_raises(InParallel::TimeoutError) { f.value(0.2) }
    assert_operator now - t0, :>=, 0.2
    assert_kind_of Timeout::Error, err
    assert_equal "ETIMEDOUT", err.code
    assert_equal f.pid, err.pid
    assert_match(/did not complete within 0.2 s/, err.message)
    refute f.done?
    assert_raises(InParallel::TimeoutError) { f.error(0) }
    begin
      f.value(0.01)
      flunk "no timeout"
    rescue Timeout::Error
      pass # what a caller that knows nothing of the gem rescues
    end
    assert f.cancel
    assert_raises(InParallel::CanceledError) { f.value(0.01) }
  end

  def test_value_with_a_timeout_returns_what_completes_in_time
    f = SLEEP.(0.1)
    assert_equal 0.1, f.value(30)
    assert_equal 0.1, f.value(0) # completed: no wait at all
    assert_nil SLEEP.(0).error(30)
  end

  def test_bad_value_timeouts
    f = SLEEP.(0)
    assert_raises(ArgumentError) { f.value(-1) }
    assert_raises(TypeError) { f.value("1") }
    assert_raises(ArgumentError) { f.error(Float::NAN) }
    assert_equal 0, f.value(Float::INFINITY)
  end

  def test_waitfor_timeout_raises_and_leaves_the_list_as_it_was
    a = SLEEP.(30)
    list = [a]
    t0 = now
    err = assert_raises(InParallel::TimeoutError) { InParallel.waitfor(list, timeout: 0.2) { flunk "yielded" } }
    assert_operator now - t0, :>=, 0.2
    assert_kind_of Timeout::Error, err
    assert_match(/no call completed within 0.2 s/, err.message)
    assert_equal [a], list
    assert_raises(Timeout::Error) { InParallel.waitfor(list, timeout: 0).to_a }
    assert a.cancel
    assert_equal [a], InParallel.waitfor(list, timeout: 0).to_a
    assert_empty list
  end

  # The timeout bounds each wait for the next completion, not the whole loop: a loop whose
  # body outlasts it runs to the end while each wait is short.
  def test_waitfor_timeout_bounds_each_wait
    list = [1, 2, 3].map { |x| SLEEP.(x * 0.0) }
    list.each(&:wait)
    got = InParallel.waitfor(list, timeout: 0.2).map { |f| sleep 0.15; f.value } # 0.45 s in all
    assert_equal [0.0] * 3, got
    # And waits that block, each shorter than the bound.
    list = [SLEEP.(0.1), SLEEP.(0.1)]
    assert_equal [0.1, 0.1], InParallel.waitfor(list, timeout: 20).map(&:value)
  end

  # A factor's asks never wait, so they never time out.
  def test_waitfor_timeout_with_a_factor
    todo = [0.05, 0.05]
    list = []
    seq = +""
    InParallel.waitfor(list, concurrency_factor: 1, timeout: 5) do |f|
      seq << (f ? "F" : "N")
      list << SLEEP.(todo.shift) if f.nil? && !todo.empty?
    end
    assert_equal "NFNFN", seq
    assert_raises(InParallel::TimeoutError) do
      InParallel.waitfor([SLEEP.(30)], concurrency_factor: 1, timeout: 0.1) { |f| f&.value }
    end
  end

  def test_bad_waitfor_timeouts
    assert_raises(ArgumentError) { InParallel.waitfor([], timeout: -1) {} }
    assert_raises(TypeError) { InParallel.waitfor([], timeout: "1") {} }
    assert_raises(ArgumentError) { InParallel.waitfor([], timeout: Float::NAN) {} }
  end

  def test_a_task_timeout_is_a_process_error_not_a_wait_timeout
    f = InParallel.task(timeout: 0.2) { sleep 30 }.()
    err = begin
      f.value
    rescue InParallel::ProcessError => e
      e
    end
    assert_instance_of InParallel::TaskTimeoutError, err
    assert_equal "ETIMEDOUT", err.code
    assert_equal 9, err.signal
    refute_kind_of Timeout::Error, err
  end
end
