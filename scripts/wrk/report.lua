-- wrk helper: print non-2xx counts so a run that failed is never read as fast.
done = function(summary, latency, requests)
  io.write(string.format("requests=%d non2xx_or_errors=%d p50=%.2fms p99=%.2fms\n",
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
