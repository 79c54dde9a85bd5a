-- wrk script of the ingest benchmark: POST one fixed JSON body, read from the
-- file named after `--`, on every request. The request is built once per
-- thread, so wrk spends no Lua per request.
--   wrk -s bench/ingest_post.lua http://127.0.0.1:PORT/track/ -- body.json
local request_bytes

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  request_bytes = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function request()
  return request_bytes
end
