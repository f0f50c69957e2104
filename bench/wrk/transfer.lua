-- A whole transfer, as a browser does it: GET the external transfer form (CSRF token and the
-- one-time idempotency key), then POST it. client_source: the source account id; client_targets:
-- comma-separated 12-digit account numbers, one drawn at random per transfer.
dofile("bench/wrk/common.lua")

local state, token, key, targets

function init(args)
   cookie = client_cookie
   targets = split(client_targets, ",")
   math.randomseed(tonumber(thread_index) * 7919 + os.time())
   state = "form"
end

function request()
   started_at = now_ms()
   if state == "form" then
      return wrk.format("GET", "/banking/transfer/external", with_cookie())
   end
   local cents = math.random(1, 200)
   local body = form_body({
      {"csrf_token", token}, {"source_account", client_source},
      {"target_account_number", targets[math.random(#targets)]},
      {"amount", string.format("%d.%02d", math.floor(cents / 100), cents % 100)},
      {"description", "bench"}, {"idempotency_key", key}, {"submit", "Transfer"},
   })
   return wrk.format("POST", "/banking/transfer/external",
                     with_cookie({["Content-Type"] = "application/x-www-form-urlencoded"}), body)
end

function response(status, headers, body)
   keep_cookie(headers)
   if state == "form" then
      token, key = hidden(body, "csrf_token"), hidden(body, "idempotency_key")
      local ok = status == 200 and token ~= nil and key ~= nil
      record("form", status, ok, headers)
      if ok then state = "post" end
   else
      local location = headers["Location"] or ""
      record("post", status, status == 302 and location:find("/banking/dashboard", 1, true) ~= nil, headers)
      state = "form"
   end
end
