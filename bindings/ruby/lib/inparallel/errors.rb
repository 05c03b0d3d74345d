# frozen_string_literal: true

require "timeout"

module InParallel
  # Base of every failure this gem reports. #code is the core's failure code name
  # ("ERAISED", "ESIGNALED", "EEXITED", "ETIMEDOUT", ...) and #pid the child's pid, where known.
  class Error < StandardError
    attr_reader :code, :pid

    def initialize(message = nil, code: nil, pid: nil)
      super(message)
      @code = code
      @pid = pid
    end
  end

  # The child ended without a result: killed by a signal (#signal), exited (#exit_status, e.g.
  # `exit 3` in the task), or could not be started at all (code "EAGAIN", "EMFILE": #pid nil).
  class ProcessError < Error
    attr_reader :signal, :exit_status

    def initialize(message = nil, code: nil, pid: nil, signal: nil, exit_status: nil, core_dumped: false)
      super(message, code: code, pid: pid)
      @signal = signal
      @exit_status = exit_status
      @core_dumped = core_dumped
    end

    def core_dumped?
      @core_dumped
    end
  end

  # The call ran longer than its task's `timeout:` and its child was killed (SIGKILL): an
  # outcome of the call, so a ProcessError (code "ETIMEDOUT", #signal 9).
  class TaskTimeoutError < ProcessError; end

  # A wait ran out before the call completed: Future#value(timeout), Future#error(timeout) or
  # InParallel.waitfor(timeout:). The calls keep running; wait again, cancel them or drop them.
  # A Timeout::Error like Ruby's other wait timeouts, and not an InParallel::Error: it says
  # nothing about how a call ended. #code is "ETIMEDOUT", #pid the future's child (nil for
  # waitfor).
  class TimeoutError < Timeout::Error
    attr_reader :code, :pid

    def initialize(message = "the wait timed out", code: "ETIMEDOUT", pid: nil)
      super(message)
      @code = code
      @pid = pid
    end
  end

  # Future#cancel killed the child before it sent a result.
  class CanceledError < ProcessError; end

  # The child raised an exception that cannot come back as itself: its class does not exist
  # in the parent, or is no StandardError (NoMemoryError, LoadError, ...). #message starts
  # with the child's class name ("CustomError: only in child"), #remote_class is that name,
  # #backtrace the child's backtrace.
  class RemoteError < Error
    attr_reader :remote_class

    def initialize(message = nil, remote_class: nil, code: "ERAISED", pid: nil)
      super(remote_class ? "#{remote_class}: #{message}" : message, code: code, pid: pid)
      @remote_class = remote_class
    end
  end

  # The child's result could not be serialized (e.g. a Proc under :marshal, a non-String
  # under :raw; code "EENCODE"), or was larger than the task's max_result (code "E2BIG").
  # Raised in the parent; the message names the result's class, or its size.
  class EncodeError < Error; end

  # The parent could not turn the child's bytes back into an object (e.g. the result's class
  # is not loaded in the parent). The message names the class.
  class DecodeError < Error; end
end
