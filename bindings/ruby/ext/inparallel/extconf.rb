# Builds inparallel/inparallel.so. The core comes from, in this order:
#   1. pkg-config `inparallel` (an installed libinparallel), unless INPARALLEL_IN_TREE=1;
#   2. the core's sources compiled into the extension, from $INPARALLEL_SRC, from the source
#      tree this binding lives in (../../../..), or from core/ beside this file (copied there by
#      `rake vendor`, so a built .gem carries them; in a source tree it may be stale, so the
#      tree comes first).
# INPARALLEL_CONFIG_DIR names a configured build tree whose config.h to use (an out-of-tree
# build's). The in-tree route compiles the C sources rather than linking lib/.libs/libinparallel.a,
# because libtool builds that archive from non-PIC objects.
#
# InParallel::MPI: where MPI is found (pkg-config ompi-c or mpich), libinparallel-mpi goes into
# the same extension, so that it runs on the extension's one copy of the core: its sources
# (mpi/ beside lib/) compiled in with the core's, or, with an installed core, the installed
# libinparallel-mpi (pkg-config inparallel-mpi), which links that same libinparallel.
# INPARALLEL_MPI=0 leaves MPI out; INPARALLEL_MPI=1 makes a missing MPI an error.
require "mkmf"

def core_root
  [ENV["INPARALLEL_SRC"], File.expand_path("../../../..", __dir__), File.join(__dir__, "core")]
    .compact.find { |d| File.file?(File.join(d, "include", "inparallel.h")) && File.file?(File.join(d, "lib", "call.c")) }
end

# A minimal config.h for a tree that was never configured, and for the gem's vendored copy
# (which carries no build machine's config.h): what this machine's libc has.
def write_config_h(path)
  defs = { "HAVE_MEMFD_CREATE" => "memfd_create", "HAVE_CLOSE_RANGE" => "close_range",
           "HAVE_STRERRORNAME_NP" => "strerrorname_np", "HAVE_SIGABBREV_NP" => "sigabbrev_np" }
  lines = ["#define _GNU_SOURCE 1", "#define HAVE_EXECINFO_H 1", "#define HAVE_STDIO_EXT_H 1",
           "#define HAVE_SYS_EPOLL_H 1", "#define HAVE_SYS_EVENTFD_H 1"]
  defs.each do |macro, fn|
    lines << "#define #{macro} 1" if try_link("#define _GNU_SOURCE 1\n#include <string.h>\n#include <signal.h>\n#include <unistd.h>\n#include <sys/mman.h>\nint main(void) { void *p = (void *)#{fn}; return p == 0; }")
  end
  File.write(path, "/* written by extconf.rb */\n" + lines.join("\n") + "\n")
end

$CFLAGS << " -std=gnu11 -fvisibility=hidden -Wno-declaration-after-statement"
have_library("pthread") or abort "inparallel needs pthreads"
have_func("rb_thread_call_without_gvl", "ruby/thread.h") or abort "ruby/thread.h is missing"

want_mpi = ENV.fetch("INPARALLEL_MPI", "check")
abort "INPARALLEL_MPI must be 0, 1 or unset, not #{want_mpi.inspect}" unless %w[0 1 check].include?(want_mpi)

# The flags pkg-config added in the block are kept only if the block is true: a library
# found but unusable must not be linked for nothing.
def flags_kept_if
  saved = [$CFLAGS.dup, $LDFLAGS.dup, $libs.dup, $INCFLAGS.dup]
  return true if yield

  $CFLAGS, $LDFLAGS, $libs, $INCFLAGS = saved
  false
end

# MPI's compiler and linker flags, checked with a program that links. Open MPI and MPICH name
# their .pc differently.
def find_mpi
  %w[ompi-c mpich].any? do |pc|
    flags_kept_if { pkg_config(pc) && have_header("mpi.h") && have_func("MPI_Init_thread", "mpi.h") }
  end
end

mpi = false
if ENV["INPARALLEL_IN_TREE"] != "1" && pkg_config("inparallel") &&
   have_func("ip_pool_new_fork", "inparallel.h")
  message "inparallel: using the installed core (pkg-config inparallel)\n"
  mpi = want_mpi != "0" &&
        flags_kept_if { pkg_config("inparallel-mpi") && have_func("ip_mpi_set_fork", "inparallel/mpi.h") }
  # The extension finds libinparallel where pkg-config found it, also outside the loader's
  # default path (a --prefix of one's own). Where the loader looks anyway, no rpath: a
  # distribution's package must carry none. PKG_CONFIG_SYSROOT_DIR, which pkg-config puts
  # before libdir, is a staging directory (a package build's debian/tmp), not where the library
  # is at run time.
  libdir = pkg_config("inparallel", "variable=libdir").to_s.strip
  sysroot = ENV["PKG_CONFIG_SYSROOT_DIR"].to_s.chomp("/")
  libdir = libdir.delete_prefix(sysroot) unless sysroot.empty?
  system_libdirs = %w[/lib /usr/lib /lib64 /usr/lib64].flat_map { |d| [d, "#{d}/#{RbConfig::CONFIG['arch']}"] }
  $LDFLAGS << " -Wl,-rpath,#{libdir}" unless libdir.empty? || system_libdirs.include?(File.expand_path(libdir))
else
  root = core_root or abort <<~MSG
    inparallel: the C core was found neither by pkg-config (`make install` it) nor as sources
    (set INPARALLEL_SRC to a checkout of the inparallel repository).
  MSG
  message "inparallel: compiling the core from #{root}\n"
  config_dir = [ENV["INPARALLEL_CONFIG_DIR"], root].compact.find { |d| File.file?(File.join(d, "config.h")) } || Dir.pwd
  write_config_h(File.join(Dir.pwd, "config.h")) if config_dir == Dir.pwd
  $INCFLAGS << " -I#{File.join(root, 'include')} -I#{File.join(root, 'lib')} -I#{config_dir}"
  $VPATH << File.join(root, "lib")
  core_srcs = Dir[File.join(root, "lib", "*.c")].sort
  mpi_srcs = Dir[File.join(root, "mpi", "*.c")].sort
  if want_mpi != "0" && !mpi_srcs.empty? && File.file?(File.join(root, "include", "inparallel", "mpi.h")) && find_mpi
    mpi = true
    $VPATH << File.join(root, "mpi")
    $INCFLAGS << " -I#{File.join(root, 'mpi')}"
    $CFLAGS << " -pthread"
    core_srcs += mpi_srcs
  end
  $srcs = Dir[File.join(__dir__, "*.c")].map { |f| File.basename(f) } + core_srcs.map { |f| File.basename(f) }
  $objs = $srcs.map { |s| s.sub(/\.c\z/, ".o") }
end

abort "inparallel: INPARALLEL_MPI=1, but no MPI was found (pkg-config ompi-c or mpich; Debian: libopenmpi-dev)" if want_mpi == "1" && !mpi
if mpi
  $defs << "-DRBIP_HAVE_MPI"
  message "inparallel: with InParallel::MPI\n"
else
  message "inparallel: without InParallel::MPI (#{want_mpi == '0' ? 'INPARALLEL_MPI=0' : 'no MPI found'})\n"
end

create_makefile("inparallel/inparallel")
