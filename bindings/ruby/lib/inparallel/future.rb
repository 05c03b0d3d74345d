# frozen_string_literal: true

module InParallel
  # One call of a task, running in its own child process. Futures are made by calling a task;
  # dropping the last reference to one that still runs kills and reaps its child (at GC).
  class Future
    # The call's result. Waits for the child (other threads run meanwhile; Ctrl-C interrupts
    # the wait), then returns what the task returned, or raises why there is nothing:
    # the child's own exception (same class, the child's backtrace) or InParallel::RemoteError,
    # ProcessError (crash, exit, task timeout, cancel), EncodeError or DecodeError.
    # With `timeout` (seconds, nil: forever) a call still running after that long raises
    # InParallel::TimeoutError (a Timeout::Error); the call keeps running.
    def value(timeout = nil)
      __resolve(timeout)
      raise @__error if @__error

      @__value
    end

    # Waits up to `timeout` seconds (nil: forever). true once the call completed, false if it
    # still runs.
    def wait(timeout = nil)
      __wait(InParallel.__wait_ms(timeout))
    end

    # Waits like #value, then returns the exception #value would raise, or nil when the call
    # succeeded; with `timeout`, raises InParallel::TimeoutError as #value does.
    def error(timeout = nil)
      __resolve(timeout)
      @__error
    end

    def inspect
      state = if !done? then "running"
              elsif __status.zero? then "done"
              else "failed #{__error_info[:code_name]}"
              end
      "#<InParallel::Future pid=#{pid.inspect} #{state} args=#{args.inspect[0, 60]}>"
    end
    alias to_s inspect

    private

    def __resolve(timeout)
      return if @__resolved

      if timeout && !__wait(InParallel.__wait_ms(timeout))
        raise TimeoutError.new("the call (pid #{pid}) did not complete within #{format("%g", timeout)} s", pid: pid)
      end
      serializer = __task.serializer
      __with_payload(serializer.is_a?(Serializers::Marshal)) do |payload| # waits
        if __status.zero?
          begin
            @__value = serializer.decode(payload)
          rescue DecodeError => e
            @__error = DecodeError.new(e.message, code: "EDECODE", pid: pid)
          rescue StandardError => e
            @__error = DecodeError.new("cannot decode the result: #{e.class}: #{e.message}", code: "EDECODE", pid: pid)
          end
        else
          @__error = InParallel.__error_from(__error_info)
        end
      end
      @__resolved = true
    end

    # Waits, then yields the value's bytes (nil when the call failed): with `borrow`, a view of
    # the bytes the future holds, for a decoder that copies what it keeps (Marshal.load), taken
    # back once the block is done.
    def __with_payload(borrow)
      payload = __payload(borrow)
      yield payload
    ensure
      __unborrow(payload) if borrow && payload
    end
  end
end
