# frozen_string_literal: true

module InParallel
  # How a task's result travels from the child to the parent. Each serializer has #encode
  # (runs in the child: object -> String of bytes) and #decode (runs in the parent, in the
  # thread that asks for the value: String of bytes -> object); the bytes go through the
  # core's raw serializer (1 MiB or more through a sealed memfd, without a copy).
  #
  # A pool call's arguments travel the other way, through #encode_args (in the caller: the
  # positional Array and the keyword Hash -> String) and #decode_args (in the worker: String ->
  # [args, kwargs]). Most serializers send [args, kwargs] as one value; :raw and protobuf take
  # exactly one argument of the kind they carry.
  module Serializers
    # encode_args/decode_args for a serializer that can carry [args, kwargs] as one value.
    # Formats without symbols (msgpack, JSON) bring keyword names back as Strings: they are
    # made Symbols again, since that is what they were.
    module WholeArgs # :nodoc:
      def encode_args(args, kwargs)
        encode([args, kwargs])
      end

      def decode_args(bytes)
        args, kwargs = decode(bytes)
        unless args.is_a?(Array) && (kwargs.nil? || kwargs.is_a?(Hash))
          raise DecodeError, "#{name} did not give back [arguments, keywords] (got #{args.class})"
        end

        [args, (kwargs || {}).transform_keys { |k| k.is_a?(String) ? k.to_sym : k }]
      end
    end

    # encode_args/decode_args for a serializer that carries one value of its own kind.
    module OneArg # :nodoc:
      def encode_args(args, kwargs)
        unless args.size == 1 && kwargs.empty?
          raise ArgumentError, "a #{name} task's pool call takes exactly one argument (#{arg_kind}), " \
                               "got #{args.size}#{kwargs.empty? ? '' : ' and keywords'}"
        end

        encode(args[0])
      end

      def decode_args(bytes)
        [[decode(bytes)], {}]
      end
    end

    # The default: any object Marshal can dump.
    class Marshal
      include WholeArgs
      def name
        ":marshal"
      end
      def sample # :nodoc:
        nil
      end
      def encode(value)
        ::Marshal.dump(value)
      end

      PIECES_FROM = 1 << 20 # :nodoc:
      IVAR_STRING = "\x04\x08I\"".b.freeze # a String with its encoding after it
      STRING = "\x04\x08\"".b.freeze       # a binary String

      # A large plain String's Marshal form as InParallel::Pieces: its header, the String
      # itself and its trailer, which the child gathers into the result with one copy rather
      # than two (Marshal.dump's, then the result buffer's). nil for anything else: Marshal.dump
      # then says what the String's own state (instance variables, modules) adds.
      def pieces(value) # :nodoc:
        return nil unless value.instance_of?(String) && value.bytesize >= PIECES_FROM &&
                          value.instance_variables.empty? && value.singleton_methods.empty?

        empty = ::Marshal.dump(value.byteslice(0, 0)) # the same header and trailer, length 0
        tag = [IVAR_STRING, STRING].find { |t| empty.start_with?(t) && empty.getbyte(t.bytesize).zero? }
        return nil unless tag

        Pieces[tag + Marshal.w_long(value.bytesize), value, empty.byteslice(tag.bytesize + 1..)]
      end

      # Marshal's form of an Integer length of 123 or more: how many bytes, then the bytes,
      # least significant first.
      def self.w_long(n) # :nodoc:
        bytes = []
        while n.positive?
          bytes << (n & 0xff)
          n >>= 8
        end
        [bytes.size, *bytes].pack("C*")
      end

      def decode(bytes)
        ::Marshal.load(bytes)
      rescue ArgumentError, TypeError => e
        cls = e.message[/undefined class\/module (\S+)/, 1]
        raise DecodeError, cls ? "cannot unmarshal the result: its class #{cls} is not loaded in the parent (#{e.message})" :
                                 "cannot unmarshal the result: #{e.message}"
      end
    end

    # A binary String, as is.
    class Raw
      include OneArg
      def name
        ":raw"
      end
      def arg_kind # :nodoc:
        "a String"
      end
      def sample # :nodoc:
        ""
      end

      def encode(value)
        return value if value.is_a?(String)
        raise TypeError, "the :raw serializer carries a String, not #{value.class}"
      end

      def decode(bytes)
        bytes
      end
    end

    # MessagePack through msgpack-ruby on both sides: nil, true/false, Integer, Float, String,
    # Symbol (as String), Array, Hash, and the extension types registered with the factory
    # (MessagePack::DefaultFactory for :msgpack, or the user's MessagePack::Factory).
    class Msgpack
      include WholeArgs

      def self.require_msgpack # :nodoc:
        require "msgpack"
      rescue LoadError
        raise ArgumentError, "serializer :msgpack needs the msgpack gem (Debian: ruby-msgpack)"
      end

      # factory: a MessagePack::Factory, or nil for MessagePack.pack / MessagePack.unpack.
      def initialize(factory = nil)
        Msgpack.require_msgpack
        @factory = factory
      end

      def name
        @factory ? "MessagePack::Factory" : ":msgpack"
      end
      def sample # :nodoc:
        nil
      end

      def encode(value, root = "result")
        @factory ? @factory.dump(value) : ::MessagePack.pack(value)
      rescue StandardError => e
        raise EncodeError, Msgpack.why(value, e, @factory || ::MessagePack::DefaultFactory, root)
      end

      # The arguments under their own names in a failure's path ("argument[1]",
      # "keyword :key"), rather than as parts of one [args, kwargs] value.
      def encode_args(args, kwargs) # :nodoc:
        whole = [args, kwargs.transform_keys { |k| k.is_a?(Symbol) ? k.to_s : k }]
        @factory ? @factory.dump(whole) : ::MessagePack.pack(whole)
      rescue StandardError => e
        args.each_with_index { |a, i| encode(a, "argument[#{i}]") }
        kwargs.each { |k, v| encode(v, "keyword #{k.inspect}") }
        raise EncodeError, Msgpack.why(whole, e, @factory || ::MessagePack::DefaultFactory, "arguments")
      end

      def decode(bytes)
        @factory ? @factory.load(bytes) : ::MessagePack.unpack(bytes)
      rescue StandardError => e
        raise DecodeError, "#{name} could not unpack the result: #{e.class}: #{InParallel.__plain_message(e)}"
      end

      # Why `value` could not be packed, naming the path to the first part that cannot be
      # ("result[2][:key]: a Proc cannot be encoded"). Runs only after a failure: it walks
      # Arrays and Hashes and tries each other value on its own.
      def self.why(value, error, factory, root = "result") # :nodoc:
        path, part, err = locate(value, root, factory)
        unless path # every part packs on its own: say what the whole said
          return "#{error.class}: #{InParallel.__plain_message(error)}"
        end

        name = part.class.name || part.class.inspect
        text = +"#{path}: #{name.match?(/\A[AEIOU]/) ? 'an' : 'a'} #{name} cannot be encoded"
        # No to_msgpack is the usual reason, and the sentence says it already.
        unless err.is_a?(NoMethodError) && err.name == :to_msgpack
          text << " (#{err.class}: #{InParallel.__plain_message(err)})"
        end
        text
      end

      def self.locate(value, path, factory) # :nodoc:
        if value.instance_of?(Array)
          value.each_with_index do |v, i|
            found = locate(v, "#{path}[#{i}]", factory)
            return found if found
          end
          nil
        elsif value.instance_of?(Hash)
          value.each do |k, v|
            key = k.inspect
            key = "#{key[0, 40]}..." if key.size > 43
            found = locate(k, "#{path} (the key #{key})", factory) || locate(v, "#{path}[#{key}]", factory)
            return found if found
          end
          nil
        else
          begin
            factory.dump(value)
            nil
          rescue StandardError => e
            [path, value, e]
          end
        end
      end
    end

    # A Google::Protobuf message class: the result must be an instance of it.
    class Protobuf
      include OneArg
      def initialize(klass)
        @klass = klass
      end
      def name
        @klass.name
      end
      def arg_kind # :nodoc:
        "a #{@klass}"
      end
      def sample # :nodoc:
        @klass.new
      end

      def encode(value)
        return @klass.encode(value) if value.is_a?(@klass)
        raise TypeError, "the #{@klass} serializer carries a #{@klass}, not #{value.class}"
      end

      def decode(bytes)
        @klass.decode(bytes)
      rescue StandardError => e
        raise DecodeError, "cannot decode the result as #{@klass}: #{e.message}"
      end
    end

    # Any object with dump and load (JSON, YAML, Oj, ...).
    class DumpLoad
      include WholeArgs
      def initialize(impl)
        @impl = impl
      end
      def name
        @impl.inspect
      end
      def encode(value)
        @impl.dump(value).to_s.b
      end

      def decode(bytes)
        @impl.load(bytes)
      rescue StandardError => e
        raise DecodeError, "#{@impl.inspect} could not load the result: #{e.message}"
      end
    end

    NAMES = %i[marshal msgpack raw].freeze

    # The serializer for a task's `serializer:` option.
    def self.for(spec)
      case spec
      when nil, :marshal, "marshal" then Marshal.new
      when :raw, "raw" then Raw.new
      when :msgpack, "msgpack" then Msgpack.new
      when Symbol, String
        raise ArgumentError, "unknown serializer #{spec.inspect}: use :marshal, :msgpack, :raw, a MessagePack::Factory, " \
                             "a Google::Protobuf message class, or an object with dump and load"
      else
        if defined?(::MessagePack::Factory) && spec.is_a?(::MessagePack::Factory)
          Msgpack.new(spec)
        elsif spec.is_a?(Module) && spec.respond_to?(:descriptor) && spec.respond_to?(:decode) &&
              spec.respond_to?(:encode)
          Protobuf.new(spec)
        elsif spec.respond_to?(:dump) && spec.respond_to?(:load)
          DumpLoad.new(spec)
        else
          raise TypeError, "serializer must be :marshal, :msgpack, :raw, a MessagePack::Factory, a Google::Protobuf " \
                           "message class, or an object with dump and load (got #{spec.inspect})"
        end
      end
    end
  end
end
