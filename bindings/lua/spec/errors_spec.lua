local ip = require "inparallel"
local S = require "spec.support"

local function failure(fn, ...)
  local f = ip.task(fn)(...)
  local err = S.raised(f.result, f)
  assert.are.equal(err, f:error())
  return err, f
end

describe("a child's Lua error", function()
  it("is raised by result() as an error table with the child's traceback", function()
    local err, f = failure(function(x) error("boom " .. x) end, 7)
    assert.are.equal("error", err.kind)
    assert.are.equal("ERAISED", err.code)
    assert.are.equal(ip.ERAISED, err.code)
    assert.matches("errors_spec.lua:%d+: boom 7", err.message)
    assert.matches("^stack traceback:", err.traceback)
    assert.matches("in function 'error'", err.traceback)
    assert.are.equal(f:pid(), err.pid)
    assert.is_nil(err.signal)
    local s = tostring(err)
    assert.matches("^ERAISED: .*errors_spec.lua:%d+: boom 7\nstack traceback:", s)
  end)

  it("the same error is raised again", function()
    local f = ip.task(function() error("once") end)()
    local e1 = S.raised(f.result, f)
    local e2 = S.raised(f.result, f)
    assert.are.equal(e1, e2)
  end)

  it("non-string error objects become readable messages", function()
    assert.matches("42$", (failure(function() error(42) end)).message) -- 5.1 adds a position
    assert.are.equal("(error object is a table value)", (failure(function() error({}) end)).message)
    assert.are.equal("(error object is a nil value)", (failure(function() error() end)).message)
    local obj = setmetatable({}, {__tostring = function() return "custom object" end})
    assert.are.equal("custom object", (failure(function() error(obj) end)).message)
  end)

  it("a non-string value raised arrives as err.value (msgpack); the message says what it was", function()
    local err = failure(function() error({code = 42, why = "x", nested = {1, 2, {deep = true}}}) end)
    assert.are.equal(ip.ERAISED, err.code)
    assert.are.equal("error", err.kind)
    assert.are.equal("(error object is a table value)", err.message)
    assert.are.same({code = 42, why = "x", nested = {1, 2, {deep = true}}}, err.value)
    assert.matches("^stack traceback:", err.traceback)
    assert.matches("in function 'error'", err.traceback)
    assert.matches("^ERAISED: %(error object is a table value%)\nstack traceback:", tostring(err))
    local num = failure(function() error(42, 0) end)
    assert.are.equal("42", num.message)
    assert.are.equal(42, num.value)
    if S.integers then assert.are.equal("integer", math.type(num.value)) end
    local no = failure(function() error(false) end)
    assert.are.equal("(error object is a boolean value)", no.message)
    assert.is_false(no.value)
    local obj = failure(function() error(setmetatable({a = 1}, {__tostring = function() return "custom" end})) end)
    assert.are.equal("custom", obj.message)
    assert.are.same({a = 1}, obj.value) -- without its metatable
    assert.is_nil(getmetatable(obj.value))
    assert.is_nil((failure(function() error() end)).value)
    assert.is_nil((failure(function() error("text") end)).value)
  end)

  it("a raised value travels through the task's serializer (a raw task's through msgpack)", function()
    local custom = ip.task(function() error({code = 7}) end, {serializer = {
      encode = function(v) return "code=" .. v.code end,
      decode = function(s) return {got = s}, "ignored" end,
    }})
    local f = custom()
    assert.are.same({got = "code=7"}, S.raised(f.result, f).value)
    local raw = ip.task(function() error({code = 8}) end, {serializer = "raw"})
    local g = raw()
    assert.are.same({code = 8}, S.raised(g.result, g).value)
  end)

  it("a raised value that cannot travel falls back to its tostring, with a note", function()
    local err = failure(function() error({f = print}) end)
    assert.are.equal("(error object is a table value) (the value was not sent: cannot encode " ..
      "err.value.f: a function cannot be serialized)", err.message)
    assert.is_nil(err.value)
    assert.matches("^stack traceback:", err.traceback)
    local ud = failure(function() error(io.stdout) end)
    assert.matches("^file %(0?x?%x+%) %(the value was not sent: cannot encode err.value: a " ..
      "userdata cannot be serialized%)$", ud.message)
    local huge = {}
    for i = 1, 100000 do huge[i] = ("x"):rep(20) end
    assert.matches("^%(error object is a table value%) %(the value was not sent: its encoding " ..
      "takes more than %d+ bytes%)$", (failure(function() error(huge) end)).message)
    local t = ip.task(function() error({1}) end, {serializer = {encode = function() error("no", 0) end, decode = print}})
    local f = t()
    assert.are.equal("(error object is a table value) (the value was not sent: the serializer's " ..
      "encode function failed: no)", S.raised(f.result, f).message)
    local t2 = ip.task(function() error({1}) end, {serializer = {encode = tostring, decode = function() error("cannot", 0) end}})
    local f2 = t2()
    local e2 = S.raised(f2.result, f2)
    assert.are.equal("(error object is a table value) (its value could not be decoded: the " ..
      "serializer's decode function failed: cannot)", e2.message)
    assert.is_nil(e2.value)
  end)

  it("error levels are respected", function()
    local err = failure(function() error("no position", 0) end)
    assert.are.equal("no position", err.message)
  end)
end)

