-- GET one page again and again with a signed-in session (client_cookie, client_path).
dofile("bench/wrk/common.lua")

function init(args)
   cookie = client_cookie
end

function request()
   started_at = now_ms()
   return wrk.format("GET", client_path, with_cookie())
end

function response(status, headers, body)
   keep_cookie(headers)
   record("get", status, status == 200, headers)
end
