# frozen_string_literal: true

require_relative "test_helper"

class TestWaitfor < InParallelTest
  DOUBLE = InParallel.task { |x| x * 2 }
  SLEEP = InParallel.task { |s| sleep s; s }

  def seq_of(list, cf, &on_ask)
    seq = +""
    InParallel.waitfor(list, concurrency_factor: cf) do |f|
      seq << (f ? "F" : "N")
      on_ask&.call(f)
    end
    seq
  end

  def test_empty_list_with_factor_asks_exactly_once
    assert_equal "N", seq_of([], 3)
  end

  def test_empty_list_without_factor_yields_nothing
    assert_equal "", seq_of([], nil)
  end

  def test_factor_one_over_twelve_tasks_asks_thirteen_times
    todo = (1..12).to_a
    active = []
    got = []
    seq = seq_of(active, 1) { |f| f ? got << f.value : (active << DOUBLE.(todo.shift) unless todo.empty?) }
    assert_equal 13, seq.count("N")
    assert_equal "NF" * 12 + "N", seq
    assert_equal (1..12).map { |x| x * 2 }, got.sort
    assert_empty active
  end

  def test_five_added_on_one_ask_with_factor_three_gives_N_F_F_F_F_F_N
    active = []
    added = false
    seq = seq_of(active, 3) do |f|
      next if f || added

      added = true
      5.times { |i| active << DOUBLE.(i) }
      active.each(&:wait) # all complete before the next step, as in the core's test
    end
    assert_equal "NFFFFFN", seq
  end

  def test_factor_fills_every_slot_at_once
    active = []
    todo = (1..10).to_a
    max = 0
    InParallel.waitfor(active, concurrency_factor: 4) do |f|
      active << SLEEP.(0.05) if f.nil? && todo.shift
      max = [max, active.size].max
    end
    assert_equal 4, max
  end

  def test_without_a_factor_hands_back_in_completion_order_and_mutates_the_list
    active = [0.6, 0.05, 0.3].map { |s| SLEEP.(s) }
    orig = active
    order = []
    InParallel.waitfor(active) do |f|
      order << f.value
      assert_same orig, active
      refute_includes active, f
    end
    assert_equal [0.05, 0.3, 0.6], order
    assert_empty active
  end

  def test_enumerator_without_a_block
    active = 4.times.map { |i| DOUBLE.(i) }
    e = InParallel.waitfor(active)
    assert_kind_of Enumerator, e
    assert_equal [0, 2, 4, 6], e.map(&:value).sort
    assert_empty active
    assert_equal [nil], InParallel.waitfor([], concurrency_factor: 2).to_a
  end

  def test_futures_may_be_added_and_removed_between_steps
    a = SLEEP.(0.05)
    b = SLEEP.(5)
    active = [a, b]
    seen = []
    InParallel.waitfor(active) do |f|
      seen << f
      if f.equal?(a)
        active.delete(b) # no longer waited for
        b.cancel
        active << DOUBLE.(21)
      end
    end
    assert_equal 2, seen.size
    assert_equal 42, seen.last.value
  end

  def test_failed_futures_are_handed_back_too
    active = [InParallel.task { raise "x" }.(), InParallel.task { exit 2 }.()]
    errs = InParallel.waitfor(active).map(&:error)
    assert_equal 2, errs.compact.size
  end

  # Three threads wait at once on calls held open by a pipe; this thread runs Ruby meanwhile
  # (it could not if a wait held the GVL) and releases the calls once all three sleep.
  def test_threads_waiting_at_once_and_other_threads_keep_running
    r, w = IO.pipe
    held = InParallel.task(timeout: 30) { |k| w.close; r.read; k } # ends by itself, should a wait hold the GVL
    waiters = 3.times.map do |k|
      Thread.new { InParallel.waitfor(3.times.map { held.(k) }).map(&:value) }
    end
    asleep = eventually(30) { waiters.all? { |t| t.native_thread_id && asleep_in_wait?(Process.pid, t.native_thread_id) } }
    w.close
    assert asleep, "the three waits never all slept (or held the GVL)"
    assert_equal [[0] * 3, [1] * 3, [2] * 3], waiters.map(&:value)
    r.close
  end

  def test_thread_raise_interrupts_a_waitfor_and_a_value
    f = SLEEP.(10)
    list = [f]
    t = Thread.new { InParallel.waitfor(list) {} rescue $! }
    assert eventually(30) { asleep_in_wait?(Process.pid, t.native_thread_id) }, "the waitfor never slept"
    t.raise(RuntimeError, "stop")
    err = nil
    assert(eventually(30) { err = t.value })
    assert_equal "stop", err.message
    assert_equal [f], list
    t = Thread.new { f.value rescue $! }
    assert eventually(30) { asleep_in_wait?(Process.pid, t.native_thread_id) }, "the value never slept"
    t.raise(RuntimeError, "stop2")
    assert_equal "stop2", t.value.message
    f.cancel
  end

  def test_bad_input
    assert_raises(TypeError) { InParallel.waitfor({}) }
    assert_raises(TypeError) { InParallel.waitfor(nil) }
    assert_raises(ArgumentError) { InParallel.waitfor([], concurrency_factor: -1) }
    assert_raises(ArgumentError) { InParallel.waitfor([], concurrency_factor: 0) }
    assert_raises(TypeError) { InParallel.waitfor([], concurrency_factor: 2.5) }
    assert_raises(TypeError) { InParallel.waitfor([], concurrency_factor: "3") }
    assert_raises(ArgumentError) { InParallel.waitfor([], concurrency_factor: 2**40) }
    assert_raises(FrozenError) { InParallel.waitfor([].freeze) }
    err = assert_raises(TypeError) { InParallel.waitfor([DOUBLE.(1), "x"]) {} }
    assert_match(/element 1 .*String/, err.message)
    assert_raises(ArgumentError) { InParallel.waitfor([], bogus: 1) }
  end

  # A step costs the same however long the list: the list's last future moves into the slot
  # of the one handed back.
  def test_the_last_future_moves_into_the_slot_of_the_one_handed_back
    a, b, c, d = SLEEP.(0.4), DOUBLE.(1), SLEEP.(0.4), SLEEP.(0.4)
    list = [a, b, c, d]
    got = nil
    InParallel.waitfor(list) do |f|
      got = f
      break
    end
    assert_same b, got
    assert_equal [a, d, c], list
    InParallel.waitfor(list) { |f| f.value }
    assert_empty list
  end

  def test_futures_taken_out_put_back_or_swapped_between_steps_are_noticed
    slow = SLEEP.(5)
    list = [slow, DOUBLE.(1)]
    got = []
    InParallel.waitfor(list) do |f|
      got << f.value
      next unless got.size == 1

      list[list.index(slow)] = DOUBLE.(2) # in place of the sleeper
      list << DOUBLE.(3)
    end
    assert_equal [2, 4, 6], got.sort
    assert slow.cancel
  end

  def test_a_list_holding_the_same_future_twice_is_refused
    f = DOUBLE.(1)
    err = assert_raises(ArgumentError) { InParallel.waitfor([f, f]) {} }
    assert_match(/already holds/, err.message)
    assert_equal 2, f.value
  end

  def test_a_loop_given_up_half_way_leaves_its_futures_to_the_next
    list = [SLEEP.(0.2), DOUBLE.(1), DOUBLE.(2)]
    InParallel.waitfor(list) { break } # the first waiter keeps its mirror until the GC
    got = []
    InParallel.waitfor(list) { |f| got << f.value }
    assert_equal 2, got.size
    assert_empty list
  end
  # nil means no factor; anything but nil or a positive Integer is refused, 0 too, before any
  # step runs, with a message that says what is accepted.
  def test_concurrency_factor_is_nil_or_a_positive_integer
    assert_equal "", seq_of([], nil)
    assert_equal "N", seq_of([], 1)
    [0, -1, -2**40].each do |bad|
      err = assert_raises(ArgumentError) { InParallel.waitfor([], concurrency_factor: bad) {} }
      assert_equal "concurrency_factor must be a positive Integer or nil, got #{bad}", err.message
    end
    [2.0, "3", :three, true, [1]].each do |bad|
      err = assert_raises(TypeError) { InParallel.waitfor([], concurrency_factor: bad) {} }
      assert_equal "concurrency_factor must be a positive Integer or nil, got #{bad.class}", err.message
    end
    err = assert_raises(ArgumentError) { InParallel.waitfor([], concurrency_factor: 2**31) }
    assert_match(/too large/, err.message)
  end

  # Waiter#step, the one step under InParallel.waitfor: a Future, nil for "start another",
  # false for the end (never nil for the end: nil is an ask).
  def test_waiter_step_returns_nil_to_ask_and_false_at_the_end
    w = InParallel::Waiter.new
    list = []
    assert_nil w.step(list, 2)
    assert_equal false, w.step(list, 2)
    assert_equal false, InParallel::Waiter.new.step([], 0)
    f = DOUBLE.(4)
    list = [f]
    w = InParallel::Waiter.new
    assert_same f, w.step(list, 0)
    assert_empty list
    assert_equal false, w.step(list, 0)
    slow = SLEEP.(30)
    assert_raises(InParallel::TimeoutError) { InParallel::Waiter.new.step([slow], 0, 0) }
    assert slow.cancel
  end
end
