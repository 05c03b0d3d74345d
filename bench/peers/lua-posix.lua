-- What a Lua user writes with luaposix alone: per call a pipe and a fork; the child writes
-- its result as a string and _exits; the parent polls the pipes of the C children alive,
-- reads each to EOF, reaps that child and converts the string back.
--   trivial N C  x -> x + 1 over 1..N, at most C children at once; timed from the first fork
--                to the last result summed.
--   big BYTES    one child writing a BYTES-byte string made before the fork (so inherited and
--                only moved); timed from the fork to the string whole in the parent.
-- Before the timed run, the same at a tenth of the size, untimed.
--
--   lua5.3 bench/peers/lua-posix.lua trivial N C | big BYTES
-- Prints one line: peer=lua-posix workload=... conc=C n=N|bytes=B seconds=S
local unistd = require "posix.unistd"
local ppoll = require "posix.poll"
local pwait = require "posix.sys.wait"
local ptime = require "posix.time"

local function now()
  local t = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
  return t.tv_sec + t.tv_nsec * 1e-9
end

-- A blocking write to a pipe returns once it wrote everything, but for a signal: the rest is
-- copied only then (luaposix's write takes no offset).
local function write_all(fd, s)
  while #s > 0 do
    local n = assert(unistd.write(fd, s))
    s = s:sub(n + 1)
  end
end

-- Runs fn(x) for x = 1..n in children, c at a time; calls got(string) for each result.
local function fork_each(n, c, fn, got)
  local fds, alive, started = {}, 0, 0
  while started < n or alive > 0 do
    while alive < c and started < n do
      started = started + 1
      local r, w = assert(unistd.pipe())
      local pid = assert(unistd.fork())
      if pid == 0 then
        unistd.close(r)
        write_all(w, fn(started))
        unistd._exit(0)
      end
      unistd.close(w)
      fds[r] = {events = {IN = true}, pid = pid, parts = {}}
      alive = alive + 1
    end
    assert(ppoll.poll(fds, -1))
    for fd, e in pairs(fds) do
      if e.revents and (e.revents.IN or e.revents.HUP) then
        local s = assert(unistd.read(fd, 1 << 20))
        if #s > 0 then
          e.parts[#e.parts + 1] = s
        else
          unistd.close(fd)
          local _, how, status = pwait.wait(e.pid)
          assert(how == "exited" and status == 0, "a child failed")
          fds[fd] = nil
          alive = alive - 1
          got(table.concat(e.parts))
        end
      end
    end
  end
end

local function trivial(n, c)
  local sum = 0
  local t0 = now()
  fork_each(n, c, function(x) return tostring(x + 1) end,
            function(s) sum = sum + math.tointeger(tonumber(s)) end)
  local s = now() - t0
  assert(sum == n * (n + 1) // 2 + n, "wrong sum")
  return s
end

local function big(bytes)
  local payload = ("x"):rep(bytes)
  local result
  local t0 = now()
  fork_each(1, 1, function() return payload end, function(s) result = s end)
  local s = now() - t0
  assert(#result == bytes, "wrong length")
  return s
end

if arg[1] == "trivial" and tonumber(arg[2]) and tonumber(arg[3]) then
  local n, c = math.tointeger(tonumber(arg[2])), math.tointeger(tonumber(arg[3]))
  trivial(n // 10 + 1, c)
  collectgarbage()
  print(("peer=lua-posix workload=trivial conc=%d n=%d seconds=%.6f"):format(c, n, trivial(n, c)))
elseif arg[1] == "big" and tonumber(arg[2]) then
  local bytes = math.tointeger(tonumber(arg[2]))
  big(bytes // 10)
  collectgarbage()
  print(("peer=lua-posix workload=big conc=1 bytes=%d seconds=%.6f"):format(bytes, big(bytes)))
else
  io.stderr:write("usage: lua-posix.lua trivial N C | big BYTES\n")
  os.exit(2)
end
