-- The README is the module's reference: every function of the module, every method of a task,
-- a future and a pool, and every error code name the module exports is described there.
local ip = require "inparallel"

local function readme()
  local dir = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]+$") or "."
  local fh = assert(io.open(dir .. "/README.md", "r"))
  local text = fh:read("*a")
  fh:close()
  return text
end

local function methods(obj)
  local names = {}
  for name in pairs(debug.getmetatable(obj).__index) do names[#names + 1] = name end
  table.sort(names)
  return names
end

describe("the README (" .. _VERSION .. ")", function()
  local text = readme()

  it("describes every function of the module", function()
    local missing = {}
    for name, v in pairs(ip) do
      if type(v) == "function" and not text:find("ip." .. name .. "(", 1, true) then
        missing[#missing + 1] = "ip." .. name
      end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  it("describes every method of a task, a future and a pool", function()
    local t = ip.task(function() return 1 end)
    local f = t()
    local p = ip.pool(1)
    local missing = {}
    for _, obj in ipairs({f, p}) do
      for _, name in ipairs(methods(obj)) do
        if not text:find(":" .. name .. "(", 1, true) then missing[#missing + 1] = name end
      end
    end
    f:wait()
    p:close()
    assert.are.same({}, missing)
    assert.truthy(text:find("task(...)", 1, true), "calling a task")
  end)

  it("describes every function of ip.mpi", function()
    local ok, mpi = pcall(function() return ip.mpi end)
    if not ok then return pending("no inparallel_mpi module: configure found no MPI") end
    local missing = {}
    for name, v in pairs(mpi) do
      if type(v) == "function" and not text:find("ip.mpi." .. name .. "(", 1, true) then
        missing[#missing + 1] = "ip.mpi." .. name
      end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  it("names every error code the module exports", function()
    local missing = {}
    for name, v in pairs(ip) do
      if type(v) == "string" and name:match("^E%u") and not text:find(name, 1, true) then
        missing[#missing + 1] = name
      end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)
end)
