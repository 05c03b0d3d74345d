# frozen_string_literal: true

module InParallel
  # The ranks of an MPI job as a pool: the same program runs on every rank (mpirun -np 4), the
  # root gets a pool whose workers are the other ranks, and its calls, futures,
  # InParallel.waitfor and failures are those of a local pool.
  #
  #   square = InParallel.task(name: "square") { |x| x * x }   # every rank names the same tasks
  #   InParallel::MPI.init
  #   InParallel::MPI.pool do |pool|            # rank 0; the other ranks serve, then go on
  #     futures = (1..100).map { |i| pool.call(square, i) }
  #     InParallel.waitfor(futures) { |f| p f.value }
  #   end
  #   InParallel::MPI.finalize
  #
  # Tasks travel by name: Task.new's name:, and the "Class#method" name task def gives its
  # methods. Works where the gem was built with MPI (MPI.available?); elsewhere every method
  # but available? and finalize raises NotImplementedError.
  module MPI
    # A failure of MPI, or of the ranks' agreement, which every rank raises alike, with the
    # same message (the ranks named different tasks, say). #code is the core's code name: "EINVAL"
    # (the ranks' tasks differ, MPI.pool before MPI.init, a bad root, one rank only), "EPROTO"
    # (MPI failed), "ENOMEM".
    class Error < InParallel::Error; end

    # The root's pool, made by InParallel::MPI.pool: an InParallel::Pool whose workers are the
    # other ranks. call, run, workers, close and closed? are InParallel::Pool's, and it works
    # with InParallel.waitfor and InParallel.map(pool:), but:
    # - A call's task travels by name: a task named on every rank before MPI.pool. An unnamed
    #   task, or one named since, fails its call with InParallel::ProcessError (code "EINVAL")
    #   saying so. Methods and objects with #call travel with Marshal, as on a local pool.
    # - Each call runs on its rank in a process forked for it (reuse: true: in one process per
    #   rank, forked when the rank started serving), with the task's options as that rank has
    #   them (timeout:, rlimit:, ...). A raise, crash, timeout or cancel fails that call alone.
    # - InParallel.map sends the items one per call (no batches: no rank shares memory with
    #   the root to say which item of a batch was running), and takes no timeout: (give the
    #   task its own); Future#pid is the pid on the call's rank's host.
    class Pool < InParallel::Pool
      private_class_method :new

      def inspect
        "#<InParallel::MPI::Pool root=#{@root} reuse=#{@reuse}#{closed? ? ' closed' : " workers=#{workers}"}>"
      end

      # :stopdoc:
      private

      def __setup(root, reuse, callables)
        @owner = Process.pid
        @root = root
        @reuse = reuse
        @callables = callables
        self
      end

      public

      def __check_runnable(_task)
        raise IOError, "the InParallel::MPI::Pool is closed" if closed?
      end

      def __take_slot
        nil
      end

      # A call carries no timeout of its own to a rank, which runs the task with its options.
      def __check_map_timeout
        raise ArgumentError, "InParallel.map's timeout: cannot travel to MPI ranks: give the task a timeout: " \
                             "of its own (on every rank)"
      end

      def __submit(task, receiver, args, kwargs, shown, timeout_ms = nil)
        __check_map_timeout if timeout_ms
        super
      end
      # :startdoc:
    end

    class << self
      # true where the gem was built with MPI (extconf.rb found Open MPI or MPICH), so that the
      # other methods work; false where they raise NotImplementedError.
      def available?
        __built
      end

      # On every rank, after naming its tasks: starts MPI (MPI_Init_thread with
      # MPI_THREAD_MULTIPLE, unless the program started it) and checks that every rank named
      # the same tasks with the same serializers. When they differ it raises
      # InParallel::MPI::Error on every rank, whose message names the first difference
      # ('task "cube" is named on rank 0 but not on rank 2'). From here on, this process ends
      # MPI as it exits (see finalize).
      def init
        __need
        # Pool#call's Methods and objects with #call run through one named task of the gem's.
        @callables ||= Task.new(->(callable, *args, **kwargs) { callable.call(*args, **kwargs) },
                                name: "InParallel::MPI::Pool#call").__receiver!
        failed = __init
        unless @exit_hook # also when the check failed: MPI runs, and must end
          @exit_hook = true
          at_exit { MPI.__at_exit($!) }
        end
        __raise(failed, every_rank: true)
        # Kept: a task's child reads them here, since a forked child must not call MPI.
        @rank = __rank
        @size = __size
        nil
      end

      # On every rank, with the same root: on rank `root` an InParallel::MPI::Pool whose workers
      # are the other ranks; on those ranks it serves the root's calls until the root closes
      # the pool, then returns nil. With a block, the root's pool is yielded and closed however
      # the block ends, and the block's value returned; the other ranks serve and return nil
      # without calling it. reuse: true (the root's counts) runs each rank's calls in one process
      # forked once and reused, rather than a process per call: faster for small calls, and a
      # crash still fails only its call. Raises InParallel::MPI::Error on every rank when the
      # ranks' tasks differ (see init), before init, or for a root that is not a rank.
      #
      # A rank that serves runs no Ruby code of its own (its other threads wait), and
      # SIGINT, SIGTERM and SIGHUP end it at once, as they would a C program, whatever their
      # trap: mpirun, which sends them, ends the job. The children of its calls die with it.
      def pool(root: 0, reuse: false, &block)
        __need
        raise TypeError, "root: must be a rank (an Integer), got #{root.class}" unless root.is_a?(Integer)
        raise ArgumentError, "root: must be a rank (0 or more), got #{root}" unless root.between?(0, 2**31 - 1)
        raise ArgumentError, "reuse: must be true or false, got #{reuse.inspect}" unless [true, false, nil].include?(reuse)

        pinned = Task.__live.select(&:name)
        pool = Pool.allocate
        got = __pool(root, reuse ? true : false, pinned, pool)
        __raise(got, every_rank: true) if got.is_a?(Array)
        return nil if got.nil?

        pool.__send__(:__setup, root, reuse ? true : false, @callables)
        pool.__given_to(block)
      end

      # This process's rank in MPI_COMM_WORLD (0 to size - 1), as init found it: a task's
      # child on a rank asks too (no MPI call: a forked child must make none). Raises
      # InParallel::MPI::Error before init.
      def rank
        __need
        @rank or raise Error.new("InParallel::MPI.rank: call InParallel::MPI.init first", code: "EINVAL")
      end

      # The number of ranks in MPI_COMM_WORLD, as init found it. Raises InParallel::MPI::Error
      # before init.
      def size
        __need
        @size or raise Error.new("InParallel::MPI.size: call InParallel::MPI.init first", code: "EINVAL")
      end

      # Closes the pools this process made with pool (their objects stay, closed: the other
      # ranks stop serving) and ends MPI (MPI_Finalize) if init started it. Does nothing where
      # MPI was not started by this process, or is over. The process does it as it exits, after
      # a success (the end of the script, exit, exit 0) or an InParallel::MPI::Error that
      # every rank raised alike (the ranks' tasks differ): a rank that ends without it makes
      # mpirun fail the job. After any other exception, or a failing exit status, it is left
      # out, on purpose: the other ranks may be waiting for this one in a collective call that
      # it will not join, and MPI_Finalize would then wait for them forever; without it,
      # mpirun ends the whole job at once.
      def finalize
        return nil unless __built

        __raise(__finalize)
        nil
      end

      # :stopdoc:
      def __at_exit(err)
        return unless __built && __started

        alike = err.is_a?(Error) && err.instance_variable_get(:@every_rank)
        finalize if err.nil? || (err.is_a?(SystemExit) && err.success?) || alike
      end

      private

      def __need
        return if __built

        raise NotImplementedError, "InParallel::MPI: this build of the inparallel extension has no MPI: " \
                                   "extconf.rb found none (pkg-config ompi-c or mpich; Debian: libopenmpi-dev), " \
                                   "or INPARALLEL_MPI=0 left it out; install one and rebuild the gem"
      end

      # every_rank: the failure came from libinparallel-mpi, which fails every rank alike
      # (EINVAL: the ranks' tasks differ, a bad root, one rank), so all of them are at the same
      # point and MPI_Finalize at the exit waits for no one who is elsewhere.
      def __raise(failure, every_rank: false)
        return if failure.nil?

        code, message = failure
        err = Error.new(message, code: code)
        err.instance_variable_set(:@every_rank, true) if every_rank && code == "EINVAL"
        err.set_backtrace(caller(1)) # from the method that failed, not from here
        raise err
      end
      # :startdoc:
    end
  end
end
