-- Sign in again and again: GET the login form with no cookie (a new session and CSRF token),
-- POST email and password, expect the redirect to the dashboard, forget the session.
-- client_emails: comma-separated addresses used in turn; $BENCH_PASSWORD: their password.
dofile("bench/wrk/common.lua")

local state, token, emails, turn
local password = os.getenv("BENCH_PASSWORD")

function init(args)
   emails = split(client_emails, ",")
   state, turn = "form", 0
end

function request()
   started_at = now_ms()
   if state == "form" then
      cookie = nil
      return wrk.format("GET", "/auth/login", {})
   end
   turn = turn % #emails + 1
   local body = form_body({{"csrf_token", token}, {"email", emails[turn]}, {"password", password},
                           {"submit", "Log in"}})
   return wrk.format("POST", "/auth/login", with_cookie({["Content-Type"] = "application/x-www-form-urlencoded"}), body)
end

function response(status, headers, body)
   keep_cookie(headers)
   if state == "form" then
      token = hidden(body, "csrf_token")
      record("form", status, status == 200 and token ~= nil, headers)
      if token then state = "post" end
   else
      local location = headers["Location"] or ""
      record("post", status, status == 302 and location:find("/banking/dashboard", 1, true) ~= nil, headers)
      state = "form"
   end
end
