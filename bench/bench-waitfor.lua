-- What one step of ip.waitfor costs as the table grows: a table of n futures that have all
-- completed is drained; the cost per step at n = 10,000 is set against n = 100 in the same
-- run (target: within 1.5x). The futures are real calls, completed before the drain starts;
-- each drain refills a table for the next round, so the forks are paid once. Rounds interleave
-- the sizes; the figure is the median. The drain only hands futures back, so it is timed in
-- CPU seconds (os.clock), which a busy machine disturbs less than the wall clock.
--
--   LUA_CPATH='bindings/lua/5.4/.libs/?.so;;' lua5.4 bench/bench-waitfor.lua [rounds]
local ip = require "inparallel"
local rounds = tonumber(arg and arg[1]) or 9
local sizes = { 100, 10000 }

local one = ip.task(function() return 1 end)

local function completed(n)
  local list = {}
  for i = 1, n do
    list[i] = one()
    if i % 64 == 0 or i == n then -- at most 64 calls in flight (descriptors)
      for j = i - (i - 1) % 64, i do assert(list[j]:wait()) end
    end
  end
  return list
end

-- Drains list into a new table, which it returns with the CPU seconds per step.
local function drain(list)
  local n, got = #list, {}
  local t0 = os.clock()
  for f in ip.waitfor(list) do got[#got + 1] = f end
  local dt = os.clock() - t0
  assert(#got == n and #list == 0)
  return got, dt / n
end

local lists, per = {}, {}
for s, n in ipairs(sizes) do lists[s], per[s] = completed(n), {} end
for _ = 1, rounds do
  for s in ipairs(sizes) do lists[s], per[s][#per[s] + 1] = drain(lists[s]) end
end

print(("| futures drained | us per step (median of %d, %s) | vs %d |"):format(rounds, _VERSION, sizes[1]))
print("|---:|---:|---:|")
local base
for s, n in ipairs(sizes) do
  table.sort(per[s])
  local med = per[s][math.floor((rounds + 1) / 2)]
  base = base or med
  print(("| %d | %.2f | %.2fx |"):format(n, med * 1e6, med / base))
end
local ratio = per[#sizes][math.floor((rounds + 1) / 2)] / base
print(("\nstep cost at %d against %d: %.2fx (target <= 1.5x): %s"):format(sizes[#sizes], sizes[1],
  ratio, ratio <= 1.5 and "meets" or "MISSES"))
