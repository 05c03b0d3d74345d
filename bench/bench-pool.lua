-- Trivial pool calls from Lua against the C core's pool doing the same, in the same run: a
-- 2-worker pool, the calls driven through waitfor with concurrency factor 8, after a tenth as
-- many to warm the workers. The C figure is bench-lua-core's `pool` mode (a task returning 2
-- raw bytes, no argument); the Lua ones are:
--   raw            a task with the raw serializer returning "ok", no argument: the same
--                  work on the wire as the C task; the target, >= 0.7x C
--   msgpack        a task returning true (the default serializer), no argument
--   with an arg    a task called with one integer, returning it (msgpack both ways)
--   ip.map         ip.map(that task, list of n integers, {pool = p})
-- Rounds interleave C and Lua, each round with fresh pools, and the figure is the median of
-- the per-round ratios, so a noisy, shared machine moves both sides together.
--
--   LUA_CPATH='bindings/lua/5.4/.libs/?.so;;' lua5.4 bench/bench-pool.lua [calls] [rounds]
--
-- calls: per round (default 20000); rounds: default 5. BENCH_CORE names the C helper
-- (default bench/bench-lua-core next to this file, built from bench-lua-core.c if missing).
local ip = require "inparallel"
local here = (arg and arg[0] or "bench/bench-pool.lua"):match("^(.*)/[^/]*$") or "."
local calls = tonumber(arg and arg[1]) or 20000
local rounds = tonumber(arg and arg[2]) or 5
local WORKERS, CF = 2, 8

local has_ptime, ptime = pcall(require, "posix.time")
local function now()
  if has_ptime then
    local t = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
    return t.tv_sec + t.tv_nsec * 1e-9
  end
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("*l"))
  p:close()
  return t
end

local core = os.getenv("BENCH_CORE") or (here .. "/bench-lua-core")
if not io.open(core) then
  local top = here .. "/.."
  local cmd = ("cc -O2 -I%s/include %s/bench-lua-core.c -o %s -L%s/lib/.libs -Wl,-rpath,%s/lib/.libs -linparallel")
    :format(top, here, core, top, top)
  io.stderr:write("building the C helper: ", cmd, "\n")
  local ok = os.execute(cmd)
  assert(ok == true or ok == 0, "could not build " .. core)
end

local function c_rate(n)
  local p = assert(io.popen(("%s pool %d %d %d"):format(core, n, CF, WORKERS)))
  local out = p:read("*a")
  p:close()
  return assert(tonumber(out:match("calls/s (%S+)")), "bench-lua-core pool: " .. out)
end

local ok = ip.task(function() return "ok" end, {serializer = "raw"})
local yes = ip.task(function() return true end)
local echo = ip.task(function(x) return x end)

-- Calls per second of n calls of task on the pool, through waitfor; with_arg passes i.
local function lua_rate(pool, task, n, with_arg)
  local active, started, done = {}, 0, 0
  local t0 = now()
  for f in ip.waitfor(active, CF) do
    if f then
      assert(f:result())
      done = done + 1
    elseif started < n then
      started = started + 1
      active[#active + 1] = with_arg and pool:call(task, started) or pool:call(task)
    end
  end
  local dt = now() - t0
  assert(done == n)
  return n / dt
end

local list = {}
for i = 1, calls do list[i] = i end
local function map_rate(pool, n)
  local t0 = now()
  local got = ip.map(echo, list, {pool = pool})
  local dt = now() - t0
  assert(#got == n and got[n] == n)
  return n / dt
end

local function median(v)
  table.sort(v)
  return v[math.floor((#v + 1) / 2)]
end

-- Each figure, and its ratio to the C rate of the same round, by name.
local names = { "raw", "msgpack", "arg", "map" }
local rates, ratios, c_rates = {}, {}, {}
for _, k in ipairs(names) do rates[k], ratios[k] = {}, {} end
for _ = 1, rounds do
  local c = c_rate(calls)
  c_rates[#c_rates + 1] = c
  local p = ip.pool(WORKERS)
  lua_rate(p, ok, math.floor(calls / 10) + 1) -- warm, as the C side does
  local got = {
    raw = lua_rate(p, ok, calls),
    msgpack = lua_rate(p, yes, calls),
    arg = lua_rate(p, echo, calls, true),
    map = map_rate(p, calls),
  }
  p:close()
  collectgarbage()
  for _, k in ipairs(names) do
    rates[k][#rates[k] + 1] = got[k]
    ratios[k][#ratios[k] + 1] = got[k] / c
  end
end

local version = jit and jit.version or _VERSION
print(("| %s, %d-worker pool, %d calls a round | calls/s (median of %d) | vs C pool (median ratio) |")
  :format(version, WORKERS, calls, rounds))
print("|---|---:|---:|")
local what = {
  raw = 'pool:call(task), "ok" back (raw serializer)',
  msgpack = "pool:call(task), true back (msgpack)",
  arg = "pool:call(task, i), i back (msgpack)",
  map = "ip.map(task, {1..n}, {pool = p})",
}
print(("| C core: ip_pool_call, 2-byte raw result | %.0f | 1.00x |"):format(median(c_rates)))
for _, k in ipairs(names) do
  print(("| %s | %.0f | %.2fx |"):format(what[k], median(rates[k]), median(ratios[k])))
end
local ratio = median(ratios.raw)
print(("\npool:call against the C pool: %.2fx (target >= 0.7x): %s"):format(ratio,
  ratio >= 0.7 and "meets" or "MISSES"))
