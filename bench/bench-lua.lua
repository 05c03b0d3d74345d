-- The Lua binding against (a) a hand-written luaposix fork + pipe loop doing the same work
-- and (b) the C core, in the same run, as ratios. Rounds are interleaved (binding, hand
-- loop, C core, binding, ...) and the median of the per-round ratios is reported, so a
-- noisy, shared machine moves all three together.
--
--   LUA_CPATH='bindings/lua/5.4/.libs/?.so;;' lua5.4 bench/bench-lua.lua [tasks] [rounds]
--
-- tasks: per concurrency level (default 2000); rounds: default 3. Env BENCH_LARGE_MIB
-- (default 100) sizes the large-result case; BENCH_CORE names the C helper (default
-- bench/bench-lua-core next to this file, built from bench-lua-core.c if missing).
-- Without luaposix for this interpreter (Debian has none for 5.4), the hand loop runs under
-- the first of lua5.3, lua5.1, luajit that has it (`--hand` mode of this same script).
local ip -- required after the --hand mode below, which runs under another interpreter
local here = (arg and arg[0] or "bench/bench-lua.lua"):match("^(.*)/[^/]*$") or "."

local has_posix, unistd = pcall(require, "posix.unistd")
local poll, wait, ptime
if has_posix then
  poll, wait, ptime = require "posix.poll", require "posix.sys.wait", require "posix.time"
end

local function now()
  if ptime then
    local t = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
    return t.tv_sec + t.tv_nsec * 1e-9
  end
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("*l"))
  p:close()
  return t
end

-- ---- the hand-written loop: what a Lua user writes with luaposix alone ---------------------

local function write_all(fd, s)
  local off = 1
  while off <= #s do
    local n = assert(unistd.write(fd, off == 1 and s or s:sub(off)))
    off = off + n
  end
end

