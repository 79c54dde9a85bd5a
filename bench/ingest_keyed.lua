-- wrk script of the ingest benchmark: every request carries an idempotency key
-- of its own, as a client's distinct requests do. Arguments after `--`:
--   header|query [body.json]
-- `header`: an Idempotency-Key header; `query`: `&idempotency_key=` appended
-- to the URL's query. With a body file, POST it as JSON (the headers of
-- bench/ingest_post.lua plus the key); without, GET the URL with wrk's headers.
local where, body, prefix
local sent = 0

function init(args)
  where = args[1]
  if args[2] then
    local file = assert(io.open(args[2], "rb"))
    body = file:read("*a")
    file:close()
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  prefix = string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
end

function request()
  sent = sent + 1
  local key = prefix .. "-" .. sent
  if where == "header" then
    local headers = body and {["Content-Type"] = "application/json"} or {}
    if not body then
      for name, value in pairs(wrk.headers) do headers[name] = value end
    end
    headers["Idempotency-Key"] = key
    return wrk.format(body and "POST" or "GET", nil, headers, body)
  end
  local path = wrk.path .. (string.find(wrk.path, "?", 1, true) and "&" or "?") .. "idempotency_key=" .. key
  if body then
    return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
  end
  return wrk.format("GET", path)
end
