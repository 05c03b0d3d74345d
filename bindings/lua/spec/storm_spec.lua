-- A seeded storm: ~200 calls at concurrency 16 through ip.waitfor,
-- mixing values of every kind, Lua errors, crashes by real signals, kills from outside,
-- timeouts, exits without a result, encode failures, cancels, and futures dropped while their
-- child still runs. Every future must come back with exactly the right outcome; afterwards no
-- child (alive or zombie) is left and the descriptor and thread counts are back to their
-- warm-up baseline.
--
-- The same storm runs on a pool of 4 workers too (pool:call), where a crash, a kill or a
-- timeout ends a worker that the pool replaces; there the calls dropped to the GC are ones
-- that end (one blocked for good would hold its worker until a collection), and the calls
-- killed from outside have kill(1) sent at them from a shell they start, since the caller
-- knows a pool call's pid only once a worker runs it.
--
-- Reproduce a run: STORM_SEED=<printed seed> bindings/lua/run-specs.sh [version]
-- (the mix depends only on the seed, the same on every Lua version).
--
-- Children that must not finish by themselves block in open(2) of a FIFO nobody ever opens for
-- writing: no CPU, no grandchild, and only a signal ends them. The parent never sleeps.
local ip = require "inparallel"
local S = require "spec.support"
local lfs = require "lfs"

-- lua-posix where installed (Debian has none for 5.4): real signals sent by kill(2) directly;
-- elsewhere the same signals are sent by kill(1) from a shell.
local P, U, W, E
do
  local ok = pcall(function()
    P, U, W, E = require "posix.signal", require "posix.unistd", require "posix.sys.wait", require "posix.errno"
  end)
  if not ok then P, U, W, E = nil, nil, nil, nil end
end

local TASKS = 200
local CF = 16
local mtype = math.type
local unpack = unpack or table.unpack

local function pack(...) return {n = select("#", ...), ...} end

local function thread_count()
  local n = 0
  for name in lfs.dir("/proc/self/task") do
    if name:match("^%d+$") then n = n + 1 end
  end
  return n
end

-- Park-Miller: exact in doubles and in integers, so a seed gives the same mix on every Lua.
local function new_rng(seed)
  local x = seed % 2147483646 + 1
  for _ = 1, 8 do x = (x * 16807) % 2147483647 end -- near seeds, distant streams
  return function(n)
    x = (x * 16807) % 2147483647
    if n then return math.floor(x / 2147483647 * n) + 1 end -- 1..n, from the high bits
    return x / 2147483647                                  -- (0, 1)
  end
end

---------------------------------------------------------------------------------------------
-- Values and their exact comparison

local function show(v)
  if type(v) == "string" then
    return #v > 40 and ("a string of %d bytes"):format(#v) or ("%q"):format(v)
  end
  if type(v) == "number" and mtype then return ("%s (%s)"):format(tostring(v), mtype(v)) end
  return tostring(v)
end

-- nil if b is exactly a (types, integer subtype, nan, sign of zero, every key); else where not.
local function differ(a, b, path)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ("%s: expected %s, got %s"):format(path, show(a), show(b)) end
  if ta == "number" then
    local same
    if a ~= a then same = b ~= b
    elseif a == 0 then same = b == 0 and 1 / a == 1 / b
    else same = a == b end
    if same and mtype then same = mtype(a) == mtype(b) end
    if not same then return ("%s: expected %s, got %s"):format(path, show(a), show(b)) end
    return nil
  end
  if ta == "table" then
    if getmetatable(b) ~= nil then return path .. ": came back with a metatable" end
    local n = 0
    for k, v in pairs(a) do
      n = n + 1
      local e = differ(v, rawget(b, k), ("%s[%s]"):format(path, show(k)))
      if e then return e end
    end
    for k in pairs(b) do
      n = n - 1
      if rawget(a, k) == nil then return ("%s: unexpected key %s"):format(path, show(k)) end
      if mtype and type(k) == "number" then
        for ka in pairs(a) do
          if ka == k and mtype(ka) ~= mtype(k) then return ("%s: key %s changed subtype"):format(path, show(k)) end
        end
      end
    end
    if n ~= 0 then return path .. ": not the same number of keys" end
    return nil
  end
  if a ~= b then return ("%s: expected %s, got %s"):format(path, show(a), show(b)) end
  return nil
