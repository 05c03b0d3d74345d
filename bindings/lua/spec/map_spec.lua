-- ip.map: real pools and forks. A map closes the pool it makes, so no process of it is left
-- once it returns or raises; a pool a spec makes is closed after it.
local ip = require "inparallel"
local S = require "spec.support"

local later, fifo = S.later, S.fifo

-- Busy for a while that shrinks with x, so that later items tend to finish first.
local function busy(n)
  local s = 0
  for i = 1, n do s = s + i % 7 end
  return s
end

local function ppid(pid)
  local fh = assert(io.open("/proc/" .. pid .. "/stat"))
  local stat = fh:read("*a")
  fh:close()
  return tonumber(stat:match("^%d+ %b() %a (%d+)"))
end

local square = ip.task(function(x) return x * x end)
local pid_of = ip.task(function() return S.mypid() end)

describe("ip.map", function()
  after_each(S.cleanup)

  it("gives the results in the list's order", function()
    local list = {}
    for i = 1, 200 do list[i] = i end
    local got = ip.map(function(x) busy((200 - x) * 200) return x * 2 end, list, {workers = 3})
    assert.are.equal(200, #got)
    for i = 1, 200 do assert.are.equal(i * 2, got[i]) end
  end)

  it("takes a fresh function, upvalues and all, and leaves no process behind", function()
    local before = #S.children()
    local offset = 1000
    local got = ip.map(function(x) return x + offset end, {1, 2, 3})
    assert.are.same({1001, 1002, 1003}, got)
    assert.are.equal(before, #S.children())
  end)

  it("passes each item as the one argument, any value msgpack carries", function()
    local list = {{a = {1, 2}}, "s", 2.5, true, {}}
    local got = ip.map(function(v) return {type(v), v} end, list, {workers = 2})
    assert.are.same({{"table", {a = {1, 2}}}, {"string", "s"}, {"number", 2.5}, {"boolean", true}, {"table", {}}}, got)
  end)

  it("keeps each call's first value; a nil leaves a hole", function()
    local got = ip.map(function(x) if x ~= 2 then return x, "more" end end, {1, 2, 3})
    assert.are.equal(1, got[1])
    assert.is_nil(got[2])
    assert.are.equal(3, got[3])
  end)

  it("an empty list gives an empty table and makes no pool", function()
    local before = #S.children()
    assert.are.same({}, ip.map(function() error("never") end, {}))
    assert.are.equal(before, #S.children())
  end)

  it("a failure raises its error table with the item's index, in its message too", function()
    local before = #S.children()
    local list = {}
    for i = 1, 40 do list[i] = i end
    local err = S.raised(ip.map, function(x)
      if x == 17 then error({why = "seventeen"}) end
      return x
    end, list, {workers = 2})
    assert.are.equal(17, err.index)
    assert.are.equal(ip.ERAISED, err.code)
    assert.are.equal("ip.map: item 17: (error object is a table value)", err.message)
    assert.are.same({why = "seventeen"}, err.value)
    assert.matches("^stack traceback:", err.traceback)
    assert.matches("^ERAISED: ip.map: item 17: ", tostring(err))
    assert.are.equal(before, #S.children())
    local plain = S.raised(ip.map, function(x) if x == 3 then error("three", 0) end end, {1, 2, 3, 4})
    assert.are.equal(3, plain.index)
    assert.are.equal("ip.map: item 3: three", plain.message)
  end)

  it("stops at the first failure: nothing more starts, what is in flight is canceled", function()
    -- Item 1 blocks on a FIFO nobody writes; item 2 fails once item 1 has started (it waits
    -- for item 1's word on a second FIFO, so the log surely has both). The map must cancel
    -- item 1 and start none of items 3 to 6. (Were item 1 not canceled, its timeout would end
    -- it as a failure of index 1 instead of hanging the spec.)
    local gate, started, log = fifo(), fifo(), os.tmpname()
    later(function() os.remove(log) end)
    local err = S.raised(ip.map, function(i)
      local fh = io.open(log, "a") fh:write(i, "\n") fh:close()
      if i == 1 then
        local w = io.open(started, "w") w:write("1\n") w:close()
        io.open(gate):read("*l")
      end
      if i == 2 then
        io.open(started):read("*l")
        error("second", 0)
      end
      return i
    end, {1, 2, 3, 4, 5, 6}, {workers = 2, isolation = true, timeout = 60})
    assert.are.equal(2, err.index)
    assert.are.equal("ip.map: item 2: second", err.message)
    local ran = {}
    for line in io.lines(log) do ran[#ran + 1] = tonumber(line) end
    table.sort(ran)
    assert.are.same({1, 2}, ran)
  end)

  it("a crash, an exit and a timeout are failures like the others", function()
    local crash = S.raised(ip.map, function(x) if x == 2 then os.execute("kill -KILL $PPID") while true do end end return x end, {1, 2, 3})
    assert.are.equal(2, crash.index)
    assert.are.equal(ip.ESIGNALED, crash.code)
    assert.are.equal(9, crash.signal)
    local exit = S.raised(ip.map, function(x) if x == 3 then os.exit(4) end return x end, {1, 2, 3})
    assert.are.equal(3, exit.index)
    assert.are.equal(ip.EEXITED, exit.code)
    assert.are.equal(4, exit.exit_status)
    local slow = S.raised(ip.map, function(x) if x == 1 then while true do end end return x end, {1, 2}, {timeout = 0.2})
    assert.are.equal(1, slow.index)
    assert.are.equal(ip.ETIMEDOUT, slow.code)
    assert.matches("^ip.map: item 1: ", slow.message)
  end)

  it("isolation = true forks a process per item", function()
    local got = ip.map(function(x)
      local seen = ISOLATED
      ISOLATED = x
      return {pid = S.mypid(), seen = seen}
    end, {1, 2, 3, 4, 5, 6}, {isolation = true, workers = 2})
    local pids = {}
    for i = 1, 6 do
      assert.is_nil(got[i].seen) -- no item saw another's state
      assert.is_nil(pids[got[i].pid])
      pids[got[i].pid] = true
    end
    assert.is_nil(ISOLATED)
    assert.are.same({1, 4, 9}, ip.map(square, {1, 2, 3}, {isolation = true}))
  end)

  it("pool = p runs a task made before p on p, and leaves p open", function()
    local p = ip.pool(2)
    later(function() p:close() end)
    assert.are.same({1, 4, 9, 16, 25}, ip.map(square, {1, 2, 3, 4, 5}, {pool = p}))
    -- p's workers are the children of its template, a child of ours
    local ours = {}
    for _, pid in ipairs(S.children()) do ours[pid] = true end
    for _, pid in ipairs(ip.map(pid_of, {1, 2, 3, 4}, {pool = p})) do
      assert.is_true(ours[ppid(pid)], "ran on a worker of p")
    end
    assert.are.equal(2, p:workers())
    assert.are.equal(36, p:call(square, 6):result())
    local err = S.raised(ip.map, square, {1, "x", 3}, {pool = p})
    assert.are.equal(2, err.index)
    assert.are.equal(2, p:workers()) -- still open after a failure
    assert.are.equal(49, p:call(square, 7):result())
  end)

  it("timeout applies to a given task's calls too", function()
    local forever = ip.task(function(x) if x == 2 then while true do end end return x end)
    local p = ip.pool(1)
    later(function() p:close() end)
    local err = S.raised(ip.map, forever, {1, 2}, {pool = p, timeout = 0.2})
    assert.are.equal(2, err.index)
    assert.are.equal(ip.ETIMEDOUT, err.code)
    assert.are.equal(1, p:workers())
    assert.are.same({1, 3}, ip.map(forever, {1, 3}, {pool = p, timeout = 0.2}))
  end)

  it("with pool = p, a function or a task made after p is refused, saying why", function()
    local p = ip.pool(1)
    later(function() p:close() end)
    assert.matches("ip.map: with pool = p, pass a task made before p %(ip.task%(fn%), then ip.pool%)",
      S.raised(ip.map, function(x) return x end, {1}, {pool = p}))
    local late = ip.task(function(x) return x end)
    assert.matches("ip.map: the task was made after the pool, and the pool's workers run on a copy " ..
      "of the Lua state as it was when ip.pool made them, which does not have it; make the task " ..
      "before the pool", S.raised(ip.map, late, {1}, {pool = p}))
  end)

  it("progress is called after each item that succeeded, with the count done and the total", function()
    local seen = {}
    local got = ip.map(function(x) return x * 2 end, {1, 2, 3, 4, 5}, {workers = 2, progress = function(done, total)
      seen[#seen + 1] = done .. "/" .. total
    end})
    assert.are.same({2, 4, 6, 8, 10}, got)
    assert.are.same({"1/5", "2/5", "3/5", "4/5", "5/5"}, seen)
    assert.are.same({}, S.children())
  end)

  it("an error in progress stops the map and is raised as is", function()
    local calls = 0
    local ok, err = pcall(ip.map, function(x) return x end, {1, 2, 3, 4, 5, 6, 7, 8}, {workers = 2,
      progress = function(done) calls = calls + 1; if done == 2 then error("enough", 0) end end})
    assert.is_false(ok)
    assert.are.equal("enough", err)
    assert.are.equal(2, calls)
    assert.are.same({}, S.children())
  end)

  it("bad arguments raise errors that say which", function()
    local closed = ip.pool(1)
    closed:close()
    local fn = function(x) return x end
    assert.matches("bad argument #1 to '.-' %(a function or a task %(ip.task%) expected, got number%)",
      S.raised(ip.map, 5, {}))
    assert.matches("bad argument #2 .*table expected", S.raised(ip.map, fn, "list"))
    assert.matches("bad argument #3 .*table expected", S.raised(ip.map, fn, {}, 5))
    assert.matches("ip.map: unknown option 'worker' %(known: workers, isolation, timeout, pool, progress%)",
      S.raised(ip.map, fn, {1}, {worker = 2}))
    assert.matches("ip.map: workers must be a positive integer, not 0", S.raised(ip.map, fn, {1}, {workers = 0}))
    assert.matches("ip.map: workers must be a positive integer, not 1.5", S.raised(ip.map, fn, {1}, {workers = 1.5}))
    assert.matches("ip.map: workers must be a positive integer, not a string", S.raised(ip.map, fn, {1}, {workers = "2"}))
    assert.matches("ip.map: isolation must be a boolean, not a number", S.raised(ip.map, fn, {1}, {isolation = 1}))
    assert.matches("ip.map: progress must be a function %(called with the items done and their total%), not a string",
      S.raised(ip.map, fn, {1}, {progress = "bar"}))
    assert.matches("ip.map: timeout must be a number of seconds > 0 %(math.huge or nil = none%), not %-1",
      S.raised(ip.map, fn, {1}, {timeout = -1}))
    assert.matches("ip.map: timeout must be a number of seconds > 0 .*, not 0", S.raised(ip.map, fn, {1}, {timeout = 0}))
    assert.matches("ip.map: timeout must be .*, not a string", S.raised(ip.map, fn, {1}, {timeout = "1"}))
    assert.matches("ip.map: pool must be a pool from ip.pool, not a table", S.raised(ip.map, square, {1}, {pool = {}}))
    assert.matches("ip.map: the pool is closed", S.raised(ip.map, square, {1}, {pool = closed}))
    local p = ip.pool(1)
    later(function() p:close() end)
    assert.matches("ip.map: pool and isolation = true do not go together",
      S.raised(ip.map, square, {1}, {pool = p, isolation = true}))
    assert.matches("ip.map: workers and pool do not go together",
      S.raised(ip.map, square, {1}, {pool = p, workers = 2}))
  end)
end)
