# Ruby binding benchmark: the inparallel gem against, in the same run,
#   - a hand-written fork + IO.pipe + Marshal loop doing the same work (the floor a Ruby
#     programmer gets without a library),
#   - Parallel.map(in_processes:) from the parallel gem (a worker pool: for reference),
#   - the C core (bench/bench-core --only=fork --quick, its "lib tasks/s" column).
# Work: N tasks returning x * 2 at concurrency 2 and 8, and one task returning a 100 MiB String.
#
#   rake -f bindings/ruby/Rakefile compile && ruby bench/bench-ruby.rb [--tasks=N] [--reps=N]
#        [--conc=2,8] [--big-mib=100] [--no-core] [--no-parallel]
# Figures are medians of --reps rounds (default 3); the gem / hand-written ratio is the median
# of per-round ratios; other ratios are gem / other (> 1: the gem is faster).
in_tree = File.expand_path("../bindings/ruby/lib", __dir__)
$LOAD_PATH.unshift(in_tree) unless Dir[File.join(in_tree, "inparallel", "inparallel.*")].empty?
require "inparallel"

opts = { tasks: 2000, reps: 3, conc: [2, 8], big_mib: 100, core: true, parallel: true }
ARGV.each do |a|
  case a
  when /\A--tasks=(\d+)\z/ then opts[:tasks] = Integer($1)
  when /\A--reps=(\d+)\z/ then opts[:reps] = Integer($1)
  when /\A--conc=([\d,]+)\z/ then opts[:conc] = $1.split(",").map { |c| Integer(c) }
  when /\A--big-mib=(\d+)\z/ then opts[:big_mib] = Integer($1)
  when "--no-core" then opts[:core] = false
  when "--no-parallel" then opts[:parallel] = false
  else abort "unknown option #{a}"
  end
end

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

def median(xs) = xs.sort[xs.size / 2]

# Best of reps: seconds taken by the block (median).
def timed(reps)
  median(reps.times.map do
    GC.start
    t = now
    yield
    now - t
  end)
end

# --- the contenders -------------------------------------------------------------------------

DOUBLE = InParallel.task { |x| x * 2 }

def gem_run(n, conc)
  todo = (1..n).to_a
  active = []
  sum = 0
  InParallel.waitfor(active, concurrency_factor: conc) do |f|
    if f then sum += f.value
    elsif (x = todo.shift) then active << DOUBLE.(x)
    end
  end
  raise "wrong sum #{sum}" unless sum == n * (n + 1)
end

# What a careful programmer writes by hand: at most `conc` children, each writing a Marshal
# dump to its pipe; IO.select over the read ends; read to EOF, load, reap.
def hand_run(n, conc, &work)
  work ||= ->(x) { x * 2 }
  todo = (1..n).to_a
  running = {} # read end -> [pid, buffer]
  results = []
  until todo.empty? && running.empty?
    while running.size < conc && (x = todo.shift)
      r, w = IO.pipe
      pid = fork do
        r.close
        w.write(Marshal.dump(work.call(x)))
        w.close
        exit!(0)
      end
      w.close
      running[r] = [pid, +"".b]
    end
    ready, = IO.select(running.keys)
    ready.each do |r|
      chunk = r.read_nonblock(1 << 20, exception: false)
      next if chunk == :wait_readable

      if chunk.nil?
        pid, buf = running.delete(r)
        r.close
        Process.wait(pid)
        results << Marshal.load(buf)
      else
        running[r][1] << chunk
      end
    end
  end
  results
end

def parallel_run(n, conc)
  out = Parallel.map(1..n, in_processes: conc) { |x| x * 2 }
  raise "wrong sum" unless out.sum == n * (n + 1)
end

