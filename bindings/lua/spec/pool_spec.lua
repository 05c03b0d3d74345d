-- Pools: real workers, real processes. Every pool is closed by the spec that made it, so the
-- other specs find no process of ours left.
local ip = require "inparallel"
local S = require "spec.support"

local later, fifo = S.later, S.fifo

local function write_line(path, s)
  local fh = assert(io.open(path, "w"))
  fh:write(s, "\n")
  fh:close()
end

local function read_line(path)
  local fh = assert(io.open(path))
  local s = fh:read("*l")
  fh:close()
  return s
end

-- Made before every pool below, so every pool's workers have them.
local echo = ip.task(function(...) return select("#", ...), ... end)
local pid_of = ip.task(function() return S.mypid() end)
local spin = ip.task(function() while true do end end)
-- Tells the spec its worker's pid through the FIFO, then spins until killed or canceled.
local announce = ip.task(function(path) write_line(path, tostring(S.mypid())) while true do end end)
local boom = ip.task(function(v) error(v) end)
local counter = ip.task(function() COUNT = (COUNT or 0) + 1 return COUNT end)
-- Records the call in a file (one line each, O_APPEND), then crashes on `crash`.
local logged = ip.task(function(path, i, crash)
  local fh = assert(io.open(path, "a"))
  fh:write(i, "\n")
  fh:close()
  if i == crash then os.execute("kill -KILL $PPID") while true do end end -- the shell's parent: the worker
  return i * 10
end)
local segv = ip.task(function() os.execute("kill -SEGV $PPID") while true do end end)
local exit3 = ip.task(function() os.exit(3) end)
SNAPSHOT = "as the pool was made"
local upvalue = "as the pool was made"
local snapshot = ip.task(function() return SNAPSHOT, upvalue end)

local function pool(n, opts)
  local p = ip.pool(n, opts)
  later(function() p:close() end)
  return p
end

