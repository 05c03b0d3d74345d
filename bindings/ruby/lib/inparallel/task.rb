# frozen_string_literal: true

module InParallel
  # A callable whose every call forks: the child runs the task's code on a copy of the
  # caller's memory and the call returns an InParallel::Future at once. Made by
  # InParallel.task { |x| ... } and, per method, by `task def`.
  class Task
    attr_reader :serializer, :timeout

    # callable: a Proc, Method or anything with #call (or a block). serializer: :marshal
    # (default), :msgpack, :raw, a Google::Protobuf message class, or an object with dump and
    # load. timeout: seconds (Numeric > 0) after which the child is killed, or nil.
    def initialize(callable = nil, serializer: :marshal, timeout: nil, &block)
      raise ArgumentError, "give InParallel::Task a callable or a block, not both" if callable && block

      fn = callable || block
      if fn && !fn.respond_to?(:call)
        raise TypeError, "a task needs something callable (a Proc, a Method, or an object with #call), got #{fn.class}"
      end

      @callable = fn
      @serializer = Serializers.for(serializer)
      @timeout = InParallel.__seconds(timeout, "timeout")
      ms = @timeout ? [(@timeout * 1000).ceil, 1].max : 0
      raise ArgumentError, "timeout is too large (#{timeout} s)" if ms > 2**31 - 1

      __setup(@serializer.wire, ms)
      __warm
    end

    # Runs the task in a new child process and returns its Future at once.
    def call(*args, **kwargs, &block)
      fn = @callable or raise ArgumentError, "this task has no callable of its own"
      __spawn(kwargs.empty? ? args : args + [kwargs]) { fn.call(*args, **kwargs, &block) }
    end
    alias [] call

    def to_proc = method(:call).to_proc

    def inspect = "#<InParallel::Task serializer=#{@serializer.name}#{@timeout ? " timeout=#{@timeout}s" : ''}>"

    private

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
    # [code, class name, message, backtrace text] describing why there is none. Never raises:
    # `exit` and signals end the process here, the way they would end a standalone one.
    def __child(job)
      value = job.call
      begin
        bytes = @serializer.encode(value)
        raise TypeError, "#{@serializer.name} encode returned #{bytes.class}, not a String" unless bytes.is_a?(String)
      rescue SystemExit, SignalException
        raise
      rescue Exception => e # rubocop:disable Lint/RescueException
        InParallel.__flush_stdio
        return [CODES["EENCODE"], "InParallel::EncodeError",
                "the #{@serializer.name} serializer could not encode the result (#{value.class}): #{e.message}",
                InParallel.__backtrace_text(e, nil)]
      end
      InParallel.__flush_stdio
      bytes
    rescue SystemExit => e
      InParallel.__flush_stdio
      Process.exit!(e.status)
    rescue SignalException => e
      # Die of the signal, as the process would have without a handler.
      InParallel.__flush_stdio
      Signal.trap(e.signo, "SYSTEM_DEFAULT")
      Process.kill(e.signo, Process.pid)
      sleep 1
      Process.exit!(128 + e.signo)
    rescue Exception => e # rubocop:disable Lint/RescueException
      InParallel.__flush_stdio
      [CODES["ERAISED"], e.class.name || e.class.inspect, e.message.to_s, InParallel.__backtrace_text(e, e)]
    end
  end
end
