# frozen_string_literal: true

module InParallel
  # A callable whose every call forks: the child runs the task's code on a copy of the
  # caller's memory and the call returns an InParallel::Future at once. Made by
  # InParallel.task { |x| ... } and, per method, by `task def`. Inside InParallel::Pool#run
  # its calls run on that pool instead.
  class Task
    attr_reader :serializer, :timeout, :max_result, :rlimit, :stdio

    # The task's name (a String), by which it travels to other processes of the same program
    # (InParallel::MPI), or nil. See Task.new's name: option.
    attr_reader :name

    # The stdio policy by name: what the child does with its standard streams as it ends.
    STDIO_DEFAULT = %i[purge_inherited flush_std].freeze

    # callable: a Proc, Method or anything with #call (or a block). Options (the core's names):
    #   serializer: :marshal (default), :msgpack, :raw, a MessagePack::Factory, a
    #               Google::Protobuf message class, or an object with dump and load.
    #   timeout:    seconds (Numeric > 0) after which the child is killed, or nil.
    #   max_result: the largest result in bytes (Integer > 0), or nil (the core's 4 GiB).
    #   rlimit:     { nofile: 256, as: 2**30, cpu: [10, 20], ... }: setrlimit in the child, every
    #               RLIMIT_* by lower-case name (InParallel::RLIMITS), a limit for soft and hard
    #               or [soft, hard]; :infinity for none. At most 8.
    #   stdio:      :purge_inherited, :flush_std, :flush_all, an Array of them, or :none;
    #               nil is [:purge_inherited, :flush_std].
    #   name:       a String (1 to 255 bytes) by which the task travels to the other ranks of
    #               an MPI job (InParallel::MPI), unique among the live tasks of the process:
    #               a name another live task has raises ArgumentError. A task that is garbage
    #               collected gives its name back. nil: no name.
    def initialize(callable = nil, serializer: :marshal, timeout: nil, max_result: nil, rlimit: nil, stdio: nil,
                   name: nil, &block)
      raise ArgumentError, "give InParallel::Task a callable or a block, not both" if callable && block

      fn = callable || block
      if fn && !fn.respond_to?(:call)
        raise TypeError, "a task needs something callable (a Proc, a Method, or an object with #call), got #{fn.class}"
      end

      @callable = fn
      @options = { serializer: serializer, timeout: timeout, max_result: max_result, rlimit: rlimit, stdio: stdio }
      @serializer = Serializers.for(serializer)
      @timeout = InParallel.__seconds(timeout, "timeout")
      ms = @timeout ? [(@timeout * 1000).ceil, 1].max : 0
      raise ArgumentError, "timeout is too large (#{timeout} s)" if ms > 2**31 - 1

      @max_result = Task.__max_result(max_result)
      limits = Task.__rlimits(rlimit)
      @rlimit = limits.to_h { |name, soft, hard| [name, [soft, hard]] }.freeze
      @stdio = Task.__stdio(stdio)
      flags = @stdio.sum { |name| STDIO_FLAGS.fetch(name) }
      @flush = (flags & (STDIO_FLAGS[:flush_std] | STDIO_FLAGS[:flush_all])) != 0
      __setup(ms, @max_result, stdio.nil? ? nil : flags,
              limits.map { |resource, soft, hard| [RLIMITS.fetch(resource), soft, hard] }, Task.__wire_name(@serializer))
      __take_name(name) unless name.nil?
      __warm
    end

    # Runs the task in a new child process (or, inside InParallel::Pool#run, on that pool)
    # and returns its Future at once.
    def call(*args, **kwargs, &block)
      fn = @callable or raise ArgumentError, "this task has no callable of its own"
      __invoke(nil, args, kwargs, block) { fn.call(*args, **kwargs, &block) }
    end
    alias [] call

    # A Proc that calls the task; InParallel.map(items, pool: pool, &task) knows it for the
    # task's.
    def to_proc
      pr = method(:call).to_proc
      pr.instance_variable_set(:@__inparallel_task, self)
      pr
    end

    def inspect
      text = +"#<InParallel::Task "
      text << "#{@name.inspect} " if @name
      text << "serializer=#{@serializer.name}"
      text << " timeout=#{@timeout}s" if @timeout
      text << " max_result=#{@max_result}" if @max_result
      text << " rlimit=#{@rlimit}" unless @rlimit.empty?
      text << " stdio=#{@stdio}" unless @stdio == STDIO_DEFAULT
      text << ">"
    end

    # --- for the rest of the gem; not API ------------------------------------------------
    # :stopdoc:

    # The Task a Proc made by Task#to_proc calls, or nil.
    def self.__of(proc)
      proc.instance_variable_get(:@__inparallel_task)
    end

    # Every Task alive, for a pool to pin. ObjectSpace.each_object first finishes a garbage
    # collection under way, so it never hands out a Task that is garbage still to be swept
    # (ObjectSpace::WeakMap#keys on Ruby 3.1 did, and the pool then held a freed object).
    def self.__live
      ObjectSpace.each_object(Task).to_a
    end

    # The name under which the task's arguments travel: ranks whose tasks differ in serializer
    # fail ip_mpi_init's check. What changes from process to process (an object's address in
    # its inspect) is left out.
    def self.__wire_name(serializer)
      name = serializer.name.to_s
      return name unless name.start_with?("#<")

      impl = serializer.instance_variable_get(:@impl)
      impl ? impl.class.name.to_s : serializer.class.name.to_s
    end

    # Gives the task `name` (see Task.new's name:). auto: the name task def made for a method,
    # which the task of a later task def of that method takes over (the method is the new one
    # now); any other holder of the name makes it an ArgumentError.
    def __take_name(name, auto: false)
      unless name.is_a?(String) || name.is_a?(Symbol)
        raise TypeError, "name: must be a String (or nil for none), got #{name.class}"
      end

      name = name.to_s
      if name.empty? || name.bytesize > 255 || name.include?("\0")
        raise ArgumentError, "name: must be 1 to 255 bytes without NUL, got #{name.inspect[0, 80]}"
      end

      rc = __send__(:__name=, name)
      holder = Task.__send__(:__named, name) if rc == CODES["EALREADY"]
      if holder && auto && holder.__auto_name == name
        holder.__drop_name
        rc = __send__(:__name=, name)
      end
      if rc == CODES["EALREADY"]
        raise ArgumentError, "the task name #{name.inspect} is taken by another live task " \
                             "(#{holder ? holder.inspect : 'not a Ruby task'}): a name is unique among the tasks of a process"
      end
      raise ArgumentError, "the core refused the task name #{name.inspect} (#{CODES.key(rc) || rc})" unless rc.zero?

      @name = name.freeze
      @auto_name = auto ? @name : nil
      self
    end

    def __auto_name
      @auto_name
    end

    def __drop_name
      __send__(:__name=, nil)
      @name = @auto_name = nil
    end

    # This task with another timeout (InParallel.map's timeout: for a process per item).
    def __with_timeout(timeout)
      Task.new(@callable, **@options, timeout: timeout)
    end

    # A forked call, even inside Pool#run.
    def __fork(args, kwargs)
      fn = @callable
      __spawn(kwargs.empty? ? args : args + [kwargs]) { fn.call(*args, **kwargs) }
    end

    # A task def's runner: its callable takes the receiver first, and a pool call sends the
    # receiver with the arguments, through Marshal whatever the result's serializer.
    def __receiver!
      @receiver = true
      self
    end

    # One call: on the pool of the enclosing Pool#run, else in a forked child running the
    # given block. `receiver` is a task def's self (nil otherwise).
    def __invoke(receiver, args, kwargs, block, &job)
      shown = kwargs.empty? ? args : args + [kwargs]
      pool = Pool.__current
      return __spawn(shown, &job) unless pool
      raise ArgumentError, "a call on a pool cannot take a block: it cannot travel to a worker" if block

      pool.__submit(self, receiver, args, kwargs, shown)
    end

    # In the caller: a pool call's arguments as bytes for the worker.
    def __encode_args(receiver, args, kwargs)
      return Marshal.dump([receiver, args, kwargs]) if @receiver

      @serializer.encode_args(args, kwargs)
    rescue EncodeError, ArgumentError
      raise
    rescue StandardError => e
      what = @receiver ? "the receiver and arguments (Marshal)" : "the arguments (#{@serializer.name})"
      raise EncodeError.new("a pool call could not encode #{what}: #{e.class}: #{InParallel.__plain_message(e)}",
                            code: "EENCODE")
    end

    # --- option checks; not API -------------------------------------------------------------

    def self.__max_result(value)
      return nil if value.nil?
      raise TypeError, "max_result must be a number of bytes (an Integer) or nil, got #{value.class}" unless value.is_a?(Integer)
      raise ArgumentError, "max_result must be a positive number of bytes, got #{value}" unless value.positive?
      raise ArgumentError, "max_result #{value} is too large (the most is #{2**64 - 1})" if value >= 2**64

      value
    end

    INFINITY_NAMES = [:infinity, :unlimited, "infinity", "unlimited"].freeze
    private_constant :INFINITY_NAMES

    # [[name, soft, hard], ...] from { name => limit or [soft, hard] }.
    def self.__rlimits(spec)
      return [] if spec.nil?
      unless spec.is_a?(Hash)
        raise TypeError, "rlimit must be a Hash of limits by name, e.g. { nofile: 256, as: 2**30 }, got #{spec.class}"
      end

      limits = {}
      spec.each do |key, value|
        name = (key.is_a?(Symbol) || key.is_a?(String)) && key.to_s.downcase.delete_prefix("rlimit_").to_sym
        unless name && RLIMITS.key?(name)
          raise ArgumentError, "rlimit: unknown resource #{key.inspect} (known: #{RLIMITS.keys.sort.join(', ')})"
        end

        soft, hard = if value.is_a?(Array)
                       unless value.size == 2
                         raise ArgumentError, "rlimit #{name}: give one limit or [soft, hard], got #{value.inspect}"
                       end

                       value
                     else
                       [value, value]
                     end
        soft = __rlim(name, soft)
        hard = __rlim(name, hard)
        raise ArgumentError, "rlimit #{name}: the soft limit #{soft} is above the hard limit #{hard}" if soft > hard

        limits[name] = [name, soft, hard]
      end
      if limits.size > 8
        raise ArgumentError, "rlimit: at most 8 resources per task, got #{limits.size} (#{limits.keys.join(', ')})"
      end

      limits.values
    end

    def self.__rlim(name, value)
      return RLIM_INFINITY if INFINITY_NAMES.include?(value) || value == Float::INFINITY
      unless value.is_a?(Integer)
        raise TypeError, "rlimit #{name}: a limit is an Integer or :infinity, got #{value.inspect}"
      end
      raise ArgumentError, "rlimit #{name}: a limit cannot be negative, got #{value}" if value.negative?
      raise ArgumentError, "rlimit #{name}: #{value} is too large (:infinity is #{RLIM_INFINITY})" if value > RLIM_INFINITY

      value
    end

    # The stdio policy as a frozen Array of flag names.
    def self.__stdio(spec)
      return STDIO_DEFAULT if spec.nil?

      names = spec.is_a?(Array) ? spec : [spec]
      names.each_with_object([]) do |n, acc|
        unless n.is_a?(Symbol) || n.is_a?(String)
          raise TypeError, "stdio must be a name (#{STDIO_FLAGS.keys.join(', ')}, :none) or an Array of them, got #{n.inspect}"
        end

        n = n.to_sym
        next if n == :none

        unless STDIO_FLAGS.key?(n)
          raise ArgumentError, "stdio: unknown flag #{n.inspect} (known: #{STDIO_FLAGS.keys.join(', ')}, and :none for none)"
        end

        acc << n unless acc.include?(n)
      end.freeze
    end

    private

    # In a pool's worker: decodes a call's arguments and runs the task on them, as __child
    # runs a forked call's block.
    def __pool_child(bytes, slot)
      return __child(-> { __run_batch(bytes, slot) }, BATCH_ENVELOPE) if slot >= 0

      __child(lambda do
        receiver, args, kwargs = __decode_args(bytes)
        @receiver ? @callable.call(receiver, *args, **kwargs) : @callable.call(*args, **kwargs)
      end)
    end

    def __decode_args(bytes)
      return Marshal.load(bytes) if @receiver

      [nil, *@serializer.decode_args(bytes)]
    rescue DecodeError => e
      raise DecodeError.new("worker #{Process.pid}: #{e.message}", code: "EDECODE", pid: Process.pid)
    rescue StandardError => e
      raise DecodeError.new("worker #{Process.pid} could not decode the call's arguments " \
                            "(#{@receiver ? 'Marshal' : @serializer.name}): #{e.class}: #{InParallel.__plain_message(e)}",
                            code: "EDECODE", pid: Process.pid)
    end

    # Runs the child's Ruby path once, here, on the serializer's sample value (a user's own
    # serializer has none: its encode may have effects). The method caches that fills are
    # then the parent's, which every child shares, instead of each child filling them again:
    # each page they live on was a copy-on-write fault per call. Signals wait until it is
    # done, since __child answers one by ending the process.
    def __warm
      return unless @serializer.respond_to?(:sample)

      sample = @serializer.sample
      Thread.handle_interrupt(Object => :never) { __child(-> { sample }) }
    rescue StandardError
      nil # only an optimisation: the call itself reports what goes wrong
    end

    # In the child: run the job and return the encoded result (a String), or
    # [code, class name, message, backtrace text, raised code] describing why there is none.
    # Never raises: signals end the process here, the way they would end a standalone one;
    # `exit` and `abort` are reported with their status (the raised code) and message, which
    # the parent turns into a ProcessError.
    def __child(job, encoder = @serializer)
      value = job.call
      result = (encoder.respond_to?(:pieces) && encoder.pieces(value)) || __encode_result(value, encoder)
      InParallel.__flush_stdio if @flush
      result
    rescue SignalException => e
      # Die of the signal, as the process would have without a handler.
      InParallel.__flush_stdio if @flush
      Signal.trap(e.signo, "SYSTEM_DEFAULT")
      Process.kill(e.signo, Process.pid)
      sleep 1
      Process.exit!(128 + e.signo)
    rescue Exception => e # rubocop:disable Lint/RescueException
      InParallel.__flush_stdio if @flush
      __failure(e)
    end

    # The value's bytes, or the EENCODE failure (see __child) when the encoder refused it.
    def __encode_result(value, encoder)
      bytes = encoder.encode(value)
      raise TypeError, "#{encoder.name} encode returned #{bytes.class}, not a String" unless bytes.is_a?(String)

      bytes
    rescue SystemExit, SignalException
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException
      [CODES["EENCODE"], "InParallel::EncodeError",
       "the #{encoder.name} serializer could not encode the result (#{value.class}): " \
       "#{InParallel.__plain_message(e)}",
       InParallel.__backtrace_text(e, nil), 0]
    end

    # [code, class name, message, backtrace text, raised code] for an exception the task
    # raised: `exit` and `abort` with their status (the raised code) and message.
    def __failure(exc)
      if exc.is_a?(SystemExit)
        return [CODES["ERAISED"], "SystemExit", InParallel.__plain_message(exc), InParallel.__backtrace_text(exc, nil),
                exc.status]
      end

      [CODES["ERAISED"], exc.class.name || exc.class.inspect, InParallel.__plain_message(exc),
       InParallel.__backtrace_text(exc, exc), 0]
    end

    BATCH_ENVELOPE = Serializers::Marshal.new
    private_constant :BATCH_ENVELOPE

    # In a worker: a batch of InParallel.map, `bytes` the Marshal of its items, each encoded
    # by the task's serializer as a call's arguments. Runs the items in order, marking each in
    # the progress slot first, and stops at the first that fails. The value, through Marshal:
    # [the results before it, each encoded by the task's serializer; the failure (see __child)
    # or nil; the seconds the batch took].
    def __run_batch(bytes, slot)
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      items = Marshal.load(bytes)
      out = []
      failure = nil
      items.each_with_index do |item, j|
        InParallel.__mark(slot, j)
        begin
          _, args, kwargs = __decode_args(item)
          result = __encode_result(@callable.call(*args, **kwargs), @serializer)
        rescue SignalException
          raise
        rescue Exception => e # rubocop:disable Lint/RescueException
          result = __failure(e)
        end
        if result.is_a?(Array)
          failure = result
          break
        end
        out << result
      end
      [out, failure, Process.clock_gettime(Process::CLOCK_MONOTONIC) - started]
    end
    # :startdoc:
  end
end
