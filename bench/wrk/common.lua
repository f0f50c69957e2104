-- Shared by the benchmark's wrk scripts (bench/run.py runs them; see bench/README.md).
--
-- One wrk thread = one client = one connection (`wrk -t N -c N`), so each Lua state below is
-- one browser session: its own cookie, its own CSRF token, one request at a time.
-- Every response is timed here (LuaJIT FFI clock), per label, so a two-request flow reports
-- its POSTs apart from its GETs. Each thread writes its samples, one line each, to
-- $BENCH_OUT.<thread>; done() writes the run's duration, socket errors and the answers that
-- closed their keep-alive connection to $BENCH_OUT.
-- (wrk 4.1's thread:get crashes on nested tables, hence the files.)

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")

function now_ms()
   ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
   return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

-- Per-thread state -----------------------------------------------------------------------------
cookie = nil
started_at = nil
local log = nil

closed = 0 -- answers that closed their keep-alive connection ("Connection: close")

function record(label, status, ok, headers)
   local elapsed = now_ms() - started_at
   local connection = headers and (headers["Connection"] or headers["connection"])
   if connection and connection:lower() == "close" then closed = closed + 1 end
   if not log then
      log = assert(io.open(os.getenv("BENCH_OUT") .. "." .. tostring(thread_index), "w"))
      log:setvbuf("line")
   end
   log:write(label, " ", status, " ", ok and "1" or "0", " ", string.format("%.3f", elapsed), "\n")
end

function keep_cookie(headers)
   local set = headers["Set-Cookie"] or headers["set-cookie"]
   if set then
      local value = set:match("^session=([^;]*)")
      if value and value ~= "" then cookie = value elseif value == "" then cookie = nil end
   end
end

function with_cookie(headers)
   headers = headers or {}
   if cookie then headers["Cookie"] = "session=" .. cookie end
   return headers
end

function urlencode(s)
   return (tostring(s):gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

function form_body(fields)
   local parts = {}
   for _, pair in ipairs(fields) do parts[#parts + 1] = urlencode(pair[1]) .. "=" .. urlencode(pair[2]) end
   return table.concat(parts, "&")
end

function hidden(body, name)
   local value = body:match('name="' .. name .. '" type="hidden" value="([^"]*)"')
      or body:match('name="' .. name .. '" value="([^"]*)"')
   return value and value:gsub("&#34;", '"'):gsub("&#39;", "'"):gsub("&amp;", "&") or nil
end

function split(text, sep)
   local out = {}
   for item in string.gmatch(text or "", "([^" .. sep .. "]+)") do out[#out + 1] = item end
   return out
end

-- Main state: one line of $BENCH_CLIENTS per thread ("key=value<TAB>key=value...") -----------
local threads = {}
local client_lines = nil

function setup(thread)
   if not client_lines then
      client_lines = {}
      local path = os.getenv("BENCH_CLIENTS")
      if path then
         for line in io.lines(path) do client_lines[#client_lines + 1] = line end
      end
   end
   local index = #threads + 1
   threads[index] = thread
   thread:set("thread_index", index)
   local line = client_lines[((index - 1) % math.max(#client_lines, 1)) + 1]
   if line then
      for _, pair in ipairs(split(line, "\t")) do
         local key, value = pair:match("^([^=]+)=(.*)$")
         if key then thread:set("client_" .. key, value) end
      end
   end
end

function done(summary, latency, requests)
   local out = assert(io.open(os.getenv("BENCH_OUT"), "w"))
   out:write(string.format("duration_us %d\n", summary.duration))
   out:write(string.format("socket_errors %d %d %d %d\n", summary.errors.connect, summary.errors.read,
                           summary.errors.write, summary.errors.timeout))
   out:write(string.format("threads %d\n", #threads))
   local total = 0
   for _, thread in ipairs(threads) do total = total + (tonumber(thread:get("closed")) or 0) end
   out:write(string.format("closed %d\n", total))
   out:close()
end
