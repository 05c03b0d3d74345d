-- Round-trips of every kind of value through the default (msgpack), raw and custom serializers.
local ip = require "inparallel"
local S = require "spec.support"

local echo = ip.task(function(...) return ... end)
local function rt(...) return echo(...):result() end

describe("msgpack round-trips (" .. _VERSION .. (jit and (", " .. jit.version) or "") .. ")", function()
  it("nil and booleans", function()
    local a, b, c = rt(true, false, nil)
    assert.is_true(a)
    assert.is_false(b)
    assert.is_nil(c)
    assert.are.equal(3, select("#", rt(true, false, nil)))
  end)

  it("keeps trailing nils and zero results", function()
    assert.are.equal(4, select("#", rt(nil, nil, nil, nil)))
    assert.are.equal(0, select("#", rt()))
    assert.are.equal(0, select("#", ip.task(function() end)():result()))
  end)

  it("integers", function()
    for _, v in ipairs({0, 1, -1, 127, 128, -32, -33, 255, 65536, 2^31, -2^31, 2^32 + 1, 2^53, -2^53}) do
      assert.are.equal(v, rt(v))
    end
  end)

  if S.integers then
    it("keeps the integer subtype (Lua 5.3+)", function()
      assert.are.equal("integer", math.type(rt(1)))
      assert.are.equal("float", math.type(rt(1.0)))
      assert.are.equal("float", math.type(rt(-0.0)))
      assert.are.equal(math.maxinteger, rt(math.maxinteger))
      assert.are.equal(math.mininteger, rt(math.mininteger))
      assert.are.equal("integer", math.type(rt(math.mininteger)))
      assert.are.equal("float", math.type(rt(2^63)))
      local t = rt({1, 2.0, {k = 3}})
      assert.are.equal("integer", math.type(t[1]))
      assert.are.equal("float", math.type(t[2]))
      assert.are.equal("integer", math.type(t[3].k))
    end)
  end

  it("floats, infinities, nan and negative zero", function()
    local zero = 0
    local fzero = zero + 0.0
    local inf, ninf, nan, negz = 1 / fzero, -1 / fzero, fzero / fzero, -fzero
    assert.are.equal(0.5, rt(0.5))
    assert.are.equal(-1.25e-300, rt(-1.25e-300))
    assert.are.equal(3.141592653589793, rt(3.141592653589793))
    assert.are.equal(inf, rt(inf))
    assert.are.equal(ninf, rt(ninf))
    local n = rt(nan)
    assert.is_true(n ~= n)
    local z = rt(negz)
    assert.are.equal(0, z)
    assert.are.equal(ninf, 1 / z) -- the sign survives
    assert.are.equal(2^63, rt(2^63))
    assert.are.equal(1e300, rt(1e300))
  end)

  it("strings with any bytes", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    assert.are.equal(all, rt(all))
    assert.are.equal("", rt(""))
    assert.are.equal("a\0b", rt("a\0b"))
    local big = ("0123456789abcdef"):rep(65536 * 2) -- 2 MiB
    assert.are.equal(big, rt(big))
  end)

  it("arrays: keys exactly 1..n", function()
    assert.are.same({1, 2, 3}, rt({1, 2, 3}))
    assert.are.same({"a", {true}, 3.5}, rt({"a", {true}, 3.5}))
  end)

  it("maps: everything else, holes kept as keys", function()
    assert.are.same({x = 1, y = {z = "w"}}, rt({x = 1, y = {z = "w"}}))
    assert.are.same({[1] = 1, [3] = 3}, rt({[1] = 1, [3] = 3}))
    assert.are.same({1, 2, x = 1}, rt({1, 2, x = 1}))
    assert.are.same({[0] = "zero", [-1] = "neg"}, rt({[0] = "zero", [-1] = "neg"}))
    assert.are.same({[1.5] = "f", [true] = "t", [false] = "f"}, rt({[1.5] = "f", [true] = "t", [false] = "f"}))
    assert.are.same({}, rt({}))
    local t = rt({1, nil, 3})
    assert.are.equal(1, t[1])
    assert.is_nil(t[2])
    assert.are.equal(3, t[3])
  end)

  it("ignores metatables", function()
    local obj = setmetatable({v = 1}, {__index = function() return "x" end})
    local got = rt(obj)
    assert.are.same({v = 1}, got)
    assert.is_nil(getmetatable(got))
  end)

  it("nested and large tables", function()
    local big = {}
    for i = 1, 10000 do big[i] = {id = i, name = "n" .. i, tags = {"a", "b"}} end
    local got = rt(big)
    assert.are.equal(10000, #got)
    assert.are.same(big[9999], got[9999])
  end)

  it("many results", function()
    local many = {}
    for i = 1, 200 do many[i] = i end
    local got = {rt((unpack or table.unpack)(many))}
    assert.are.same(many, got)
  end)
end)

describe("raw serializer", function()
  local raw = ip.task(function(s) return s end, {serializer = "raw"})
  it("returns one string, any bytes", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    assert.are.equal(all, raw(all):result())
    assert.are.equal("", raw(""):result())
    assert.are.equal(1, select("#", raw("x"):result()))
  end)
  it("carries a large string", function()
    local big = ("x"):rep(3 * 1024 * 1024 + 7)
    assert.are.equal(big, raw(big):result())
  end)
  it("tostring shows it", function()
    assert.matches("%(raw%)", tostring(raw))
  end)
end)

describe("custom serializer", function()
  it("encode runs in the child, decode in the parent, every value passes", function()
    local parent = S.mypid()
    local t = ip.task(function(a, b) return a, b end, {serializer = {
      encode = function(a, b) return table.concat({a, b, S.mypid()}, ",") end,
      decode = function(s) local a, b, pid = s:match("^(.-),(.-),(.*)$"); return a:upper(), b, tonumber(pid), S.mypid() end,
    }})
    local f = t("x", "y")
    local a, b, child, here = f:result()
    assert.are.equal("X", a)
    assert.are.equal("y", b)
    assert.are.equal(f:pid(), child)
    assert.are.equal(parent, here)
    assert.matches("%(custom%)", tostring(t))
  end)
  it("decode may return several values, nil included", function()
    local t = ip.task(function() return "" end, {serializer = {encode = function() return "z" end, decode = function(s) return nil, s, nil end}})
    assert.are.equal(3, select("#", t():result()))
  end)
end)
