# frozen_string_literal: true

module InParallel
  # How a task's result travels from the child to the parent. Each serializer has #encode
  # (runs in the child: object -> String of bytes), #decode (runs in the parent, in the thread
  # that asks for the value) and #wire: RAW (bytes through the core's raw serializer) or
  # MSGPACK (bytes checked by the core's msgpack plugin in the child and decoded by msgpack-c
  # into Ruby objects in the parent, so #decode gets objects).
  module Serializers
    RAW = 0
    MSGPACK = 1

    # The default: any object Marshal can dump.
    class Marshal
      def name = ":marshal"
      def wire = RAW
      def sample = nil
      def encode(value) = ::Marshal.dump(value)

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
      def name = ":raw"
      def wire = RAW
      def sample = ""

      def encode(value)
        return value if value.is_a?(String)
        raise TypeError, "the :raw serializer needs a String result, got #{value.class}"
      end

      def decode(bytes) = bytes
    end

    # MessagePack: nil, true/false, Integer, Float, String, Symbol (as String), Array, Hash.
    class Msgpack
      def initialize
        begin
          require "msgpack"
        rescue LoadError
          raise ArgumentError, "serializer :msgpack needs the msgpack gem (Debian: ruby-msgpack)"
        end
      end

      def name = ":msgpack"
      def wire = InParallel::MSGPACK_WIRE ? MSGPACK : RAW
      def sample = nil
      def encode(value) = ::MessagePack.pack(value)
      # Through the core plugin the bytes arrive already decoded by msgpack-c.
      def decode(obj) = wire == MSGPACK ? obj : ::MessagePack.unpack(obj)
    end

    # A Google::Protobuf message class: the result must be an instance of it.
    class Protobuf
      def initialize(klass) = @klass = klass
      def name = @klass.name
      def wire = RAW
      def sample = @klass.new

      def encode(value)
        return @klass.encode(value) if value.is_a?(@klass)
        raise TypeError, "the #{@klass} serializer needs a #{@klass} result, got #{value.class}"
      end

      def decode(bytes)
        @klass.decode(bytes)
      rescue StandardError => e
        raise DecodeError, "cannot decode the result as #{@klass}: #{e.message}"
      end
    end

    # Any object with dump and load (JSON, YAML, Oj, ...).
    class DumpLoad
      def initialize(impl) = @impl = impl
      def name = @impl.inspect
      def wire = RAW
      def encode(value) = @impl.dump(value).to_s.b

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
        raise ArgumentError, "unknown serializer #{spec.inspect}: use :marshal, :msgpack, :raw, " \
                             "a Google::Protobuf message class, or an object with dump and load"
      else
        if spec.is_a?(Module) && spec.respond_to?(:descriptor) && spec.respond_to?(:decode) &&
           spec.respond_to?(:encode)
          Protobuf.new(spec)
        elsif spec.respond_to?(:dump) && spec.respond_to?(:load)
          DumpLoad.new(spec)
        else
          raise TypeError, "serializer must be :marshal, :msgpack, :raw, a Google::Protobuf message " \
                           "class, or an object with dump and load (got #{spec.inspect})"
        end
      end
    end
  end
end
