-- No zombies, no leaked descriptors, no stray children.
local ip = require "inparallel"
local S = require "spec.support"

describe("process hygiene", function()
  local echo = ip.task(function(x) return x end)
  local spin = ip.task(function() while true do end end)
  local boom = ip.task(function() error("x") end)

  before_each(function()
    echo(0):result() -- the supervisor and its descriptors exist from here on
    -- So does this thread's waiter (an eventfd kept for the thread's life), which its first
    -- wait that sleeps makes: a wait on a call that cannot end by itself surely sleeps.
    local f = spin()
    assert.is_nil(f:wait(0.01))
    f:cancel()
    f:wait()
    S.gc()
  end)

  it("leaves no child and no descriptor after many calls", function()
    local fds = S.fd_count()
    for i = 1, 100 do
      local f = (i % 3 == 0 and boom or echo)(i)
      f:wait()
    end
    local active, started = {}, 0
    for f in ip.waitfor(active, 8) do
      if not f and started < 40 then
        started = started + 1
        active[#active + 1] = echo(started)
      end
    end
    assert.are.equal(40, started)
    S.gc()
    assert.are.same({}, S.children())
    assert.are.equal(fds, S.fd_count())
  end)

  it("reaps children that were never waited for", function()
    local pids = {}
    do
      local fs = {}
      for i = 1, 20 do fs[i] = (i % 2 == 0 and spin or echo)(i); pids[i] = fs[i]:pid() end
    end
    S.gc()
    assert.are.same({}, S.children())
    for _, pid in ipairs(pids) do assert.is_false(S.exists(pid)) end
  end)

  it("does not leak descriptors into children", function()
    local before = S.fd_count()
    local f = ip.task(function() return S.fd_count() end)()
    local child = f:result()
    assert.is_true(child <= before + 1, ("child has %d fds, parent %d"):format(child, before))
  end)

  it("canceled and timed-out calls leave nothing behind", function()
    local fds = S.fd_count()
    local t = ip.task(function() while true do end end, {timeout = 0.05})
    local list = {}
    for i = 1, 5 do list[#list + 1] = t() end
    for i = 1, 5 do list[#list + 1] = spin() end
    for i = 6, 10 do list[i]:cancel() end
    for _, f in ipairs(list) do f:wait() end
    list = nil
    S.gc()
    assert.are.same({}, S.children())
    assert.are.equal(fds, S.fd_count())
  end)
end)