-- n tasks, cf at a time; each child sends fn(x) as a string down a pipe and exits.
local function hand_loop(n, cf, fn, chunk)
  local started, done, active = 0, 0, 0
  local fds = {}
  local last
  while done < n do
    while active < cf and started < n do
      started = started + 1
      local r, w = unistd.pipe()
      local pid = unistd.fork()
      if pid == 0 then
        unistd.close(r)
        write_all(w, tostring(fn(started)))
        unistd._exit(0)
      end
      unistd.close(w)
      fds[r] = {events = {IN = true}, pid = pid, buf = {}}
      active = active + 1
    end
    poll.poll(fds, -1)
    for fd, e in pairs(fds) do
      local rev = e.revents
      if rev and (rev.IN or rev.HUP) then
        local s = unistd.read(fd, chunk or 65536)
        if s and #s > 0 then
          e.buf[#e.buf + 1] = s
        else
          unistd.close(fd)
          wait.wait(e.pid)
          fds[fd] = nil
          active, done = active - 1, done + 1
          last = table.concat(e.buf)
        end
      end
    end
  end
  return last
end

local function twice(x) return x * 2 end
-- The large result is made before the call (the child inherits it), so every contender
-- measures moving the bytes, not building them.
local payload = {}
local function big(bytes)
  if not payload[bytes] then payload[bytes] = ("x"):rep(1024):rep(math.floor(bytes / 1024)) .. ("x"):rep(bytes % 1024) end
  local s = payload[bytes]
  return function() return s end
end

-- `--hand fork N C` / `--hand large BYTES`: print one figure, for another interpreter.
if arg and arg[1] == "--hand" then
  assert(has_posix, "no luaposix here")
  local t0 = now()
  if arg[2] == "fork" then
    hand_loop(tonumber(arg[3]), tonumber(arg[4]), twice)
    print(("tasks/s %.1f"):format(tonumber(arg[3]) / (now() - t0)))
  else
    local s = hand_loop(1, 1, big(tonumber(arg[3])))
    assert(#s == tonumber(arg[3]))
    print(("seconds %.6f"):format(now() - t0))
  end
  os.exit(0)
end

-- ---- the other contenders ------------------------------------------------------------------

ip = require "inparallel"

local function run(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local v = tonumber(out:match("[%d.]+%s*$"))
  if not v then error("no figure from: " .. cmd .. "\n" .. out) end
  return v
end

local hand_lua
if not has_posix then
  for _, l in ipairs({"lua5.3", "lua5.1", "luajit"}) do
    if os.execute(l .. " -e 'require \"posix.unistd\"' 2>/dev/null") == true or
       os.execute(l .. " -e 'require \"posix.unistd\"' 2>/dev/null") == 0 then
      hand_lua = l
      break
    end
  end
end
local me = arg and arg[0] or "bench/bench-lua.lua"

local function hand_fork(n, cf)
  if has_posix then
    local t0 = now()
    hand_loop(n, cf, twice)
    return n / (now() - t0)
  end
  if hand_lua then return run(("env -u LUA_CPATH %s %s --hand fork %d %d"):format(hand_lua, me, n, cf)) end
end

local function hand_large(bytes)
  if has_posix then
    local t0 = now()
    assert(#hand_loop(1, 1, big(bytes)) == bytes)
    return now() - t0
  end
  if hand_lua then return run(("env -u LUA_CPATH %s %s --hand large %d"):format(hand_lua, me, bytes)) end
end

local core = os.getenv("BENCH_CORE") or (here .. "/bench-lua-core")
if not io.open(core) then
  local top = here .. "/.."
  local cmd = ("cc -O2 -I%s/include %s/bench-lua-core.c -o %s -L%s/lib/.libs -Wl,-rpath,%s/lib/.libs -linparallel")
    :format(top, here, core, top, top)
  io.stderr:write("building the C helper: ", cmd, "\n")
  assert(os.execute(cmd) == true or os.execute(cmd) == 0)
end

local twice_task = ip.task(twice)
local function binding_fork(n, cf)
  local active, started, sum = {}, 0, 0
  local t0 = now()
  for f in ip.waitfor(active, cf) do
    if f then
      sum = sum + f:result()
    elseif started < n then
      started = started + 1
      active[#active + 1] = twice_task(started)
    end
  end
  local dt = now() - t0
  assert(sum == n * (n + 1))
  return n / dt
end

local function binding_large(bytes, ser)
  local t = ip.task(big(bytes), {serializer = ser})
  local t0 = now()
  local s = t():result()
  local dt = now() - t0
  assert(#s == bytes)
  return dt
end

-- ---- the run --------------------------------------------------------------------------------

local function median(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  local n = #c
  if n == 0 then return nil end
  return n % 2 == 1 and c[(n + 1) / 2] or (c[n / 2] + c[n / 2 + 1]) / 2
end

local function fmt(v, f) return v and (f or "%.2f"):format(v) or "n/a" end

local N = tonumber(arg and arg[1]) or 2000
local ROUNDS = tonumber(arg and arg[2]) or 3
local BYTES = math.floor((tonumber(os.getenv("BENCH_LARGE_MIB")) or 100) * 1048576)
local la = io.open("/proc/loadavg")
local load = la and la:read("*l"):match("^(%S+)") or "?"
if la then la:close() end
print(("bench-lua: %s%s, inparallel %s, %d tasks per level, %d rounds, load %s; hand loop: %s")
  :format(_VERSION, jit and (" (" .. jit.version .. ")") or "", ip.version(), N, ROUNDS, load,
          has_posix and "luaposix here" or (hand_lua and ("luaposix under " .. hand_lua) or "none")))

print("\nfork: tasks returning x * 2, tasks/s (medians; ratios = medians of per-round ratios)")
print(("%4s %10s %10s %10s %12s %12s"):format("c", "binding", "hand loop", "C core", "vs hand", "vs C core"))
for _, cf in ipairs({2, 8}) do
  local b, h, c, rh, rc = {}, {}, {}, {}, {}
  for r = 1, ROUNDS do
    b[r] = binding_fork(N, cf)
    h[r] = hand_fork(N, cf)
    c[r] = run(("%s fork %d %d"):format(core, N, cf))
    if h[r] then rh[#rh + 1] = b[r] / h[r] end
    rc[#rc + 1] = b[r] / c[r]
    io.stderr:write(("  c=%d round %d: binding %.1f, hand %s, core %.1f\n"):format(cf, r, b[r], fmt(h[r], "%.1f"), c[r]))
  end
  print(("%4d %10.1f %10s %10.1f %11sx %11sx"):format(cf, median(b), fmt(median(h), "%.1f"), median(c),
        fmt(median(rh)), fmt(median(rc))))
end

print(("\nlarge: one task returning a %d MiB string, seconds (lower is better)"):format(math.floor(BYTES / 1048576)))
print(("%-22s %10s %12s"):format("path", "seconds", "speed ratio"))
local rows = {{"binding (msgpack)", function() return binding_large(BYTES, "msgpack") end},
              {"binding (raw)", function() return binding_large(BYTES, "raw") end},
              {"hand loop (pipe)", function() return hand_large(BYTES) end},
              {"C core, in place", function() return run(("%s large %d inplace"):format(core, BYTES)) end},
              {"C core, streamed", function() return run(("%s large %d streamed"):format(core, BYTES)) end},
              {"C core, streamed+copy", function() return run(("%s large %d copy"):format(core, BYTES)) end}}
local times = {}
for r = 1, ROUNDS do
  for i, row in ipairs(rows) do
    times[i] = times[i] or {}
    times[i][r] = row[2]()
    collectgarbage()
  end
end
for i, row in ipairs(rows) do
  local ratios = {}
  for r = 1, ROUNDS do
    if times[i][r] then ratios[#ratios + 1] = times[1][r] and (times[i][r] / times[1][r]) end
  end
  print(("%-22s %10s %11sx"):format(row[1], fmt(median(times[i]), "%.3f"), fmt(median(ratios))))
end
print("(speed ratio: the row's time / the binding's (msgpack) time in the same round, so the binding's speed")
print(" relative to that row: > 1 means the binding is faster. 'streamed+copy' is the C core plus the one copy")
print(" into fresh memory that any Lua binding must make, since a Lua string cannot wrap foreign memory.)")
