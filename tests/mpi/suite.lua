-- ip.mpi under a real mpirun: tests/mpi/run.sh starts this script once per case,
-- `mpirun -np 4 lua suite.lua CASE`, and reads what the root prints: "ok - what" or
-- "not ok - what: why" per check, then "done". Every rank names the same tasks (but in the
-- "mismatch" case); the other ranks serve until the root closes its pool.
local ip = require "inparallel"
local case = arg[1] or "calls"

local failed = false
local function check(ok, what, why)
  if ok then print("ok - " .. what)
  else failed = true; print("not ok - " .. what .. ": " .. tostring(why)) end
  io.stdout:flush()
end

local square = ip.task(function(x) return x * x, x end, {name = "square"})
local raise = ip.task(function(host) error({code = 42, host = host}) end, {name = "raise"})
-- The shell's parent is the call's child: it dies of SIGSEGV, as a crash would kill it.
local crash = ip.task(function() os.execute("kill -SEGV $PPID") end, {name = "crash"})
local forever = ip.task(function() while true do end end, {name = "forever"})
local timed = ip.task(function() while true do end end, {name = "timed", timeout = 0.3})
-- The call's child's parent is the rank: it is killed outright.
local kill_rank = ip.task(function()
  os.execute("kill -KILL $(cut -d' ' -f4 /proc/$PPID/stat)")
end, {name = "kill_rank"})

local mpi = ip.mpi
if case == "mismatch" then
  mpi.init()
  if mpi.rank() == 2 then ip.task(function() end, {name = "only_on_rank_2"}) end
  local ok, err = pcall(mpi.pool, 0)
  io.stderr:write(("rank %d: %s\n"):format(mpi.rank(), ok and "no failure" or tostring(err)))
  mpi.finalize()
  os.exit(ok and 0 or 3)
end

mpi.init()
local pool = mpi.pool(0, {reuse = case == "reuse"})
if not pool then mpi.finalize() return end

if case == "calls" or case == "reuse" then
  local active, n, seen, good, bad = {}, 0, {}, 0, nil
  for f in ip.waitfor(active, 16) do
    if f then
      local ok, sq, x = pcall(f.result, f)
      if ok and sq == x * x and not seen[x] then seen[x] = true; good = good + 1
      else bad = bad or (ok and "wrong or twice: " .. tostring(x) or tostring(sq)) end
    elseif n < 1000 then
      n = n + 1
      active[#active + 1] = pool:call(square, n)
    end
  end
  check(good == 1000 and not bad, "1000 calls through ip.waitfor(list, 16)", bad or good)
  check(pool:workers() == 3, "pool:workers() is the worker ranks", pool:workers())
end

if case == "failures" or case == "reuse" then
  local ok1 = pool:call(square, 7)
  local r, c, t = pool:call(raise, "db1"), pool:call(crash), pool:call(timed)
  local ok, err = pcall(r.result, r)
  check(not ok and err.code == "ERAISED" and type(err.value) == "table" and err.value.code == 42
          and err.value.host == "db1", "error(table) on a rank arrives as that table", err and err.message)
  ok, err = pcall(c.result, c)
  check(not ok and err.code == "ESIGNALED", "a crash on a rank fails its call", err and err.message)
  ok, err = pcall(t.result, t)
  check(not ok and err.code == "ETIMEDOUT", "a task timeout on a rank fails its call", err and err.message)
  local runs = {pool:call(forever), pool:call(forever), pool:call(forever), pool:call(forever)}
  for _, f in ipairs(runs) do f:cancel() end
  local all = true
  for _, f in ipairs(runs) do
    local okc, e = pcall(f.result, f)
    all = all and not okc and e.code == "ECANCELED"
  end
  check(all, "cancel of calls out on ranks and queued", "a call was not canceled")
  local ok2 = pool:call(square, 8)
  check(ok1:result() == 49 and ok2:result() == 64, "the calls around the failures succeed", "wrong results")
end

if case == "rank-death" then
  local f = pool:call(kill_rank)
  f:wait()
  check(false, "the job ended when a rank died", "the root lived on")
end

pool:close()
print("done")
mpi.finalize()
os.exit(failed and 1 or 0)
