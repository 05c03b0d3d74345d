# frozen_string_literal: true

require "etc"

module InParallel
  # Every exception InParallel.map raises for a failed item has this: #index is the item's
  # (0-based) and the message starts with "item INDEX: ".
  module ItemFailure
    attr_reader :index
  end

  # InParallel.map(items, workers: nil, isolation: false, timeout: nil, progress: nil,
  # pool: nil) { |item| ... } => the block's results, in the items' order.
  #
  # The block runs on a pool of `workers` processes (default: the CPUs this process may use)
  # made for this call after the block, so it sees everything the block sees; with `pool:`, on
  # that pool, and the block must then be a task made before it (`&task`). isolation: true
  # forks a process per item instead (no pool). `timeout` (seconds) bounds each item's run.
  #
  # The first failure stops it: nothing more starts, what is in flight is canceled, and the
  # failure of the lowest index seen is raised: the child's exception (or ProcessError,
  # TaskTimeoutError, ...) with InParallel::ItemFailure (#index) and "item INDEX: " before its
  # message. `progress: "Title"` (or ruby-progressbar's options as a Hash) shows a progress bar
  # when the output ($stdout, or the Hash's :output) is a terminal, and nothing otherwise.
  def self.map(items, workers: nil, isolation: false, timeout: nil, progress: nil, pool: nil, &block)
    raise ArgumentError, "InParallel.map needs a block" unless block

    Mapping.new(items, block, workers, isolation, timeout, progress, pool).run
  end

  # InParallel.map for the block's effects: the same options; returns `items`.
  def self.each(items, **options, &block)
    map(items, **options, &block)
    items
  end

  # One InParallel.map: a waitfor loop that keeps two calls per worker in flight.
  class Mapping
    def initialize(items, block, workers, isolation, timeout, progress, pool)
      unless items.respond_to?(:to_a)
        raise TypeError, "InParallel.map expects an Array or Enumerable of items, got #{items.class}"
      end
      raise ArgumentError, "isolation: must be true or false, got #{isolation.inspect}" unless [true, false, nil].include?(isolation)
      if pool && isolation
        raise ArgumentError, "give pool: or isolation: true, not both (isolation forks a process per item)"
      end
      raise TypeError, "pool: must be an InParallel::Pool, got #{pool.class}" if pool && !pool.is_a?(Pool)

      @items = items.to_a
      @isolation = isolation
      @pool = pool
      @workers = workers.nil? ? (pool ? pool.workers : Etc.nprocessors) : Pool.__count(workers, "workers")
      @workers = 1 if @workers < 1
      secs = InParallel.__seconds(timeout, "timeout")
      @timeout_ms = secs && [(secs * 1000).ceil, 1].max
      raise ArgumentError, "timeout is too large (#{timeout} s)" if @timeout_ms && @timeout_ms > 2**31 - 1

      @task = choose_task(block, secs)
      @progress = progress
    end

    def run
      results = Array.new(@items.size)
      return results if @items.empty?

      bar = InParallel.__progress_bar(@progress, @items.size)
      own = @pool.nil? && !@isolation
      pool = own ? Pool.new([@workers, @items.size].min) : @pool
      index = {}.compare_by_identity
      canceled = {}.compare_by_identity
      inflight = []
      failure = nil
      nxt = 0
      begin
        InParallel.waitfor(inflight, concurrency_factor: @isolation ? @workers : 2 * @workers) do |f|
          unless f
            if nxt < @items.size && !failure
              f = start(pool, @items[nxt])
              index[f] = nxt
              nxt += 1
              inflight << f
            end
            next
          end
          i = index.delete(f)
          err = canceled.key?(f) ? nil : f.error
          if err
            failure = [i, err] if failure.nil? || i < failure[0]
            inflight.each { |g| canceled[g] = true if g.cancel }
          elsif !failure
            results[i] = f.value
            bar&.increment
          end
        end
      ensure
        inflight.each(&:cancel)
        pool.close if own && pool
      end
      raise InParallel.__item_failure(*failure) if failure

      results
    end

    private

    # The task each item runs: the block's own if it is a task's (Task#to_proc), else one made
    # for this call (before the pool, which must have it).
    def choose_task(block, secs)
      task = Task.__of(block)
      if @pool
        unless task
          raise ArgumentError, "with pool:, the block must be a task made before that pool " \
                               "(InParallel.map(items, pool: pool, &task)): a fresh block is not in its workers"
        end
        return task
      end
      return Task.new(block, timeout: secs) unless task
      return task.__with_timeout(secs) if @isolation && secs

      task
    end

    def start(pool, item)
      return @task.__fork([item], {}) if @isolation

      pool.__submit(@task, nil, [item], {}, [item], @timeout_ms)
    end
  end
  private_constant :Mapping

  class << self
    # The exception InParallel.map raises for item `index`'s failure.
    def __item_failure(index, err)
      raised = begin
        err.exception("item #{index}: #{err.message}")
      rescue StandardError
        err
      end
      raised.extend(ItemFailure)
      raised.instance_variable_set(:@index, index)
      raised
    end

    # A ruby-progressbar bar for `total` items, or nil (no progress asked, or not a terminal).
    def __progress_bar(spec, total)
      return nil if spec.nil? || spec == false

      options = case spec
                when true then { title: "Progress" }
                when String, Symbol then { title: spec.to_s }
                when Hash then spec.dup
                else raise TypeError, "progress: must be a title (String), true, or a Hash of ruby-progressbar options, got #{spec.class}"
                end
      output = options[:output] || $stdout
      return nil unless output.respond_to?(:tty?) && output.tty?

      begin
        require "ruby-progressbar"
      rescue LoadError
        raise ArgumentError, "progress: needs the ruby-progressbar gem (Debian: ruby-progressbar)"
      end
      ProgressBar.create(**options, total: total, output: output)
    end
  end
end
