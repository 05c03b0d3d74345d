# frozen_string_literal: true

# The reference RDoc makes from the gem (`rdoc lib ext/inparallel/*.c`) is the public API and
# only that: every name a user calls is there with its comment, in the right class, and none
# of the gem's internals (the __ methods, the helper classes) is.
require_relative "test_helper"
require "rdoc"
require "tmpdir"

class TestDocs < InParallelTest
  ROOT = File.expand_path("..", __dir__)

  PUBLIC = %w[
    InParallel.map InParallel.each InParallel.pool InParallel.task InParallel.waitfor
    InParallel::Pool.new InParallel::Pool#call InParallel::Pool#run InParallel::Pool#close
    InParallel::Pool#closed? InParallel::Pool#workers
    InParallel::Task.new InParallel::Task#call InParallel::Task#to_proc
    InParallel::Future#value InParallel::Future#wait InParallel::Future#error
    InParallel::Future#cancel InParallel::Future#done? InParallel::Future#pid InParallel::Future#args
    InParallel::Waiter#step InParallel::Decorator#task InParallel::ItemFailure#index
    InParallel::ProcessError#signal InParallel::ProcessError#exit_status InParallel::RemoteError#remote_class
    InParallel::Task#name
    InParallel::MPI.available? InParallel::MPI.init InParallel::MPI.pool InParallel::MPI.rank InParallel::MPI.size
    InParallel::MPI.finalize
  ].freeze
  CLASSES = %w[
    InParallel::Error InParallel::ProcessError InParallel::TaskTimeoutError InParallel::CanceledError
    InParallel::RemoteError InParallel::EncodeError InParallel::DecodeError InParallel::TimeoutError
    InParallel::Serializers::Marshal InParallel::Serializers::Msgpack
    InParallel::MPI InParallel::MPI::Error InParallel::MPI::Pool
  ].freeze

  def test_the_reference_is_the_public_api_with_its_comments
    Dir.mktmpdir do |dir|
      out = File.join(dir, "ri")
      files = [File.join(ROOT, "lib"), *Dir[File.join(ROOT, "ext", "inparallel", "*.c")]]
      capture_io { RDoc::RDoc.new.document(["--quiet", "--format=ri", "--op", out, *files]) }
      store = RDoc::Store.new(out)
      store.load_cache
      names = store.cache[:instance_methods].flat_map { |k, ms| ms.map { |m| "#{k}##{m}" } } +
              store.cache[:class_methods].flat_map { |k, ms| ms.map { |m| "#{k}.#{m}" } }
      modules = store.cache[:modules]

      assert_empty names.grep(/__|\.included\z/), "internals in the reference"
      assert_empty modules.grep(/Mapping|Pieces|WholeArgs|OneArg/), "internal classes in the reference"
      assert_empty CLASSES - modules, "classes missing, or nested where they are not"
      assert_empty PUBLIC - names, "public methods missing from the reference"
      PUBLIC.each do |name|
        klass, kind, meth = name.match(/\A(.*?)([.#])([^.#]+)\z/).captures
        doc = store.load_method(klass, "#{kind == '.' ? '::' : '#'}#{meth}")
        refute_empty doc.comment.to_s.strip, "#{name} has no comment in the reference"
      end
    end
  end
end
