-- wrk script: GET /stores around random points of the seeded area
-- (scripts/seed-stores.sh puts 10,000 stores around Seoul).
math.randomseed(os.time())
request = function()
  local lon = 126.8 + math.random() * 0.4
  local lat = 37.4 + math.random() * 0.3
  return wrk.format("GET", string.format("/stores?longitude=%.5f&latitude=%.5f&radius=5&limit=20", lon, lat))
end

-- print the non-2xx count when done (run wrk from the repository root)
dofile("scripts/wrk/report.lua")
