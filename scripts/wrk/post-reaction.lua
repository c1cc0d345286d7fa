-- wrk script: POST /reactions from many members (auth off: userid in the body).
-- wrk -t1 -c32 -d15s -s scripts/wrk/post-reaction.lua http://127.0.0.1:8000/reactions
math.randomseed(os.time())
request = function()
  local body = string.format('{"userid":%d,"goodsid":1,"reaction":"%s"}',
    math.random(1, 1000000), math.random() < 0.7 and "like" or "dislike")
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

-- print the non-2xx count when done (run wrk from the repository root)
dofile("scripts/wrk/report.lua")
