-- "Log in" to twelve servers, three at a time, and collect each one's `uname -a`. Each call
-- runs in its own forked child; results are printed as they complete, and a failure prints
-- what happened instead of hanging the loop.
--
-- In-tree, after make:  LUA_CPATH='bindings/lua/5.4/.libs/?.so;;' lua5.4 examples/uname.lua
-- Installed (luarocks make / make install):  lua examples/uname.lua
local ip = require "inparallel"

local servers = {
  "alpha.local", "bravo.local", "charlie.local", "delta.local", "echo.local", "foxtrot.local",
  "golf.local", "hotel.local", "india.local", "juliet.local", "kilo.local", "lima.local",
}

-- Runs in the child: the "remote" command is local here, and one server is down.
local get_os = ip.task(function(server)
  if server == "kilo.local" then error("cannot reach " .. server, 0) end
  local p = assert(io.popen("uname -a"))
  local line = p:read("*l")
  p:close()
  return line
end)

local pending = {}
for i, s in ipairs(servers) do pending[i] = s end
local active, failures = {}, 0
for f in ip.waitfor(active, 3) do
  if f then -- a call completed: which server it was for is in its arguments
    local server = f:args()
    local ok, out = pcall(f.result, f)
    if ok then
      print(("%-14s %s"):format(server, out))
    else
      print(("%-14s FAILED [%s] %s"):format(server, out.kind, out.message))
      failures = failures + 1
    end
  elseif #pending > 0 then -- waitfor asks for another task: start one if any are left
    active[#active + 1] = get_os(table.remove(pending, 1))
  end
end
print(("%d servers, %d failed (as expected: kilo.local is down)"):format(#servers, failures))
os.exit(failures == 1 and 0 or 1)
