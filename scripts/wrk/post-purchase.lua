-- wrk script: POST /purchases for member 1 and good 1 (create both first).
-- wrk -t1 -c32 -d15s -s scripts/wrk/post-purchase.lua http://127.0.0.1:8000/purchases
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"userid":1,"goodsid":1}'

-- print the non-2xx count when done (run wrk from the repository root)
dofile("scripts/wrk/report.lua")