describe("a child that does not return", function()
  it("os.exit(3) fails with EEXITED and exit_status 3", function()
    local err = failure(function() os.exit(3) end)
    assert.are.equal(ip.EEXITED, err.code)
    assert.are.equal(3, err.exit_status)
    assert.is_nil(err.signal)
    assert.matches("exit", err.message)
  end)

  it("os.exit(0) without a result fails too", function()
    local err = failure(function() os.exit(0) end)
    assert.are.equal(ip.EEXITED, err.code)
    assert.are.equal(0, err.exit_status)
  end)

  -- The shell that os.execute runs is a child of the task's child: its $PPID is the child.
  it("a child killed by SIGKILL fails with ESIGNALED and signal 9", function()
    local err = failure(function() os.execute("kill -KILL $PPID"); while true do end end)
    assert.are.equal(ip.ESIGNALED, err.code)
    assert.are.equal(9, err.signal)
    assert.is_nil(err.exit_status)
    assert.matches("signal 9", err.message)
  end)

  it("a child that segfaults reports the signal and a backtrace", function()
    local err = failure(function() os.execute("kill -SEGV $PPID"); while true do end end)
    assert.are.equal(ip.ESIGNALED, err.code)
    assert.are.equal(11, err.signal)
    assert.matches("SIGSEGV", err.message)
    assert.is_string(err.traceback)
    assert.matches("child backtrace:", tostring(err))
  end)

  it("a crash in one child leaves the others alone", function()
    local t = ip.task(function(x) if x == 2 then os.execute("kill -KILL $PPID") while true do end end return x end)
    local fs = {t(1), t(2), t(3)}
    assert.are.equal(1, fs[1]:result())
    assert.are.equal(ip.ESIGNALED, S.raised(fs[2].result, fs[2]).code)
    assert.are.equal(3, fs[3]:result())
  end)
end)

describe("results that cannot be serialized", function()
  it("name the offending path", function()
    local err = failure(function() return 1, {x = print} end)
    assert.are.equal(ip.EENCODE, err.code)
    assert.are.equal("EENCODE", err.kind)
    assert.are.equal("cannot encode result[2].x: a function cannot be serialized", err.message)
  end)

  it("name paths through arrays, odd keys and numbers", function()
    assert.matches('result%[1%]%[2%]%["a b"%]%[3%]%[1.5%]: a userdata',
      (failure(function() return {1, {["a b"] = {1, 2, {[1.5] = io.stdout}}}} end)).message)
    assert.matches("result%[1%]%[true%]: a thread",
      (failure(function() return {[true] = coroutine.create(function() end)} end)).message)
  end)

  it("report cycles", function()
    local err = failure(function() local t = {}; t.self = t; return t end)
    assert.are.equal("cannot encode result[1].self: a table that contains itself (a cycle)", err.message)
    local deep = failure(function() local a, b = {}, {}; a.b = b; b.list = {a}; return "ok", a end)
    assert.matches("result%[2%]%.b%.list%[1%]: a table that contains itself", deep.message)
  end)

  it("allow a table shared without a cycle", function()
    local shared = {1, 2}
    local a = ip.task(function() return {shared, shared} end)():result()
    assert.are.same({{1, 2}, {1, 2}}, a)
  end)

  it("report keys of bad types", function()
    assert.matches("result%[1%]: it has a key of type function",
      (failure(function() return {[print] = 1} end)).message)
  end)

  it("report nesting too deep for msgpack", function()
    local function nest(n) local t = {} for _ = 1, n do t = {t} end return t end
    assert.is_table(ip.task(function() return nest(30) end)():result()) -- 31 tables
    local err = failure(function() return nest(31) end)
    assert.matches("nested more than 31 levels deep", err.message)
  end)
end)

describe("serializer errors", function()
  it("raw needs exactly one string", function()
    local t = ip.task(function(...) return ... end, {serializer = "raw"})
    for _, args in ipairs({{1}, {"a", "b"}, {}, {{}}}) do
      local f = t((unpack or table.unpack)(args, 1, #args))
      local err = S.raised(f.result, f)
      assert.are.equal(ip.EENCODE, err.code)
      assert.matches("raw serializer must return exactly one string", err.message)
    end
  end)

  it("a custom encode that fails or returns a non-string fails the call", function()
    local bad = ip.task(function() return 1 end, {serializer = {encode = function() error("nope") end, decode = print}})
    local f = bad()
    local err = S.raised(f.result, f)
    assert.are.equal(ip.EENCODE, err.code)
    assert.matches("encode function failed: .*nope", err.message)
    assert.matches("stack traceback", err.traceback)
    local nonstr = ip.task(function() return 1 end, {serializer = {encode = function() return {} end, decode = print}})
    local f2 = nonstr()
    assert.matches("must return a string, not a table", S.raised(f2.result, f2).message)
  end)

  it("a custom decode that fails raises EDECODE in the parent", function()
    local t = ip.task(function() return 1 end, {serializer = {encode = tostring, decode = function(s) error("cannot read " .. s) end}})
    local f = t()
    local err = S.raised(f.result, f)
    assert.are.equal(ip.EDECODE, err.code)
    assert.are.equal("EDECODE", err.kind)
    assert.matches("decode function failed: .*cannot read 1", err.message)
    assert.are.equal(err, f:error())
    assert.are.equal(err, S.raised(f.result, f))
    -- error() decodes too: it knows of the failure without a result() first
    local g = t()
    local gerr = g:error()
    assert.are.equal(ip.EDECODE, gerr.code)
    assert.are.equal(gerr, S.raised(g.result, g))
  end)
end)
