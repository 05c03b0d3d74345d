local ip = require "inparallel"
local S = require "spec.support"

describe("inparallel module", function()
  it("has _NAME, _VERSION, version() and the error codes, each its own name", function()
    assert.are.equal("inparallel", ip._NAME)
    assert.is_string(ip._VERSION)
    assert.equals(ip.version(), ip._VERSION)
    assert.matches("^%d+%.%d+%.%d+$", ip.version())
    for _, name in ipairs({"ERAISED", "ESIGNALED", "EEXITED", "EENCODE", "EDECODE", "ETIMEDOUT",
                           "ECANCELED", "EINTR", "EINVAL", "ENOMEM", "E2BIG", "EALREADY"}) do
      assert.are.equal(name, ip[name])
    end
  end)

  it("ready_fd() gives a descriptor", function()
    assert.is_true(ip.ready_fd() > 2)
  end)
end)

describe("ip.task", function()
  it("returns a callable whose calls return futures at once", function()
    local t = ip.task(function(x) return x + 1 end)
    assert.matches("^inparallel.task %(msgpack%)", tostring(t))
    local f = t(41)
    assert.matches("^inparallel.future", tostring(f))
    assert.are.equal(42, f:result())
  end)

  it("runs fn in another process", function()
    local me = S.mypid()
    local t = ip.task(function() return S.mypid() end)
    local f = t()
    local child = f:result()
    assert.are_not.equal(me, child)
    assert.are.equal(f:pid(), child)
  end)

  it("sees the parent's upvalues and arguments without serialization", function()
    local up = {list = {1, 2, 3}, fn = function(v) return v * 10 end}
    local t = ip.task(function(a, b) return up.fn(up.list[a]) + b.k end)
    assert.are.equal(25, t(2, {k = 5, weird = print}):result())
  end)

  it("child changes do not reach the parent", function()
    local state = {n = 1}
    local t = ip.task(function() state.n = 99; return state.n end)
    assert.are.equal(99, t():result())
    assert.are.equal(1, state.n)
  end)

  it("can be called from a coroutine", function()
    local t = ip.task(function(x) return x * 3 end)
    local co = coroutine.wrap(function() return t(5):result() end)
    assert.are.equal(15, co())
  end)

  it("can be called inside a child (nested tasks)", function()
    local inner = ip.task(function(x) return x + 1 end)
    local outer = ip.task(function(x) return inner(x):result() * 2 end)
    assert.are.equal(12, outer(5):result())
  end)

  it("keeps working after many calls", function()
    local t = ip.task(function(x) return x end)
    for i = 1, 50 do assert.are.equal(i, t(i):result()) end
  end)

  describe("misuse raises a clear error", function()
    it("non-function", function()
      assert.matches("function expected", S.raised(ip.task, 42))
      assert.matches("function expected", S.raised(ip.task))
      assert.matches("function expected", S.raised(ip.task, "print"))
    end)
    it("options that are not a table", function()
      assert.matches("table expected", S.raised(ip.task, print, 5))
      assert.matches("table expected", S.raised(ip.task, print, "raw"))
    end)
    it("unknown serializer names and bad serializer tables", function()
      assert.matches('unknown serializer "json"', S.raised(ip.task, print, {serializer = "json"}))
      assert.matches("serializer must be", S.raised(ip.task, print, {serializer = 5}))
      assert.matches("encode and decode functions", S.raised(ip.task, print, {serializer = {encode = print}}))
      assert.matches("encode and decode functions", S.raised(ip.task, print, {serializer = {encode = 1, decode = print}}))
    end)
    it("bad timeouts", function()
      assert.matches("timeout must be a number", S.raised(ip.task, print, {timeout = "1"}))
      assert.matches("inparallel.task: timeout must be a number of seconds > 0 %(math.huge or nil = none%), not %-1",
        S.raised(ip.task, print, {timeout = -1}))
      assert.matches("timeout must be a number of seconds > 0 .*, not 0", S.raised(ip.task, print, {timeout = 0}))
      assert.matches("timeout must be a number of seconds > 0 .*, not %-?nan", S.raised(ip.task, print, {timeout = 0/0}))
    end)
    it("bad max_result and unknown options", function()
      local what = "max_result must be a whole number of bytes >= 1 %(math.huge = no limit%), not "
      assert.matches(what .. "0", S.raised(ip.task, print, {max_result = 0}))
      assert.matches(what .. "1.5", S.raised(ip.task, print, {max_result = 1.5}))
      assert.matches(what .. '"100"', S.raised(ip.task, print, {max_result = "100"}))
      assert.matches("unknown option 'timout' %(known: serializer, timeout, max_result, rlimit, stdio, name%)",
        S.raised(ip.task, print, {timout = 1}))
      assert.matches("option names are strings", S.raised(ip.task, print, {1}))
    end)
    it("a name, unique among the live tasks (how a task travels to MPI ranks)", function()
      local t = ip.task(print, {name = "spec-unique"})
      local ok, err = pcall(ip.task, print, {name = "spec-unique"})
      assert.is_false(ok)
      assert.equals("EALREADY", err.code)
      assert.matches('another task is named "spec%-unique" already', err.message)
      ok, err = pcall(ip.task, print, {name = ""})
      assert.is_false(ok)
      assert.equals("EINVAL", err.code)
      assert.matches("name must be 1 to 255 bytes, not 0", err.message)
      t = nil
      collectgarbage()
      collectgarbage() -- a collected task gives its name back
      assert.is_truthy(ip.task(print, {name = "spec-unique"}))
    end)
    it("bad rlimits", function()
      local function bad(rl) return S.raised(ip.task, print, {rlimit = rl}) end
      assert.matches('unknown rlimit "nofiles" %(this platform has: as, core, cpu, .*nofile', bad({nofiles = 1}))
      assert.matches("unknown rlimit 1 ", bad({5}))
      assert.matches("rlimit must be a table such as {nofile = 64, as = {soft, hard}}, not a number", bad(5))
      local what = "rlimit.nofile must be a whole number >= 0 %(math.huge = unlimited%), not "
      assert.matches(what .. "%-1", bad({nofile = -1}))
      assert.matches(what .. "1.5", bad({nofile = 1.5}))
      assert.matches(what .. '"64"', bad({nofile = "64"}))
      assert.matches("rlimit.nofile%[2%] %(hard%) must be a whole number", bad({nofile = {1, "x"}}))
      assert.matches("rlimit.nofile must be a number or {soft, hard}", bad({nofile = {64}}))
      assert.matches("rlimit.nofile: the soft limit is above the hard one", bad({nofile = {64, 32}}))
      assert.matches("rlimit sets at most 8 limits, not 9", bad({as = 1e12, core = 0, cpu = 100,
        data = 1e12, fsize = 1e12, locks = 100, memlock = 1e6, msgqueue = 1e6, nofile = 64}))
    end)
    it("bad stdio policies", function()
      local use = '%(use "purge_inherited", "flush_std", "flush_all", "none" or a list of them%)'
      assert.matches('unknown stdio policy "purges" ' .. use, S.raised(ip.task, print, {stdio = "purges"}))
      assert.matches("unknown stdio policy 3 " .. use, S.raised(ip.task, print, {stdio = 3}))
      assert.matches('unknown stdio policy "x" ' .. use, S.raised(ip.task, print, {stdio = {"purge_inherited", "x"}}))
      assert.matches('stdio must be a policy or a list of policies, such as {"purge_inherited", "flush_std"}$',
        S.raised(ip.task, print, {stdio = {"purge_inherited", flush = true}}))
    end)
  end)

  describe("options", function()
    it("timeout kills a call that runs too long", function()
      local t = ip.task(function() while true do end end, {timeout = 0.2})
      local f = t()
      local err = S.raised(f.result, f)
      assert.are.equal(ip.ETIMEDOUT, err.code)
      assert.are.equal("ETIMEDOUT", err.kind)
    end)
    it("timeout math.huge means no limit, as leaving it out does; tostring shows a limit", function()
      local t = ip.task(function() return 1 end, {timeout = math.huge})
      assert.matches("^inparallel.task %(msgpack%): ", tostring(t))
      assert.are.equal(1, t():result())
      assert.matches("^inparallel.task %(msgpack, timeout 0.25 s%): ", tostring(ip.task(print, {timeout = 0.25})))
      assert.matches("^inparallel.task %(raw, timeout 2 s%): ",
        tostring(ip.task(print, {timeout = 2, serializer = "raw"})))
    end)
    it("max_result refuses a larger result", function()
      local f = ip.task(function() return ("x"):rep(1000) end, {max_result = 100})()
      local err = S.raised(f.result, f)
      assert.are.equal(ip.E2BIG, err.code)
      assert.are.equal(1000, #ip.task(function() return ("x"):rep(1000) end, {max_result = 2000})():result())
      assert.are.equal(1000, #ip.task(function() return ("x"):rep(1000) end, {max_result = math.huge})():result())
    end)

    -- The child's limits, as /proc/self/limits shows them: {soft, hard} by row.
    local function limits()
      local fh = assert(io.open("/proc/self/limits"))
      local out = {}
      for line in fh:lines() do
        local name, soft, hard = line:match("^(Max [%a ]-)%s%s+(%S+)%s+(%S+)")
        if name then out[name] = {soft, hard} end
      end
      fh:close()
      return out
    end

    it("rlimit sets the child's limits: n for soft = hard, {soft, hard}, math.huge = unlimited", function()
      local t = ip.task(limits, {rlimit = {nofile = 64, core = {0, 4096}, fsize = math.huge, cpu = {50, 100}}})
      local got = t():result()
      assert.are.same({"64", "64"}, got["Max open files"])
      assert.are.same({"0", "4096"}, got["Max core file size"])
      assert.are.same({"unlimited", "unlimited"}, got["Max file size"])
      assert.are.same({"50", "100"}, got["Max cpu time"])
      assert.are_not.same({"64", "64"}, limits()["Max open files"]) -- the parent's are its own
    end)

    it("a limit the child's setrlimit refuses fails the call with EINVAL", function()
      local f = ip.task(limits, {rlimit = {nofile = 2^40}})() -- above the kernel's nr_open
      local err = S.raised(f.result, f)
      assert.are.equal(ip.EINVAL, err.code)
      assert.matches("setrlimit", err.message)
    end)

    it("rlimit nofile binds in the child", function()
      local t = ip.task(function()
        local n, fhs = 0, {}
        while true do
          local fh = io.open("/dev/null")
          if not fh then return n end
          n = n + 1
          fhs[n] = fh
        end
      end, {rlimit = {nofile = 32}})
      local n = t():result()
      assert.is_true(n > 0 and n < 32, "opened " .. n)
    end)

    -- Runs a script in a fresh interpreter (its stdout a pipe, so fully buffered) whose parent
    -- writes "parent;" without flushing, then calls a task with these stdio options that
    -- writes "child;" to stdout and "file" to a file it leaves open. Returns stdout, then what
    -- the file holds.
    local LUA = jit and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))
    local function stdio_run(stdio)
      local script = ([[
        package.cpath = %q
        local ip = require "inparallel"
        io.stdout:setvbuf("full")
        io.write("parent;")
        local path = os.tmpname()
        ip.task(function() io.write("child;") io.open(path, "w"):write("file") end,
                {stdio = %s})():result()
        local fh = io.open(path) local content = fh:read("*a") fh:close() os.remove(path)
        io.write("end[", content, "]")
      ]]):format(package.cpath, stdio)
      local p = assert(io.popen(LUA .. " -e '" .. script:gsub("'", "'\\''") .. "'"))
      local out = p:read("*a")
      p:close()
      return out
    end

    it("stdio: the default purges the parent's buffered bytes and flushes stdout", function()
      assert.are.equal("child;parent;end[]", stdio_run("nil"))
      assert.are.equal("child;parent;end[]", stdio_run('{"purge_inherited", "flush_std"}'))
    end)
    it("stdio: without purge the parent's buffered bytes are printed twice", function()
      assert.are.equal("parent;child;parent;end[]", stdio_run('"flush_std"'))
    end)
    it("stdio: without flush the child's buffered output is lost", function()
      assert.are.equal("parent;end[]", stdio_run('"purge_inherited"'))
      assert.are.equal("parent;end[]", stdio_run('"none"'))
      assert.are.equal("parent;end[]", stdio_run("{}"))
    end)
    it("stdio: flush_all flushes every C stream, files the child left open too", function()
      assert.are.equal("child;parent;end[file]", stdio_run('{"purge_inherited", "flush_all"}'))
      assert.are.equal("parent;child;parent;end[file]", stdio_run('"flush_all"'))
    end)
  end)
end)
