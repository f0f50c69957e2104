-- Follow rel="next" from client_path, client_hops times, then start over (keyset pages).
dofile("bench/wrk/common.lua")

local path, hop

function init(args)
   cookie = client_cookie
   path, hop = client_path, 0
end

function request()
   started_at = now_ms()
   return wrk.format("GET", path, with_cookie())
end

function response(status, headers, body)
   keep_cookie(headers)
   local ok = status == 200
   record(hop == 0 and "first" or "hop", status, ok, headers)
   local nxt = ok and body:match('rel="next" href="([^"]+)"')
   if nxt and hop < tonumber(client_hops) then
      path, hop = nxt:gsub("&amp;", "&"), hop + 1
   else
      path, hop = client_path, 0
   end
end
