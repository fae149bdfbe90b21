-- wrk script: POST a body of BODY_SIZE bytes (default 256 KiB) to the URL.
--   BODY_SIZE=1048576 wrk -t2 -c50 -d5s -s benchmarks/lua/post_body.lua http://127.0.0.1:8080/echo
local size = tonumber(os.getenv("BODY_SIZE") or "262144")
wrk.method = "POST"
wrk.body = string.rep("x", size)
wrk.headers["Content-Type"] = "application/octet-stream"
