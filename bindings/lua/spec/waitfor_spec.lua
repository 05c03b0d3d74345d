-- ip.waitfor: the exact rules of the core's ip_waitfor_next (include/inparallel.h), as seen
-- from Lua.
local ip = require "inparallel"
local S = require "spec.support"

local echo = ip.task(function(x) return x end)
local sleepy = ip.task(function(s, x) os.execute("sleep " .. s) return x end)

-- Runs a waitfor loop; `on_ask(list, asks)` adds futures; returns the trace ("N"/"F").
local function trace(list, cf, on_ask)
  local out = {}
  for f in ip.waitfor(list, cf) do
    if f then
      out[#out + 1] = "F"
    else
      out[#out + 1] = "N"
      if on_ask then on_ask(list, #out) end
    end
  end
  return table.concat(out, " ")
end

describe("ip.waitfor", function()
  it("over {} yields nothing", function()
    assert.are.equal("", trace({}))
  end)

  it("over {} with cf = 3 yields exactly one false", function()
    assert.are.equal("N", trace({}, 3))
  end)

  it("yields false, not nil, so the loop goes on", function()
    local got
    for f in ip.waitfor({}, 1) do got = f end
    assert.is_false(got)
  end)

  it("says 'start another' with false and 'the end' with nil, one value each", function()
    local it = ip.waitfor({}, 2)
    local ask = table.pack and table.pack(it()) or {n = 1, it()}
    assert.are.equal(1, ask.n)
    assert.are.equal("boolean", type(ask[1]))
    assert.is_false(ask[1]) -- start another: a generic for goes on
    local ends = table.pack and table.pack(it()) or {n = 1, it()}
    assert.are.equal(1, ends.n)
    assert.are.equal("nil", type(ends[1])) -- declined with an empty list: the end
    -- without a factor: futures, then nil; never false
    local list = {echo(1)}
    local it2 = ip.waitfor(list)
    assert.are.equal("userdata", type(it2()))
    assert.are.equal(1, select("#", it2()))
    assert.are.equal("nil", type(it2()))
  end)

  it("with cf = 1 over 12 tasks started one per ask yields 13 falses", function()
    local started, done, asks = 0, 0, 0
    local active = {}
    for f in ip.waitfor(active, 1) do
      if f then
        done = done + 1
        assert.are.equal(f:args(), f:result())
      else
        asks = asks + 1
        if started < 12 then
          started = started + 1
          active[#active + 1] = echo(started)
        end
      end
    end
    assert.are.equal(12, done)
    assert.are.equal(13, asks)
    assert.are.equal(0, #active)
  end)

  it("appending five on a single ask with cf = 3 gives N F F F F F N", function()
    local added = false
    local t = trace({}, 3, function(list)
      if not added then
        added = true
        for i = 1, 5 do list[#list + 1] = echo(i) end
        for _, f in ipairs(list) do f:wait() end -- all done before the next step: no race
      end
    end)
    assert.are.equal("N F F F F F N", t)
  end)

  it("asks again at once while the caller keeps adding below cf", function()
    local active = {}
    local asks_before_first = 0
    for f in ip.waitfor(active, 4) do
      if f then break end
      asks_before_first = asks_before_first + 1
      if asks_before_first <= 4 then active[#active + 1] = sleepy(0.2, 1) end
    end
    -- four asks in a row, each answered; then the list is full and it waits for a completion
    assert.are.equal(4, asks_before_first)
    assert.are.equal(3, #active)
    for _, f in ipairs(active) do f:cancel() end
  end)

  it("without cf never asks and ends when the list is empty", function()
    local list = {echo(1), echo(2), echo(3)}
    assert.are.equal("F F F", trace(list))
    assert.are.equal(0, #list)
  end)

  it("hands futures back in completion order and removes them in place", function()
    local list = {sleepy(0.6, "slow"), sleepy(0.05, "fast"), sleepy(0.3, "mid")}
    local keep = list
    local order = {}
    for f in ip.waitfor(list) do
      order[#order + 1] = f:result()
      assert.are.equal(keep, list)
      for i, g in ipairs(list) do assert.are_not.equal(f, g, i) end
    end
    assert.are.same({"fast", "mid", "slow"}, order)
  end)

  it("moves the table's last future into the slot of the one it hands back", function()
    local a, b, c, d = sleepy(0.4, "a"), echo("b"), sleepy(0.4, "c"), sleepy(0.4, "d")
    local list = {a, b, c, d}
    local it = ip.waitfor(list)
    assert.are.equal(b, it())
    assert.are.same({a, d, c}, list)
    for f in it do end
    assert.are.same({}, list)
  end)

  it("notices futures the caller takes out, puts back or swaps between steps", function()
    local a, b, c = sleepy(5, "a"), echo("b"), echo("c")
    local list = {a, b}
    local got = {}
    for f in ip.waitfor(list) do
      got[#got + 1] = f:result()
      if #got == 1 then
        -- replace the sleeper in place by another quick call, and append one more
        for i, x in ipairs(list) do if x == a then list[i] = c end end
        list[#list + 1] = echo("d")
      end
    end
    table.sort(got)
    assert.are.same({"b", "c", "d"}, got)
    a:cancel()
  end)

  it("refuses a table that holds the same future twice", function()
    local f = echo(1)
    local err = S.raised(function() for _ in ip.waitfor({f, f}) do end end)
    assert.matches("already holds", tostring(err))
    f:result()
  end)

  it("lets the caller remove futures between steps", function()
    local s = sleepy(5, "never")
    local list = {s, echo(1)}
    local got = {}
    for f in ip.waitfor(list) do
      got[#got + 1] = f:result()
      table.remove(list, 1):cancel()
    end
    assert.are.same({1}, got)
  end)

  it("does not busy-wait", function()
    local list = {sleepy(0.5, 1)}
    local c0 = os.clock()
    for f in ip.waitfor(list) do f:result() end
    assert.is_true(os.clock() - c0 < 0.1, "CPU time while waiting: " .. (os.clock() - c0))
  end)

  it("hands back failed futures like the others", function()
    local boom = ip.task(function() error("x") end)
    local list = {boom()}
    for f in ip.waitfor(list) do
      assert.are.equal(ip.ERAISED, f:error().code)
    end
  end)

  it("with seconds, raises an ETIMEDOUT error table when no call completes in time", function()
    local slow = sleepy(5, "slow")
    local list = {slow}
    local it = ip.waitfor(list, nil, 0.1)
    local err = S.raised(it)
    assert.are.equal("table", type(err))
    assert.are.equal(ip.ETIMEDOUT, err.code)
    assert.are.equal("no call completed within 0.1 s (call the iterator again to go on waiting)", err.message)
    assert.matches("^stack traceback:", err.traceback)
    assert.matches("^ETIMEDOUT: no call completed within 0.1 s", tostring(err))
    assert.are.same({slow}, list) -- nothing was taken out
    list[2] = echo("quick")
    assert.are.equal("quick", it():result()) -- the iterator goes on
    slow:cancel()
    assert.are.equal(slow, it())
    assert.is_nil(it())
  end)

  it("with seconds, bounds each wait, not the whole loop", function()
    local list = {echo(1), echo(2), echo(3)}
    for _, f in ipairs(list) do assert.is_true(f:wait()) end -- no wait below has to sleep
    local got = {}
    for f in ip.waitfor(list, nil, 0.2) do
      got[#got + 1] = f:result()
      os.execute("sleep 0.3") -- so the loop as a whole outlasts the bound
    end
    table.sort(got)
    assert.are.same({1, 2, 3}, got)
  end)

  describe("misuse raises a clear error", function()
    it("non-table list", function()
      assert.matches("table expected", S.raised(ip.waitfor, nil))
      assert.matches("table expected", S.raised(ip.waitfor, "x"))
    end)
    it("bad factor: anything but nil or a positive integer, 0 included", function()
      local what = "the concurrency factor must be a positive integer %(nil = none%), not "
      assert.matches(what .. "0", S.raised(ip.waitfor, {}, 0))
      assert.matches(what .. "%-1", S.raised(ip.waitfor, {}, -1))
      assert.matches(what .. "1.5", S.raised(ip.waitfor, {}, 1.5))
      assert.matches(what .. "inf", S.raised(ip.waitfor, {}, math.huge))
      assert.matches(what .. "string", S.raised(ip.waitfor, {}, "3"))
      assert.matches(what .. "boolean", S.raised(ip.waitfor, {}, false))
    end)
    it("cf = nil (or none) means none; an integral float is an integer", function()
      assert.are.equal("", trace({}, nil))
      assert.are.equal("N", trace({}, 1.0))
    end)
    it("bad seconds", function()
      assert.matches("timeout must be a number of seconds", S.raised(ip.waitfor, {}, nil, -1))
      assert.matches("timeout must be a number of seconds", S.raised(ip.waitfor, {}, 2, 0 / 0))
      assert.matches("timeout must be a number of seconds >= 0 %(nil = forever%), not string", S.raised(ip.waitfor, {}, nil, "1"))
    end)
    it("a list holding something else than futures", function()
      local f = echo(1)
      local it = ip.waitfor({f, 42})
      assert.matches("list%[2%] is a number, not a future", S.raised(it))
      f:wait()
    end)
  end)
end)
