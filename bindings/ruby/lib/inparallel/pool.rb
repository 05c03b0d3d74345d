# frozen_string_literal: true

module InParallel
  # Worker processes that run call after call: the same futures, waitfor, errors and timeouts
  # as forked calls, at a fraction of their cost for small calls.
  #
  #   pool = InParallel::Pool.new(4)
  #   square = InParallel.task { |x| x * x }     # made before the pool: the workers have it
  #   futures = (1..100).map { |i| pool.call(square, i) }
  #   pool.run { fleet.get_os("a") }             # task def methods called here run on the pool
  #   pool.close
  #
  # Pool.new forks a template process through Process.fork (so the VM's at-fork work and any
  # Process._fork hooks run) and the template forks each worker the same way. Every worker,
  # first or replacement, is a copy of this process as it was inside Pool.new:
  # - A task runs on a pool only if it was made before the pool (else ArgumentError).
  # - Arguments travel to the worker through the task's serializer (Marshal by default; a
  #   task def call sends its receiver too, with Marshal), so a worker runs on copies of them,
  #   made at the call. Results come back as for a forked call.
  # - What a call changes in its worker (globals, caches, loaded code) stays there for the
  #   worker's next calls; threads a call leaves running there do not run between calls.
  # - A crash, exit!, kill or task timeout fails only its call; the worker is replaced. An
  #   exception, `exit` or `abort` fails the call and the worker runs on.
  # - max_calls: replace each worker after that many calls; max_rss: after a call that left
  #   its resident memory above that many bytes.
  #
  # close (or InParallel.pool { }) fails what is still queued or running with
  # InParallel::CanceledError and ends every process of the pool; a pool no one closes is
  # closed when it is garbage collected, and its processes die with this one in any case.
  class Pool
    THREAD_KEY = :__inparallel_pool
    private_constant :THREAD_KEY

    # workers: how many processes (Integer >= 1). max_calls: Integer >= 1 or nil;
    # max_rss: bytes, Integer >= 1 or nil.
    def initialize(workers, max_calls: nil, max_rss: nil)
      @workers = Pool.__count(workers, "workers")
      calls = max_calls.nil? ? 0 : Pool.__count(max_calls, "max_calls", 2**32 - 1)
      rss = max_rss.nil? ? 0 : Pool.__count(max_rss, "max_rss", 2**63 - 1)
      @owner = Process.pid
      # For callables that are not tasks: made here, so the workers have it.
      @callables = Task.new(->(callable, *args, **kwargs) { callable.call(*args, **kwargs) }).__receiver!
      pinned = Task.__live
      @runnable = pinned.to_h { |t| [t, true] }.compare_by_identity
      __start(@workers, calls, rss, pinned)
    end

    # Runs `target` on a worker with the arguments and returns its Future at once. `target`
    # is an InParallel::Task made before the pool (or its to_proc), a Method (its receiver
    # travels with Marshal), or an object with #call that Marshal can dump. A Proc cannot
    # travel: make it a task before the pool. Raises ArgumentError for a task made after the
    # pool, InParallel::EncodeError when the arguments cannot be encoded, IOError once closed.
    def call(target, *args, **kwargs, &block)
      raise ArgumentError, "a call on a pool cannot take a block: it cannot travel to a worker" if block

      shown = kwargs.empty? ? args : args + [kwargs]
      case target
      when Task then __submit(target, nil, args, kwargs, shown)
      when Proc
        task = Task.__of(target) or
          raise ArgumentError, "a Proc cannot travel to a pool's worker: make it a task before the pool " \
                               "(t = InParallel.task { ... }) and call that"
        __submit(task, nil, args, kwargs, shown)
      when Method then __submit(@callables, MethodCall.new(target.receiver, target.name), args, kwargs, shown)
      else
        unless target.respond_to?(:call)
          raise TypeError, "a pool runs an InParallel::Task, a Method or an object with #call, got #{target.class}"
        end

        __submit(@callables, target, args, kwargs, shown)
      end
    end

    # Makes calls of tasks (task def methods, InParallel.task callables) made in the block, in
    # this thread, run on this pool; returns the block's value.
    def run
      raise ArgumentError, "Pool#run needs a block" unless block_given?

      thread = Thread.current
      outer = thread.thread_variable_get(THREAD_KEY)
      thread.thread_variable_set(THREAD_KEY, self)
      begin
        yield self
      ensure
        thread.thread_variable_set(THREAD_KEY, outer)
      end
    end

    # The live workers: `workers` from Pool.new on, fewer only while the template cannot fork.
    def workers
      __workers
    end

    def inspect
      "#<InParallel::Pool workers=#{@workers}#{closed? ? ' closed' : ''}>"
    end

    # --- for the rest of the gem; not API ------------------------------------------------
    # :stopdoc:

    # The pool of the enclosing #run in this thread, if this process made it.
    def self.__current
      pool = Thread.current.thread_variable_get(THREAD_KEY)
      pool if pool && pool.__owner == Process.pid
    end

    def __owner
      @owner
    end

    # timeout_ms: replaces the task's own timeout for this call (InParallel.map's timeout:).
    def __submit(task, receiver, args, kwargs, shown, timeout_ms = nil)
      __check_runnable(task)
      __call(task, task.__encode_args(receiver, args, kwargs), shown, timeout_ms, nil)
    end

    # A batch of InParallel.map: `bytes` its items, encoded; a progress slot from __take_slot.
    def __submit_batch(task, bytes, items, slot)
      __check_runnable(task)
      __call(task, bytes, items, nil, slot)
    end

    # The pool without a block; with one, the block's value, the pool closed however it ends.
    def __given_to(block)
      return self unless block

      begin
        block.call(self)
      ensure
        close
      end
    end

    def __check_runnable(task)
      raise IOError, "the InParallel::Pool is closed" if closed?
      return if @runnable.key?(task)

      raise ArgumentError, "this task was made after the pool, so the pool's workers do not have it " \
                           "(they are copies of the process as it was at InParallel::Pool.new): " \
                           "make the task first"
    end

    # InParallel.map(pool: self, timeout:) replaces the task's timeout per call: fine here.
    def __check_map_timeout; end

    # A free progress slot for a batch, or nil when every one is in use.
    def __take_slot
      (@free_slots ||= (0...SLOTS).to_a.reverse).pop
    end

    def __give_slot(slot)
      @free_slots << slot
    end

    def self.__count(value, what, max = 65_536)
      raise TypeError, "#{what} must be a positive Integer, got #{value.class}" unless value.is_a?(Integer)
      raise ArgumentError, "#{what} must be a positive Integer, got #{value}" unless value.positive?
      raise ArgumentError, "#{what} #{value} is too large (at most #{max})" if value > max

      value
    end

    # A Method as it travels to a worker: its receiver and name.
    MethodCall = Struct.new(:receiver, :name) do
      def call(*args, **kwargs)
        receiver.method(name).call(*args, **kwargs)
      end
    end
    # :startdoc:
  end

  # InParallel.pool(workers, max_calls: nil, max_rss: nil) { |pool| ... }: makes a pool, runs
  # the block and closes the pool however the block ends; returns the block's value. Without
  # a block, the pool (close it yourself).
  def self.pool(workers, **options, &block)
    Pool.new(workers, **options).__given_to(block)
  end
end
