-- inparallel's Lua binding, two ways (the default msgpack serializer both ways):
--   fork  a fork per call: ip.task(fn), one task(x) per item, C at a time through
--         ip.waitfor(active, C); timed from the first call to the last result summed.
--   map   ip.map(fn, list, {workers = C}): the map makes its pool, runs the items and closes
--         the pool, all timed (the pool's start is part of what a map costs).
-- Workloads: `trivial N C` (x -> x + 1 over 1..N) and `big BYTES` (one call returning a
-- BYTES-byte string made before the call, so it is inherited and only moved; map: 1 item,
-- 1 worker). Before the timed run, the same at a tenth of the size, untimed.
--
--   LUA_CPATH='bindings/lua/5.3/.libs/?.so;;' lua5.3 bench/peers/lua-ip.lua fork|map trivial N C
--   ... fork|map big BYTES
-- Prints one line: peer=lua-ip-fork|lua-ip-map workload=... conc=C n=N|bytes=B seconds=S
local ip = require "inparallel"
local ptime = require "posix.time"

local function now()
  local t = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
  return t.tv_sec + t.tv_nsec * 1e-9
end

local mode, workload = arg[1], arg[2]
local peer = "lua-ip-" .. tostring(mode)

local function add_one(x) return x + 1 end
local add_one_task = ip.task(add_one)

local function trivial(n, c)
  local sum = 0
  local t0 = now()
  if mode == "fork" then
    local active, started = {}, 0
    for f in ip.waitfor(active, c) do
      if f then
        sum = sum + f:result()
      elseif started < n then
        started = started + 1
        active[#active + 1] = add_one_task(started)
      end
    end
  else
    local list = {}
    for i = 1, n do list[i] = i end
    t0 = now() -- the list is the input, not the work
    for _, v in ipairs(ip.map(add_one, list, {workers = c})) do sum = sum + v end
  end
  local s = now() - t0
  assert(sum == n * (n + 1) // 2 + n, "wrong sum")
  return s
end

local function big(bytes)
  local payload = ("x"):rep(bytes)
  local function give() return payload end
  local t0 = now()
  local got
  if mode == "fork" then
    got = ip.task(give)():result()
  else
    got = ip.map(give, {1}, {workers = 1})[1]
  end
  local s = now() - t0
  assert(#got == bytes, "wrong length")
  return s
end

if (mode == "fork" or mode == "map") and workload == "trivial" and tonumber(arg[3]) and tonumber(arg[4]) then
  local n, c = math.tointeger(tonumber(arg[3])), math.tointeger(tonumber(arg[4]))
  trivial(n // 10 + 1, c)
  collectgarbage()
  print(("peer=%s workload=trivial conc=%d n=%d seconds=%.6f"):format(peer, c, n, trivial(n, c)))
elseif (mode == "fork" or mode == "map") and workload == "big" and tonumber(arg[3]) then
  local bytes = math.tointeger(tonumber(arg[3]))
  big(bytes // 10)
  collectgarbage()
  print(("peer=%s workload=big conc=1 bytes=%d seconds=%.6f"):format(peer, bytes, big(bytes)))
else
  io.stderr:write("usage: lua-ip.lua fork|map trivial N C | fork|map big BYTES\n")
  os.exit(2)
end
