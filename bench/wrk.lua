-- wrk script of `make bench`: an optional throttle and one JSON summary line.
-- BENCH_DELAY_MS: mean pause (ms, fractional) a connection takes before each request; wrk has
-- no rate option, so a fixed number of connections each pausing this long sets the rate.
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0

if delay_ms > 0 then
   local base = math.floor(delay_ms)
   local frac = delay_ms - base
   -- wrk's timers are whole milliseconds: mix floor and ceil to average the fraction.
   function delay()
      if math.random() < frac then
         return base + 1
      end
      return base
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, ' ..
      '"p50_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, e.status,
      e.connect + e.read + e.write + e.timeout,
      latency:percentile(50), latency:percentile(99), latency.mean))
end
