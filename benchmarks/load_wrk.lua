-- wrk script for benchmarks/load_wrk.sh: every request POSTs one image file, and the end
-- prints one RESULT line (requests/s, latency percentiles, errors).
-- The file and its type come from the environment: WRK_BODY (a path), WRK_TYPE (image/png).

local path = os.getenv("WRK_BODY") or error("set WRK_BODY to the image file to post")
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("WRK_TYPE") or "image/png"

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout + e.status
  local seconds = summary.duration / 1e6
  local ms = function(p) return latency:percentile(p) / 1000 end
  io.write(string.format(
    "RESULT requests %d in %.1f s: %.1f requests/s, p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, "
      .. "max %.1f ms, errors %d (connect %d, read %d, write %d, timeout %d, status >= 400 %d)\n",
    summary.requests, seconds, summary.requests / seconds, ms(50), ms(95), ms(99),
    latency.max / 1000, errors, e.connect, e.read, e.write, e.timeout, e.status))
end
