-- wrk script: POST a ~10 KB Stripe v2-style meter event batch (100 events) as JSON.
-- (~100 bytes per event, ~10 KB per body; size printed to stderr at start. No "timestamp"
-- field: it is optional in Stripe and dropping it keeps the body at the ~10 KB target.)
-- Usage: wrk -s post.lua http://127.0.0.1:PORT/v2/billing/meter_event_stream
-- The body is built once, deterministically, so every request is identical.

local events = {}
for i = 1, 100 do
  events[i] = string.format(
    '{"event_name":"calls","identifier":"e%04d",' ..
    '"payload":{"stripe_customer_id":"cus_%04d","value":"%d"}}',
    i, 1000 + (i % 37), (i * 13) % 997)
end

wrk.method = "POST"
wrk.body = '{"events":[' .. table.concat(events, ",") .. ']}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk_test_loadtest"

local printed = false
function setup(thread)
  if not printed then
    io.stderr:write(string.format("post.lua: body is %d bytes, 100 events\n", #wrk.body))
    printed = true
  end
end

-- Machine-readable summary line (latencies in microseconds), parsed by run.sh.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
