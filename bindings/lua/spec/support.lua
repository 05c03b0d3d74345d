-- Shared helpers for the specs: process and descriptor introspection through /proc.
local lfs = require "lfs"
local M = {}

-- This process's pid (io.open does not fork, so /proc/self is us).
function M.mypid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = tonumber(f:read("*a"):match("^(%d+)"))
  f:close()
  return pid
end

-- Pids of our living or zombie children, over every thread of this process.
function M.children()
  local out = {}
  for tid in lfs.dir("/proc/self/task") do
    if tid:match("^%d+$") then
      local f = io.open("/proc/self/task/" .. tid .. "/children")
      if f then
        for pid in f:read("*a"):gmatch("%d+") do out[#out + 1] = tonumber(pid) end
        f:close()
      end
    end
  end
  return out
end

function M.fd_count()
  local n = 0
  for name in lfs.dir("/proc/self/fd") do
    if name:match("^%d+$") then n = n + 1 end
  end
  return n - 1 -- the descriptor lfs.dir itself holds
end

-- True while /proc/<pid> exists (running or zombie).
function M.exists(pid)
  return lfs.attributes("/proc/" .. pid) ~= nil
end

function M.gc()
  collectgarbage()
  collectgarbage()
end

-- Collects an error raised by fn(...): returns the error value.
function M.raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

M.is54 = _VERSION == "Lua 5.4"
M.integers = math.type ~= nil

return M
