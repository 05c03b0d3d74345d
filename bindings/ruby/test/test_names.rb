# frozen_string_literal: true

# Task names, by which tasks travel to the other ranks of an MPI job, and the parts of
# InParallel::MPI that need no mpirun (tests/mpi/suite.rb runs the rest under mpirun).
require_relative "test_helper"

class NamedFleet
  include InParallel
  task def get_os(server) = "os of #{server}"
  task def self.count(n) = n + 1
  task def custom(x) = x, name: "test_names: custom"
  task def nameless(x) = x, name: nil
end

class TestNames < InParallelTest
  def named(name) = InParallel::Task.__send__(:__named, name)

  def test_a_task_takes_its_name_and_keeps_working
    t = InParallel.task(name: "test_names: square") { |x| x * x }
    assert_equal "test_names: square", t.name
    assert t.name.frozen?
    assert_same t, named("test_names: square")
    assert_match(/"test_names: square"/, t.inspect)
    assert_equal 49, t.call(7).value
    assert_nil InParallel.task { 1 }.name
  end

  def test_a_name_another_live_task_has_raises_saying_so
    keep = InParallel.task(name: "test_names: dup") { 1 }
    err = assert_raises(ArgumentError) { InParallel.task(name: "test_names: dup") { 2 } }
    assert_match(/"test_names: dup" is taken by another live task/, err.message)
    assert_same keep, named("test_names: dup")
    # a symbol is its string
    assert_raises(ArgumentError) { InParallel::Task.new(-> { 3 }, name: :"test_names: dup") }
  end

  def test_bad_names_are_refused
    assert_raises(TypeError) { InParallel.task(name: 42) { 1 } }
    assert_raises(ArgumentError) { InParallel.task(name: "") { 1 } }
    assert_raises(ArgumentError) { InParallel.task(name: "x" * 256) { 1 } }
    assert_raises(ArgumentError) { InParallel.task(name: "a\0b") { 1 } }
    assert InParallel.task(name: "test_names: #{'y' * 200}") { 1 }.name
  end

  def test_a_collected_task_gives_its_name_back
    # Made and dropped in a thread that has ended: the garbage collector scans stacks
    # conservatively, and a stale slot of this thread's could keep it alive (seen in CI).
    made = Thread.new { InParallel.task(name: "test_names: fleeting") { 1 }.name }.value
    assert_equal "test_names: fleeting", made
    10.times do
      break unless named("test_names: fleeting")

      GC.start(full_mark: true, immediate_sweep: true)
    end
    assert_nil named("test_names: fleeting"), "the task was never collected"
    assert_equal "test_names: fleeting", InParallel.task(name: "test_names: fleeting") { 2 }.name
  end

  def test_task_def_names_its_methods_task_after_the_class_and_method
    refute_nil named("NamedFleet#get_os")
    refute_nil named("NamedFleet.count")
    refute_nil named("test_names: custom")
    assert_nil named("NamedFleet#custom")
    assert_nil named("NamedFleet#nameless")
    assert_equal "os of a", NamedFleet.new.get_os("a").value
    assert_equal 3, NamedFleet.count(2).value
  end

  def test_a_later_task_def_of_the_same_method_takes_the_name_over
    old = named("NamedFleet#get_os")
    NamedFleet.class_eval { task def get_os(server) = "new os of #{server}" }
    now = named("NamedFleet#get_os")
    refute_same old, now
    assert_nil old.name
    assert_equal "new os of b", NamedFleet.new.get_os("b").value
  ensure
    NamedFleet.class_eval { task def get_os(server) = "os of #{server}" }
  end

  def test_a_task_def_whose_name_another_task_has_raises
    keep = InParallel.task(name: "NamedClash#work") { 1 }
    klass = Class.new { include InParallel }
    Object.const_set(:NamedClash, klass)
    err = assert_raises(ArgumentError) { klass.class_eval { task def work = 1 } }
    assert_match(/"NamedClash#work" is taken/, err.message)
    assert_same keep, named("NamedClash#work")
  ensure
    Object.send(:remove_const, :NamedClash) if Object.const_defined?(:NamedClash)
  end

  def test_an_anonymous_class_gets_no_names
    klass = Class.new do
      include InParallel
      task def anon(x) = x * 2
    end
    assert_equal 8, klass.new.anon(4).value
  end

  def test_a_named_task_with_another_timeout_for_map_is_not_named
    t = InParallel.task(name: "test_names: mapped") { |x| x + 1 }
    assert_equal [2, 3], InParallel.map([1, 2], isolation: true, timeout: 5, &t)
  end

  def test_mpi_without_mpirun
    mpi = InParallel::MPI
    if mpi.available?
      err = assert_raises(mpi::Error) { mpi.rank }
      assert_equal "EINVAL", err.code
      assert_match(/MPI\.init first/, err.message)
      assert_raises(mpi::Error) { mpi.size }
      assert_raises(mpi::Error) { mpi.pool }
      assert_nil mpi.finalize # nothing started: nothing to end
    else
      err = assert_raises(NotImplementedError) { mpi.init }
      assert_match(/no MPI/, err.message)
      assert_nil mpi.finalize
    end
    assert_raises(TypeError) { mpi.pool(root: "0") } if mpi.available?
    assert_operator mpi::Error, :<, InParallel::Error
    assert_operator mpi::Pool, :<, InParallel::Pool
    assert_raises(NoMethodError) { mpi::Pool.new(2) }
    t = InParallel.task(name: "test_names: map") { |x| x }
    err = assert_raises(ArgumentError) { InParallel.map([1], pool: mpi::Pool.allocate, timeout: 1, &t) }
    assert_match(/timeout: cannot travel to MPI ranks/, err.message)
    refute_kind_of InParallel::ItemFailure, err
  end
end
