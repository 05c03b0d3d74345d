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
  class Mapping # :nodoc:
    def initialize(items, block, workers, isolation, timeout, progress, pool)
      unless items.respond_to?(:to_a)
        raise TypeError, "InParallel.map expects an Array or Enumerable of items, got #{items.class}"
      end
      raise ArgumentError, "isolation: must be true or false, got #{isolation.inspect}" unless [true, false, nil].include?(isolation)
      if pool && isolation
        raise ArgumentError, "give pool: or isolation: true, not both (isolation forks a process per item)"
      end
      raise TypeError, "pool: must be an InParallel::Pool, got #{pool.class}" if pool && !pool.is_a?(Pool)

      pool.__check_map_timeout if pool && !timeout.nil?

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
      calls = {}.compare_by_identity # future -> [first index, items, progress slot or nil]
      @started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      canceled = {}.compare_by_identity
      inflight = []
      failure = nil
      nxt = 0
      begin
        InParallel.waitfor(inflight, concurrency_factor: @isolation ? @workers : 2 * @workers) do |f|
          unless f
            if nxt < @items.size && !failure
              count = batch_size(@items.size - nxt)
              f, slot = start(pool, nxt, count)
              count = 1 unless slot # no slot (none free, an MPI pool's): one item went
              calls[f] = [nxt, count, slot]
              nxt += count
              inflight << f
            end
            next
          end
          first, _, slot = calls.delete(f)
          values, failed = if canceled.key?(f) then [[], nil]
                           elsif slot then batch_outcome(pool, f, first, slot)
                           else single_outcome(f, first)
                           end
          pool.__give_slot(slot) if slot
          if failed
            failure = failed if failure.nil? || failed[0] < failure[0]
            inflight.each { |g| canceled[g] = true if g.cancel }
          end
          next if failure

          results[first, values.size] = values
          bar.progress += values.size if bar
        end
      ensure
        inflight.each(&:cancel)
        calls.each_value { |_, _, slot| pool.__give_slot(slot) if slot }
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

    # Small items travel in batches: enough per call for about BATCH_SECONDS of work by the
    # time per item seen so far, never more than MAX_BATCH, and at most a quarter of what is
    # left per worker, so that the last calls still spread over the workers. Not with a
    # timeout, which bounds each item's run, nor with a process per item.
    BATCH_SECONDS = 0.002
    MAX_BATCH = 256

    def batch_size(left)
      return 1 if @isolation || @timeout_ms || @per_item.nil?

      size = (BATCH_SECONDS / [@per_item, 1e-7].max).floor
      size.clamp(1, [MAX_BATCH, (left / (4.0 * @workers)).ceil].min)
    end

    # The call of items first...first+count: its Future and the batch's progress slot (nil:
    # a single call, for one item or when the pool is out of slots).
    def start(pool, first, count)
      return [@task.__fork([@items[first]], {}), nil] if @isolation

      slot = count > 1 ? pool.__take_slot : nil
      return [pool.__submit(@task, nil, [@items[first]], {}, [@items[first]], @timeout_ms), nil] unless slot

      items = @items[first, count]
      encoded = items.each_with_index.map do |item, k|
        @task.__encode_args(nil, [item], {})
      rescue EncodeError, ArgumentError => e
        raise InParallel.__item_failure(first + k, e)
      end
      [pool.__submit_batch(@task, Marshal.dump(encoded), items, slot), slot]
    rescue EncodeError, ArgumentError => e
      pool.__give_slot(slot) if slot
      raise e.is_a?(ItemFailure) ? e : InParallel.__item_failure(first, e)
    rescue StandardError
      pool.__give_slot(slot) if slot
      raise
    end

    # [values, nil] or [values, [index, exception]] for a single call. Until batches say how
    # long an item takes, the time per item is guessed from the rate single calls complete at.
    def single_outcome(f, first)
      err = f.error
      return [[], [first, err]] if err

      @singles = (@singles || 0) + 1
      @per_item = (Process.clock_gettime(Process::CLOCK_MONOTONIC) - @started) * @workers / @singles unless @batched
      [[f.value], nil]
    end

    # The same for a batch: the results before the item that failed, if one did. A batch whose
    # worker died (crash, kill, exit!) fails at the item its worker had marked.
    def batch_outcome(pool, f, first, slot)
      unless f.__send__(:__status).zero?
        at = pool.__send__(:__progress, slot).to_i
        return [[], [first + [at, 0].max, f.error]]
      end

      encoded, failed, seconds = f.__send__(:__with_payload, true) { |payload| Marshal.load(payload) }
      values = []
      encoded.each do |bytes|
        values << @task.serializer.decode(bytes)
      rescue StandardError => e
        err = e.is_a?(DecodeError) ? e : DecodeError.new("cannot decode the result: #{e.class}: #{e.message}")
        return [values, [first + values.size, err]]
      end
      per = seconds / (encoded.size + (failed ? 1 : 0))
      @per_item = @batched ? (0.7 * @per_item) + (0.3 * per) : per
      @batched = true
      return [values, nil] unless failed

      code, kind, message, backtrace, raised = failed
      info = { code_name: CODES.key(code) || "ERAISED", kind: kind, message: message, backtrace: backtrace,
               raised_code: raised, pid: f.pid }
      [values, [first + values.size, InParallel.__error_from(info)]]
    end
  end
  private_constant :Mapping

  # :stopdoc:
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
  # :startdoc:
end
