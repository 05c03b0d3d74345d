# frozen_string_literal: true

require_relative "test_helper"

class Fleet
  include InParallel
  attr_reader :calls

  def initialize(prefix)
    @prefix = prefix
    @calls = 0
  end

  task def get_os(server) = "#{@prefix}:#{server}:#{Process.pid}"

  task def with_kw(a, b = 2, *rest, k:, opt: "o", **more, &blk)
    [a, b, rest, k, opt, more, blk ? blk.call(a) : nil]
  end

  task def bump
    @calls += 1 # the child's copy: the parent's stays 0
    @calls
  end

  task def slow(secs)
    sleep secs
    :done
  end, timeout: 0.5

  task def packed(x)
    { "x" => x, "list" => [1, 2.5, nil, true] }
  end, serializer: :msgpack

  task def self.klass_task(x) = x + 1

  task def secret(x) = x * 3
  private :secret

  def call_secret(x) = secret(x)
end

class TestTask < InParallelTest
  def test_decorated_method_returns_a_future_and_runs_in_a_child
    f = Fleet.new("os").get_os("alpha")
    assert_instance_of InParallel::Future, f
    prefix, server, pid = f.value.split(":")
    assert_equal %w[os alpha], [prefix, server]
    refute_equal Process.pid, pid.to_i
    assert_equal pid.to_i, f.pid
    assert f.done?
  end

  def test_self_ivars_blocks_and_keywords_reach_the_child
    fleet = Fleet.new("p")
    v = fleet.with_kw(1, k: :kk, extra: 9) { |a| a * 10 }.value
    assert_equal [1, 2, [], :kk, "o", { extra: 9 }, 10], v
    v = fleet.with_kw(1, 3, 4, 5, k: 1, opt: "x").value
    assert_equal [1, 3, [4, 5], 1, "x", {}, nil], v
  end

  def test_a_positional_hash_stays_positional
    t = InParallel.task { |h| h }
    assert_equal({ a: 1 }, t.call({ a: 1 }).value)
  end

  def test_child_mutations_do_not_reach_the_parent
    fleet = Fleet.new("p")
    assert_equal 1, fleet.bump.value
    assert_equal 0, fleet.calls
  end

  def test_missing_keyword_raises_the_childs_argument_error
    err = assert_raises(ArgumentError) { Fleet.new("p").with_kw(1).value }
    assert_match(/missing keyword: :k/, err.message)
  end

  def test_task_options_on_a_decorated_method
    assert_raises(InParallel::TaskTimeoutError) { Fleet.new("p").slow(5).value }
    assert_equal({ "x" => 7, "list" => [1, 2.5, nil, true] }, Fleet.new("p").packed(7).value)
  end

  def test_singleton_and_private_methods
    assert_equal 2, Fleet.klass_task(1).value
    assert_raises(NoMethodError) { Fleet.new("p").secret(2) }
    assert_equal 6, Fleet.new("p").call_secret(2).value
  end

  def test_decorator_returns_the_name_and_checks_it
    klass = Class.new { include InParallel }
    assert_equal :foo, klass.class_eval { task def foo = 1 }
    assert_raises(ArgumentError) { klass.class_eval { task :nope } }
    assert_raises(TypeError) { klass.class_eval { task 42 } }
    assert_raises(ArgumentError) { klass.class_eval { task :foo, serializer: :yaml } }
    assert_raises(ArgumentError) { klass.class_eval { task :foo, timeout: -1 } }
    assert_raises(TypeError) { klass.class_eval { task :foo, timeout: "5" } }
  end

  def test_block_task_is_callable_three_ways
    double = InParallel.task { |x| x * 2 }
    assert_equal [2, 4, 6], [double.call(1), double.(2), double[3]].map(&:value)
    assert_equal [8, 10], [4, 5].map(&double).map(&:value)
  end

  def test_task_from_a_proc_or_method
    assert_equal 5, InParallel.task(->(x) { x + 1 }).(4).value
    assert_equal "3", InParallel.task(3.method(:to_s)).().value
  end

  def test_future_args_and_inspect
    t = InParallel.task { |a, b:| a + b }
    f = t.(1, b: 2)
    assert_equal [1, { b: 2 }], f.args
    assert_match(/InParallel::Future pid=\d+/, f.inspect)
    assert_equal 3, f.value
    assert_match(/ done /, f.inspect)
  end

  def test_bad_task_arguments
    assert_raises(ArgumentError) { InParallel.task }
    assert_raises(TypeError) { InParallel.task(42) }
    assert_raises(ArgumentError) { InParallel.task(serializer: :nope) { 1 } }
    assert_raises(TypeError) { InParallel.task(serializer: 42) { 1 } }
    assert_raises(ArgumentError) { InParallel.task(timeout: 0) { 1 } }
    assert_raises(ArgumentError) { InParallel.task(timeout: Float::NAN) { 1 } }
    assert_raises(TypeError) { InParallel.task(timeout: :soon) { 1 } }
    assert_raises(ArgumentError) { InParallel.task(foo: 1) { 1 } }
    assert_raises(NoMethodError) { InParallel::Future.new }
    assert_no_children
  end

  def test_nested_calls
    inner = InParallel.task { |x| x * 2 }
    outer = InParallel.task { |x| inner.(x).value + 1 }
    assert_equal 11, outer.(5).value
  end

  def test_child_stdout_is_flushed_and_parent_buffer_not_repeated
    r, w = IO.pipe
    pid = fork do
      r.close
      $stdout.reopen(w)
      print "parent-pending;"
      InParallel.task { print "child;" ; 1 }.().value
      $stdout.flush
      exit!(0)
    end
    w.close
    Process.wait(pid)
    assert_equal "parent-pending;child;", r.read
  end
end
