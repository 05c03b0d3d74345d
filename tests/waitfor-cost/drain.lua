-- lua drain.lua N: N calls on a pool of two workers, all completed, then drained by
-- ip.waitfor one step per future (see run.sh, which counts the instructions of the steps).
local ip = require "inparallel"
local n = assert(math.tointeger(tonumber(arg[1])), "usage: drain.lua N")
local one = ip.task(function() return 1 end)
local pool = ip.pool(2)
local list = {}
for i = 1, n do list[i] = pool:call(one) end
for i = 1, n do assert(list[i]:result() == 1) end
local drained = 0
for _ in ip.waitfor(list) do drained = drained + 1 end
assert(drained == n and #list == 0, "drained " .. drained .. " of " .. n)
pool:close()
print("drained " .. drained)
