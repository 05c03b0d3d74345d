-- The Lua README's loop of bounded waits, over a table of calls: one ends at once, one only
-- when the loop's first wait has run out (it waits for a line on a pipe that the first
-- timeout writes). tests/readme-blocks.sh puts the README's block in place of the line below.
local ip = require "inparallel"
local fifo = os.tmpname()
os.remove(fifo)
assert(os.execute("mkfifo " .. fifo))
local quick = ip.task(function() return "quick" end)
local held = ip.task(function(path) return io.open(path):read("l") end)
local active = { quick(), held(fifo) }
local real_print, released = print, false
print = function(...) -- the block's "still waiting" line releases the held call
  real_print(...)
  if not released and tostring((...)):find("^still waiting") then
    released = true
    local w = assert(io.open(fifo, "w")); w:write("held\n"); w:close()
  end
end
-- README BLOCK
print = real_print
os.remove(fifo)
assert(released and #active == 0, "the loop ended with calls left or no timeout seen")
