# frozen_string_literal: true

require_relative "test_helper"
require "json"

Point = Struct.new(:x, :y)

class TestSerializers < InParallelTest
  def test_marshal_is_the_default_and_carries_any_object
    v = InParallel.task { [Point.new(1, 2), { a: :sym, "s" => 1.5 }, 2**100, nil, "é"] }.().value
    assert_equal [Point.new(1, 2), { a: :sym, "s" => 1.5 }, 2**100, nil, "é"], v
    assert_equal Encoding::UTF_8, v.last.encoding
  end

  def test_raw_carries_a_binary_string
    bytes = (0..255).map(&:chr).join.b * 3
    v = InParallel.task(serializer: :raw) { bytes }.().value
    assert_equal bytes, v
    assert_equal Encoding::BINARY, v.encoding
    assert_equal "", InParallel.task(serializer: :raw) { +"" }.().value
  end

  def test_raw_large_result
    v = InParallel.task(serializer: :raw) { "x" * (8 << 20) }.().value
    assert_equal 8 << 20, v.bytesize
  end

  def test_raw_rejects_a_non_string
    err = assert_raises(InParallel::EncodeError) { InParallel.task(serializer: :raw) { 1 }.().value }
    assert_match(/String.*Integer|Integer/, err.message)
  end

  def test_msgpack
    t = InParallel.task(serializer: :msgpack) do
      { "int" => -3, "big" => 2**64 - 1, "f" => 1.25, "s" => "text", "b" => "\xff".b, "a" => [nil, true, false],
        sym: :value }
    end
    v = t.().value
    assert_equal({ "int" => -3, "big" => 2**64 - 1, "f" => 1.25, "s" => "text", "b" => "\xff".b,
                   "a" => [nil, true, false], "sym" => "value" }, v)
    assert_nil InParallel.task(serializer: :msgpack) { nil }.().value
    err = assert_raises(InParallel::EncodeError) { InParallel.task(serializer: :msgpack) { Object.new }.().value }
    assert_match(/Object/, err.message)
  end

  def test_protobuf_message_class
    require "google/protobuf"
    pool = Google::Protobuf::DescriptorPool.generated_pool
    unless pool.lookup("inparallel.test.Uname")
      pool.build do
        add_message "inparallel.test.Uname" do
          optional :host, :string, 1
          optional :text, :string, 2
        end
      end
    end
    uname = pool.lookup("inparallel.test.Uname").msgclass
    t = InParallel.task(serializer: uname) { |h| uname.new(host: h, text: "Linux") }
    v = t.("alpha").value
    assert_instance_of uname, v
    assert_equal %w[alpha Linux], [v.host, v.text]
    err = assert_raises(InParallel::EncodeError) { InParallel.task(serializer: uname) { "no" }.().value }
    assert_match(/String/, err.message)
  end

  def test_dump_and_load_objects
    assert_equal({ "a" => [1, 2] }, InParallel.task(serializer: JSON) { { a: [1, 2] } }.().value)
  end

  # Making a task runs the child's path once in the parent (to warm method caches), but never
  # the task's code, nor a user's serializer, whose dump may have effects.
  def test_making_a_task_runs_neither_its_code_nor_a_users_serializer
    calls = []
    spy = Object.new
    spy.define_singleton_method(:dump) { |v| calls << [:dump, v]; Marshal.dump(v) }
    spy.define_singleton_method(:load) { |b| calls << [:load]; Marshal.load(b) }
    t = InParallel.task(serializer: spy) { calls << :ran; 7 }
    InParallel.task { calls << :ran_too }
    assert_empty calls
    assert_equal 7, t.().value
    assert_equal [[:load]], calls # dump ran in the child, and :ran there too
  end

  def test_unknown_serializers
    err = assert_raises(ArgumentError) { InParallel.task(serializer: :yaml) { 1 } }
    assert_match(/:marshal, :msgpack, :raw/, err.message)
    assert_raises(TypeError) { InParallel.task(serializer: Object.new) { 1 } }
  end
  MpPoint = Struct.new(:x, :y)
  MpDefaultOnly = Struct.new(:name)

  def point_factory
    require "msgpack"
    f = MessagePack::Factory.new
    f.register_type(1, MpPoint, packer: ->(p) { [p.x, p.y].pack("q<q<") },
                                unpacker: ->(s) { MpPoint.new(*s.unpack("q<q<")) })
    f.register_type(2, Symbol)
    f
  end

  # :msgpack results are unpacked by msgpack-ruby in the parent: the extension types registered
  # with MessagePack::DefaultFactory, or with the task's own factory, come back as themselves.
  def test_msgpack_extension_types_round_trip
    require "msgpack"
    unless MessagePack::DefaultFactory.registered_types.any? { |t| t[:class] == MpDefaultOnly }
      MessagePack::DefaultFactory.register_type(0x31, MpDefaultOnly, packer: ->(v) { v.name },
                                                                     unpacker: ->(s) { MpDefaultOnly.new(s) })
    end
    v = InParallel.task(serializer: :msgpack) { { "who" => MpDefaultOnly.new("ann"), "n" => [1, 2] } }.().value
    assert_equal({ "who" => MpDefaultOnly.new("ann"), "n" => [1, 2] }, v)

    factory = point_factory
    t = InParallel.task(serializer: factory) { |n| { pts: Array.new(n) { |i| MpPoint.new(i, -i) }, tag: :sym } }
    assert_equal({ pts: [MpPoint.new(0, 0), MpPoint.new(1, -1)], tag: :sym }, t.(2).value)
    assert_instance_of InParallel::Serializers::Msgpack, t.serializer
    # A large result: 1 MiB and more travels through a memfd.
    big = t.(100_000).value[:pts]
    assert_equal 100_000, big.size
    assert_equal MpPoint.new(99_999, -99_999), big.last
  end

  def test_msgpack_decode_failure_is_a_decode_error
    require "msgpack"
    factory = MessagePack::Factory.new
    factory.register_type(5, MpPoint, packer: ->(p) { p.x.to_s }, unpacker: ->(_s) { raise ArgumentError, "refused" })
    err = assert_raises(InParallel::DecodeError) { InParallel.task(serializer: factory) { MpPoint.new(7) }.().value }
    assert_equal "EDECODE", err.code
    assert_match(/MessagePack::Factory could not unpack the result: ArgumentError: refused/, err.message)
  end

  # A failed :msgpack encode names the path of the value that could not be encoded.
  def test_msgpack_encode_failure_names_the_path
    mp = InParallel.task(serializer: :msgpack) { |v| v }
    {
      [1, 2, { key: -> {} }] => /result\[2\]\[:key\]: a Proc cannot be encoded\z/,
      { "a" => [nil, { "b" => Object.new }] } => /result\["a"\]\[1\]\["b"\]: an Object cannot be encoded\z/,
      [1, 2**70] => /result\[1\]: an Integer cannot be encoded \(RangeError: .+\)\z/,
      { Object.new => 1 } => /result \(the key #<Object:0x\h+>\): an Object cannot be encoded\z/,
      Object.new => /result: an Object cannot be encoded\z/
    }.each do |value, pattern|
      err = assert_raises(InParallel::EncodeError, value.inspect) { mp.(value).value }
      assert_equal "EENCODE", err.code
      assert_match(/\Athe :msgpack serializer could not encode the result \(#{value.class}\): /, err.message)
      assert_match pattern, err.message
    end
    t = InParallel.task(serializer: point_factory) { [MpPoint.new(1, 2), { s: MpPoint.new(1, "two") }] }
    err = assert_raises(InParallel::EncodeError) { t.().value }
    assert_match(/result\[1\]\[:s\]: a TestSerializers::MpPoint cannot be encoded \(TypeError: /, err.message)
  end
end
