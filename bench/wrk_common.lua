-- Shared by wrk_redirect.lua and wrk_ingest.lua (loaded with dofile): per-thread counters,
-- the ids the server answered with, and one JSON result written by done().
--
-- Settings come from the environment (wrk's main state, where done() runs, never sees the
-- script's arguments): WRK_LINES (a file of codes or refs, one a line), WRK_OUT (where
-- done() writes its JSON result), WRK_IDS (where it writes the answered ids; empty: none),
-- WRK_PREFIX (transaction ids' prefix), WRK_SEED.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

statuses = {}
answered = {}
samples = {}
record_ids = false
lines = {}

function load_lines()
  local path = os.getenv("WRK_LINES")
  for line in io.lines(path) do
    if #line > 0 then
      lines[#lines + 1] = line
    end
  end
  if #lines == 0 then
    error("no lines in " .. path)
  end
  local ids = os.getenv("WRK_IDS") or ""
  record_ids = #ids > 0
  math.randomseed((tonumber(os.getenv("WRK_SEED") or "1") * 1000) + thread_number)
end

function count(status, body, id)
  statuses[status] = (statuses[status] or 0) + 1
  if id and record_ids then
    answered[#answered + 1] = id
  elseif not samples[status] and body then
    samples[status] = string.sub(body, 1, 300)
  end
end

local function json_string(text)
  return '"' .. string.gsub(text, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end) .. '"'
end

function done(summary, latency, requests)
  local merged, sample_parts = {}, {}
  local ids_path = os.getenv("WRK_IDS") or ""
  local ids_file = nil
  if #ids_path > 0 then
    ids_file = assert(io.open(ids_path, "w"))
  end
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + n
    end
    for status, text in pairs(thread:get("samples")) do
      sample_parts[#sample_parts + 1] = '"' .. status .. '": ' .. json_string(text)
    end
    if ids_file then
      for _, id in ipairs(thread:get("answered")) do
        ids_file:write(id, "\n")
      end
    end
  end
  if ids_file then
    ids_file:close()
  end
  local parts = {}
  for status, n in pairs(merged) do
    parts[#parts + 1] = '"' .. status .. '": ' .. n
  end
  local e = summary.errors
  local out = assert(io.open(os.getenv("WRK_OUT"), "w"))
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"statuses": {%s}, "samples": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ", "), table.concat(sample_parts, ", ")
  ))
  out:close()
end
