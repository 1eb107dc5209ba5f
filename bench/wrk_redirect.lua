-- wrk script for bench/redirect.py: GET /go/<code> with a code drawn at random from
-- WRK_LINES; with WRK_IDS set, every click_id the portal answered (its 302's Location) is
-- written there, so the bench can check that each one is a stored click.
dofile(os.getenv("WRK_COMMON"))

local headers = {
  ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
  ["Accept"] = "text/html",
}

function init(args)
  load_lines()
end

function request()
  return wrk.format("GET", "/go/" .. lines[math.random(#lines)], headers)
end

function response(status, response_headers, body)
  local id = nil
  if status == 302 then
    local location = response_headers["Location"] or response_headers["location"] or ""
    id = string.match(location, "click_id=([%w%-_]+)")
  end
  count(status, body, id)
end
