# frozen_string_literal: true

require_relative "test_helper"
require "objspace"

# A Future holds its result's bytes (the core keeps them until the Future is freed), and says
# so to the GC: ObjectSpace.memsize_of counts them, and the GC's malloc accounting grows by
# them when the value arrives, as it would for a String of that size.
class TestMemory < InParallelTest
  SIZE = 100 << 20

  def test_memsize_of_a_future_counts_its_result
    %i[raw marshal].each do |ser|
      f = InParallel.task(serializer: ser) { "x" * SIZE }.()
      f.wait
      assert_operator ObjectSpace.memsize_of(f), :<, 4096, ser
      assert_equal SIZE, f.value.bytesize
      assert_operator ObjectSpace.memsize_of(f), :>=, SIZE, ser
    end
    failed = InParallel.task { raise "no result" }.()
    failed.error
    assert_operator ObjectSpace.memsize_of(failed), :<, 4096
  end

  def test_the_gc_is_told_of_the_result
    f = InParallel.task(serializer: :raw) { "y" * SIZE }.()
    f.wait
    GC.start
    GC.disable # no collection resets the count meanwhile
    before = GC.stat(:malloc_increase_bytes)
    v = f.value
    grown = GC.stat(:malloc_increase_bytes) - before
    # The String's own SIZE bytes, and the SIZE the Future holds.
    assert_operator grown, :>=, 2 * SIZE
    assert_equal SIZE, v.bytesize
  ensure
    GC.enable
  end
end
