# frozen_string_literal: true

require_relative "lib/inparallel/version"

Gem::Specification.new do |s|
  s.name = "inparallel"
  s.version = InParallel::VERSION
  s.summary = "Run Ruby in worker processes or forked children and get futures for the results"
  s.description = <<~DESC
    InParallel.map runs a block over a list on a pool of worker processes (small items in
    batches, results in order, the first failure raised with its index); InParallel::Pool
    runs tasks on workers forked once through Process.fork; `task def` makes each call of a
    method fork, the child running on a copy of the caller's memory. Every call returns an
    InParallel::Future. Failures are values: the child's exception (same class, child's
    backtrace), crashes, exits and timeouts. InParallel.waitfor hands futures back in
    completion order with a concurrency factor. `progress:` in map needs ruby-progressbar.
  DESC
  s.authors = ["inparallel developers"]
  s.license = "BSD-3-Clause"
  s.required_ruby_version = ">= 3.0"
  s.files = Dir["lib/**/*.rb", "ext/inparallel/*.{c,h,rb}", "ext/inparallel/core/**/*.{c,h}",
                "test/*.rb", "README.md", "Rakefile", "inparallel.gemspec"]
  s.extensions = ["ext/inparallel/extconf.rb"]
  s.require_paths = ["lib"]
end
