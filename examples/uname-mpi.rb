# examples/uname.rb over the ranks of an MPI job: rank 0 hands twelve servers out, six calls
# at a time, to the other ranks, which run each get_os in a child forked for it; results are
# printed as they complete, and a failure prints what happened instead of hanging the loop.
# Every rank runs this same script.
#
# Run from the source tree after scripts/build.sh (or with the gem installed, built where
# MPI was found):  mpirun -np 4 ruby examples/uname-mpi.rb
# (as root, Open MPI also wants OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
in_tree = File.expand_path("../bindings/ruby/lib", __dir__)
$LOAD_PATH.unshift(in_tree) if Dir.exist?(File.join(in_tree, "inparallel")) &&
                               !Dir[File.join(in_tree, "inparallel", "inparallel.*")].empty?
require "inparallel"

class HostUnreachable < StandardError; end

class Fleet
  include InParallel

  # Runs in a child on a worker rank. Its task is named "Fleet#get_os" on every rank, which is
  # how a call finds it there.
  task def get_os(server)
    raise HostUnreachable, "cannot reach #{server}" if server == "kilo.local"

    "#{`uname -srm`.chomp} (rank #{InParallel::MPI.rank})"
  end
end

InParallel::MPI.init
# On rank 0 the block runs with the pool and its value comes back; the other ranks serve its
# calls meanwhile, then get nil.
failures = InParallel::MPI.pool do |pool|
  servers = %w[alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima].map { |s| "#{s}.local" }
  count = servers.size
  fleet = Fleet.new
  active = []
  failed = 0
  pool.run do # fleet.get_os calls in here go to the ranks
    InParallel.waitfor(active, concurrency_factor: 6) do |f|
      if f.nil? # waitfor asks for another call: start one if any are left
        active << fleet.get_os(servers.shift) unless servers.empty?
        next
      end
      server = f.args.first
      begin
        printf("%-14s %s\n", server, f.value)
      rescue StandardError => e
        printf("%-14s FAILED [%s] %s\n", server, e.class, e.message)
        failed += 1
      end
    end
  end
  puts "#{count} servers on #{pool.workers} ranks, #{failed} failed (as expected: kilo.local is down)"
  failed
end
InParallel::MPI.finalize
exit(failures.nil? || failures == 1 ? 0 : 1)
