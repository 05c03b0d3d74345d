-- The uname fan-out of uname.lua over the ranks of an MPI job: rank 0 sends twelve "logins",
-- the other ranks run them (each in a child forked for the call) and rank 0 prints each
-- answer as it comes. One server is down: its call fails alone.
--
-- In-tree, after make:
--   LUA_CPATH='bindings/lua/5.4/.libs/?.so;;' mpirun -np 4 lua5.4 examples/uname-mpi.lua
local ip = require "inparallel"

local servers = {
  "alpha.local", "bravo.local", "charlie.local", "delta.local", "echo.local", "foxtrot.local",
  "golf.local", "hotel.local", "india.local", "juliet.local", "kilo.local", "lima.local",
}

-- Runs on a worker rank. Every rank makes and names the same tasks before ip.mpi.init.
local get_os = ip.task(function(server)
  if server == "kilo.local" then error("cannot reach " .. server, 0) end
  local p = assert(io.popen("uname -sr; hostname"))
  local os_name, host = p:read("*l"), p:read("*l")
  p:close()
  return os_name .. " (ran on " .. host .. ")"
end, {name = "get_os"})

ip.mpi.init()
local pool = ip.mpi.pool(0)
if not pool then -- a worker rank: it served until rank 0 closed the pool
  ip.mpi.finalize()
  return
end
print(pool:workers() .. " worker ranks")
local next_server, active, failures = 1, {}, 0
for f in ip.waitfor(active, 6) do
  if f then
    local ok, out = pcall(f.result, f)
    if ok then print(("%-14s %s"):format(f:args(), out))
    else failures = failures + 1; print(("%-14s FAILED [%s] %s"):format(f:args(), out.code, out.message)) end
  elseif next_server <= #servers then
    active[#active + 1] = pool:call(get_os, servers[next_server])
    next_server = next_server + 1
  end
end
pool:close()
ip.mpi.finalize()
os.exit(failures == 1 and 0 or 1)
