# frozen_string_literal: true

require_relative "lib/inparallel/version"

Gem::Specification.new do |s|
  s.name = "inparallel"
  s.version = InParallel::VERSION
  s.summary = "Run Ruby methods in forked children and get futures for their results"
  s.description = <<~DESC
    Each call of an inparallel task forks; the child runs the method on a copy of the
    caller's memory and the call returns an InParallel::Future at once. Failures are values:
    the child's exception (same class, child's backtrace), crashes, exits and timeouts.
    InParallel.waitfor hands futures back in completion order with a concurrency factor.
  DESC
  s.authors = ["inparallel developers"]
  s.license = "BSD-3-Clause"
  s.required_ruby_version = ">= 3.0"
  s.files = Dir["lib/**/*.rb", "ext/inparallel/*.{c,h,rb}", "ext/inparallel/core/**/*.{c,h}",
                "test/*.rb", "README.md", "Rakefile", "inparallel.gemspec"]
  s.extensions = ["ext/inparallel/extconf.rb"]
  s.require_paths = ["lib"]
end