def core_figures(tasks)
  exe = File.expand_path("bench-core", __dir__)
  return nil unless File.executable?(exe)

  out = IO.popen([exe, "--only=fork", "--quick", "--conc=2,8", "--reps=1", "--side=lib", "--tasks=#{tasks}"],
                 err: File::NULL, &:read)
  figures = {}
  out.each_line do |l|
    # "     2             147              68   0.46x ..." or, with --side=lib, c and lib only
    if (m = l.match(/^\s+(\d+)\s+(\d+)\s+(\d+)\s+[\d.]+x/)) then figures[m[1].to_i] = m[3].to_f
    elsif (m = l.match(/^\|\s*(\d+)\s*\|\s*[\d—-]*\s*\|\s*(\d+)\s*\|/)) then figures[m[1].to_i] ||= m[2].to_f
    end
  end
  figures.empty? ? { raw: out } : figures
end

# --- run -------------------------------------------------------------------------------------

n, reps = opts[:tasks], opts[:reps]
puts "inparallel gem #{InParallel::VERSION} (core #{InParallel::CORE_VERSION}), ruby #{RUBY_VERSION}, " \
     "#{n} tasks, median of #{reps}"
begin
  require "parallel" if opts[:parallel]
rescue LoadError
  opts[:parallel] = false
  puts "(parallel gem not installed: Debian ruby-parallel; skipping Parallel.map)"
end

# Rounds interleave the contenders (gem, hand-written, Parallel.map, gem, ...) and the gem's
# ratio to the hand-written loop is the median of the per-round ratios, so a shared machine
# whose speed drifts moves both sides of each ratio together.
def round_rate(n)
  GC.start
  t = now
  yield
  n / (now - t)
end

rows = []
opts[:conc].each do |c|
  gs, hs, pms, ratios = [], [], [], []
  reps.times do |r|
    g = round_rate(n) { gem_run(n, c) }
    h = round_rate(n) { hand_run(n, c) }
    pm = opts[:parallel] ? round_rate(n) { parallel_run(n, c) } : nil
    gs << g
    hs << h
    pms << pm if pm
    ratios << g / h
    $stderr.puts format("  c=%-2d round %d: gem %7.0f/s  hand-written %7.0f/s  Parallel.map %s", c, r + 1, g, h,
                        pm ? format("%.0f/s", pm) : "-")
  end
  rows << [c, median(gs), median(hs), pms.empty? ? nil : median(pms), median(ratios)]
end

core = opts[:core] ? core_figures([n / 2, 200].max) : nil
if core&.key?(:raw)
  $stderr.puts "could not read bench-core's table:\n#{core[:raw]}"
  core = nil
end

puts
puts "| concurrency | gem tasks/s | hand-written fork+pipe+Marshal | gem / hand | Parallel.map (pool) | gem / Parallel.map | C core tasks/s | gem / core |"
puts "|---:|---:|---:|---:|---:|---:|---:|---:|"
rows.each do |c, g, h, pm, ratio|
  cr = core && core[c]
  puts format("| %d | %.0f | %.0f | %.2fx %s | %s | %s | %s | %s |", c, g, h, ratio, ratio >= 1 ? "MEETS" : "MISSES",
              pm ? format("%.0f", pm) : "-", pm ? format("%.2fx", g / pm) : "-",
              cr ? format("%.0f", cr) : "-", cr ? format("%.2fx %s", g / cr, g >= 0.5 * cr ? "MEETS" : "MISSES") : "-")
end

# One task returning a big String.
mib = opts[:big_mib]
if mib.positive?
  size = mib << 20
  big_marshal = InParallel.task { "x" * size }
  big_raw = InParallel.task(serializer: :raw) { "x" * size }
  gm = timed(reps) { raise "size" unless big_marshal.().value.bytesize == size }
  gr = timed(reps) { raise "size" unless big_raw.().value.bytesize == size }
  hw = timed(reps) { raise "size" unless hand_run(1, 1) { "x" * size }.first.bytesize == size }
  baseline = timed(reps) { "x" * size }
  puts
  puts "| #{mib} MiB String | seconds | MiB/s | hand-written / this |"
  puts "|---|---:|---:|---:|"
  [["gem, :marshal", gm], ["gem, :raw", gr], ["hand-written fork+pipe+Marshal", hw]].each do |name, s|
    puts format("| %s | %.3f | %.0f | %.2fx |", name, s, mib / s, hw / s)
  end
  puts format("(building the String alone takes %.3f s)", baseline)
end
