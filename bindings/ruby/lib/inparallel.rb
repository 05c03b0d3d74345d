# frozen_string_literal: true

# inparallel: run a method or a block in a forked child process and get a future for its
# result.
#
#   class Fleet
#     include InParallel
#     task def get_os(server) = `uname -a`    # each call forks and returns a Future
#   end
#   active = servers.map { |s| fleet.get_os(s) }
#   InParallel.waitfor(active) { |f| puts f.value }
#
# See the README in bindings/ruby for the whole API.
require "inparallel/version"
require "inparallel/inparallel" # the C extension: Task, Future, Waiter
require "inparallel/errors"
require "inparallel/serializers"
require "inparallel/task"
require "inparallel/future"
require "inparallel/pool"
require "inparallel/map"
require "inparallel/mpi"

module InParallel
  # The child's backtrace as text, one frame per line; for exceptions that Marshal can dump, a
  # last line carries the marshaled exception so the parent can rebuild it with its state.
  MARSHAL_LINE = "inparallel-marshal:"
  MARSHAL_MAX = 256 * 1024

  # `include InParallel` gives the class `task`, the method decorator.
  module Decorator
    # task def name(...) ... end, serializer: :marshal, timeout: nil, max_result: nil,
    #                              rlimit: nil, stdio: nil, name: "Class#method"
    #
    # Makes each call of the method fork a child that runs the original method (self, its
    # instance variables, blocks and keyword arguments all work: the child has a copy of the
    # caller's memory) and return an InParallel::Future at once. The options are
    # InParallel::Task.new's. The method's task is named "Class#method" ("Class.method" for
    # `task def self.method`), so that its calls travel to MPI ranks (InParallel::MPI) inside
    # Pool#run; name: gives another name, name: nil none. An anonymous class's methods, and
    # names over 255 bytes, get none. A later task def of the same method takes the name over;
    # a name another task has raises ArgumentError.
    def task(name, **options)
      unless name.is_a?(Symbol) || name.is_a?(String)
        raise TypeError, "task expects a method name (task def name(...) ... end), got #{name.class}"
      end

      name = name.to_sym
      owner = if method_defined?(name) || private_method_defined?(name) then self
              elsif singleton_class.method_defined?(name) then singleton_class
              else raise ArgumentError, "task: #{self} has no method #{name.inspect} (write `task def #{name}(...) ... end`)"
              end
      original = owner.instance_method(name)
      auto = InParallel.__method_task_name(self, owner, name) unless options.key?(:name)
      runner = Task.new(->(recv, *a, **kw, &b) { original.bind_call(recv, *a, **kw, &b) }, **options).__receiver!
      runner.__take_name(auto, auto: true) if auto
      visibility = if owner.private_method_defined?(name) then :private
                   elsif owner.protected_method_defined?(name) then :protected
                   else :public
                   end
      owner.define_method(name) do |*args, **kwargs, &block|
        runner.__invoke(self, args, kwargs, block) { original.bind_call(self, *args, **kwargs, &block) }
      end
      owner.send(visibility, name)
      name
    end
  end

  def self.included(base) # :nodoc:
    base.extend(Decorator)
    super
  end

  # InParallel.task(serializer: :marshal, timeout: nil, max_result: nil, rlimit: nil,
  # stdio: nil) { |x| ... } => a Task: call it with `call`, `.()` or `[]`; each call forks and
  # returns a Future. A Proc or Method may be given instead of the block. The options are
  # InParallel::Task.new's.
  def self.task(callable = nil, **options, &block)
    raise ArgumentError, "InParallel.task needs a block or a callable" unless callable || block

    Task.new(callable, **options, &block)
  end

  # Hands back the futures of `list` (an Array, changed in place) as they complete. With a
  # concurrency factor it yields nil whenever fewer than that many are in the list, asking
  # for another task to be appended; when the list is empty it asks one last time and ends if
  # nothing was added. With `timeout` (seconds), a wait for the next completion that lasts
  # longer raises InParallel::TimeoutError (the calls keep running, still in the list).
  # Without a block, returns an Enumerator.
  def self.waitfor(list, concurrency_factor: nil, timeout: nil, &block)
    unless list.is_a?(Array)
      raise TypeError, "InParallel.waitfor expects an Array of futures, got #{list.class}"
    end
    raise FrozenError.new("InParallel.waitfor changes the list in place; it is frozen", receiver: list) if list.frozen?

    cf = case concurrency_factor
         when nil then 0
         when Integer
           if concurrency_factor <= 0
             raise ArgumentError, "concurrency_factor must be a positive Integer or nil, got #{concurrency_factor}"
           end
           raise ArgumentError, "concurrency_factor #{concurrency_factor} is too large" if concurrency_factor > 2**31 - 1

           concurrency_factor
         else
           raise TypeError, "concurrency_factor must be a positive Integer or nil, got #{concurrency_factor.class}"
         end
    ms = __wait_ms(timeout) || -1
    return enum_for(:waitfor, list, concurrency_factor: concurrency_factor, timeout: timeout) unless block

    waiter = Waiter.new
    while (f = waiter.step(list, cf, ms)) != false
      yield f
    end
    nil
  end

  # :stopdoc:
  class << self
    # --- helpers for the rest of the gem; not API ---------------------------------------

    # The name a task def method's task gets: "Class#method", "Class.method" for a singleton
    # method; nil for an anonymous class's, or past the core's 255 bytes.
    def __method_task_name(mod, owner, meth)
      return nil unless mod.name

      name = owner == mod ? "#{mod.name}##{meth}" : "#{mod.name}.#{meth}"
      name.bytesize <= 255 ? name : nil
    end

    def __seconds(value, what, allow_zero: false)
      return nil if value.nil?
      raise TypeError, "#{what} must be a number of seconds or nil, got #{value.class}" unless value.is_a?(Numeric) && value.real?

      value = value.to_f
      if value.nan? || value.negative? || (value.zero? && !allow_zero)
        raise ArgumentError, "#{what} must be #{allow_zero ? 'zero or positive' : 'positive'} (seconds), got #{value}"
      end

      value.infinite? ? nil : value
    end

    # A wait's timeout in seconds (nil: forever, 0: do not wait) as milliseconds for the C
    # side, nil for forever. Rounded up, so a wait never ends before its time.
    def __wait_ms(timeout)
      secs = __seconds(timeout, "timeout", allow_zero: true)
      return nil if secs.nil?

      ms = (secs * 1000).ceil
      ms > 2**53 ? nil : ms
    end

    # In the child, before it ends; allocates nothing (every page a child writes is copied).
    def __flush_stdio
      __flush($stdout)
      __flush($stderr)
      __flush(STDOUT) unless STDOUT.equal?($stdout)
      __flush(STDERR) unless STDERR.equal?($stderr)
    end

    def __flush(io)
      io.flush if io.respond_to?(:flush)
    rescue StandardError
      nil
    end

    # An exception's own message, without what error_highlight (its code snippet) and
    # did_you_mean (its suggestions) append to it on Ruby 3.1, whose to_s they override: the
    # message goes into another process, where the snippet's lines mean nothing, and the core
    # carries one line. Both mark their to_s with SKIP_TO_S_FOR_SUPER_LOOKUP for this very
    # walk (did_you_mean's original_message does the same). From Ruby 3.2 on they add to
    # detailed_message instead and message is already plain. A class's own #message is kept.
    def __plain_message(exc)
      return exc.message.to_s unless exc.method(:message).owner == Exception

      m = exc.method(:to_s)
      m = m.super_method while m.super_method && m.owner.const_defined?(:SKIP_TO_S_FOR_SUPER_LOOKUP, false)
      m.call.to_s
    rescue StandardError
      begin
        exc.message.to_s
      rescue StandardError
        exc.class.name.to_s
      end
    end

    def __backtrace_text(exc, marshal)
      lines = (exc.backtrace || []).map { |l| l.tr("\n\0", "  ") }
      if marshal
        blob = begin
          [Marshal.dump(marshal)].pack("m0")
        rescue StandardError
          nil
        end
        lines << "#{MARSHAL_LINE}#{blob}" if blob && blob.bytesize <= MARSHAL_MAX
      end
      lines.join("\n")
    end

    def __error_from(info)
      code = info[:code_name]
      opts = { code: code, pid: info[:pid] }
      msg = info[:message]
      case code
      when "ERAISED", "EENCODE"
        return __exited(info) if code == "ERAISED" && info[:kind] == "SystemExit"

        __remote_exception(info[:kind], msg, info[:backtrace], opts)
      when "EDECODE" then DecodeError.new(msg, **opts)
      when "E2BIG" then EncodeError.new(msg, **opts) # larger than the task's max_result
      else
        popts = opts.merge(signal: info[:signal], exit_status: info[:exit_status], core_dumped: info[:core_dumped])
        klass = { "ETIMEDOUT" => TaskTimeoutError, "ECANCELED" => CanceledError }.fetch(code, ProcessError)
        klass.new(msg, **popts)
      end
    end

    # `exit 3` or `abort("why")` in the task: the child rescued the SystemExit and sent its
    # status (as the raised code) and message, which abort's is, and which `exit`'s is not.
    def __exited(info)
      status = info[:raised_code]
      text = +"child #{info[:pid]} exited with status #{status} without sending a result"
      said = info[:message].to_s
      text << ": " << said unless said.empty? || %w[exit SystemExit].include?(said)
      err = ProcessError.new(text, code: "EEXITED", pid: info[:pid], exit_status: status)
      lines = info[:backtrace].to_s.split("\n")
      err.set_backtrace(lines) unless lines.empty?
      err
    end

    # The child's exception, rebuilt: itself when Marshal carried it (with its state), else
    # from its class name and message when the parent has that class, else a RemoteError.
    # Only StandardErrors come back as themselves: NoMemoryError, ScriptError (LoadError,
    # NotImplementedError, SyntaxError), SecurityError, SystemStackError or a class of the
    # task's own under Exception, raised here, would pass by the `rescue => e` that handles a
    # failed call, as if this process had run out of memory or failed to load code; they come
    # back as a RemoteError naming the class.
    def __remote_exception(kind, message, backtrace, opts)
      lines = backtrace ? backtrace.split("\n") : []
      exc = nil
      if lines.last&.start_with?(MARSHAL_LINE)
        blob = lines.pop.delete_prefix(MARSHAL_LINE)
        exc = begin
          Marshal.load(blob.unpack1("m0"))
        rescue StandardError
          nil
        end
        exc = nil unless exc.is_a?(StandardError)
      end
      unless exc
        klass = __resolve_class(kind)
        if klass && klass <= StandardError
          exc = klass.allocate
          Exception.instance_method(:initialize).bind_call(exc, message)
          exc.instance_variable_set(:@code, opts[:code]) if klass <= Error
          exc.instance_variable_set(:@pid, opts[:pid]) if klass <= Error
        else
          exc = RemoteError.new(message, remote_class: kind, **opts)
        end
      end
      exc.set_backtrace(lines) unless lines.empty?
      exc
    end

    def __resolve_class(name)
      return nil unless name.is_a?(String) && name.match?(/\A[A-Z]\w*(::[A-Z]\w*)*\z/)

      klass = Object.const_get(name)
      klass.is_a?(Class) && klass <= Exception ? klass : nil
    rescue NameError
      nil
    end
  end
  # :startdoc:
end