end

local function gen_string(r, maxlen)
  local n = r(maxlen + 1) - 1
  local t = {}
  for i = 1, n do t[i] = string.char(r(256) - 1) end
  return table.concat(t)
end

local zero = 0
local fzero = zero + 0.0
local specials = {1 / fzero, -1 / fzero, fzero / fzero, -fzero, 0.5, 1e300, -1.25e-300,
                  3.141592653589793, 2 ^ 53, -2 ^ 53, 2 ^ 31, -2 ^ 31, 2 ^ 63}
local int_specials = {0, 1, -1, 127, 128, -32, -33, 255, 256, 65535, 65536, 2147483647, -2147483648}
if math.tointeger then
  for _, v in ipairs({math.maxinteger, math.mininteger, math.tointeger(2 ^ 40), math.tointeger(-2 ^ 53)}) do
    int_specials[#int_specials + 1] = v
  end
end

local function gen_number(r)
  local c = r(6)
  if c == 1 then return r(201) - 101 end                      -- small integer
  if c == 2 then return int_specials[r(#int_specials)] end
  if c == 3 then return specials[r(#specials)] end
  if c == 4 then return (r(2000001) - 1000001) + 0.0 end      -- an integral float
  if c == 5 then return (r(2000001) - 1000001) / 64 + r() end -- a fraction
  return (r(2147483647) - 1073741824) * 3                      -- beyond 32 bits
end

local gen_value
local function gen_table(r, depth)
  local t, c = {}, r(4)
  if c == 1 then return t end                                  -- {} travels as a map
  if c == 2 then                                               -- an array: keys exactly 1..n
    for i = 1, r(8) do t[i] = gen_value(r, depth + 1, false) end
    return t
  end
  for _ = 1, r(6) do                                           -- a map, holes and odd keys
    local kc, k = r(5), nil
    if kc == 1 then k = gen_string(r, 12)
    elseif kc == 2 then k = r(20) - 5
    elseif kc == 3 then k = (r(100) - 50) + 0.25
    elseif kc == 4 then k = r(2) == 1
    else k = "k" .. r(100) end
    t[k] = gen_value(r, depth + 1, false)
  end
  return t
end

function gen_value(r, depth, nil_ok)
  local c = r(10)
  if c == 1 then if nil_ok then return nil end return false end
  if c == 2 then return r(2) == 1 end
  if c <= 5 then return gen_number(r) end
  if c <= 7 or depth >= 4 then return gen_string(r, r(8) == 1 and 3000 or 40) end
  return gen_table(r, depth)
end

---------------------------------------------------------------------------------------------
-- The storm

local function storm(on_pool)
    local seed = tonumber(os.getenv("STORM_SEED") or "") or (os.time() % 1000000007)
    seed = math.floor(seed)
    print(("\nstorm%s: seed %d (STORM_SEED=%d to reproduce), %s, lua-posix %s"):format(
      on_pool and " on a pool of 4" or "", seed, seed, jit and jit.version or _VERSION,
      P and "yes" or "no (kill(1) via the shell)"))
    local r = new_rng(seed)

    local fifo = os.tmpname()
    os.remove(fifo)
    assert(os.execute("mkfifo -m 600 '" .. fifo .. "'"))
    finally(function() os.remove(fifo) end)

    -- ---- tasks ----------------------------------------------------------------------------
    local echo = ip.task(function(...) return ... end)
    local raw = ip.task(function(s) return s end, {serializer = "raw"})
    local function block_forever(path)
      local fh = io.open(path, "r") -- a FIFO without writer: blocks until a signal ends us
      error("the FIFO opened: " .. tostring(fh), 0)
    end
    -- A guard, not a threshold: a child that nothing ended comes back ETIMEDOUT after a
    -- minute (and fails its check) instead of hanging the suite.
    local GUARD = {timeout = 60}
    local block = ip.task(block_forever, GUARD)
    local timeouts = {0.05, 0.1, 0.15}
    local timed = {}
    for i, t in ipairs(timeouts) do timed[i] = ip.task(block_forever, {timeout = t}) end
    local raise = ip.task(function(how, i)
      if how == "string" then error("storm raise " .. i) end
      if how == "level0" then error("storm raise " .. i .. " at level 0", 0) end
      if how == "table" then error({code = i}) end
      error(setmetatable({}, {__tostring = function() return "storm object " .. i end}))
    end)
    local crash = ip.task(function(sig, path)
      if P then
        P.kill(U.getpid(), P[sig])
      else
        os.execute("kill -" .. sig:sub(4) .. " $PPID") -- the shell's parent is this child
      end
      block_forever(path) -- never reached: the signal has ended us
    end, GUARD)
    local exit = ip.task(function(status) os.exit(status) end)
    local badenc = ip.task(function(i) return i, {f = print} end)
    local killed_from_a_shell = ip.task(function(sig, path)
      os.execute("kill -" .. sig:sub(4) .. " $PPID") -- the shell's parent is this worker
      block_forever(path)
    end, GUARD)

    -- Made after every task, so that its workers have them all.
    local pool
    local function call(task, ...)
      if pool then return pool:call(task, ...) end
      return task(...)
    end

    local function kill(pid, sig)
      if P then assert(P.kill(pid, P[sig]))
      else assert(os.execute(("kill -%s %d"):format(sig:sub(4), pid))) end
    end

    -- ---- expected outcomes ----------------------------------------------------------------
    -- Checks that f failed with ip[name] and this kind; returns its error table, or nil and why.
    local function failed(f, name, kind)
      local code = ip[name]
      local ok, err = pcall(f.result, f)
      if ok then return nil, "succeeded; expected " .. kind end
      if type(err) ~= "table" then return nil, "raised a " .. type(err) .. ": " .. tostring(err) end
      if getmetatable(err) == nil then return nil, "error table without metatable" end
      if err ~= f:error() then return nil, "error() is not the table result() raised" end
      if err.code ~= code or code ~= name then
        return nil, ("expected %s, got %s (%s): %s"):format(name, tostring(err.code), tostring(err.kind), tostring(err.message))
      end
      if err.kind ~= kind then return nil, ("kind %s, expected %s"):format(tostring(err.kind), kind) end
      if err.pid ~= f:pid() then return nil, "err.pid is not f:pid()" end
      if type(err.message) ~= "string" then return nil, "no message" end
      return err
    end

    local function by_signal(sig, with_backtrace)
      local num = P and P[sig] or ({SIGSEGV = 11, SIGABRT = 6, SIGKILL = 9, SIGTERM = 15})[sig]
      return function(f)
        local err, why = failed(f, "ESIGNALED", sig)
        if not err then return why end
        if err.signal ~= num then return ("signal %s, expected %d"):format(tostring(err.signal), num) end
        if err.exit_status ~= nil then return "exit_status set for a signal" end
        if not err.message:find("killed by signal " .. num .. " (" .. sig, 1, true) then return "message: " .. err.message end
        if with_backtrace and type(err.traceback) ~= "string" then return "no child backtrace" end
        return nil
      end
    end

    local ERR = {}
    ERR.raise = function(how, i)
      local want = ({
        string = nil,
        level0 = "storm raise " .. i .. " at level 0",
        table = "(error object is a table value)",
        object = "storm object " .. i,
      })[how]
      return function(f)
        local err, why = failed(f, "ERAISED", "error")
        if not err then return why end
        if how == "string" then
          if not err.message:match("storm_spec%.lua:%d+: storm raise " .. i .. "$") then return "message: " .. err.message end
        elseif err.message ~= want then
          return ("message %q, expected %q"):format(err.message, want)
        end
        if not tostring(err.traceback):match("^stack traceback:") then return "traceback: " .. tostring(err.traceback) end
        if err.signal ~= nil then return "signal set for a Lua error" end
        if how == "table" and (type(err.value) ~= "table" or err.value.code ~= i) then
          return "value " .. tostring(err.value) .. ", expected {code = " .. i .. "}"
        end
        return nil
      end
    end

    -- ---- the mix ----------------------------------------------------------------------------
    local counts, started_pids, dropped, pending_drops = {}, {}, setmetatable({}, {__mode = "v"}), {}
    local gc_checks, drops = 0, 0
    local problems = {}
    local function problem(fmt, ...) problems[#problems + 1] = fmt:format(...) end

    -- Collects everything and checks that every dropped future was collected and its child,
    -- still running when it was dropped, was killed and reaped by __gc.
    local function collect_and_check()
      S.gc()
      gc_checks = gc_checks + 1
      for k in pairs(dropped) do problem("a dropped future was not collected (%s)", tostring(k)) end
      local alive = {}
      for _, pid in ipairs(S.children()) do alive[pid] = true end
      for pid, kind in pairs(pending_drops) do
        if alive[pid] then problem("child %d of a dropped %s future survived collectgarbage()", pid, kind) end
      end
      pending_drops = {}
    end

    local mix = {
      {"value", 30}, {"raw", 5}, {"big", 2}, {"raise", 11}, {"crash", 9}, {"killed", 6},
      {"timeout", 7}, {"exit", 7}, {"encode", 3}, {"cancel", 5}, {"drop_running", 10}, {"drop_done", 5},
    }
    local total_w = 0
    for _, m in ipairs(mix) do total_w = total_w + m[2] end
    local function pick()
      local x = r(total_w)
      for _, m in ipairs(mix) do
        x = x - m[2]
        if x <= 0 then return m[1] end
      end
    end

    -- Kills from outside and cancels happen a few calls later, while the child is blocked in
    -- the list (so they also keep the list full). At most MAX_LATER wait at a time, fewer than
    -- CF, so the list always holds calls that end by themselves and waitfor never waits on us.
    local MAX_LATER, deferred, n_started = 10, {}, 0
    local function later(act) deferred[#deferred + 1] = {due = n_started + r(24), act = act} end
    local function run_deferred(all)
      local keep = {}
      for _, d in ipairs(deferred) do
        if all or d.due <= n_started then d.act() else keep[#keep + 1] = d end
      end
      while #keep > MAX_LATER do table.remove(keep, 1).act() end
      deferred = keep
    end

    -- Starts call number i: returns the future and its check (or nothing for a dropped one).
    local function start(i, kind)
      counts[kind] = (counts[kind] or 0) + 1
      if kind == "value" then
        local args = {n = r(6) - 1}
        for j = 1, args.n do args[j] = gen_value(r, 1, true) end
        local f = call(echo, unpack(args, 1, args.n))
        return f, function(g)
          if g:error() then return "failed: " .. tostring(g:error()) end
          local got = pack(g:result())
          if got.n ~= args.n then return ("%d values, expected %d"):format(got.n, args.n) end
          for j = 1, args.n do
            local e = differ(args[j], got[j], "result[" .. j .. "]")
            if e then return e end
          end
          local again = pack(g:result())
          for j = 1, args.n do
            if type(got[j]) == "table" and again[j] ~= got[j] then return "result() not cached" end
          end
          return nil
        end
      elseif kind == "raw" or kind == "big" then
        local s
        if kind == "raw" then s = gen_string(r, 2000)
        else s = gen_string(r, 4096):rep(256 + r(256)) end -- up to 2 MiB
        local f = call(kind == "raw" and raw or echo, s)
        return f, function(g)
          if g:error() then return "failed: " .. tostring(g:error()) end
          local got = pack(g:result())
          if got.n ~= 1 then return got.n .. " values" end
          return differ(s, got[1], "result[1]")
        end
      elseif kind == "raise" then
        local how = ({"string", "level0", "table", "object"})[r(4)]
        counts["raise " .. how] = (counts["raise " .. how] or 0) + 1
        return call(raise, how, i), ERR.raise(how, i)
      elseif kind == "crash" then
        local sig = r(3) == 1 and "SIGABRT" or "SIGSEGV"
        counts[sig] = (counts[sig] or 0) + 1
        return call(crash, sig, fifo), by_signal(sig, true)
      elseif kind == "killed" then
        local sig = r(3) == 1 and "SIGTERM" or "SIGKILL"
        counts["killed " .. sig] = (counts["killed " .. sig] or 0) + 1
        if pool then return call(killed_from_a_shell, sig, fifo), by_signal(sig, false) end
        local f = block(fifo)
        later(function() kill(f:pid(), sig) end)
        return f, by_signal(sig, false)
      elseif kind == "timeout" then
        local k = r(#timeouts)
        local ms = math.floor(timeouts[k] * 1000 + 0.5)
        return call(timed[k], fifo), function(g)
          local err, why = failed(g, "ETIMEDOUT", "ETIMEDOUT")
          if not err then return why end
          if err.signal ~= 9 then return "signal " .. tostring(err.signal) end
          if not err.message:find("timeout of " .. ms .. " ms", 1, true) then return "message: " .. err.message end
          return nil
        end
      elseif kind == "exit" then
        local status = ({0, 1, 3, 42, 255})[r(5)]
        return call(exit, status), function(g)
          local err, why = failed(g, "EEXITED", "EEXITED")
          if not err then return why end
          if err.exit_status ~= status then return ("exit_status %s, expected %d"):format(tostring(err.exit_status), status) end
          if err.signal ~= nil then return "signal set for an exit" end
          if not err.message:find("exited with status " .. status, 1, true) then return "message: " .. err.message end
          return nil
        end
      elseif kind == "encode" then
        return call(badenc, i), function(g)
          local err, why = failed(g, "EENCODE", "EENCODE")
          if not err then return why end
          if err.message ~= "cannot encode result[2].f: a function cannot be serialized" then return "message: " .. err.message end
          return nil
        end
      elseif kind == "cancel" then
        local f = call(block, fifo)
        local c = "not called"
        later(function() c = f:cancel() end)
        return f, function(g)
          if c ~= true then return "cancel() of a running call returned " .. tostring(c) end
          local again, _, code = g:cancel()
          if again ~= nil or code ~= "EALREADY" then return "a second cancel() did not fail with EALREADY" end
          local err, why = failed(g, "ECANCELED", "ECANCELED")
          if not err then return why end
          -- On a pool, a call still queued is only taken out: no worker, no signal.
          local want = 9
          if pool and g:pid() == nil then want = nil end
          if err.signal ~= want then return "signal " .. tostring(err.signal) end
          return nil
        end
      else -- drop_running / drop_done: the future is not kept anywhere but in a weak table
        local f = kind == "drop_running" and not pool and block(fifo) or call(echo, i)
        local pid = f:pid()
        if not pool then -- a pool call's pid is its worker's, or nil while queued
          started_pids[#started_pids + 1] = pid
          pending_drops[pid] = kind
        end
        dropped[#dropped + 1] = f
        drops = drops + 1
        return nil
      end
    end

    -- ---- warm-up: one of each, then the baseline --------------------------------------------
    do
      local function run(kind)
        local f, check = start(0, kind)
        run_deferred(true)
        if f then
          f:wait()
          local e = check(f)
          if e then problem("warm-up %s: %s", kind, e) end
        end
      end
      for _, m in ipairs(mix) do run(m[1]) end
      collect_and_check()
    end
    counts = {}
    S.gc()
    assert.are.same({}, S.children())
    local fds0, threads0 = S.fd_count(), thread_count()
    if on_pool then
      pool = ip.pool(4)
      finally(function() pool:close() end)
    end

    -- ---- the storm --------------------------------------------------------------------------
    local wall0, cpu0 = os.time(), os.clock()
    local active, recs, n_done, max_active = {}, {}, 0, 0
    local next_gc = r(12)
    local outcome_counts = {}
    for f in ip.waitfor(active, CF) do
      if f then
        n_done = n_done + 1
        local rec = recs[f]
        recs[f] = nil
        if not rec then
          problem("waitfor handed back an unknown or repeated future %s", tostring(f))
        else
          if not f:done() then problem("call %d (%s) handed back but not done", rec.i, rec.kind) end
          local e = rec.check(f)
          if e then problem("call %d (%s, pid %s): %s", rec.i, rec.kind, tostring(f:pid()), e) end
          local err = f:error()
          local key = err and err.code or "ok"
          outcome_counts[key] = (outcome_counts[key] or 0) + 1
        end
      else
        if #active >= CF then problem("waitfor asked for a call with %d in flight", #active) end
        -- Answer the ask with one call in the list (a dropped one does not count: with an
        -- empty list, an unanswered ask would end the loop).
        local appended = false
        while not appended and n_started < TASKS do
          n_started = n_started + 1
          local kind = pick()
          local g, check = start(n_started, kind)
          if g then
            if not pool then started_pids[#started_pids + 1] = g:pid() end
            recs[g] = {i = n_started, kind = kind, check = check}
            active[#active + 1] = g
            if #active > max_active then max_active = #active end
            appended = true
          end
          next_gc = next_gc - 1
          if next_gc <= 0 then
            collect_and_check()
            next_gc = r(12)
          end
        end
        run_deferred(not appended) -- declining this ask: the loop waits from now on
      end
    end
    collect_and_check()
    local wall, cpu = os.time() - wall0, os.clock() - cpu0
    if pool then
      if pool:workers() ~= 4 then problem("the pool has %d workers after the storm, not 4", pool:workers()) end
      pool:close()
    end

    -- ---- nothing left behind ----------------------------------------------------------------
    if #deferred ~= 0 then problem("deferred actions never ran") end
    if next(recs) then problem("futures never handed back by waitfor") end
    if #active ~= 0 then problem("%d futures left in the list", #active) end
    recs, active = nil, nil
    S.gc()
    local children = S.children()
    local fds, threads = S.fd_count(), thread_count()
    local ours = {}
    for _, pid in ipairs(started_pids) do ours[pid] = true end
    for _, pid in ipairs(children) do
      problem("child %d still alive or a zombie%s", pid, ours[pid] and " (one of the storm's)" or "")
    end
    if W then -- and waitpid(-1, WNOHANG) agrees: no child at all
      local pid, msg, errno = W.wait(-1, W.WNOHANG)
      if pid ~= nil or errno ~= E.ECHILD then
        problem("waitpid(-1, WNOHANG) = %s, %s, %s; expected ECHILD", tostring(pid), tostring(msg), tostring(errno))
      end
    end
    if fds ~= fds0 then problem("%d descriptors open after the storm, %d before", fds, fds0) end
    if threads ~= threads0 then problem("%d threads after the storm, %d before", threads, threads0) end

    -- ---- report -----------------------------------------------------------------------------
    local lines = {}
    local function row(k, v) lines[#lines + 1] = ("  %-22s %s"):format(k, tostring(v)) end
    row("seed", seed)
    row("calls started", n_started)
    row("handed back", n_done)
    row("dropped (GC)", drops)
    row("GC checks", gc_checks)
    row("max in flight", max_active)
    local ks = {}
    for k in pairs(counts) do ks[#ks + 1] = k end
    table.sort(ks)
    for _, k in ipairs(ks) do row("mix: " .. k, counts[k]) end
    ks = {}
    for k in pairs(outcome_counts) do ks[#ks + 1] = k end
    table.sort(ks)
    for _, k in ipairs(ks) do row("outcome: " .. k, outcome_counts[k]) end
    row("wall / parent CPU", ("%d s / %.2f s"):format(wall, cpu))
    row("fds before/after", fds0 .. " / " .. fds)
    row("threads before/after", threads0 .. " / " .. threads)
    row("children after", #children)
    print(table.concat(lines, "\n"))

    assert.are.equal(TASKS, n_started)
    assert(#problems == 0, ("seed %d: %d problem(s):\n%s"):format(seed, #problems, table.concat(problems, "\n")))
end

describe("storm (" .. _VERSION .. (jit and (", " .. jit.version) or "") .. ")", function()
  it(("%d mixed calls at concurrency %d: exact outcomes, nothing left behind"):format(TASKS, CF), function()
    storm(false)
  end)
  it(("%d mixed calls on a pool of 4 at concurrency %d: exact outcomes, the pool whole, nothing left"):format(TASKS, CF), function()
    storm(true)
  end)
end)
