-- A closed-loop send load for wrk (docs/benchmarks.md): one JSON record per request, round
-- robin over the stream ids in $STREAM_IDS (a file, one id per line), with the key in
-- $STREAMGATE_KEY.  wrk -t2 -c50 -d15s --latency -s scripts/wrk-send.lua http://127.0.0.1:8080
local ids = {}
for line in io.lines(os.getenv("STREAM_IDS") or "ids.txt") do ids[#ids + 1] = line end
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("STREAMGATE_KEY")
wrk.body = '{"temperature": 21.5, "room": "kitchen", "note": "hello"}'
request = function()
  n = n + 1
  return wrk.format(nil, "/api/stream/" .. ids[(n % #ids) + 1] .. "/send")
end
