local ip = require "inparallel"
local S = require "spec.support"

local spin = ip.task(function() while true do end end)
local echo = ip.task(function(...) return ... end)

describe("future", function()
  it("result() returns every value, and the same values again", function()
    local f = echo(1, "two", {3})
    local a, b, c = f:result()
    assert.are.same({1, "two", {3}}, {a, b, c})
    local _, _, c2 = f:result()
    assert.are.equal(c, c2) -- cached: the same table
    assert.are.equal(3, select("#", f:result()))
  end)

  it("done() is false while running and true after", function()
    local f = spin()
    assert.is_false(f:done())
    f:cancel()
    assert.is_true(f:done())
    local g = echo(1)
    g:wait()
    assert.is_true(g:done())
  end)

  it("wait(timeout) returns nil, 'ETIMEDOUT: ...', 'ETIMEDOUT' and true once done", function()
    local f = spin()
    local ok, why, code = f:wait(0.05)
    assert.is_nil(ok)
    assert.are.equal("ETIMEDOUT: the call did not complete within 0.05 s", why)
    assert.are.equal("ETIMEDOUT", code)
    ok, why, code = f:wait(0)
    assert.is_nil(ok)
    assert.matches("^ETIMEDOUT: ", why)
    assert.are.equal("ETIMEDOUT", code)
    f:cancel()
    assert.is_true(f:wait())
    assert.is_true(f:wait(0))
    assert.is_true(echo(1):wait(10))
  end)

  it("wait(), result() and error() reject a negative or non-number timeout", function()
    local f = echo(1)
    for _, m in ipairs({"wait", "result", "error"}) do
      assert.matches("timeout must be a number of seconds", S.raised(f[m], f, -1))
      assert.matches("timeout must be a number of seconds", S.raised(f[m], f, 0 / 0))
      assert.matches("timeout must be a number of seconds >= 0 %(nil = forever%), not string", S.raised(f[m], f, "1"))
    end
    f:wait()
  end)

  it("result(seconds) raises an ETIMEDOUT error table when they pass; the call goes on", function()
    local f = spin()
    local err = S.raised(f.result, f, 0.05)
    assert.are.equal("table", type(err))
    assert.are.equal(ip.ETIMEDOUT, err.code)
    assert.are.equal("the call did not complete within 0.05 s (it still runs)", err.message)
    assert.matches("^stack traceback:", err.traceback)
    assert.matches("^ETIMEDOUT: the call did not complete within 0.05 s %(it still runs%)\nstack traceback:", tostring(err))
    assert.is_false(f:done())
    assert.are.equal("ETIMEDOUT", S.raised(f.result, f, 0).code)
    assert.is_true(f:cancel())
    assert.are.equal(ip.ECANCELED, S.raised(f.result, f, 0).code) -- the call's own outcome now
    assert.are.equal(7, echo(7):result(10))
    assert.are.equal(7, echo(7):result(1.5))
  end)

  -- luaposix (Debian has it for some versions only) installs a signal handler; a shell sends
  -- the signal once the wait has begun. Every wait is bounded, so a signal that came too early
  -- fails the spec (ETIMEDOUT) instead of hanging it.
  local has_posix, P = pcall(require, "posix.signal")
  it("a signal handler that runs during a wait: EINTR, returned by wait(), raised by result() and waitfor", function()
    if not has_posix then
      pending("needs luaposix for a Lua signal handler, not installed for " .. _VERSION)
      return
    end
    local U = require "posix.unistd"
    local ran = 0
    P.signal(P.SIGUSR1, function() ran = ran + 1 end)
    -- The signal must come while this process sleeps in the wait (one that came before would
    -- only run the handler): a shell in the background watches /proc until this process is in
    -- one of the calls a wait sleeps in (poll, epoll_wait, ppoll, epoll_pwait), then signals.
    local function signal_soon()
      local pid = U.getpid()
      os.execute(("(until grep -qE '^(7|232|271|281) ' /proc/%d/syscall; do sleep 0.01; done; " ..
        "kill -USR1 %d) &"):format(pid, pid))
    end
    local f = spin()
    signal_soon()
    local ok, why, code = f:wait(5)
    assert.is_nil(ok)
    assert.are.equal("EINTR: a signal handler ran while waiting for the call", why)
    assert.are.equal(ip.EINTR, code)
    signal_soon()
    local err = S.raised(f.result, f, 5)
    assert.are.equal(ip.EINTR, err.code)
    assert.matches("^EINTR: a signal handler ran while waiting for the call %(call again to resume%)\nstack traceback:", tostring(err))
    signal_soon()
    local step = ip.waitfor({f}, nil, 5)
    assert.are.equal(ip.EINTR, S.raised(step).code)
    P.signal(P.SIGUSR1, P.SIG_DFL)
    assert.are.equal(3, ran)
    assert.is_false(f:done())
    f:cancel()
    assert.are.equal(f, step())
  end)

  it("cancel() kills a running call; the future fails with ECANCELED", function()
    local f = spin()
    local pid = f:pid()
    assert.is_true(f:cancel())
    local ok, why, code = f:cancel() -- already completed
    assert.is_nil(ok)
    assert.are.equal("EALREADY: the call had already completed", why)
    assert.are.equal("EALREADY", code)
    assert.is_false(S.exists(pid)) -- killed and reaped
    local err = f:error()
    assert.are.equal(ip.ECANCELED, err.code)
    assert.are.equal(err, S.raised(f.result, f))
  end)

  it("cancel() after completion fails with EALREADY and keeps the value", function()
    local f = echo(7)
    f:wait()
    assert.is_nil(f:cancel())
    assert.are.equal(7, f:result())
  end)

  it("pid() is the child's pid", function()
    local f = ip.task(function() return S.mypid() end)()
    assert.is_number(f:pid())
    assert.are.equal(f:pid(), f:result())
  end)

  it("error() waits for the call: nil when it succeeded, its error table when it failed", function()
    -- Each call waits on a FIFO of its own until a writer opens and closes it. One FIFO each:
    -- a writer's open waits for a reader, so with one FIFO for both a call that opened it
    -- after the writer had come and gone would wait forever.
    local g1, g2 = S.fifo(), S.fifo()
    -- (A guard, not a threshold: a call left waiting fails its check after a minute.)
    local ok = ip.task(function(p) io.open(p):read("*l") return 1 end, {timeout = 60})(g1)
    local bad = ip.task(function(p) io.open(p):read("*l") error("late", 0) end, {timeout = 60})(g2)
    assert.is_false(ok:done())
    assert.is_false(bad:done())
    os.execute(("(: >%s) & (: >%s) &"):format(g1, g2)) -- each reader reads EOF
    local err = bad:error()
    assert.is_nil(ok:error())
    assert.is_true(ok:done())
    assert.is_true(bad:done())
    assert.are.equal(ip.ERAISED, err.code)
    assert.are.equal("late", err.message)
    assert.are.equal(err, bad:error())
    assert.are.equal(err, S.raised(bad.result, bad))
  end)

  it("error(seconds) raises ETIMEDOUT while the call runs; done() never blocks", function()
    local f = spin()
    assert.is_false(f:done())
    local err = S.raised(f.error, f, 0.05)
    assert.are.equal(ip.ETIMEDOUT, err.code)
    assert.are.equal("the call did not complete within 0.05 s (it still runs)", err.message)
    assert.is_false(f:done())
    f:cancel()
    assert.is_table(f:error())
    assert.are.equal(f:error(), f:error())
    assert.are.equal(ip.ECANCELED, f:error(0).code)
  end)

  it("args() returns the call's arguments, nils included", function()
    local f = echo(1, nil, "x", nil)
    assert.are.equal(4, select("#", f:args()))
    local a, b, c = f:args()
    assert.are.equal(1, a)
    assert.is_nil(b)
    assert.are.equal("x", c)
    local tbl = {}
    assert.are.equal(tbl, (echo(tbl):args()))
    assert.are.equal(0, select("#", echo():args()))
  end)

  it("__tostring shows pid and state", function()
    local f = spin()
    assert.matches("^inparallel.future %(pid %d+, running%)", tostring(f))
    f:cancel()
    assert.matches("ECANCELED", tostring(f))
    local g = echo(1)
    g:wait()
    assert.matches("done", tostring(g))
  end)

  it("methods check their self", function()
    local f = echo(1)
    assert.matches("inparallel.future expected", S.raised(f.result, {}))
    assert.matches("inparallel.future expected", S.raised(f.done, 5))
    f:wait()
  end)

  it("__gc cancels and reaps a running child", function()
    local pid
    do
      local f = spin()
      pid = f:pid()
      assert.is_true(S.exists(pid))
    end
    S.gc()
    assert.is_false(S.exists(pid))
  end)

  it("__gc is idempotent and safe on finished futures", function()
    local mt_gc
    do
      local f = echo(1)
      f:result()
      -- reach __gc through the debug library to call it twice
      mt_gc = debug.getmetatable(f).__gc
      mt_gc(f)
      mt_gc(f)
      assert.matches("collected", tostring(f))
      assert.matches("already collected", S.raised(f.result, f))
    end
    S.gc()
  end)

  if S.is54 then
    it("__close cancels a call still running (Lua 5.4)", function()
      local chunk = assert(load([[
        local spin, S = ...
        local pid
        do
          local f <close> = spin()
          pid = f:pid()
        end
        return pid
      ]]))
      local pid = chunk(spin, S)
      assert.is_false(S.exists(pid))
    end)
  end
end)