describe("ip.pool", function()
  after_each(S.cleanup)

  it("runs many calls; each future gives its call's values", function()
    local p = pool(2)
    assert.are.equal(2, p:workers())
    local active, started, got, pids = {}, 0, {}, {}
    for f in ip.waitfor(active, 8) do
      if f then
        local n, i, sq = f:result()
        assert.are.equal(2, n)
        assert.are.equal(i * i, sq)
        got[i] = true
        pids[f:pid()] = true
      elseif started < 300 then
        started = started + 1
        active[#active + 1] = p:call(echo, started, started * started)
      end
    end
    for i = 1, 300 do assert.is_true(got[i], "call " .. i) end
    local workers = 0
    for pid in pairs(pids) do
      workers = workers + 1
      assert.are_not.equal(S.mypid(), pid)
    end
    assert.is_true(workers >= 1 and workers <= 2, workers .. " worker pids")
  end)

  it("arguments of every kind round-trip, nils in the middle and at the end included", function()
    local p = pool(1)
    local nested = {1, "two", {three = {3, {4, {5}}}}, [false] = "f", ["a b"] = {x = true}}
    local bytes = "\0\1\2\255 binary\n"
    local zero = 0
    local negz = -(zero + 0.0) -- not a literal: Lua 5.1 folds -0.0 into 0
    local f = p:call(echo, 1, nil, -7, 2.5, bytes, nested, true, false, nil, 1 / 0, negz, "", {}, nil)
    local got = {f:result()}
    assert.are.equal(14, got[1])
    assert.are.equal(1, got[2])
    assert.is_nil(got[3])
    assert.are.equal(-7, got[4])
    assert.are.equal(2.5, got[5])
    assert.are.equal(bytes, got[6])
    assert.are.same(nested, got[7])
    assert.is_true(got[8])
    assert.is_false(got[9])
    assert.is_nil(got[10])
    assert.are.equal(math.huge, got[11])
    assert.are.equal(-math.huge, 1 / got[12]) -- -0.0
    assert.are.equal("", got[13])
    assert.are.same({}, got[14])
    assert.are.equal(15, select("#", f:result()))
    if S.integers then
      assert.are.equal("integer", math.type(got[2]))
      assert.are.equal("float", math.type(got[5]))
    end
    assert.are.equal(0, (p:call(echo):result()))
    local args = {f:args()} -- the caller's own values, not copies
    assert.are.equal(nested, args[6])
    local nan = select(2, p:call(echo, negz / negz):result())
    assert.is_true(nan ~= nan)
  end)

  it("a worker sees the Lua state as it was when the pool was made", function()
    local p = pool(1)
    SNAPSHOT = "changed after"
    upvalue = "changed after"
    later(function() SNAPSHOT, upvalue = "as the pool was made", "as the pool was made" end)
    local g, u = p:call(snapshot):result()
    assert.are.equal("as the pool was made", g)
    assert.are.equal("as the pool was made", u)
    local fg, fu = snapshot():result() -- a forked call copies the state as it is now
    assert.are.equal("changed after", fg)
    assert.are.equal("changed after", fu)
    local q = pool(1)
    assert.are.same({"changed after", "changed after"}, {q:call(snapshot):result()})
  end)

  it("a worker runs call after call: what a call leaves in its state, the next one sees", function()
    local p = pool(1)
    assert.are.equal(1, p:call(counter):result())
    assert.are.equal(2, p:call(counter):result())
    assert.are.equal(3, p:call(counter):result())
    assert.is_nil(COUNT) -- in the worker's state, never in ours
  end)

  it("a pool made in a coroutine runs its calls", function()
    local p = coroutine.wrap(function() return ip.pool(1) end)()
    later(function() p:close() end)
    assert.are.same({2, "a", "b"}, {p:call(echo, "a", "b"):result()})
    assert.are.same({1, 7}, {p:call(echo, 7):result()})
  end)

  it("a task made after the pool fails its call with EINVAL, saying why", function()
    local p = pool(1)
    local late = ip.task(function() return 1 end)
    local f = p:call(late)
    assert.is_true(f:done())
    local err = f:error()
    assert.are.equal(ip.EINVAL, err.code)
    assert.are.equal("pool:call: the task was made after the pool, and the pool's workers run on " ..
      "a copy of the Lua state as it was when ip.pool made them, which does not have it; make " ..
      "the task before the pool", err.message)
    assert.are.equal(err, S.raised(f.result, f))
    assert.are.equal(7, select(2, p:call(echo, 7):result())) -- the pool is fine
  end)

  it("arguments that cannot be encoded fail the call with EENCODE, naming the value", function()
    local p = pool(1)
    local f = p:call(echo, 1, {x = {print}})
    local err = f:error()
    assert.are.equal(ip.EENCODE, err.code)
    assert.are.equal("cannot encode args[2].x[1]: a function cannot be serialized", err.message)
    local cyc = {}
    cyc.self = cyc
    assert.are.equal("cannot encode args[1].self: a table that contains itself (a cycle)",
      p:call(echo, cyc):error().message)
    assert.are.equal("cannot encode args[1]: a userdata cannot be serialized",
      p:call(echo, io.stdout):error().message)
  end)

  it("a Lua error in a worker fails its call; the worker runs on", function()
    local p = pool(1)
    local pid = p:call(pid_of):result()
    local err = p:call(boom, "plain"):error()
    assert.are.equal(ip.ERAISED, err.code)
    assert.are.equal("error", err.kind)
    assert.matches("plain$", err.message)
    assert.matches("^stack traceback:", err.traceback)
    assert.are.equal(pid, err.pid)
    assert.are.equal(pid, p:call(pid_of):result()) -- the same worker
  end)

  it("error() with a table arrives as the error's value", function()
    local p = pool(1)
    local err = p:call(boom, {code = 42, why = "x", nested = {1, 2, {deep = true}}}):error()
    assert.are.equal(ip.ERAISED, err.code)
    assert.are.equal("(error object is a table value)", err.message)
    assert.are.same({code = 42, why = "x", nested = {1, 2, {deep = true}}}, err.value)
  end)

  it("results travel as in a forked call: several values, raw, a custom serializer, EENCODE", function()
    local raw = ip.task(function(s) return s .. "!" end, {serializer = "raw"})
    local custom = ip.task(function(a, b) return a + b end, {serializer = {
      encode = function(v) return tostring(v) end,
      decode = function(s) return "decoded " .. s end,
    }})
    local bad = ip.task(function() return {f = print} end)
    local p = pool(1)
    assert.are.equal("hi!", p:call(raw, "hi"):result())
    assert.are.equal("decoded 5", p:call(custom, 2, 3):result())
    local err = p:call(bad):error()
    assert.are.equal(ip.EENCODE, err.code)
    assert.are.equal("cannot encode result[1].f: a function cannot be serialized", err.message)
    assert.are.equal(3, select(4, p:call(echo, 1, 2, 3):result()))
  end)

  it("a crash fails only its call: the others run once each, and the pool is whole again", function()
    local p = pool(2)
    local log = os.tmpname()
    later(function() os.remove(log) end)
    local fs = {}
    for i = 1, 20 do fs[i] = p:call(logged, log, i, 7) end
    for i = 1, 20 do
      if i == 7 then
        local err = fs[i]:error()
        assert.are.equal(ip.ESIGNALED, err.code)
        assert.are.equal(9, err.signal)
        assert.are.equal("SIGKILL", err.kind)
        assert.are.equal(fs[i]:pid(), err.pid)
      else
        assert.are.equal(i * 10, fs[i]:result())
      end
    end
    local runs = {}
    for line in io.lines(log) do runs[tonumber(line)] = (runs[tonumber(line)] or 0) + 1 end
    for i = 1, 20 do assert.are.equal(1, runs[i], "call " .. i .. " ran " .. tostring(runs[i]) .. " times") end
    assert.are.equal(2, p:workers())
    assert.are.equal(3, select(2, p:call(echo, 3):result()))
  end)

  it("a worker that segfaults fails its call with SIGSEGV and a backtrace", function()
    local p = pool(1)
    local err = p:call(segv):error()
    assert.are.equal(ip.ESIGNALED, err.code)
    assert.are.equal(11, err.signal)
    assert.are.equal("SIGSEGV", err.kind)
    assert.is_string(err.traceback)
    assert.are.equal(1, p:workers())
    assert.are.equal(1, select(2, p:call(echo, 1):result()))
  end)

  it("a worker killed from outside fails its call with ESIGNALED; the pool replaces it", function()
    local p = pool(1)
    local gate = fifo()
    local f = p:call(announce, gate)
    local pid = tonumber(read_line(gate)) -- the call runs, on this worker
    assert(os.execute("kill -KILL " .. pid))
    local err = f:error()
    assert.are.equal(ip.ESIGNALED, err.code)
    assert.are.equal(9, err.signal)
    assert.are.equal(pid, err.pid)
    assert.are.equal(1, p:workers())
    local next_pid = p:call(pid_of):result()
    assert.are_not.equal(pid, next_pid)
  end)

  it("os.exit in a worker fails its call with EEXITED and the exit status", function()
    local p = pool(1)
    local err = p:call(exit3):error()
    assert.are.equal(ip.EEXITED, err.code)
    assert.are.equal(3, err.exit_status)
    assert.are.equal(1, p:workers())
    assert.are.equal(1, select(2, p:call(echo, 1):result()))
  end)

  it("a call past its task's timeout fails with ETIMEDOUT; the pool is whole again", function()
    local slow = ip.task(function() while true do end end, {timeout = 0.2})
    local p = pool(1)
    local err = p:call(slow):error()
    assert.are.equal(ip.ETIMEDOUT, err.code)
    assert.are.equal(1, p:workers())
    assert.are.equal(5, select(2, p:call(echo, 5):result()))
  end)

  it("cancel(): a running call ends with its worker, a waiting one never runs", function()
    local p = pool(1)
    local gate = fifo()
    local running = p:call(announce, gate)
    local waiting = p:call(echo, "never")
    local pid = tonumber(read_line(gate))
    assert.is_true(waiting:cancel())
    local werr = waiting:error()
    assert.are.equal(ip.ECANCELED, werr.code)
    assert.is_nil(waiting:pid()) -- no worker started it
    assert.is_true(running:cancel())
    local err = running:error()
    assert.are.equal(ip.ECANCELED, err.code)
    assert.are.equal(pid, running:pid())
    assert.is_nil(select(1, running:cancel())) -- EALREADY
    assert.are.equal(1, p:workers())
    assert.are_not.equal(pid, p:call(pid_of):result())
  end)

  it("close() fails the calls in flight with ECANCELED and ends every process of the pool", function()
    local before = #S.children()
    local p = ip.pool(2)
    assert.are.equal(before + 1, #S.children()) -- the template; the workers are its children
    local g1, g2 = fifo(), fifo()
    -- one call on each worker (the core sends a call to an idle worker first), one behind each
    local fs = {p:call(announce, g1), p:call(announce, g2), p:call(spin), p:call(spin)}
    local pids = {tonumber(read_line(g1)), tonumber(read_line(g2))}
    p:close()
    for i, f in ipairs(fs) do assert.are.equal(ip.ECANCELED, f:error().code, "call " .. i) end
    for _, pid in ipairs(pids) do assert.is_false(S.exists(pid)) end
    assert.are.equal(before, #S.children())
    assert.are.equal(0, p:workers())
    p:close() -- idempotent
    assert.matches("pool:call on a closed pool", S.raised(p.call, p, echo))
    assert.matches("closed", tostring(p))
  end)

  it("a pool kept open by its futures only; __gc closes it", function()
    local before = #S.children()
    local f = ip.pool(1):call(echo, 3) -- the pool itself is garbage at once
    S.gc()
    assert.are.equal(3, select(2, f:result()))
    f = nil
    S.gc()
    S.gc()
    assert.are.equal(before, #S.children())
  end)

  if S.is54 then
    it("local p <close> closes the pool at the end of the scope (Lua 5.4)", function()
      local chunk = assert(load([[
        local ip, echo = ...
        local f
        do
          local p <close> = ip.pool(1)
          f = p:call(echo, 1)
          assert(select(2, f:result()) == 1)
          f = p:call(echo, 2)
        end
        return f
      ]]))
      local before = #S.children()
      local f = chunk(ip, echo)
      assert.are.equal(before, #S.children())
      assert.is_true(f:done())
      local err = f:error()
      if err then assert.are.equal(ip.ECANCELED, err.code) end -- or it had completed
    end)
  end

  it("max_calls = 1: each call on a fresh worker, none of them sees the last one's state", function()
    local p = pool(1, {max_calls = 1})
    local seen = {}
    for _ = 1, 4 do
      assert.are.equal(1, p:call(counter):result())
      local pid = p:call(pid_of):result()
      assert.is_nil(seen[pid])
      seen[pid] = true
    end
  end)

  it("max_rss: a worker that grew past it is replaced after its call", function()
    local grow = ip.task(function() KEEP = ("x"):rep(64 * 1024 * 1024) return S.mypid() end)
    local kept = ip.task(function() return KEEP ~= nil, S.mypid() end)
    local p = pool(1, {max_rss = 32 * 1024 * 1024})
    local pid = p:call(grow):result()
    local has, pid2 = p:call(kept):result()
    assert.is_false(has)
    assert.are_not.equal(pid, pid2)
  end)

  it("ip.waitfor takes pool and forked futures in one list", function()
    local p = pool(2)
    local active, n, seen = {}, 0, {}
    for f in ip.waitfor(active, 6) do
      if f then
        local _, i, kind = f:result()
        seen[#seen + 1] = kind .. i
      elseif n < 30 then
        n = n + 1
        active[#active + 1] = n % 2 == 0 and p:call(echo, n, "pool") or echo(n, "fork")
      end
    end
    assert.are.equal(30, #seen)
    local want = {}
    for i = 1, 30 do want[#want + 1] = (i % 2 == 0 and "pool" or "fork") .. i end
    table.sort(seen)
    table.sort(want)
    assert.are.same(want, seen)
  end)

  it("a pool belongs to the process that made it: a call from a child or a worker fails", function()
    local q = pool(1)
    local use_q = ip.task(function()
      local err = q:call(echo, 1):error()
      return err and err.code, err and err.message
    end)
    local code, msg = use_q():result() -- a forked child
    assert.are.equal(ip.EINVAL, code)
    assert.matches("the pool belongs to the parent process", msg)
    local p = pool(1) -- its workers have q, made before it
    code, msg = p:call(use_q):result()
    assert.are.equal(ip.EINVAL, code)
    assert.matches("the pool belongs to the parent process", msg)
    assert.are.equal(1, select(2, q:call(echo, 1):result())) -- still ours to use
  end)

  it("__tostring, and bad arguments raise errors that say which", function()
    local p = pool(3)
    assert.matches("^inparallel.pool %(3 workers%): ", tostring(p))
    local positive = "the number of workers must be a positive integer"
    assert.matches(positive, S.raised(ip.pool, 0))
    assert.matches(positive, S.raised(ip.pool, -1))
    assert.matches(positive, S.raised(ip.pool, 1.5))
    assert.matches(positive, S.raised(ip.pool, 0 / 0))
    assert.matches(positive .. ", not a string", S.raised(ip.pool, "2"))
    assert.matches(positive, S.raised(ip.pool))
    assert.matches("unknown option 'max_call' %(known: max_calls, max_rss%)", S.raised(ip.pool, 1, {max_call = 1}))
    assert.matches("max_calls must be a whole number >= 0", S.raised(ip.pool, 1, {max_calls = -1}))
    assert.matches("max_rss must be a whole number of bytes >= 0", S.raised(ip.pool, 1, {max_rss = "1G"}))
    assert.matches("table expected", S.raised(ip.pool, 1, 5))
    assert.matches("inparallel.task expected", S.raised(p.call, p, print))
    assert.matches("inparallel.pool expected", S.raised(p.call, {}, echo))
    assert.matches("inparallel.pool expected", S.raised(p.workers, echo))
  end)

  it("ip.pool's failure raises an error table", function()
    -- A fresh interpreter with too few descriptors for the pool's sockets.
    local LUA = jit and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))
    local script = ([[
      package.cpath = %q
      local ip = require "inparallel"
      local ok, err = pcall(ip.pool, 2)
      io.write(ok and "made" or (getmetatable(err) and err.code .. "|" .. err.message or tostring(err)))
    ]]):format(package.cpath)
    local p = assert(io.popen("ulimit -n 6; " .. LUA .. " -e '" .. script:gsub("'", "'\\''") .. "'"))
    local out = p:read("*a")
    p:close()
    assert.are.equal("EMFILE|inparallel.pool: could not start 2 workers: no file descriptor " ..
      "could be created (see RLIMIT_NOFILE)", out)
  end)
end)
