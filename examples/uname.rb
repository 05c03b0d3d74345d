# "Log in" to twelve servers, three at a time, and collect each one's `uname -a`. Each call
# runs in its own forked child; results are printed as they complete, and a failure prints
# what happened instead of hanging the loop.
#
# Run from the source tree after `rake -f bindings/ruby/Rakefile compile` (or with the gem
# installed):  ruby examples/uname.rb
in_tree = File.expand_path("../bindings/ruby/lib", __dir__)
$LOAD_PATH.unshift(in_tree) if Dir.exist?(File.join(in_tree, "inparallel")) &&
                               !Dir[File.join(in_tree, "inparallel", "inparallel.*")].empty?
require "inparallel"

class HostUnreachable < StandardError; end

class Fleet
  include InParallel

  # Runs in the child: the "remote" command is local here, and one server is down.
  task def get_os(server)
    raise HostUnreachable, "cannot reach #{server}" if server == "kilo.local"

    `uname -a`.chomp
  end
end

servers = %w[alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima].map { |s| "#{s}.local" }
count = servers.size
fleet = Fleet.new
active = []
failures = 0

InParallel.waitfor(active, concurrency_factor: 3) do |f|
  if f.nil? # waitfor asks for another task: start one if any are left
    active << fleet.get_os(servers.shift) unless servers.empty?
    next
  end
  server = f.args.first
  begin
    printf("%-14s %s\n", server, f.value)
  rescue StandardError => e
    printf("%-14s FAILED [%s] %s\n", server, e.class, e.message)
    failures += 1
  end
end

puts "#{count} servers, #{failures} failed (as expected: kilo.local is down)"
exit(failures == 1 ? 0 : 1)
