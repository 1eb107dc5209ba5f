-- wrk script for bench/ingest.py: POST /api/v1/conversions, each with a new transaction id
-- (WRK_PREFIX-<thread>-<n>: unique across threads and runs), a random amount and a partner's
-- ref drawn at random from WRK_LINES. With WRK_IDS set, every transaction id the portal
-- answered 201 for is written there, so the bench can check that each one is stored.
dofile(os.getenv("WRK_COMMON"))

local prefix = os.getenv("WRK_PREFIX") or "wrk"
local headers = {
  ["Authorization"] = "Bearer " .. (os.getenv("WRK_API_KEY") or ""),
  ["Content-Type"] = "application/json",
  ["User-Agent"] = "bench-ingest",
}
local sent = 0

function init(args)
  load_lines()
end

function transaction_id()
  sent = sent + 1
  return string.format("%s-%d-%08d", prefix, thread_number, sent)
end

function sale_body(id, cents, ref)
  return string.format(
    '{"transaction_id": "%s", "amount": "%d.%02d", "currency": "USD", "ref": "%s"}',
    id, math.floor(cents / 100), cents % 100, ref
  )
end

function request()
  local body = sale_body(transaction_id(), math.random(500, 50000), lines[math.random(#lines)])
  return wrk.format("POST", "/api/v1/conversions", headers, body)
end

function response(status, response_headers, body)
  local id = nil
  if status == 201 then
    id = string.match(body, '"transaction_id":%s*"([^"]+)"')
  end
  count(status, body, id)
end
