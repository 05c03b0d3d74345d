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

-- What a spec leaves to clean up: M.later(fn) queues fn, and M.cleanup(), from an
-- after_each, runs what was queued, last first, whatever the spec's outcome.
local cleanups = {}
function M.later(fn) cleanups[#cleanups + 1] = fn end
function M.cleanup()
  for i = #cleanups, 1, -1 do cleanups[i]() cleanups[i] = nil end
end

-- A FIFO, removed after the spec: a child that writes to it blocks until the spec opens it,
-- and one that reads it blocks until the spec writes, so the spec knows where a call is
-- without sleeping.
function M.fifo()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkfifo " .. path))
  M.later(function() os.remove(path) end)
  return path
end

M.is54 = _VERSION == "Lua 5.4"
M.integers = math.type ~= nil

return M
