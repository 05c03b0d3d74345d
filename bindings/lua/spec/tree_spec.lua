-- A call's whole process tree ends with it: a shell that a task starts with os.execute, and
-- the command the shell runs in the background, end with a timeout, a cancel, the garbage
-- collector's cancel, and the death of the calling process.
local ip = require "inparallel"
local S = require "spec.support"

-- The shell writes its pids into a FIFO and keeps it open, as does its background sleep: the
-- FIFO reads end of file once every process of the tree has ended.
local SHELL = "exec >%s; sleep 300 & echo $!; echo $$; wait"

local function fifo()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkfifo " .. path))
  return path
end

local shell = ip.task(function(path)
  os.execute(SHELL:format(path))
  return "the shell ended on its own"
end)

-- Opens the FIFO (which waits for the shell to open it) and reads the two pids.
local function started(path)
  local r = assert(io.open(path, "r"))
  local pids = { tonumber(r:read("*l")), tonumber(r:read("*l")) }
  assert(pids[1] and pids[2], "the shell did not report its pids")
  return r, pids
end

-- Reads the FIFO to its end in a timed call of its own, so that a tree left running fails
-- the spec (ETIMEDOUT) instead of hanging it.
local drain = ip.task(function(r) return r:read("*a") end, { timeout = 20 })

local function expect_gone(r, path, pids, ending)
  local f = drain(r)
  local ok, err = pcall(f.result, f)
  r:close()
  os.remove(path)
  if not ok then
    for _, pid in ipairs(pids) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
  end
  assert.is_true(ok, "after " .. ending .. ", the shell or its command still runs: " .. tostring(err))
  for _, pid in ipairs(pids) do
    local st = io.open("/proc/" .. pid .. "/stat")
    local state = st and st:read("*a"):match("^%d+ %b() (%a)")
    if st then st:close() end
    assert.is_true(state == nil or state == "Z", "process " .. pid .. " is " .. tostring(state))
  end
end

describe("a call's process tree", function()
  it("ends with a timeout", function()
    local path = fifo()
    local timed = ip.task(function(p) os.execute(SHELL:format(p)) end, { timeout = 0.3 })
    local f = timed(path)
    local r, pids = started(path)
    local err = S.raised(f.result, f)
    assert.equal("ETIMEDOUT", err.code)
    expect_gone(r, path, pids, "a timeout")
  end)

  it("ends with a cancel", function()
    local path = fifo()
    local f = shell(path)
    local r, pids = started(path)
    assert.is_true(f:cancel())
    expect_gone(r, path, pids, "a cancel")
  end)

  it("ends when the garbage collector takes the running future", function()
    local path = fifo()
    local f = shell(path)
    local r, pids = started(path)
    f = nil -- luacheck: ignore
    S.gc()
    expect_gone(r, path, pids, "the future's collection")
  end)

  it("ends with the calling process", function()
    -- The caller is itself a call's child: it starts the shell's call and waits for it. Its
    -- cancel kills the caller alone (the shell's call leads a group of its own), and the
    -- caller's death must end that call's whole tree.
    local path = fifo()
    local caller = ip.task(function(p)
      local inner = shell(p)
      return inner:result()
    end)
    local f = caller(path)
    local r, pids = started(path)
    assert.is_true(f:cancel())
    expect_gone(r, path, pids, "the caller's death")
  end)
end)
